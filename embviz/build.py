"""Build a config's `EmbeddingBagCollection` on a device, after checking it fits, and measure it.

The collection is built the way the-algorithm-ml's ``LargeEmbeddings`` builds it (one feature per
table, sum pooling, the table's dtype; fp16 for every non-fp32 dtype, as torchrec's unsharded
collection does), then each table's weight is materialised on the device one table at a time:
torchrec's own initialisation (uniform in ``+-sqrt(1 / num_embeddings)``) or, for a table with
``pretrained``, the tensor read from its torchsnapshot. Each table's optimizer is then applied in
backward with torchrec's ``apply_optimizer_in_backward``, as TwHIN does (``sgd``, ``adam``,
``adagrad`` become ``torch.optim.SGD``, ``Adam``, ``Adagrad`` with the config's settings;
learning-rate schedules are not applied, as TwHIN leaves its scheduler unset).

Everything that needs torch or torchrec is imported inside the functions.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from embviz.config import DataType, EmbeddingBagConfig, LargeEmbeddingsConfig, Mode
from embviz.errors import EmbvizError

if TYPE_CHECKING:
    import pandas as pd
    import torch
    import torchrec

__all__ = [
    "BuildCheck",
    "BuildError",
    "BuildRefused",
    "BuildWarning",
    "Preflight",
    "build_and_measure",
    "build_collection",
    "measure_collection",
    "optimizer_for",
    "predicted_vs_measured",
    "preflight",
    "resolve_device",
    "scale_config",
]

# Share of the free memory a build may take: the rest is left for the process, the batch,
# the CUDA context and the allocator's rounding.
USABLE_FRACTION = 0.9

# How many of the largest tables a refusal lists.
_LARGEST_SHOWN = 5


class BuildError(EmbvizError, ValueError):
    """A build that cannot be done as asked: unknown device, no CUDA, bad ``scale``."""


class BuildRefused(EmbvizError, MemoryError):
    """The collection would not fit in the target device's free memory.

    Attributes
    ----------
    device : str
        Where the build was going to happen.
    needed_bytes, free_bytes, usable_bytes : int
        What the tables need, what the device has free, and the share of it a build may take
        (`USABLE_FRACTION`).
    tables : pandas.DataFrame
        The prediction per table (`embviz.memory.memory_table` columns), largest first.
    """

    def __init__(
        self,
        message: str,
        *,
        device: str,
        needed_bytes: int,
        free_bytes: int,
        usable_bytes: int,
        tables: pd.DataFrame,
    ):
        super().__init__(message)
        self.device = device
        self.needed_bytes = needed_bytes
        self.free_bytes = free_bytes
        self.usable_bytes = usable_bytes
        self.tables = tables


class BuildWarning(UserWarning):
    """A build that runs but does something the user should know (NaN trap, pretrained skipped)."""


@dataclass(frozen=True)
class Preflight:
    """What a build needs against what the device has (see `preflight`)."""

    device: str
    needed_bytes: int
    free_bytes: int | None  # None on "meta": nothing is allocated
    usable_bytes: int | None
    tables: pd.DataFrame

    @property
    def fits(self) -> bool:
        """True when the build may go ahead (always on ``meta``)."""
        return self.usable_bytes is None or self.needed_bytes <= self.usable_bytes


@dataclass(frozen=True)
class _TableRecord:
    seconds: float
    allocated_bytes: int | None  # CUDA memory_allocated delta of the weight; None elsewhere
    # CUDA delta of creating the table's optimizer: torch's Adagrad allocates its state then.
    optimizer_allocated_bytes: int | None = None


# What build_collection saw per table (time, CUDA allocation), kept for measure_collection without
# holding the collection alive.
_BUILD_RECORDS: weakref.WeakKeyDictionary[Any, dict[str, _TableRecord]] = (
    weakref.WeakKeyDictionary()
)


# --------------------------------------------------------------------------- devices, scale


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device a build goes to.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"`` (CUDA when available, else CPU), ``"cuda"``, ``"cuda:N"``, ``"cpu"`` or
        ``"meta"``.

    Raises
    ------
    BuildError
        An unknown device, CUDA asked for without CUDA, or a CUDA index that does not exist.
    """
    import torch

    text = str(device)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(text)
    except (RuntimeError, ValueError):
        raise BuildError(
            f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'meta', got {text!r}"
        ) from None
    if resolved.type in ("cpu", "meta"):
        return torch.device(resolved.type)
    if resolved.type != "cuda":
        raise BuildError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'meta', got {text!r}")
    if not torch.cuda.is_available():
        raise BuildError(
            f"device {text!r}: CUDA is not available here (torch {torch.__version__}); "
            "use 'cpu', or 'meta' to build without allocating"
        )
    count = torch.cuda.device_count()
    index = torch.cuda.current_device() if resolved.index is None else resolved.index
    if index >= count:
        raise BuildError(
            f"device {text!r}: there are {count} CUDA devices (cuda:0..cuda:{count - 1})"
        )
    return torch.device("cuda", index)


