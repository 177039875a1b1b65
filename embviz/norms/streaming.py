"""Row norms of a table in a snapshot, read block by block: never the whole table in memory.

`norm_stats`, `norm_history` and `norm_histogram` use this for snapshot paths. The table is read
through the checked reader (`embviz.snapshot_reader.iter_table_blocks`, blocks of `BLOCK_BYTES`
mapped from the files), each block's row norms are computed by `row_norms`'s kernel straight
into the norms kept: 4 bytes a row (float32), so quantiles stay exact. A 50 GB table of 64-dim
rows holds 0.8 GB of norms.

With an initial snapshot, both are read side by side, re-sliced to common row ranges (their
chunks or shards may differ), and equal rows are counted.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch

from embviz.norms.errors import EmptyTableError, NormError
from embviz.norms.rownorms import MEMORY_BUDGET_BYTES, _piece_norms
from embviz.norms.sampling import sample_rows

__all__ = ["BLOCK_BYTES", "snapshot_norms"]

#: Bytes of the table read at a time (the buffer `snapshot_norms` reuses).
BLOCK_BYTES = 64 * 2**20


def _aligned(
    a: Iterator[tuple[int, torch.Tensor]], b: Iterator[tuple[int, torch.Tensor]]
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Two block streams of tables with the same rows, cut to common row ranges."""
    ra, xa = next(a, (None, None))
    rb, xb = next(b, (None, None))
    while xa is not None and xb is not None:
        assert ra == rb
        n = min(xa.shape[0], xb.shape[0])
        yield ra, xa[:n], xb[:n]
        ra, xa = (ra + n, xa[n:]) if n < xa.shape[0] else next(a, (None, None))
        rb, xb = (rb + n, xb[n:]) if n < xb.shape[0] else next(b, (None, None))


def snapshot_norms(
    path: str | os.PathLike[str],
    name: str,
    sample: int | None = None,
    seed: int = 0,
    initial: str | os.PathLike[str] | None = None,
    *,
    progress: bool = False,
) -> tuple[torch.Tensor, int, int | None]:
    """Row norms of one table of a snapshot, streamed: ``(norms, rows, unchanged rows)``.

    Parameters
    ----------
    path : str or path-like
        A snapshot folder (or URI).
    name : str
        The table.
    sample, seed :
        As in `norm_stats`: the norms of `sample_rows` ``(rows, sample, seed)`` (sorted), else of
        every row, in row order.
    initial : str or path-like, optional
        A snapshot holding the table's initial values: also count the (sampled) rows equal to
        them (NaN-free rows compare by value, as ``torch.eq``).
    progress : bool
        A tqdm bar over the bytes read.

    Returns
    -------
    (torch.Tensor, int, int or None)
        float32 norms on the CPU (what `row_norms` gives on the gathered table), the table's
        rows, and the unchanged rows (None without ``initial``).

    Raises
    ------
    SnapshotError
        From the checked reader, naming the file.
    EmptyTableError, NormError
        A table without rows; an initial table of another shape.
    """
    from embviz.snapshot_reader import iter_table_blocks, table_shape

    rows, cols = table_shape(path, name)
    if rows == 0:
        raise EmptyTableError(f"table {name!r} has no rows: its norms have no distribution")
    index = None
    if sample is not None and sample < rows:
        index = sample_rows(rows, sample, seed)
    norms = torch.empty(rows if index is None else index.numel(), dtype=torch.float32)
    blocks = iter_table_blocks(path, name, BLOCK_BYTES, reuse=True, progress=progress)
    unchanged = None
    if initial is None:
        stream = ((r0, block, None) for r0, block in blocks)
    else:
        shape = table_shape(initial, name)
        if shape != (rows, cols):
            raise NormError(
                f"table {name!r}: the initial values hold {shape[0]:,} x {shape[1]} rows, the "
                f"table {rows:,} x {cols}; they must match"
            )
        unchanged = 0
        stream = _aligned(blocks, iter_table_blocks(initial, name, BLOCK_BYTES, reuse=True))
    for r0, block, first in stream:
        r1 = r0 + block.shape[0]
        if index is None:
            lo, hi, local = r0, r1, None
        else:
            lo, hi = (int(i) for i in torch.searchsorted(index, torch.tensor([r0, r1])))
            if hi == lo:
                continue
            local = index[lo:hi] - r0
        # Straight into the held norms: no per-block result to allocate and copy.
        _piece_norms(norms[lo:hi], block, local, MEMORY_BUDGET_BYTES)
        if first is not None:
            x = block if local is None else block.index_select(0, local)
            y = first if local is None else first.index_select(0, local)
            unchanged += int(torch.eq(x, y.to(x.dtype)).all(dim=1).sum())
    return norms, rows, unchanged
