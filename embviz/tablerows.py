"""Rows of whole tables for `embviz.health` and `embviz.drift`: sources, samples, float64 blocks.

`embviz.norms` works on the rows a process holds (a sharded module's local shards). The health
and drift statistics are of the *whole* table, so this module resolves a source to whole tables:

- a plain tensor (a state dict value, an unsharded collection's weight, a table read from a
  snapshot) is whole;
- a ``ShardedTensor`` whose local shards cover every element (one process holds all of it, e.g.
  world size 1) is put together from them;
- any other sharded table is refused with a message that says how to get the whole table: save a
  snapshot from every rank (`embviz.save_snapshot`) and pass its path, which reads whole tables;
- a snapshot path gives `embviz.SnapshotTable` handles: the table is never read whole, only its
  row norms are streamed (4 bytes a row) and the rows asked for gathered block by block.

Rows are copied in blocks of at most `BLOCK_BYTES` (in float64), so a sample of any size costs its
own float64 copy and no more.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from embviz.errors import ArgumentError, EmbvizError, UnknownTableError
from embviz.norms import load_table, sample_rows, table_names
from embviz.snapshot_rows import SnapshotTable, is_snapshot_path

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "BLOCK_BYTES",
    "DEFAULT_SAMPLE",
    "HealthError",
    "Tables",
    "choose_tables",
    "counts_for",
    "float_rows",
    "health_rows",
    "sample_size",
    "sampled_rows",
    "take_rows",
    "whole_table",
]

#: Default rows sampled per table by `embviz.health` and `embviz.drift` (all rows when fewer).
DEFAULT_SAMPLE = 100_000

#: Largest float64 block copied at once (64 MiB).
BLOCK_BYTES = 64 * 2**20

_FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


class HealthError(EmbvizError, ValueError):
    """A table `embviz.health` or `embviz.drift` cannot describe; the message names it."""


class Tables:
    """The tables of one source (module, state dict or snapshot path), loaded on demand."""

    def __init__(self, source: Any, argument: str = "source"):
        self.source = source
        self.argument = argument
        self.names = table_names(source)

    def load(self, name: str) -> torch.Tensor | SnapshotTable:
        """The whole table ``name`` (a 2-D float tensor; a `SnapshotTable` for a snapshot path).

        A `SnapshotTable` is read block by block (see the module docstring).
        """
        if name not in self.names:
            raise UnknownTableError([name], self.names)
        if is_snapshot_path(self.source):
            return whole_table(SnapshotTable(self.source, name), name)
        return whole_table(load_table(self.source, name), name)


def choose_tables(names: list[str], tables: str | Iterable[str] | None) -> list[str]:
    """The tables asked for (all by default); `UnknownTableError` lists those the source has."""
    if tables is None:
        return list(names)
    chosen = [tables] if isinstance(tables, str) else list(dict.fromkeys(tables))
    if not chosen:
        raise ArgumentError("tables", "the list is empty; name at least one table")
    unknown = [t for t in chosen if t not in names]
    if unknown:
        raise UnknownTableError(unknown, names)
    return chosen


def _sharded_type() -> type | None:
    try:
        from torch.distributed._shard.sharded_tensor import ShardedTensor
    except Exception:  # torch built without distributed
        return None
    return ShardedTensor


def whole_table(weight: Any, name: str) -> Any:
    """``weight`` as one 2-D float tensor of every row, or `HealthError` saying how to get one.

    A `SnapshotTable` is checked (floating point, not empty) and returned as it is.
    """
    if isinstance(weight, SnapshotTable):
        return _checked(weight, name)
    sharded = _sharded_type()
    if sharded is not None and isinstance(weight, sharded):
        rows, cols = (int(s) for s in weight.size())
        shards = weight.local_shards()
        held = sum(s.tensor.numel() for s in shards)
        if held != rows * cols:
            raise HealthError(
                f"table {name!r} is sharded and this process holds {held:,} of its "
                f"{rows * cols:,} values; health and drift describe whole tables: save a snapshot "
                "from every rank (embviz.save_snapshot) and pass the snapshot's path"
            )
        full = torch.empty((rows, cols), dtype=shards[0].tensor.dtype)
        for shard in shards:
            r0, c0 = (int(o) for o in shard.metadata.shard_offsets)
            n, d = shard.tensor.shape
            full[r0 : r0 + n, c0 : c0 + d] = shard.tensor.detach().cpu()
        weight = full
    if type(weight).__name__ == "DTensor":
        raise HealthError(
            f"table {name!r} is a DTensor; pass weight.full_tensor() in a state dict, or the path "
            "of a snapshot"
        )
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise HealthError(f"table {name!r}: expected a 2-D tensor (rows x dim), got {shape}")
    return _checked(weight, name).detach()


def _checked(weight: Any, name: str) -> Any:
    """``weight`` (2-D) if floating point and not empty, else `HealthError`."""
    if weight.dtype not in _FLOAT_DTYPES:
        raise HealthError(
            f"table {name!r}: expected a floating-point table (fp32, fp16, bf16 or fp64), "
            f"got {str(weight.dtype).removeprefix('torch.')}"
        )
    if weight.shape[0] == 0 or weight.shape[1] == 0:
        raise HealthError(f"table {name!r} is empty ({weight.shape[0]} x {weight.shape[1]})")
    return weight


def sample_size(sample: Any, rows: int) -> int:
    """Rows to use: ``sample`` (default `DEFAULT_SAMPLE`) but never more than ``rows``."""
    if sample is None:
        return min(rows, DEFAULT_SAMPLE)
    if isinstance(sample, bool) or not isinstance(sample, int | np.integer) or sample < 2:
        raise ArgumentError("sample", f"must be an integer >= 2 (rows per table), got {sample!r}")
    return min(rows, int(sample))


def sampled_rows(rows: int, sample: Any, seed: int) -> torch.Tensor:
    """Sorted positions of a uniform sample of ``rows`` (`embviz.sample_rows`), all when small."""
    n = sample_size(sample, rows)
    if n >= rows:
        return torch.arange(rows, dtype=torch.int64)
    return sample_rows(rows, n, seed)


#: Share of a health sample taken as the rows of largest norm (the rest is uniform).
HEAVY_SHARE = 0.25


def health_rows(
    weight: torch.Tensor | SnapshotTable, sample: Any, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Rows and weights for the statistics of a whole table: ``(index, weights, norms)``.

    Every row (weight 1) when the table has at most ``sample`` rows (default `DEFAULT_SAMPLE`).
    Otherwise a stratified sample of ``sample`` rows: the `HEAVY_SHARE` of them with the largest
    norms, exactly (weight 1), and the rest drawn uniformly from the other rows, each standing for
    ``others / drawn`` rows. A weighted sum over these rows is an unbiased estimate of the sum
    over the table, and the rows that dominate a popularity-skewed table's spectrum are never
    missed. ``norms`` holds every row's norm (`embviz.row_norms`) in that case, else None; a
    `SnapshotTable`'s are streamed (`SnapshotTable.norms`, the same values), so the same rows
    are chosen as from the table in memory.
    """
    from embviz.norms import row_norms

    rows = int(weight.shape[0])
    n = sample_size(sample, rows)
    if n >= rows:
        return torch.arange(rows, dtype=torch.int64), torch.ones(rows, dtype=torch.float64), None
    norms = weight.norms() if isinstance(weight, SnapshotTable) else row_norms(weight).cpu()
    heavy_n = int(n * HEAVY_SHARE)
    heavy = torch.topk(norms, heavy_n, sorted=False).indices if heavy_n else norms[:0].long()
    keep = torch.ones(rows, dtype=torch.bool)
    keep[heavy] = False
    others = torch.nonzero(keep).flatten()
    drawn = others[sample_rows(int(others.numel()), n - heavy_n, seed)]
    index = torch.cat([heavy.sort().values, drawn])
    weights = torch.cat(
        [
            torch.ones(heavy_n, dtype=torch.float64),
            torch.full((n - heavy_n,), others.numel() / (n - heavy_n), dtype=torch.float64),
        ]
    )
    return index, weights, norms