def scale_config(cfg: LargeEmbeddingsConfig, scale: float | None) -> LargeEmbeddingsConfig:
    """A copy of ``cfg`` with every table's rows multiplied by ``scale`` (at least one row).

    ``round(num_embeddings * scale)``, so a demo of a huge config keeps its shape. ``None`` or 1
    returns ``cfg`` itself.

    Raises
    ------
    BuildError
        When ``scale`` is not a number in ``(0, 1]``.
    """
    if scale is None:
        return cfg
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 1:
        raise BuildError(f"scale must be a number in (0, 1], got {scale!r}")
    if scale == 1:
        return cfg
    tables = [
        t.model_copy(update={"num_embeddings": max(1, round(t.num_embeddings * scale))})
        for t in cfg.tables
    ]
    return cfg.model_copy(update={"tables": tables})


# --------------------------------------------------------------------------- preflight


def _free_bytes(device: torch.device) -> int:
    import torch

    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


def preflight(
    cfg: LargeEmbeddingsConfig,
    device: str | torch.device = "auto",
    *,
    apply_optimizers: bool = True,
    scale: float | None = None,
    usable_fraction: float = USABLE_FRACTION,
) -> Preflight:
    """Check that a build of ``cfg`` fits the free memory of ``device``; refuse it if not.

    The need is `embviz.memory.memory_table` with ``optimizer_state="torch"`` (what an unsharded
    collection with torch.optim in backward allocates: weights, plus the optimizer state the first
    step creates when ``apply_optimizers``). The free memory is ``torch.cuda.mem_get_info`` on a
    GPU and the available RAM (psutil) on the CPU; a build may take ``usable_fraction`` of it.

    Parameters
    ----------
    cfg : LargeEmbeddingsConfig
        The tables.
    device : str or torch.device
        As `resolve_device` takes. ``"meta"`` allocates nothing and is never refused.
    apply_optimizers : bool
        Count the optimizer state (TRAIN) or the weights only.
    scale : float, optional
        As `build_collection` takes.
    usable_fraction : float
        Share of the free memory the build may use.

    Returns
    -------
    Preflight

    Raises
    ------
    BuildRefused
        With the needed and free bytes, the largest tables, and what to do instead.
    """
    from embviz.memory import memory_table

    resolved = resolve_device(device)
    cfg = scale_config(cfg, scale)
    mode = Mode.TRAIN if apply_optimizers else Mode.INFERENCE
    tables = memory_table(cfg, "torch", mode)[["weight_bytes", "optimizer_bytes", "total_bytes"]]
    tables = tables.sort_values("total_bytes", ascending=False, kind="stable")
    needed = int(tables["total_bytes"].sum())
    if resolved.type == "meta":
        return Preflight(str(resolved), needed, None, None, tables)
    free = _free_bytes(resolved)
    usable = int(free * usable_fraction)
    result = Preflight(str(resolved), needed, free, usable, tables)
    if not result.fits:
        raise BuildRefused(
            _refusal_message(cfg, resolved, needed, free, usable, usable_fraction, tables),
            device=str(resolved),
            needed_bytes=needed,
            free_bytes=free,
            usable_bytes=usable,
            tables=tables,
        )
    return result


