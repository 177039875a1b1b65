"""Bytes of tables served from torchrec's quantized ``EmbeddingBagCollection`` (pure arithmetic).

Models are served from ``torchrec.quant.embedding_modules.EmbeddingBagCollection`` (what
``torchrec.inference.modules.quantize_embeddings`` makes of a trained collection), whose tables
live in one FBGEMM ``IntNBitTableBatchedEmbeddingBagsCodegen`` buffer. With torchrec's defaults
(``row_alignment=16``, FBGEMM's ``cacheline_alignment=True``) a table of R rows and D columns in
a serving dtype takes, measured on the CPU with torchrec 1.8.0 / fbgemm-gpu-cpu 1.8.0 and checked
by ``tests/test_serving_measured.py`` at every width from 1 to 1,000:

- data bytes per row ``D * bits / 8`` (32, 16, 8, 4 or 2 bits; int4 packs two values a byte,
  int2 four);
- int8/int4/int2 rows start with a 4-byte fp16 scale and fp16 bias (``x = q * scale + bias``);
  fp32 and fp16 rows have none;
- each row is padded with zeros to a multiple of 16 bytes (`ROW_ALIGNMENT`): a 64-dim int4 row
  takes 4 + 32 = 36 bytes, stored in 48;
- each table's share of the buffer, ``R * row bytes``, is rounded up to 128 bytes
  (`TABLE_ALIGNMENT`); tables of one collection are laid out one after the other, so the
  bytes of a collection are the sum over its tables.

Widths: FBGEMM's row-wise quantization (``FloatOrHalfToFusedNBitRowwiseQuantizedSBHalf``, what
torchrec uses to quantize a trained table) writes the fp16 scale and bias after the packed data,
which must take an even number of bytes, so a trained table needs D a multiple of 2 for int8, 4
for int4 and 8 for int2 (`SERVING_WIDTH_MULTIPLE`). The quantized collection's own constructor
is looser (it accepts D even for int4 and a multiple of 4 for int2), but a trained table of such
a width cannot be quantized into it. fp32 and fp16 take any width.

torchrec's planner sizes a quantized table differently (``compute_storage_usage`` with
``StorageUsageType.BASE_QUANT``): the bytes of the state-dict weight, which is the padded row
(scale and bias included), plus ``4 * R`` more for a scale and bias, and no 128-byte rounding.
So it counts the scale and bias twice (and counts them for fp32/fp16 rows, which have none):
``R * row bytes + 4 * R``, checked against torchrec's estimator in the tests.

Nothing here imports torch or torchrec.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from embviz.config import LargeEmbeddingsConfig, Mode
from embviz.errors import EmbvizError

if TYPE_CHECKING:
    from embviz.memory import AdagradState, OptimizerState

__all__ = [
    "PLANNER_SCALE_BIAS_BYTES",
    "ROW_ALIGNMENT",
    "SCALE_BIAS_BYTES",
    "SERVING_DTYPES",
    "SERVING_WIDTH_MULTIPLE",
    "TABLE_ALIGNMENT",
    "ServingDtype",
    "ServingFit",
    "ServingWidthError",
    "parse_serving_dtype",
    "planner_serving_bytes",
    "serving_bytes",
    "serving_dtypes",
    "serving_fit",
    "serving_memory_table",
    "serving_row_bytes",
    "serving_table_bytes",
]

ServingDtype = Literal["fp32", "fp16", "int8", "int4", "int2"]

#: The dtypes a table can be served in, widest first.
SERVING_DTYPES: tuple[str, ...] = ("fp32", "fp16", "int8", "int4", "int2")
_BITS = {"fp32": 32, "fp16": 16, "int8": 8, "int4": 4, "int2": 2}
_QUANTIZED = frozenset({"int8", "int4", "int2"})

#: fp16 scale + fp16 bias at the start of every int8/int4/int2 row (FBGEMM's
#: ``DEFAULT_SCALE_BIAS_SIZE_IN_BYTES``).
SCALE_BIAS_BYTES = 4
#: torchrec's ``DEFAULT_ROW_ALIGNMENT``: rows are padded to a multiple of this many bytes.
ROW_ALIGNMENT = 16
#: FBGEMM's ``cacheline_alignment``: each table's bytes are rounded up to this.
TABLE_ALIGNMENT = 128
#: What torchrec's planner adds per row for a scale and bias (``BASE_QUANT`` storage).
PLANNER_SCALE_BIAS_BYTES = 4
#: A trained table can be quantized to a dtype only if its width is a multiple of this.
SERVING_WIDTH_MULTIPLE: dict[str, int] = {"fp32": 1, "fp16": 1, "int8": 2, "int4": 4, "int2": 8}

_PLANNER_NOTE_QUANTIZED = (
    "planner counts the state-dict row (scale and bias included) plus 4 bytes a row for a "
    "scale and bias again, and does not round the table to 128 bytes"
)
_PLANNER_NOTE_FLOAT = (
    "planner adds 4 bytes a row for a scale and bias, which fp32/fp16 rows do not have, and "
    "does not round the table to 128 bytes"
)


class ServingWidthError(EmbvizError, ValueError):
    """A table whose width FBGEMM cannot quantize to a serving dtype.

    Attributes
    ----------
    table : str
        The table's name.
    embedding_dim : int
        Its width.
    dtype : str
        The serving dtype asked for.
    multiple : int
        The width must be a multiple of this (`SERVING_WIDTH_MULTIPLE`).
    """

    def __init__(self, table: str, embedding_dim: int, dtype: str):
        self.table = table
        self.embedding_dim = int(embedding_dim)
        self.dtype = dtype
        self.multiple = SERVING_WIDTH_MULTIPLE[dtype]
        per_byte = 8 // _BITS[dtype]
        packed = f"{per_byte} values a byte, then " if per_byte > 1 else "one byte a value, then "
        super().__init__(
            f"table {table!r}: embedding_dim {self.embedding_dim} cannot be served as {dtype}: "
            f"{dtype} needs embedding_dim % {self.multiple} == 0 (FBGEMM's row-wise quantization "
            f"packs {packed}the fp16 scale and bias, which must start at an even byte)"
        )


def _argument_error(argument: str, message: str) -> EmbvizError:
    from embviz.errors import ArgumentError

    return ArgumentError(argument, message)


def _as_dtype(value: object, argument: str = "serving_dtype") -> str:
    value = getattr(value, "value", value)  # a DataType member
    if not isinstance(value, str) or value not in _BITS:
        shown = ", ".join(repr(d) for d in SERVING_DTYPES)
        raise _argument_error(argument, f"must be one of {shown}, got {value!r}")
    return value


def _dtype_arrays(names: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bits, scale/bias bytes) for each dtype name of an object array."""
    checked = [_as_dtype(n, "dtype") for n in names.ravel()]
    bits = np.fromiter((_BITS[n] for n in checked), dtype=np.int64, count=len(checked))
    extra = np.fromiter(
        (SCALE_BIAS_BYTES if n in _QUANTIZED else 0 for n in checked),
        dtype=np.int64,
        count=len(checked),
    )
    return bits.reshape(names.shape), extra.reshape(names.shape)