def blocks(index: torch.Tensor, cols: int) -> Iterator[tuple[int, int]]:
    """``(start, end)`` ranges of ``index`` whose float64 rows fit in `BLOCK_BYTES`."""
    step = max(1, BLOCK_BYTES // max(1, cols * 8))
    for start in range(0, int(index.numel()), step):
        yield start, min(start + step, int(index.numel()))


def take_rows(weight: torch.Tensor | SnapshotTable, ids: torch.Tensor) -> torch.Tensor:
    """Rows ``ids`` of a tensor (on its device) or of a `SnapshotTable` (gathered, CPU)."""
    if isinstance(weight, SnapshotTable):
        return weight.gather(ids)
    return weight.index_select(0, ids.to(weight.device))


def float_rows(weight: torch.Tensor | SnapshotTable, index: torch.Tensor) -> torch.Tensor:
    """Rows ``index`` of ``weight`` as a float64 CPU tensor (copied block by block).

    A `SnapshotTable`'s rows are gathered window by window straight into float64.
    """
    if isinstance(weight, SnapshotTable):
        return weight.gather(index, dtype=torch.float64)
    out = torch.empty((int(index.numel()), int(weight.shape[1])), dtype=torch.float64)
    with torch.no_grad():
        for start, end in blocks(index, int(weight.shape[1])):
            part = weight.index_select(0, index[start:end].to(weight.device))
            out[start:end] = part.to(device="cpu", dtype=torch.float64)
    return out


def counts_for(counts: Any, name: str, rows: int) -> pd.Series | None:
    """Lookup counts of table ``name``: a float Series over every row (rows not listed: 0).

    ``counts`` maps table names to Series of counts indexed by row; a table it does not name has
    no counts (None).
    """
    import pandas as pd

    if counts is None:
        return None
    if not isinstance(counts, Mapping):
        raise ArgumentError(
            "counts",
            f"must map table names to Series of lookup counts indexed by row, got "
            f"{type(counts).__name__}",
        )
    if name not in counts:
        return None
    series = counts[name]
    if not isinstance(series, pd.Series):
        series = pd.Series(series)
    index = series.index.to_numpy()
    if len(series) and (not np.issubdtype(index.dtype, np.integer)):
        raise ArgumentError("counts", f"table {name!r}: the index must be row numbers (integers)")
    if len(series) and (index.min() < 0 or index.max() >= rows):
        raise ArgumentError(
            "counts", f"table {name!r}: rows outside [0, {rows:,}) (the table has {rows:,} rows)"
        )
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)
    if len(values) and (not np.isfinite(values).all() or values.min() < 0):
        raise ArgumentError("counts", f"table {name!r}: counts must be finite and >= 0")
    full = np.zeros(rows, dtype=np.float64)
    np.add.at(full, index.astype(np.int64), values)
    return pd.Series(full, index=pd.RangeIndex(rows, name="row"), name="count")


#: Frequency buckets of `bucket_labels`: [low, high) lookup counts.
BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("0", 0, 1),
    ("1-9", 1, 10),
    ("10-99", 10, 100),
    ("100-999", 100, 1000),
    ("1000+", 1000, math.inf),
)


def bucket_labels(counts: np.ndarray) -> np.ndarray:
    """The `BUCKETS` label of each count (object array)."""
    labels = np.empty(len(counts), dtype=object)
    for label, low, high in BUCKETS:
        labels[(counts >= low) & (counts < high)] = label
    return labels