def _refusal_message(
    cfg: LargeEmbeddingsConfig,
    device: torch.device,
    needed: int,
    free: int,
    usable: int,
    fraction: float,
    tables: pd.DataFrame,
) -> str:
    from embviz.memory import human_bytes as hb

    where = "RAM available" if device.type == "cpu" else "free on the GPU"
    lines = [
        f"refusing to build on {device}: the tables need {hb(needed)} "
        f"({needed:,} bytes) but {hb(free)} is {where} (a build may use {fraction:.0%}: "
        f"{hb(usable)})",
        "largest tables:",
    ]
    for name, row in tables.head(_LARGEST_SHOWN).iterrows():
        lines.append(
            f"  {name}: {hb(row['total_bytes'])} (weights {hb(row['weight_bytes'])}, "
            f"optimizer state {hb(row['optimizer_bytes'])})"
        )
    if len(tables) > _LARGEST_SHOWN:
        rest = int(tables["total_bytes"].iloc[_LARGEST_SHOWN:].sum())
        lines.append(f"  ... {len(tables) - _LARGEST_SHOWN} more tables: {hb(rest)}")
    fit_scale = usable / needed if needed else 1.0
    fp32_big = [
        str(n)
        for n in tables.index[:_LARGEST_SHOWN]
        if cfg.table(str(n)).data_type is DataType.FP32
    ]
    lines.append("what to do instead:")
    lines.append("  build on device='meta' (nothing is allocated) to inspect the collection")
    lines.append(
        f"  scale={_round_down(fit_scale)} (or fewer num_embeddings) for a smaller copy of "
        "every table"
    )
    if fp32_big:
        lines.append(f"  data_type fp16 for large fp32 tables ({', '.join(fp32_big)}) halves them")
    lines.append(
        "  shard across more GPUs: embviz.plan(cfg, gpus=N, hbm_gib=...) and "
        "embviz build CONFIG --nproc N"
    )
    return "\n".join(lines)


def _round_down(value: float) -> str:
    """A short number not above ``value`` (0.0123 -> 0.01), for advice."""
    if value <= 0:
        return "0.001"
    exponent = math.floor(math.log10(value))
    step = 10.0**exponent
    return f"{math.floor(value / step) * step:.{max(0, -exponent)}f}"


# --------------------------------------------------------------------------- optimizers


def optimizer_for(table: EmbeddingBagConfig) -> tuple[type[torch.optim.Optimizer], dict[str, Any]]:
    """torch.optim class and keyword arguments of a table's optimizer, as TwHIN passes them."""
    import torch

    settings = table.optimizer.settings
    name = table.optimizer.name
    if name == "sgd":
        return torch.optim.SGD, {"lr": settings.lr, "momentum": settings.momentum}
    if name == "adam":
        return torch.optim.Adam, {
            "lr": settings.lr,
            "betas": tuple(settings.betas),
            "eps": settings.eps,
        }
    return torch.optim.Adagrad, {"lr": settings.lr, "eps": settings.eps}


def _eps_vanishes(optimizer: str, eps: float, dtype: Any) -> bool:
    """True when torch's Adam/Adagrad would divide 0 by 0 for a row without gradient.

    They divide by ``sqrt(state) + eps`` in the weight's dtype: with ``eps`` 0, or too small to
    be represented in fp16 (below about 3e-8), a row whose state is 0 gets 0/0.
    """
    import torch

    if optimizer not in ("adam", "adagrad", "Adam", "Adagrad"):
        return False
    return float(torch.tensor(eps, dtype=dtype)) == 0.0


def _nan_on_zero_grad(table: EmbeddingBagConfig) -> bool:
    import torch

    dtype = torch.float32 if table.data_type is DataType.FP32 else torch.float16
    eps = getattr(table.optimizer.settings, "eps", 1.0)
    return _eps_vanishes(table.optimizer.name, eps, dtype)