def _round_up(value: np.ndarray, multiple: int) -> np.ndarray:
    return -(-value // multiple) * multiple


def serving_row_bytes(embedding_dim: ArrayLike, dtype: ArrayLike) -> np.ndarray:
    """Bytes one row takes in the quantized collection: data, scale and bias, padding to 16.

    Parameters
    ----------
    embedding_dim : array_like of int
        Table widths.
    dtype : str or array_like of str
        Serving dtypes (`SERVING_DTYPES`), one or one per width.

    Returns
    -------
    numpy.ndarray
        int64, ``round_up(D * bits / 8 + scale_bias, 16)``. Widths are not checked here (see
        `SERVING_WIDTH_MULTIPLE`); a width the dtype cannot pack is rounded down to whole bytes
        as FBGEMM's own arithmetic does.
    """
    dims = np.asarray(embedding_dim, dtype=np.int64)
    names = np.asarray(dtype, dtype=object)
    if names.ndim == 0:  # one dtype, checked once
        bits, extra = _dtype_arrays(names.reshape(1))
        bits, extra = bits[0], extra[0]
    else:
        bits, extra = _dtype_arrays(names)
    # floor(D * bits / 8) without the product: D * bits passes int64 for widths whose bytes
    # still fit (an fp32 row is only 4 * D).
    whole = np.where(bits >= 8, bits // 8, 1)
    packed = np.where(bits >= 8, 1, 8 // np.maximum(bits, 1))
    data = dims * whole // packed
    return np.asarray(_round_up(data + extra, ROW_ALIGNMENT), dtype=np.int64)


def serving_table_bytes(
    num_embeddings: ArrayLike, embedding_dim: ArrayLike, dtype: ArrayLike
) -> np.ndarray:
    """Exact bytes of tables in the quantized collection (their share of FBGEMM's buffer).

    ``round_up(R * serving_row_bytes(D, dtype), 128)``, int64, broadcast over the arguments.
    """
    rows = np.asarray(num_embeddings, dtype=np.int64)
    return _round_up(rows * serving_row_bytes(embedding_dim, dtype), TABLE_ALIGNMENT)


def planner_serving_bytes(
    num_embeddings: ArrayLike, embedding_dim: ArrayLike, dtype: ArrayLike
) -> np.ndarray:
    """torchrec's planner estimate of quantized tables: ``R * row bytes + 4 * R`` (int64).

    What ``EmbeddingStorageEstimator(is_inference=True)`` gives a table-wise ``quant`` shard of
    a quantized collection (the padded state-dict row plus `PLANNER_SCALE_BIAS_BYTES` a row).
    """
    rows = np.asarray(num_embeddings, dtype=np.int64)
    return rows * serving_row_bytes(embedding_dim, dtype) + rows * PLANNER_SCALE_BIAS_BYTES


def _width_ok(dims: np.ndarray, dtypes: np.ndarray) -> np.ndarray:
    multiple = np.fromiter(
        (SERVING_WIDTH_MULTIPLE[d] for d in dtypes), dtype=np.int64, count=len(dtypes)
    )
    return dims % multiple == 0


def serving_dtypes(
    cfg: LargeEmbeddingsConfig, serving_dtype: str | Mapping[str, str]
) -> dict[str, str]:
    """The serving dtype of every table, checked: widths, names and dtypes.

    Parameters
    ----------
    cfg : LargeEmbeddingsConfig
        The tables.
    serving_dtype : str or mapping of str to str
        One of `SERVING_DTYPES` for every table, or table name -> dtype; tables a mapping
        leaves out are served in their own ``data_type`` (fp32 or fp16).

    Returns
    -------
    dict
        Table name -> serving dtype, in config order.

    Raises
    ------
    embviz.ArgumentError
        An unknown dtype (the message lists `SERVING_DTYPES`), or a ``serving_dtype`` that is
        neither a string nor a mapping.
    UnknownTableError
        Names in the mapping that are not tables of the config (the message lists them).
    ServingWidthError
        A table whose width FBGEMM cannot quantize to its dtype.
    """
    from embviz.memory import UnknownTableError

    if isinstance(serving_dtype, Mapping):
        chosen = {str(k): _as_dtype(v) for k, v in serving_dtype.items()}
        unknown = sorted(set(chosen) - set(cfg.table_names))
        if unknown:
            raise UnknownTableError(unknown, cfg.table_names)
        result = {t.name: chosen.get(t.name, t.data_type.value) for t in cfg.tables}
    elif isinstance(serving_dtype, str):  # DataType members are str too
        dtype = _as_dtype(serving_dtype)
        result = {name: dtype for name in cfg.table_names}
    else:
        raise _argument_error(
            "serving_dtype",
            f"must be one of {', '.join(repr(d) for d in SERVING_DTYPES)} or a mapping of "
            f"table name to one of them, got {type(serving_dtype).__name__}",
        )
    for table in cfg.tables:
        dtype = result[table.name]
        if table.embedding_dim % SERVING_WIDTH_MULTIPLE[dtype]:
            raise ServingWidthError(table.name, table.embedding_dim, dtype)
    return result


def serving_memory_table(
    cfg: LargeEmbeddingsConfig,
    serving_dtype: str | Mapping[str, str],
    optimizer_state: OptimizerState = "fused",
    mode: Mode | str = Mode.INFERENCE,
    *,
    adagrad: AdagradState = "exact",
) -> pd.DataFrame:
    """`embviz.memory_table` in INFERENCE mode, served from the quantized collection.

    What ``memory_table(cfg, mode="inference", serving_dtype=...)`` returns; see there.
    """
    from embviz.memory import memory_table

    try:
        inference = Mode(mode) is Mode.INFERENCE
    except ValueError:
        inference = True  # memory_table below names the modes
    if not inference:
        raise _argument_error(
            "serving_dtype",
            "applies to mode 'inference' only (a quantized collection serves, it does not "
            f"train), got mode {getattr(mode, 'value', mode)!r}",
        )
    frame = memory_table(cfg, optimizer_state, mode, adagrad=adagrad)
    dtypes = serving_dtypes(cfg, serving_dtype)
    rows = frame["num_embeddings"].to_numpy(dtype=np.int64)
    dims = frame["embedding_dim"].to_numpy(dtype=np.int64)
    chosen = np.array([dtypes[name] for name in frame.index], dtype=object)

    unquantized = frame["weight_bytes"].to_numpy(dtype=np.int64)
    weights = serving_table_bytes(rows, dims, chosen)
    planner = planner_serving_bytes(rows, dims, chosen)
    position = frame.columns.get_loc("data_type") + 1
    frame.insert(position, "serving_dtype", chosen.astype(str))
    frame.insert(position + 1, "row_bytes", serving_row_bytes(dims, chosen))
    frame["weight_bytes"] = weights
    frame["optimizer_bytes"] = np.zeros(len(frame), dtype=np.int64)
    frame["total_bytes"] = weights
    frame["fp32_total_bytes"] = serving_table_bytes(rows, dims, "fp32")
    frame["fp16_total_bytes"] = serving_table_bytes(rows, dims, "fp16")
    frame.insert(frame.columns.get_loc("fp16_total_bytes") + 1, "unquantized_bytes", unquantized)
    frame["planner_bytes"] = planner
    quantized = np.isin(chosen, list(_QUANTIZED))
    note = np.where(quantized, _PLANNER_NOTE_QUANTIZED, _PLANNER_NOTE_FLOAT)
    frame["planner_note"] = np.where(planner != weights, note, "").astype(str)
    return frame


def serving_bytes(cfg: LargeEmbeddingsConfig) -> pd.DataFrame:
    """Bytes of every table in each serving dtype, beside its unquantized inference bytes.

    Parameters
    ----------
    cfg : LargeEmbeddingsConfig
        The tables.

    Returns
    -------
    pandas.DataFrame
        Indexed by table name (``"table"``), in config order: ``num_embeddings``,
        ``embedding_dim``, ``data_type``, ``unquantized_bytes`` (the unquantized collection in
        the table's own dtype, ``R*D*e``), then ``fp32_bytes``, ``fp16_bytes``, ``int8_bytes``,
        ``int4_bytes``, ``int2_bytes``: the exact bytes in the quantized collection (nullable
        ``Int64``, ``<NA>`` where the width cannot be quantized to that dtype), and ``refused``:
        the dtypes refused and why, ``""`` where none is.
    """
    from embviz.memory import memory_table

    frame = memory_table(cfg, "fused", Mode.INFERENCE)
    rows = frame["num_embeddings"].to_numpy(dtype=np.int64)
    dims = frame["embedding_dim"].to_numpy(dtype=np.int64)
    out = pd.DataFrame(
        {
            "num_embeddings": rows,
            "embedding_dim": dims,
            "data_type": frame["data_type"].to_numpy(),
            "unquantized_bytes": frame["weight_bytes"].to_numpy(dtype=np.int64),
        },
        index=frame.index,
    )
    refused = [[] for _ in range(len(out))]
    for dtype in SERVING_DTYPES:
        ok = _width_ok(dims, np.full(len(dims), dtype, dtype=object))
        values = pd.array(serving_table_bytes(rows, dims, dtype), dtype="Int64")
        values[~ok] = pd.NA
        out[f"{dtype}_bytes"] = values
        for i in np.flatnonzero(~ok):
            refused[i].append(dtype)
    out["refused"] = [
        "; ".join(f"{d} needs embedding_dim % {SERVING_WIDTH_MULTIPLE[d]} == 0" for d in names)
        for names in refused
    ]
    return out


def parse_serving_dtype(
    values: Iterable[str], cfg: LargeEmbeddingsConfig
) -> str | dict[str, str] | None:
    """``serving_dtype`` from ``DTYPE`` and ``TABLE=DTYPE`` strings (the CLI's form).

    ``["int8"]`` gives ``"int8"``; ``["user=int4"]`` gives ``{"user": "int4"}`` (other tables
    keep their own ``data_type``); ``["user=int4", "int8"]`` gives every table ``int8`` but
    ``user``. No strings give None.

    Raises
    ------
    embviz.ArgumentError
        An unknown dtype, two defaults, a table named twice, or a malformed string.
    UnknownTableError
        A table the config does not have.
    """
    from embviz.memory import UnknownTableError

    default: str | None = None
    per_table: dict[str, str] = {}
    for text in values:
        name, sep, value = str(text).rpartition("=")
        if sep and not (name and value):
            raise _argument_error(
                "serving_dtype", f"expected DTYPE or TABLE=DTYPE, got {str(text)!r}"
            )
        dtype = _as_dtype(value)
        if not sep:
            if default is not None:
                raise _argument_error(
                    "serving_dtype",
                    f"one default dtype at most (TABLE=DTYPE for the others), got "
                    f"{default!r} and {dtype!r}",
                )
            default = dtype
        elif name in per_table:
            raise _argument_error("serving_dtype", f"table {name!r} is given twice")
        else:
            per_table[name] = dtype
    unknown = sorted(set(per_table) - set(cfg.table_names))
    if unknown:
        raise UnknownTableError(unknown, cfg.table_names)
    if not per_table:
        return default
    if default is None:
        return per_table
    return {name: per_table.get(name, default) for name in cfg.table_names}


@dataclass(frozen=True)
class ServingFit:
    """Whether served tables fit in the memory of ``hosts`` serving hosts (a byte-count bound).

    The tables are assumed split over the hosts by whole tables or shards; what else a host
    runs (the dense model, request buffers) is not counted.
    """

    needed_bytes: int
    available_bytes: int
    hosts: int
    host_bytes: int
    fits: bool
    min_hosts: int
    largest_table: str
    largest_table_bytes: int
    message: str


def serving_fit(frame: pd.DataFrame, hosts: int, host_gib: float) -> ServingFit:
    """Compare served tables' bytes with ``hosts`` hosts of ``host_gib`` GiB each.

    Parameters
    ----------
    frame : pandas.DataFrame
        From ``memory_table(cfg, mode="inference", serving_dtype=...)`` (its ``total_bytes``).
    hosts : int
        Serving hosts, >= 1.
    host_gib : float
        Memory of each host for the tables, GiB (binary), > 0.

    Returns
    -------
    ServingFit
        ``min_hosts`` is ``ceil(needed / host bytes)``; the message says whether the tables fit
        and, where a table is larger than one host, that it must be sharded.

    Raises
    ------
    embviz.ArgumentError
        ``hosts`` not an integer >= 1, ``host_gib`` not a number > 0, or a frame without
        ``total_bytes``.
    """
    from embviz.arguments import integer, number
    from embviz.memory import compact_bytes, human_bytes

    hosts = integer("hosts", hosts)
    host_gib = number("host_gib", host_gib, strict=True)
    if "total_bytes" not in frame.columns or frame.empty:
        raise _argument_error("frame", "must be a non-empty frame from memory_table")
    host_bytes = round(host_gib * 1024**3)
    needed = int(frame["total_bytes"].sum())
    available = hosts * host_bytes
    largest = str(frame["total_bytes"].idxmax())
    largest_bytes = int(frame["total_bytes"].max())
    min_hosts = max(1, math.ceil(needed / host_bytes))
    fits = needed <= available
    size = f"{host_gib:g} GiB"
    if fits:
        message = (
            f"fits on {hosts} serving host{'s' if hosts > 1 else ''} of {size}: "
            f"{compact_bytes(needed)} of {compact_bytes(available)}"
        )
    else:
        message = (
            f"needs at least {min_hosts} serving hosts of {size}: {compact_bytes(needed)} "
            f"against {compact_bytes(available)}"
        )
    if largest_bytes > host_bytes:
        message += (
            f"; table {largest!r} ({human_bytes(largest_bytes, 1)}) is larger than one host "
            "and must be sharded"
        )
    return ServingFit(
        needed_bytes=needed,
        available_bytes=available,
        hosts=hosts,
        host_bytes=host_bytes,
        fits=fits,
        min_hosts=min_hosts,
        largest_table=largest,
        largest_table_bytes=largest_bytes,
        message=message,
    )
