"""Exact bytes per table: weights, optimizer state, dtype what-ifs, and a GPU fit check.

Pure arithmetic over a `LargeEmbeddingsConfig`: nothing is allocated. The rules are the ones
FBGEMM and torch really follow (checked table by table against a sharded and an unsharded
torchrec collection in ``tests/test_memory_measured.py``), with R rows, D columns and e bytes per
weight element (4 for fp32, 2 for fp16):

``optimizer_state="fused"`` (FBGEMM table-batched kernels; what a sharded model allocates)
    The state is fp32 by default, whatever the weight dtype. EXACT_SGD keeps nothing (torch's
    ``momentum`` is not used by it), EXACT_ADAGRAD ``R*D*4``, ADAM ``2*R*D*4``, and the row-wise
    Adagrad what-if (EXACT_ROWWISE_ADAGRAD) ``R*4``.
``optimizer_state="torch"`` (torch.optim applied in backward to an unsharded collection)
    The state takes the weight's dtype, plus torch's 4-byte ``step`` tensor where the optimizer
    keeps one: SGD 0 (``R*D*e`` with momentum), Adagrad ``R*D*e + 4``, Adam ``2*R*D*e + 4``.

Weights are ``R*D*e`` in both; EVALUATE and INFERENCE keep no optimizer state. Per-kernel
bookkeeping of FBGEMM (offsets, an ``iter`` counter: a few hundred bytes per group of tables, not
per table) and the planner's batch-dependent input/output buffers are not table storage and are
left out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from embviz.arguments import as_config, as_mode, choice, integer, number
from embviz.config import (
    MAX_BYTES,
    ConfigError,
    DataType,
    EmbeddingBagConfig,
    LargeEmbeddingsConfig,
    Mode,
    byte_limit_problems,
)
from embviz.errors import ArgumentError, UnknownTableError
from embviz.optimizers import (
    ADAGRAD_STATES,
    fused_type_name,
    planner_multiplier,
    torch_class_name,
)

__all__ = [
    "BYTE_COLUMNS",
    "GpuFit",
    "UnknownTableError",
    "binary_unit",
    "block_bytes",
    "compact_bytes",
    "dtype_savings",
    "gpu_fit",
    "human_bytes",
    "largest_tables",
    "memory_table",
    "totals",
    "with_dtype",
    "with_totals",
]

OptimizerState = Literal["fused", "torch"]
AdagradState = Literal["exact", "rowwise"]

OPTIMIZER_STATES: tuple[str, ...] = ("fused", "torch")

# Columns holding exact byte counts (int64), in display order.
BYTE_COLUMNS: tuple[str, ...] = (
    "weight_bytes",
    "optimizer_bytes",
    "total_bytes",
    "fp32_total_bytes",
    "fp16_total_bytes",
    "planner_bytes",
)
# Byte columns only some frames have (``memory_table(..., serving_dtype=...)``), summed too.
_OPTIONAL_BYTE_COLUMNS: tuple[str, ...] = (
    "unquantized_bytes",
    # `embviz.serving_bytes`: each table in each serving dtype (<NA> where refused).
    "fp32_bytes",
    "fp16_bytes",
    "int8_bytes",
    "int4_bytes",
    "int2_bytes",
)

# FBGEMM keeps fused optimizer state in fp32 by default, whatever the weight dtype (measured:
# momentum1_host is float32 for fp16 weights_host).
_FUSED_STATE_ITEMSIZE = 4
# torch.optim.Adam/Adagrad keep `step` as a 0-d tensor of torch's default float dtype (fp32).
_TORCH_STEP_BYTES = 4
# torchrec's EmbeddingShardingPlanner keeps this share of each device's HBM for the dense part
# of the model (`heuristical_storage_reservation_percentage`, default 0.15 in torchrec 1.6-1.8;
# tests/test_plan.py checks it against the installed torchrec).
PLANNER_RESERVED_FRACTION = 0.15

# The text columns of a memory_table frame.
STRING_COLUMNS: tuple[str, ...] = (
    "data_type",
    "optimizer",
    "optimizer_kernel",
    "planner_note",
    "note",
    "optimizer_state",
    "mode",
)

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def _state_bytes(
    rows: np.ndarray,
    dims: np.ndarray,
    itemsize: np.ndarray,
    optimizer: np.ndarray,
    momentum: np.ndarray,
    optimizer_state: str,
    rowwise: bool,
) -> np.ndarray:
    """Optimizer state bytes per block in TRAIN mode (see the module docstring)."""
    cells = rows * dims
    is_sgd, is_adagrad, is_adam = (optimizer == name for name in ("sgd", "adagrad", "adam"))
    if optimizer_state == "fused":
        adagrad = rows * _FUSED_STATE_ITEMSIZE if rowwise else cells * _FUSED_STATE_ITEMSIZE
        return np.select(
            [is_sgd, is_adagrad, is_adam], [0, adagrad, 2 * cells * _FUSED_STATE_ITEMSIZE], 0
        ).astype(np.int64)
    sgd = np.where(momentum > 0, cells * itemsize, 0)
    return np.select(
        [is_sgd, is_adagrad, is_adam],
        [sgd, cells * itemsize + _TORCH_STEP_BYTES, 2 * cells * itemsize + _TORCH_STEP_BYTES],
        0,
    ).astype(np.int64)


def block_bytes(
    rows: ArrayLike,
    cols: ArrayLike,
    itemsize: ArrayLike,
    optimizer: ArrayLike,
    momentum: ArrayLike = 0.0,
    *,
    optimizer_state: OptimizerState = "fused",
    mode: Mode | str = Mode.TRAIN,
    adagrad: AdagradState = "exact",
) -> tuple[np.ndarray, np.ndarray]:
    """Weight and optimizer-state bytes of ``rows x cols`` blocks: whole tables or shards.

    The rules of `memory_table`, vectorised over blocks. A shard of a table keeps the state of
    its own rows and columns: a column-wise shard under row-wise Adagrad has its own ``rows*4``.

    Parameters
    ----------
    rows, cols : array_like of int
        Block shapes.
    itemsize : array_like of int
        Bytes per weight element (4 fp32, 2 fp16).
    optimizer : array_like of str
        ``"sgd"``, ``"adagrad"`` or ``"adam"``.
    momentum : array_like of float
        SGD momentum (kept only by torch.optim).
    optimizer_state, mode, adagrad
        As in `memory_table`.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        int64 weight bytes and optimizer-state bytes per block.
    """
    optimizer_state = choice("optimizer_state", optimizer_state, OPTIMIZER_STATES)  # type: ignore[assignment]
    adagrad = choice("adagrad", adagrad, ADAGRAD_STATES)  # type: ignore[assignment]
    rows_a = np.asarray(rows, dtype=np.int64)
    cols_a = np.asarray(cols, dtype=np.int64)
    size_a = np.asarray(itemsize, dtype=np.int64)
    rows_a, cols_a, size_a = np.broadcast_arrays(rows_a, cols_a, size_a)
    weights = rows_a * cols_a * size_a
    if as_mode(mode) is not Mode.TRAIN:
        return weights, np.zeros_like(weights)
    optimizer_a = np.broadcast_to(np.asarray(optimizer, dtype=object), weights.shape)
    momentum_a = np.broadcast_to(np.asarray(momentum, dtype=np.float64), weights.shape)
    state = _state_bytes(
        rows_a, cols_a, size_a, optimizer_a, momentum_a, optimizer_state, adagrad == "rowwise"
    )
    return weights, state


def _table_facts(table: EmbeddingBagConfig) -> tuple[str, int, int, str, str, float]:
    """(name, rows, dim, dtype, optimizer name, SGD momentum) of one table."""
    opt = table.optimizer
    if opt.sgd is not None:
        name, momentum = "sgd", opt.sgd.momentum
    elif opt.adagrad is not None:
        name, momentum = "adagrad", 0.0
    else:
        name, momentum = "adam", 0.0
    dtype = table.data_type.value
    return table.name, table.num_embeddings, table.embedding_dim, dtype, name, momentum


def _check_byte_limits(cfg: LargeEmbeddingsConfig, facts: list[tuple]) -> None:
    """Refuse, as the schema does, tables whose bytes would not fit int64 (unvalidated configs).

    The schema refuses them when a config is validated; a config built with ``model_copy``
    (``update=`` skips validation) or ``model_construct`` is checked here, so no byte count
    wraps around.
    """
    # Every accounting takes at most 20 bytes a cell plus 128 a table
    # (`embviz.config.table_bytes_bound`): only configs near the limit are checked exactly.
    cells = sum(f[1] * f[2] for f in facts)  # Python ints: exact however large
    if cells * 20 + 128 * len(facts) <= MAX_BYTES:
        return
    problems = byte_limit_problems(cfg)
    if problems:
        raise ConfigError(problems)


def memory_table(
    cfg: LargeEmbeddingsConfig,
    optimizer_state: OptimizerState = "fused",
    mode: Mode | str = Mode.TRAIN,
    *,
    adagrad: AdagradState = "exact",
    serving_dtype: str | Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Exact bytes of every table: weights, optimizer state, dtype what-ifs, planner estimate.

    Parameters
    ----------
    cfg : LargeEmbeddingsConfig
        The tables.
    optimizer_state : {"fused", "torch"}
        ``"fused"``: FBGEMM's kernels, what a sharded model allocates (state in fp32).
        ``"torch"``: torch.optim applied in backward to an unsharded collection (state in the
        weight's dtype, plus a 4-byte ``step``).
    mode : Mode or {"train", "evaluate", "inference"}
        Only TRAIN keeps optimizer state.
    adagrad : {"exact", "rowwise"}
        ``"rowwise"`` is the what-if of switching Adagrad tables to FBGEMM's
        EXACT_ROWWISE_ADAGRAD (one fp32 per row, ``R*4`` bytes); fused only.
    serving_dtype : {"fp32", "fp16", "int8", "int4", "int2"}, mapping, optional
        INFERENCE only: the what-if of serving the tables from torchrec's quantized
        ``EmbeddingBagCollection`` in this dtype, or per table (name -> dtype; tables left out
        keep their own ``data_type``). ``weight_bytes`` and ``total_bytes`` are then the bytes
        that collection allocates for each table (FBGEMM's rules, `embviz.serving`: row data,
        a 4-byte fp16 scale and bias for int8/int4/int2, rows padded to 16 bytes, each table
        rounded up to 128 bytes); ``fp32_total_bytes``/``fp16_total_bytes`` are the same
        collection in fp32/fp16; added columns: ``serving_dtype``, ``row_bytes`` (bytes per
        stored row) and ``unquantized_bytes`` (the table unquantized in its own ``data_type``,
        what ``serving_dtype=None`` gives). ``planner_bytes`` is torchrec's planner estimate of
        the quantized table (``R*row_bytes + 4*R``; see ``planner_note``). None (default):
        the unquantized collection in each table's ``data_type``.

    Returns
    -------
    pandas.DataFrame
        Indexed by table name (index name ``"table"``), in config order, with columns
        ``num_embeddings``, ``embedding_dim``, ``data_type`` (``"fp32"``/``"fp16"``),
        ``optimizer`` (``"sgd"``/``"adagrad"``/``"adam"``), ``optimizer_kernel`` (FBGEMM's
        optimizer or the torch.optim class), exact int64 ``weight_bytes``,
        ``optimizer_bytes``, ``total_bytes``, ``fp32_total_bytes`` and ``fp16_total_bytes``
        (the total if the table were stored in that dtype, same optimizer and mode),
        ``logged`` (in ``tables_to_log``), ``planner_bytes``, ``planner_note``, ``note``,
        and how the bytes were counted: ``optimizer_state`` (``"fused"``/``"torch"``) and
        ``mode`` (``"train"``, ...), the same on every row (``optimizer_kernel`` shows the
        row-wise Adagrad what-if as ``EXACT_ROWWISE_ADAGRAD``).

        ``planner_bytes`` is torchrec's planner estimate of the table's storage: weight bytes
        plus ``ceil(weight bytes * m)`` with torchrec's own multiplier ``m`` (Adam 2, SGD 0,
        row-wise Adagrad 1/D, others 1; weights only outside TRAIN). It leaves out the planner's
        batch-dependent input/output buffers (see `embviz.plan` for those). ``planner_note``
        says why it differs from ``total_bytes`` where it does: the planner scales state from
        the weight bytes, so an fp16 table's fp32 FBGEMM state (the state, not the total)
        comes out 2x low (torchrec PR #4142), and it leaves out torch's ``step`` tensor and SGD
        momentum buffers.
        ``note`` flags settings a fused kernel does not use (SGD ``momentum``).

    Raises
    ------
    ConfigError
        A config built without validation (``model_copy(update=...)``) holding a table, or
        tables together, past `embviz.config.MAX_BYTES` (int64) in some accounting: the
        schema's own error, located at the table.
    ArgumentError
        For an unknown ``optimizer_state``, ``mode``, ``adagrad`` or ``serving_dtype``,
        row-wise Adagrad with ``optimizer_state="torch"`` (torch has no row-wise Adagrad),
        ``serving_dtype`` with a mode other than INFERENCE, or a ``cfg`` that is not a
        `LargeEmbeddingsConfig`.
    UnknownTableError
        A ``serving_dtype`` mapping naming tables the config does not have.
    embviz.serving.ServingWidthError
        A width FBGEMM cannot quantize to the table's serving dtype (int8 needs an even
        ``embedding_dim``, int4 a multiple of 4, int2 a multiple of 8).

    Notes
    -----
    Vectorised with NumPy, and imports neither torch nor torchrec: milliseconds even for
    10,000 tables. torchrec's multiplier rule is kept in `embviz.optimizers`.
    """
    if serving_dtype is not None:
        from embviz.serving import serving_memory_table

        return serving_memory_table(cfg, serving_dtype, optimizer_state, mode, adagrad=adagrad)
    cfg = as_config(cfg)
    optimizer_state = choice("optimizer_state", optimizer_state, OPTIMIZER_STATES)  # type: ignore[assignment]
    adagrad = choice("adagrad", adagrad, ADAGRAD_STATES)  # type: ignore[assignment]
    mode = as_mode(mode)
    rowwise = adagrad == "rowwise"
    if rowwise and optimizer_state != "fused":
        raise ArgumentError(
            "adagrad",
            "'rowwise' (EXACT_ROWWISE_ADAGRAD) is a fused FBGEMM optimizer; "
            "use optimizer_state='fused'",
        )
    train = mode is Mode.TRAIN

    # One pass over the pydantic objects (attribute access dominates for 10,000 tables).
    facts = [_table_facts(t) for t in cfg.tables]
    _check_byte_limits(cfg, facts)
    n = len(facts)
    names = [f[0] for f in facts]
    rows = np.fromiter((f[1] for f in facts), dtype=np.int64, count=n)
    dims = np.fromiter((f[2] for f in facts), dtype=np.int64, count=n)
    dtype_names = np.array([f[3] for f in facts], dtype=object)
    itemsize = np.where(dtype_names == DataType.FP16.value, 2, 4).astype(np.int64)
    optimizer = np.array([f[4] for f in facts], dtype=object)
    momentum = np.fromiter((f[5] for f in facts), dtype=np.float64, count=n)
    logged_names = set(cfg.logged_tables)
    logged = np.fromiter((name in logged_names for name in names), dtype=bool, count=n)

    def totals_for(size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return block_bytes(
            rows,
            dims,
            size,
            optimizer,
            momentum,
            optimizer_state=optimizer_state,
            mode=mode,
            adagrad=adagrad,
        )

    weight_bytes, optimizer_bytes = totals_for(itemsize)
    total_bytes = weight_bytes + optimizer_bytes
    fp32_weights, fp32_state = totals_for(np.full(n, 4, dtype=np.int64))
    fp16_weights, fp16_state = totals_for(np.full(n, 2, dtype=np.int64))

    if optimizer_state == "fused":
        kernel = np.array([fused_type_name(o, adagrad) for o in optimizer], dtype=object)
    else:
        kernel = np.array([torch_class_name(o) for o in optimizer], dtype=object)

    # torchrec's planner multiplier for the optimizer class TwHIN applies to each weight
    # (torchrec's RowWiseAdagrad for the row-wise what-if); no optimizer outside TRAIN.
    multiplier = np.fromiter(
        (
            planner_multiplier(o if train else None, int(d), adagrad)
            for o, d in zip(optimizer, dims, strict=True)
        ),
        dtype=np.float64,
        count=n,
    )
    # Same float arithmetic as torchrec's math.ceil(tensor_size * optimizer_multiplier).
    planner_state = np.ceil(weight_bytes.astype(np.float64) * multiplier).astype(np.int64)
    planner_bytes = weight_bytes + planner_state

    differs = planner_bytes != total_bytes
    fp16 = itemsize == 2
    has_state = optimizer != "sgd"
    planner_note = np.select(
        [
            differs & train & (optimizer_state == "fused") & fp16 & has_state,
            differs & train & (optimizer_state == "torch") & has_state,
            differs & train & (optimizer_state == "torch") & (momentum > 0),
            differs,
        ],
        [
            "planner sizes the optimizer state from the fp16 weights; FBGEMM keeps it in "
            "fp32 by default (torchrec PR #4142)",
            "planner leaves out torch's 4-byte step tensor",
            "planner counts no state for SGD; torch.optim.SGD with momentum keeps a "
            "momentum buffer",
            "planner rounds the row-wise state differently",
        ],
        "",
    ).astype(object)
    note = np.where(
        train & (optimizer_state == "fused") & (optimizer == "sgd") & (momentum > 0),
        "fused EXACT_SGD does not use SGD momentum",
        "",
    ).astype(object)

    frame = pd.DataFrame(
        {
            "num_embeddings": rows,
            "embedding_dim": dims,
            "data_type": dtype_names,
            "optimizer": optimizer,
            "optimizer_kernel": kernel,
            "weight_bytes": weight_bytes,
            "optimizer_bytes": optimizer_bytes,
            "total_bytes": total_bytes,
            "fp32_total_bytes": fp32_weights + fp32_state,
            "fp16_total_bytes": fp16_weights + fp16_state,
            "logged": logged,
            "planner_bytes": planner_bytes,
            "planner_note": planner_note,
            "note": note,
            "optimizer_state": optimizer_state,
            "mode": mode.value,
        },
        index=pd.Index(names, name="table"),
    )
    for column in STRING_COLUMNS:
        frame[column] = frame[column].astype(str)
    return frame


def _byte_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in (*BYTE_COLUMNS, *_OPTIONAL_BYTE_COLUMNS) if c in frame.columns]