def _apply_optimizers(
    ebc: torchrec.EmbeddingBagCollection, cfg: LargeEmbeddingsConfig, *, unsharded: bool
) -> dict[str, int | None]:
    """Apply each table's optimizer in backward; return what each allocated on CUDA.

    torch's Adagrad allocates its ``sum`` state when it is created, Adam at its first step; the
    deltas are None off CUDA.
    """
    from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward

    # On meta the collection is a template for sharding, where FBGEMM's kernels take over.
    nan_tables = [t.name for t in cfg.tables if _nan_on_zero_grad(t)] if unsharded else []
    if nan_tables:
        names = ", ".join(repr(n) for n in nan_tables)
        warnings.warn(
            f"tables {names}: torch.optim Adam/Adagrad with "
            "eps=0 (or, for fp16 tables, an eps below fp16's smallest value, about 3e-8) turns "
            "every row that gets no gradient in a step into NaN in an unsharded collection: its "
            "gradients are dense, so those rows divide 0 by 0. Sharded, FBGEMM's fused kernels "
            "keep fp32 state and update only the rows in the batch, so the config is fine there. "
            "To train unsharded, raise optimizer.<adam|adagrad>.eps (e.g. 1e-8 for fp32, 1e-4 for "
            "fp16).",
            BuildWarning,
            stacklevel=3,
        )
    deltas: dict[str, int | None] = {}
    for table in cfg.tables:
        optimizer_class, kwargs = optimizer_for(table)
        weight = ebc.embedding_bags[table.name].weight
        before = _allocated(weight.device)
        with warnings.catch_warnings():
            # torchrec >= 1.2 marks its wrapper deprecated in favour of torch's private
            # _apply_optimizer_in_backward; TwHIN calls torchrec's, and so do we.
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            apply_optimizer_in_backward(
                optimizer_class=optimizer_class,
                params=[weight],
                optimizer_kwargs=kwargs,
            )
        after = _allocated(weight.device)
        deltas[table.name] = None if before is None or after is None else after - before
    return deltas


# --------------------------------------------------------------------------- pretrained


def _check_pretrained(cfg: LargeEmbeddingsConfig, scaled: bool) -> dict[str, tuple[str, str]]:
    """Check every pretrained table against its snapshot before anything is allocated.

    Returns ``{table: (snapshot path, name in the snapshot)}`` of the tables to load; raises one
    `SnapshotError` listing every problem, so nothing is half-loaded.
    """
    from embviz.snapshots import SnapshotError, table_info

    problems: list[str] = []
    to_load: dict[str, tuple[str, str]] = {}
    skipped: list[str] = []
    for table in cfg.tables:
        if table.pretrained is None:
            continue
        uri = table.pretrained.embedding_snapshot_uri
        emb_name = table.pretrained.emb_name
        try:
            _, shape, dtype = table_info(uri, emb_name)
        except SnapshotError as exc:
            problems.append(f"table {table.name!r}: pretrained: {exc}")
            continue
        expected_dtype = "float32" if table.data_type is DataType.FP32 else "float16"
        if scaled:
            skipped.append(table.name)
            if shape[1:] != (table.embedding_dim,) or dtype != expected_dtype:
                problems.append(
                    f"table {table.name!r}: pretrained {emb_name!r} in {uri} is "
                    f"{_shape_text(shape)} {dtype}, the config has dim {table.embedding_dim} "
                    f"{expected_dtype}"
                )
            continue
        expected = (table.num_embeddings, table.embedding_dim)
        if shape != expected or dtype != expected_dtype:
            problems.append(
                f"table {table.name!r}: pretrained {emb_name!r} in {uri} is "
                f"{_shape_text(shape)} {dtype}, the config asks for {_shape_text(expected)} "
                f"{expected_dtype}"
            )
            continue
        to_load[table.name] = (uri, emb_name)
    if problems:
        raise SnapshotError("nothing was loaded:\n" + "\n".join(problems))
    if skipped:
        warnings.warn(
            f"scale= changes the rows of pretrained tables {', '.join(map(repr, skipped))}; "
            "their snapshots were checked but not loaded (initialised as torchrec does instead)",
            BuildWarning,
            stacklevel=3,
        )
    return to_load


