"""`SnapshotTable`: one table of a snapshot, read on demand in bounded pieces, never whole.

The functions that describe a whole table (`embviz.health`, `embviz.drift`, `embviz.fp16_error`,
`embviz.quantization_error`, `embviz.project` and `embviz.Projector`) read a snapshot path
through this handle instead of `embviz.read_table`. It answers what they ask of a table:

- ``shape``, ``dtype``, ``device`` (the CPU), from the checked manifest (nothing is read);
- `SnapshotTable.blocks`: every row in order, in blocks of at most ``max_bytes``
  (`embviz.iter_table_blocks`, memory-mapped);
- `SnapshotTable.norms`: every row's L2 norm (float32, 4 bytes a row, what `embviz.row_norms`
  gives on the gathered table), streamed over those blocks;
- `SnapshotTable.gather` (and ``index_select``, ``table[rows]``): given rows in any order, read
  window by window, each window at most ``max_bytes`` of the file and starting at the next
  wanted row, so a sparse sample maps only the pages that hold it. Column-wise shards are
  gathered shard by shard, never put side by side first;
- `SnapshotTable.row_range` (``table[a:b]``): a range of rows, in the same windows.

Every read goes through the checked reader (`embviz.snapshot_reader`): manifest, locations,
byte counts and failed reads raise `SnapshotError` naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from embviz.norms.errors import RowIndexError
from embviz.snapshot_reader import (
    DEFAULT_BLOCK_BYTES,
    _bands,
    _blocks,
    _plan,
    _positive,
    _Reader,
)

__all__ = ["BLOCK_BYTES", "SnapshotTable", "is_snapshot_path"]

#: Bytes of a table read at a time by default (a module attribute, read when a handle is made).
BLOCK_BYTES = DEFAULT_BLOCK_BYTES


def is_snapshot_path(source: Any) -> bool:
    """Whether a source is the path (or URI) of a snapshot, whose tables are streamed."""
    return isinstance(source, str | os.PathLike)


class SnapshotTable:
    """One table of a torchsnapshot, read in pieces of at most ``max_bytes`` when asked.

    Parameters
    ----------
    path : str or path-like
        A snapshot folder or URI (as `embviz.iter_table_blocks` takes).
    name : str
        The table (as `embviz.snapshot_tables` lists it).
    max_bytes : int, optional
        Most bytes of the table read at a time (`BLOCK_BYTES`, 64 MiB, by default).

    Raises
    ------
    SnapshotError
        From the checked reader, before anything is read: an unknown table (the message lists
        those the snapshot holds), a damaged manifest or data file.
    ArgumentError
        ``max_bytes`` not an integer >= 1.
    """

    def __init__(self, path: str | os.PathLike[str], name: str, max_bytes: int | None = None):
        self.path = os.fspath(path)
        self.name = name
        self.max_bytes = _positive("max_bytes", BLOCK_BYTES if max_bytes is None else max_bytes)
        self._plan = _plan(path, name)

    # ------------------------------------------------------------------ tensor-like

    @property
    def shape(self) -> torch.Size:
        """``(rows, dim)``."""
        return torch.Size(self._plan.shape)

    @property
    def dtype(self) -> torch.dtype:
        """The stored dtype."""
        return getattr(torch, self._plan.dtype)

    @property
    def device(self) -> torch.device:
        """The CPU: rows read are CPU tensors."""
        return torch.device("cpu")

    def dim(self) -> int:
        """2 (rows x dim), as `torch.Tensor.dim`."""
        return 2

    def size(self, dim: int | None = None) -> Any:
        """As `torch.Tensor.size`."""
        return self.shape if dim is None else self.shape[dim]

    def detach(self) -> SnapshotTable:
        """Itself (nothing to detach), so code written for tensors takes it."""
        return self

    def __repr__(self) -> str:
        rows, cols = self._plan.shape
        return (
            f"SnapshotTable({self.path!r}, {self.name!r}: {rows:,} x {cols} {self._plan.dtype}, "
            f"read {self.max_bytes:,} bytes at a time)"
        )

    def __len__(self) -> int:
        return self._plan.shape[0]

    def __getitem__(self, key: Any) -> torch.Tensor:
        """Rows: a slice ``a:b`` (step 1), one int (a 1-D row), or int row ids (any order)."""
        rows = self._plan.shape[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(rows)
            if step != 1:
                return self.gather(torch.arange(start, stop, step))
            return self.row_range(start, max(start, stop))
        if isinstance(key, int | np.integer) and not isinstance(key, bool):
            row = int(key) + (rows if key < 0 else 0)
            return self.gather(torch.tensor([row]))[0]
        return self.gather(key)

    def index_select(self, dim: int, index: torch.Tensor) -> torch.Tensor:
        """Rows ``index`` (``dim`` must be 0), as `torch.Tensor.index_select`."""
        if dim != 0:
            raise ValueError("a SnapshotTable selects rows only (dim=0)")
        return self.gather(index)

    # ------------------------------------------------------------------ reading

    def blocks(
        self, *, reuse: bool = False, progress: bool = False
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """``(first row, rows)`` blocks of the whole table in row order (`iter_table_blocks`)."""
        return _blocks(self._plan, self.max_bytes, progress, reuse)

    def norms(self, *, progress: bool = False) -> torch.Tensor:
        """Every row's L2 norm, float32, streamed block by block (4 bytes a row held)."""
        from embviz.norms.rownorms import MEMORY_BUDGET_BYTES, _piece_norms

        out = torch.empty(self._plan.shape[0], dtype=torch.float32)
        for r0, block in self.blocks(reuse=True, progress=progress):
            _piece_norms(out[r0 : r0 + block.shape[0]], block, None, MEMORY_BUDGET_BYTES)
            del block
        return out

    def row_range(self, start: int, stop: int) -> torch.Tensor:
        """Rows ``[start, stop)``, read in windows of at most ``max_bytes``.

        A range inside one window of one stored piece is that window itself (a private memory
        map of the file for local snapshots: writing to it never changes the file); a longer
        one is copied window by window into a new tensor.
        """
        plan = self._plan
        rows, cols = plan.shape
        if not 0 <= start <= stop <= rows:
            raise RowIndexError(
                f"rows {start} to {stop} are out of range: table {self.name!r} has {rows:,} rows"
            )
        step = max(1, self.max_bytes // max(1, cols * plan.itemsize))
        reader = _Reader(plan)
        out = None
        for lo, hi, band in _bands(plan.pieces, rows):
            a, b = max(lo, start), min(hi, stop)
            if a >= b:
                continue
            if out is None and len(band) == 1 and (a, b) == (start, stop) and b - a <= step:
                p = band[0]
                return reader.rows(p, a - p.offsets[0], b - p.offsets[0])
            if out is None:
                out = torch.empty((stop - start, cols), dtype=self.dtype)
            for r0 in range(a, b, step):
                r1 = min(b, r0 + step)
                for p in band:
                    part = reader.rows(p, r0 - p.offsets[0], r1 - p.offsets[0])
                    c0, c1 = p.offsets[1], p.offsets[1] + p.sizes[1]
                    out[r0 - start : r1 - start, c0:c1] = part
                    del part
        return torch.empty((0, cols), dtype=self.dtype) if out is None else out

    def gather(self, index: Any, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Rows ``index`` (int ids, any order, repeats allowed) as a new CPU tensor.

        Parameters
        ----------
        index : tensor, array or sequence of int
            Row ids in ``[0, rows)``.
        dtype : torch.dtype, optional
            Of the result (each window is converted as it is read); default the table's.

        Raises
        ------
        RowIndexError
            An id outside ``[0, rows)``.
        SnapshotError
            A failed read (naming the file).
        """
        rows, cols = self._plan.shape
        ids = torch.as_tensor(np.asarray(index.cpu() if torch.is_tensor(index) else index))
        ids = ids.to(torch.int64).flatten()
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= rows):
            bad = int(ids[(ids < 0) | (ids >= rows)][0])
            raise RowIndexError(f"row {bad} is out of range: table {self.name!r} has {rows:,} rows")
        wanted, inverse = torch.unique(ids, sorted=True, return_inverse=True)
        out = torch.empty((int(wanted.numel()), cols), dtype=dtype or self.dtype)
        self._gather_sorted(wanted, out)
        if wanted.numel() == ids.numel() and bool((inverse[1:] > inverse[:-1]).all()):
            return out  # ids were sorted and distinct: no second copy
        return out.index_select(0, inverse)

    def _gather_sorted(self, wanted: torch.Tensor, out: torch.Tensor) -> None:
        """Rows ``wanted`` (sorted, distinct) into ``out``, window by window."""
        plan = self._plan
        rows, cols = plan.shape
        if wanted.numel() == 0 or cols == 0:
            return
        reader = _Reader(plan)
        step = max(1, self.max_bytes // max(1, cols * plan.itemsize))
        values = wanted.numpy()
        with torch.no_grad():
            for lo, hi, band in _bands(plan.pieces, rows):
                pos, end_band = (int(i) for i in np.searchsorted(values, [lo, hi]))
                while pos < end_band:
                    r0 = int(values[pos])
                    r1 = min(hi, r0 + step)
                    end = min(end_band, int(np.searchsorted(values, r1)))
                    local = wanted[pos:end] - r0
                    for p in band:
                        part = reader.rows(p, r0 - p.offsets[0], r1 - p.offsets[0])
                        c0, c1 = p.offsets[1], p.offsets[1] + p.sizes[1]
                        out[pos:end, c0:c1] = part.index_select(0, local)
                        del part
                    pos = end