def totals(frame: pd.DataFrame) -> pd.Series:
    """Sum of every byte column of a `memory_table` frame.

    Returns
    -------
    pandas.Series
        int64, indexed by the byte column names present (``weight_bytes``, ...), named
        ``"total"``.
    """
    columns = _byte_columns(frame)
    if not columns:
        raise ArgumentError("frame", "has none of the byte columns of memory_table")
    return frame[columns].sum().astype(np.int64).rename("total")


TOTAL_LABEL = "(total)"


def with_totals(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame plus a last row labelled ``"(total)"`` holding the byte sums (for display)."""
    sums = totals(frame)
    row = pd.DataFrame(
        {c: [sums[c]] if c in sums.index else [pd.NA] for c in frame.columns},
        index=pd.Index([TOTAL_LABEL], name=frame.index.name),
    )
    out = pd.concat([frame.astype(object), row.astype(object)])
    # Byte columns stay exact int64; the others become nullable so the total row shows <NA>.
    for column in frame.columns:
        if column in sums.index:
            out[column] = out[column].astype(np.int64)
        elif pd.api.types.is_integer_dtype(frame[column]):
            out[column] = out[column].astype("Int64")
        elif pd.api.types.is_bool_dtype(frame[column]):
            out[column] = out[column].astype("boolean")
    return out


def largest_tables(
    frame: pd.DataFrame,
    n: int,
    by: str = "total_bytes",
    *,
    keep: Iterable[str] | None = None,
) -> pd.DataFrame:
    """The ``n - 1`` largest tables by ``by`` and one ``"(k others)"`` row summing the rest.

    The frame itself when it has at most ``n`` rows. Byte columns of the extra row are sums
    (of the values present: a nullable column skips ``<NA>``); other columns are missing.
    Config order is kept for the tables shown (for display). ``keep``: the tables to show
    instead of the largest (e.g. those another frame of the same config shows), the rest summed.
    """
    n = integer("n", n, minimum=2)
    if keep is None:
        if by not in frame.columns:
            raise ArgumentError("by", f"no column {by!r} in the frame")
        if len(frame) <= n:
            return frame
        kept = frame[by].nlargest(n - 1, keep="first").index
    else:
        kept = pd.Index([k for k in keep if k in frame.index])
        if len(kept) == len(frame):
            return frame
    shown = frame[frame.index.isin(kept)]
    rest = frame[~frame.index.isin(kept)]
    columns = _byte_columns(frame)
    row = pd.DataFrame(
        {c: [np.int64(rest[c].sum())] if c in columns else [pd.NA] for c in frame.columns},
        index=pd.Index([f"({len(rest)} others)"], name=frame.index.name),
    )
    out = pd.concat([shown.astype(object), row.astype(object)])
    for column in columns:
        nullable = isinstance(frame[column].dtype, pd.api.extensions.ExtensionDtype)
        out[column] = out[column].astype("Int64" if nullable else np.int64)
    return out


def dtype_savings(frame: pd.DataFrame) -> pd.DataFrame:
    """What switching each table to fp16 saves against its current dtype, with a total row.

    A table already in fp16 saves nothing (``saved_bytes`` 0, ``already_fp16`` True): the
    saving is measured against the config as it is, not against an all-fp32 config.

    Parameters
    ----------
    frame : pandas.DataFrame
        From `memory_table` (same optimizer state and mode rules for both dtypes).

    Returns
    -------
    pandas.DataFrame
        Indexed by table, then ``"(total)"``: ``data_type`` (current; missing on the total),
        ``already_fp16`` (bool; missing on the total), ``current_bytes`` (``total_bytes``),
        ``fp16_bytes`` (every table in fp16), ``saved_bytes`` (current minus fp16) and
        ``fp32_bytes`` (every table in fp32, for reference), all exact int64.
    """
    needed = {"fp32_total_bytes", "fp16_total_bytes", "total_bytes"}
    if not needed <= set(frame.columns):
        raise ArgumentError("frame", "must come from memory_table (fp32/fp16 totals)")
    byte_columns = ["current_bytes", "fp16_bytes", "saved_bytes", "fp32_bytes"]
    dtypes = (
        frame["data_type"].astype(object)
        if "data_type" in frame.columns
        else pd.Series(pd.NA, index=frame.index, dtype=object)
    )
    out = pd.DataFrame(
        {
            "data_type": dtypes,
            "already_fp16": (dtypes == DataType.FP16.value).astype(object),
            "current_bytes": frame["total_bytes"].astype(np.int64),
            "fp16_bytes": frame["fp16_total_bytes"].astype(np.int64),
            "fp32_bytes": frame["fp32_total_bytes"].astype(np.int64),
        },
        index=frame.index,
    )
    out["saved_bytes"] = out["current_bytes"] - out["fp16_bytes"]
    total = out[byte_columns].sum()
    row = pd.DataFrame(
        {
            "data_type": [pd.NA],
            "already_fp16": [pd.NA],
            **{c: [np.int64(total[c])] for c in byte_columns},
        },
        index=pd.Index([TOTAL_LABEL], name=frame.index.name),
    )
    out = pd.concat([out, row])
    for column in byte_columns:
        out[column] = out[column].astype(np.int64)
    out["already_fp16"] = out["already_fp16"].astype("boolean")
    return out[["data_type", "already_fp16", *byte_columns]]


def with_dtype(
    cfg: LargeEmbeddingsConfig,
    data_type: DataType | str,
    tables: Iterable[str] | None = None,
) -> LargeEmbeddingsConfig:
    """A copy of the config with ``tables`` (all when None) stored as ``data_type``.

    Unchanged tables are shared with ``cfg`` (configs are treated as values: nothing here
    mutates them).

    Raises
    ------
    ArgumentError
        For a ``data_type`` that is not ``"fp32"``/``"fp16"``.
    UnknownTableError
        For names in ``tables`` that are not in the config; the message lists the tables.
    """
    cfg = as_config(cfg)
    try:
        dtype = DataType(data_type)
    except ValueError:
        choices = ", ".join(repr(d.value) for d in DataType)
        raise ArgumentError("data_type", f"must be one of {choices}, got {data_type!r}") from None
    if isinstance(tables, str):
        tables = [tables]
    chosen = set(cfg.table_names if tables is None else tables)
    unknown = sorted(chosen - set(cfg.table_names))
    if unknown:
        raise UnknownTableError(unknown, cfg.table_names)
    new_tables = [
        t.model_copy(update={"data_type": dtype})
        if t.name in chosen and t.data_type != dtype
        else t
        for t in cfg.tables
    ]
    return cfg.model_copy(update={"tables": new_tables})


def binary_unit(n: float) -> tuple[str, int]:
    """Largest binary unit not above ``abs(n)``: ``("GiB", 2**30)``; ``("B", 1)`` under 1 KiB."""
    size = abs(float(n))
    power = 0
    while power + 1 < len(_UNITS) and size >= 1024 ** (power + 1):
        power += 1
    return _UNITS[power], 1024**power


def human_bytes(n: float, digits: int = 2) -> str:
    """``"1.50 GiB"``: binary units, for display only (data keeps exact bytes)."""
    unit, scale = binary_unit(n)
    if scale == 1:
        return f"{int(n)} B"
    return f"{n / scale:.{digits}f} {unit}"


def _short(value: float) -> str:
    """``31.2``, ``320`` (no trailing ``.0``)."""
    text = f"{value:.1f}"
    return text.removesuffix(".0")


def compact_bytes(n: float) -> str:
    """``"33.8 GiB"``, ``"16 GiB"``: one decimal, no trailing ``.0`` (for messages)."""
    unit, scale = binary_unit(n)
    if scale == 1:
        return f"{int(n)} B"
    return f"{_short(n / scale)} {unit}"


@dataclass(frozen=True)
class GpuFit:
    """Whether the tables' bytes fit on ``gpus`` devices of ``hbm_bytes`` each.

    A byte-count bound, not a placement: `embviz.plan` runs torchrec's planner, which also needs
    room for input/output buffers and keeps `PLANNER_RESERVED_FRACTION` of each device for the
    dense model.
    """

    needed_bytes: int
    available_bytes: int
    gpus: int
    hbm_bytes: int
    fits: bool
    min_gpus: int
    largest_table: str
    largest_table_bytes: int
    message: str


def gpu_fit(memory_frame: pd.DataFrame, gpus: int, hbm_gib: float) -> GpuFit:
    """Compare the tables' total bytes with ``gpus`` x ``hbm_gib`` GiB (pure arithmetic).

    Parameters
    ----------
    memory_frame : pandas.DataFrame
        From `memory_table` (its ``total_bytes`` column).
    gpus : int
        Number of devices, >= 1.
    hbm_gib : float
        Memory of each device in GiB (binary), > 0.

    Returns
    -------
    GpuFit
        ``min_gpus`` is the byte lower bound ``ceil(needed / hbm)``: the planner may need more.
        A table larger than one device still fits when it is row- or column-wise sharded; the
        message says so.
    """
    gpus = integer("gpus", gpus)
    hbm_gib = number("hbm_gib", hbm_gib, strict=True)
    if "total_bytes" not in memory_frame.columns or memory_frame.empty:
        raise ArgumentError("memory_frame", "must be a non-empty frame from memory_table")
    hbm_bytes = round(hbm_gib * 1024**3)
    table_bytes = memory_frame["total_bytes"]
    needed = int(table_bytes.sum())
    available = gpus * hbm_bytes
    largest = str(table_bytes.idxmax())
    largest_bytes = int(table_bytes.max())
    min_gpus = max(1, math.ceil(needed / hbm_bytes))
    fits = needed <= available

    unit, scale = binary_unit(available)
    device = f"{_short(hbm_gib)} GiB"
    if fits:
        message = (
            f"fits on {gpus} x {device} ({_short(needed / scale)} of "
            f"{_short(available / scale)} {unit})"
        )
        if needed > (1 - PLANNER_RESERVED_FRACTION) * available:
            message += (
                f"; tight: torchrec's planner keeps {PLANNER_RESERVED_FRACTION:.0%} of each GPU "
                "for the dense model, check with embviz.plan"
            )
    else:
        message = (
            f"needs at least {min_gpus} GPUs of {device}: {compact_bytes(needed)} "
            f"against {compact_bytes(available)}"
        )
    if largest_bytes > hbm_bytes:
        message += (
            f"; table {largest!r} ({human_bytes(largest_bytes, 1)}) is larger than one GPU "
            "and fits only if row- or column-wise sharded"
        )
    return GpuFit(
        needed_bytes=needed,
        available_bytes=available,
        gpus=gpus,
        hbm_bytes=hbm_bytes,
        fits=fits,
        min_gpus=min_gpus,
        largest_table=largest,
        largest_table_bytes=largest_bytes,
        message=message,
    )