def _shape_text(shape: tuple[int, ...]) -> str:
    return " x ".join(f"{n:,}" for n in shape)


# --------------------------------------------------------------------------- build


def build_collection(
    cfg: LargeEmbeddingsConfig,
    device: str | torch.device = "auto",
    apply_optimizers: bool = True,
    scale: float | None = None,
    progress: bool = True,
) -> torchrec.EmbeddingBagCollection:
    """Build the config's `EmbeddingBagCollection` on a device, as the-algorithm-ml does.

    Parameters
    ----------
    cfg : LargeEmbeddingsConfig
        The tables.
    device : str or torch.device
        ``"auto"`` (CUDA when available, else CPU), ``"cuda"``, ``"cuda:N"``, ``"cpu"`` or
        ``"meta"`` (shapes only, nothing allocated: what ``LargeEmbeddings`` builds before
        sharding).
    apply_optimizers : bool
        Apply each table's optimizer in backward (torchrec's ``apply_optimizer_in_backward``);
        the state is allocated by the first backward pass.
    scale : float, optional
        Multiply every table's rows by this (in ``(0, 1]``) for a quick copy of a huge config;
        see `scale_config`. Pretrained tables are then checked but not loaded (a warning says so).
    progress : bool
        Show a progress bar over the tables (tqdm).

    Returns
    -------
    torchrec.EmbeddingBagCollection
        Tables in config order, feature ``<table>`` each, weights on ``device``.

    Raises
    ------
    BuildError
        Unknown or unavailable device, bad ``scale``.
    BuildRefused
        The tables would not fit the device's free memory (see `preflight`).
    embviz.snapshots.SnapshotError
        A pretrained table whose snapshot is missing, lacks the table, or holds another shape
        or dtype; every pretrained table is checked before anything is allocated.
    """
    import torch
    import torchrec
    from tqdm.auto import tqdm

    from embviz.snapshots import read_table

    resolved = resolve_device(device)
    scaled = scale_config(cfg, scale)
    preflight(scaled, resolved, apply_optimizers=apply_optimizers)
    to_load = _check_pretrained(scaled, scaled=scaled is not cfg)

    # LargeEmbeddings builds on meta; each table is then materialised on its own, so a long build
    # shows progress and a weight is written once (nn.EmbeddingBag would first fill it with
    # normal values that torchrec then overwrites).
    ebc = torchrec.EmbeddingBagCollection(tables=scaled.to_torchrec(), device=torch.device("meta"))
    records: dict[str, _TableRecord] = {}
    configs = {c.name: c for c in ebc.embedding_bag_configs()}
    bar = tqdm(scaled.tables, desc="building", unit="table", disable=not progress)
    for table in bar:
        bar.set_postfix_str(table.name)
        bag = ebc.embedding_bags[table.name]
        start_allocated = _allocated(resolved)
        start = time.perf_counter()
        bag.to_empty(device=resolved)
        if resolved.type != "meta":
            with torch.no_grad():
                if table.name in to_load:
                    uri, emb_name = to_load[table.name]
                    read_table(uri, emb_name, out=bag.weight.data)
                else:
                    configs[table.name].init_fn(bag.weight)
        if resolved.type == "cuda":
            torch.cuda.synchronize(resolved)
        seconds = time.perf_counter() - start
        end_allocated = _allocated(resolved)
        delta = None if start_allocated is None else end_allocated - start_allocated
        records[table.name] = _TableRecord(seconds, delta)
    bar.close()
    # The collection records its device at construction; it was built on meta and now lives on
    # `resolved` (torchrec reads it for `ebc.device`).
    ebc._device = resolved
    if apply_optimizers:
        deltas = _apply_optimizers(ebc, scaled, unsharded=resolved.type != "meta")
        records = {
            name: dataclasses.replace(record, optimizer_allocated_bytes=deltas[name])
            for name, record in records.items()
        }
    _BUILD_RECORDS[ebc] = records
    return ebc


