"""Build a config's `EmbeddingBagCollection` on a device, after checking that it fits.

The collection is built the way the-algorithm-ml's ``LargeEmbeddings`` builds it (one feature per
table, sum pooling, the table's dtype; fp16 for every non-fp32 dtype, as torchrec's unsharded
collection does), then each table's weight is materialised on the device one table at a time:
torchrec's own initialisation (uniform in ``+-sqrt(1 / num_embeddings)``) or, for a table with
``pretrained``, the tensor read from its torchsnapshot. Each table's optimizer is then applied in
backward with torchrec's ``apply_optimizer_in_backward``, as TwHIN does (``sgd``, ``adam``,
``adagrad`` become ``torch.optim.SGD``, ``Adam``, ``Adagrad`` with the config's settings;
learning-rate schedules are not applied, as TwHIN leaves its scheduler unset; the mapping is
`embviz.optimizers`).

Measuring what a build holds is `embviz.measure`. Everything that needs torch or torchrec is
imported inside the functions.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from embviz.arguments import number
from embviz.config import DataType, LargeEmbeddingsConfig, Mode
from embviz.errors import ArgumentError, EmbvizError
from embviz.optimizers import apply_optimizer, nan_on_zero_grad

if TYPE_CHECKING:
    import pandas as pd
    import torch
    import torchrec

__all__ = [
    "BuildError",
    "BuildRefused",
    "BuildWarning",
    "Preflight",
    "allocated",
    "build_collection",
    "build_records",
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
    """A build or measurement that cannot be done here (no CUDA, no such GPU, nothing on meta)."""


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
    ArgumentError
        An unknown device.
    BuildError
        CUDA asked for without CUDA, or a CUDA index that does not exist.
    """
    import torch

    text = str(device)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    known = "must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'meta'"
    try:
        resolved = torch.device(text)
    except (RuntimeError, ValueError):
        raise ArgumentError("device", f"{known}, got {text!r}") from None
    if resolved.type in ("cpu", "meta"):
        return torch.device(resolved.type)
    if resolved.type != "cuda":
        raise ArgumentError("device", f"{known}, got {text!r}")
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
    ArgumentError
        When ``scale`` is not a number in ``(0, 1]``.
    """
    if scale is None:
        return cfg
    scale = number("scale", scale, strict=True, maximum=1)
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


def _apply_optimizers(
    ebc: torchrec.EmbeddingBagCollection, cfg: LargeEmbeddingsConfig, *, unsharded: bool
) -> dict[str, int | None]:
    """Apply each table's optimizer in backward (torch.optim); return what each allocated on CUDA.

    torch's Adagrad allocates its ``sum`` state when it is created, Adam at its first step; the
    deltas are None off CUDA.
    """
    # On meta the collection is a template for sharding, where FBGEMM's kernels take over.
    nan_tables = [t.name for t in cfg.tables if nan_on_zero_grad(t)] if unsharded else []
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
        weight = ebc.embedding_bags[table.name].weight
        before = allocated(weight.device)
        apply_optimizer(weight, table)
        after = allocated(weight.device)
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
    ArgumentError
        Unknown device, bad ``scale``.
    BuildError
        Unavailable device.
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
        start_allocated = allocated(resolved)
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
        end_allocated = allocated(resolved)
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


def allocated(device: torch.device) -> int | None:
    """``torch.cuda.memory_allocated`` on a CUDA device; None elsewhere."""
    import torch

    if device.type != "cuda":
        return None
    return int(torch.cuda.memoryallocated(device))


def build_records(ebc: Any) -> dict[str, Any]:
    """What `build_collection` saw per table of ``ebc`` (time, CUDA allocation); {} if unknown."""
    return _BUILD_RECORDS.get(ebc, {})