def _allocated(device: torch.device) -> int | None:
    import torch

    if device.type != "cuda":
        return None
    return int(torch.cuda.memory_allocated(device))


# --------------------------------------------------------------------------- measure


def _table_names(ebc: torchrec.EmbeddingBagCollection) -> list[str]:
    return [c.name for c in ebc.embedding_bag_configs()]


def _empty_batch(ebc: torchrec.EmbeddingBagCollection, device: torch.device) -> Any:
    """A KJT with every feature of the collection and one empty bag each: zero gradients."""
    import torch
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    keys = [f for c in ebc.embedding_bag_configs() for f in c.feature_names]
    return KeyedJaggedTensor(
        keys=keys,
        values=torch.empty(0, dtype=torch.int64, device=device),
        lengths=torch.zeros(len(keys), dtype=torch.int32, device=device),
    )


def _state_bytes(weight: torch.Tensor) -> int:
    import torch

    total = 0
    for optimizer in getattr(weight, "_in_backward_optimizers", []):
        for value in optimizer.state.get(weight, {}).values():
            if isinstance(value, torch.Tensor):
                total += value.numel() * value.element_size()
    return total


def measure_collection(ebc: torchrec.EmbeddingBagCollection, batch: Any = None) -> pd.DataFrame:
    """Bytes each table really holds: weights, and optimizer state after one training step.

    One step is taken on ``batch`` (forward through the collection, then one backward per table,
    so each table's in-backward optimizer runs and allocates its state). By default the batch has
    one empty bag per feature: every gradient is zero and the weights do not change (tables whose
    Adam/Adagrad has ``eps=0`` would turn to NaN, see `BuildWarning`, so their weights are put
    back). Pass a real `KeyedJaggedTensor` to take a real training step instead.

    Parameters
    ----------
    ebc : torchrec.EmbeddingBagCollection
        A collection on CPU or CUDA (from `build_collection` or not).
    batch : KeyedJaggedTensor, optional
        Input of the step.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``table`` like `embviz.memory.memory_table`, with int64 ``weight_bytes``,
        ``optimizer_bytes`` (every tensor in the optimizers' state, torch's ``step`` included)
        and ``total_bytes``; on CUDA also ``weight_allocated_bytes`` (the
        ``torch.cuda.memory_allocated`` delta of building the table, when `build_collection`
        built it), ``optimizer_allocated_bytes`` (the delta of creating the table's optimizer,
        where torch's Adagrad allocates its state, plus that of this step, where Adam and SGD
        momentum do; 0 for a step once the state exists) and ``total_allocated_bytes``
        (nullable Int64); and ``build_seconds`` (NaN when unknown). The CUDA deltas include
        the caching allocator's rounding (to 512 bytes, and up to 2 MiB for large tensors).

    Raises
    ------
    BuildError
        For a collection on ``meta``, which holds no memory to measure.
    """
    import pandas as pd
    import torch

    names = _table_names(ebc)
    weights = {n: ebc.embedding_bags[n].weight for n in names}
    device = next(iter(weights.values())).device
    if device.type == "meta":
        raise BuildError(
            "the collection is on 'meta' and holds no memory; build it on 'cpu' or 'cuda' to "
            "measure it (embviz.memory.memory_table predicts the bytes without building)"
        )
    kjt = _empty_batch(ebc, device) if batch is None else batch
    with_optimizer = [n for n in names if getattr(weights[n], "_in_backward_optimizers", None)]
    restore: dict[str, torch.Tensor] = {}
    if batch is None:
        for n in with_optimizer:
            vanishes = any(
                _eps_vanishes(type(o).__name__, group.get("eps", 1.0), weights[n].dtype)
                for o in weights[n]._in_backward_optimizers
                for group in o.param_groups
            )
            if vanishes:
                restore[n] = weights[n].detach().clone()
    optimizer_deltas: dict[str, int | None] = {}
    if with_optimizer:
        output = ebc(kjt).values().sum()
        for n in with_optimizer:
            before = _allocated(device)
            # The graph is kept through every backward and freed after the loop, so that its
            # buffers are not counted against the last table's optimizer state.
            output.backward(inputs=[weights[n]], retain_graph=True)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            after = _allocated(device)
            optimizer_deltas[n] = None if before is None else after - before
        del output
    with torch.no_grad():
        for n, saved in restore.items():
            weights[n].copy_(saved)
    restore.clear()

    records = _BUILD_RECORDS.get(ebc, {})
    rows = []
    for n in names:
        weight = weights[n]
        weight_bytes = weight.numel() * weight.element_size()
        optimizer_bytes = _state_bytes(weight)
        row: dict[str, Any] = {
            "table": n,
            "weight_bytes": weight_bytes,
            "optimizer_bytes": optimizer_bytes,
            "total_bytes": weight_bytes + optimizer_bytes,
        }
        if device.type == "cuda":
            record = records.get(n)
            weight_delta = None if record is None else record.allocated_bytes
            # Created with the optimizer (Adagrad) plus allocated by this step (Adam, momentum).
            created = 0 if record is None else record.optimizer_allocated_bytes or 0
            step = optimizer_deltas.get(n, 0)
            optimizer_delta = None if step is None else created + step
            row["weight_allocated_bytes"] = weight_delta
            row["optimizer_allocated_bytes"] = optimizer_delta
            row["total_allocated_bytes"] = (
                None
                if weight_delta is None or optimizer_delta is None
                else weight_delta + optimizer_delta
            )
        row["build_seconds"] = records[n].seconds if n in records else math.nan
        rows.append(row)
    frame = pd.DataFrame(rows).set_index("table")
    for column in ("weight_bytes", "optimizer_bytes", "total_bytes"):
        frame[column] = frame[column].astype("int64")
    for column in ("weight_allocated_bytes", "optimizer_allocated_bytes", "total_allocated_bytes"):
        if column in frame:
            frame[column] = frame[column].astype("Int64")
    return frame


def predicted_vs_measured(
    cfg: LargeEmbeddingsConfig,
    measured: pd.DataFrame,
    *,
    optimizer_state: str = "torch",
    scale: float | None = None,
    mode: Mode | str = Mode.TRAIN,
) -> pd.DataFrame:
    """`memory_table`'s prediction next to `measure_collection`'s measurement, per table.

    Parameters
    ----------
    cfg : LargeEmbeddingsConfig
        The config the collection was built from.
    measured : pandas.DataFrame
        From `measure_collection`.
    optimizer_state : {"torch", "fused"}
        ``"torch"`` for an unsharded collection.
    scale : float, optional
        The ``scale`` of the build.
    mode : Mode or str
        TRAIN when the optimizers were applied (the default), INFERENCE when not.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``table``: ``predicted_weight_bytes``, ``measured_weight_bytes``,
        ``predicted_optimizer_bytes``, ``measured_optimizer_bytes``, ``predicted_total_bytes``,
        ``measured_total_bytes``, ``difference_bytes`` (measured - predicted total) and
        ``relative_difference`` (that over the prediction; 0 when both are 0); on CUDA also
        ``allocated_total_bytes`` and ``allocated_relative_difference``.
    """
    import pandas as pd

    from embviz.memory import memory_table

    predicted = memory_table(scale_config(cfg, scale), optimizer_state, mode)  # type: ignore[arg-type]
    frame = pd.DataFrame(index=predicted.index)
    for part in ("weight", "optimizer", "total"):
        frame[f"predicted_{part}_bytes"] = predicted[f"{part}_bytes"].astype("int64")
        frame[f"measured_{part}_bytes"] = measured[f"{part}_bytes"].reindex(frame.index)
    frame["difference_bytes"] = frame["measured_total_bytes"] - frame["predicted_total_bytes"]
    frame["relative_difference"] = _relative(
        frame["difference_bytes"], frame["predicted_total_bytes"]
    )
    if "total_allocated_bytes" in measured:
        allocated = measured["total_allocated_bytes"].reindex(frame.index)
        frame["allocated_total_bytes"] = allocated
        frame["allocated_relative_difference"] = _relative(
            (allocated - frame["predicted_total_bytes"]).astype("Float64"),
            frame["predicted_total_bytes"],
        )
    return frame


def _relative(difference: pd.Series, base: pd.Series) -> pd.Series:
    ratio = difference.astype("float64") / base.astype("float64").where(base != 0)
    return ratio.where(~((difference == 0) & (base == 0)), 0.0)


# --------------------------------------------------------------------------- build and measure


@dataclass(frozen=True)
class BuildCheck:
    """A build of a config next to its prediction (see `build_and_measure`).

    Attributes
    ----------
    device : str
        Where the collection was built.
    seconds : float
        Wall time of the build (materialising and initialising or loading the tables).
    comparison : pandas.DataFrame
        `predicted_vs_measured`; on ``meta`` the measured columns are missing (nothing is held).
    collection : torchrec.EmbeddingBagCollection
    scale : float or None
    measured : pandas.DataFrame or None
        `measure_collection` (with ``build_seconds`` per table); None on ``meta``.
    """

    device: str
    seconds: float
    comparison: pd.DataFrame
    collection: torchrec.EmbeddingBagCollection
    scale: float | None
    measured: pd.DataFrame | None = None

    @property
    def predicted_bytes(self) -> int:
        """Total predicted bytes (weights and optimizer state)."""
        return int(self.comparison["predicted_total_bytes"].sum())

    @property
    def measured_bytes(self) -> int | None:
        """Total measured bytes; None on ``meta``."""
        if "measured_total_bytes" not in self.comparison:
            return None
        return int(self.comparison["measured_total_bytes"].sum())

    def summary(self) -> str:
        """One line: device, tables, time, predicted and measured totals and their difference."""
        from embviz.memory import human_bytes

        tables = len(self.comparison)
        head = f"{self.device}: built {tables} tables in {self.seconds:.2f} s"
        if self.scale is not None:
            head += f" (scale {self.scale:g})"
        predicted = self.predicted_bytes
        measured = self.measured_bytes
        if measured is None:
            return (
                f"{head}; predicted {human_bytes(predicted)} ({predicted:,} bytes); on meta "
                "nothing is allocated, so there is nothing to measure"
            )
        difference = measured - predicted
        share = difference / predicted if predicted else 0.0
        return (
            f"{head}; predicted {human_bytes(predicted)} ({predicted:,} bytes), measured "
            f"{human_bytes(measured)} ({measured:,} bytes), difference {difference:+,} bytes "
            f"({share:+.2%})"
        )


def build_and_measure(
    cfg: LargeEmbeddingsConfig,
    device: str | torch.device = "auto",
    *,
    scale: float | None = None,
    apply_optimizers: bool = True,
    progress: bool = True,
) -> BuildCheck:
    """`build_collection`, `measure_collection` and `predicted_vs_measured` in one go.

    Parameters
    ----------
    cfg : LargeEmbeddingsConfig
        The tables.
    device, scale, apply_optimizers, progress
        As `build_collection` takes them.

    Returns
    -------
    BuildCheck
        What ``embviz build`` prints and ``scripts/gpu_check.py`` checks.
    """
    import pandas as pd
    import torchrec  # noqa: F401 - imported here so its seconds of import are not build time

    from embviz.memory import memory_table

    resolved = resolve_device(device)
    start = time.perf_counter()
    ebc = build_collection(
        cfg, resolved, apply_optimizers=apply_optimizers, scale=scale, progress=progress
    )
    seconds = time.perf_counter() - start
    mode = Mode.TRAIN if apply_optimizers else Mode.INFERENCE
    if resolved.type == "meta":
        predicted = memory_table(scale_config(cfg, scale), "torch", mode)
        comparison = pd.DataFrame(index=predicted.index)
        for part in ("weight", "optimizer", "total"):
            comparison[f"predicted_{part}_bytes"] = predicted[f"{part}_bytes"].astype("int64")
        measured = None
    else:
        measured = measure_collection(ebc)
        comparison = predicted_vs_measured(cfg, measured, scale=scale, mode=mode)
    return BuildCheck(str(resolved), seconds, comparison, ebc, scale, measured)
