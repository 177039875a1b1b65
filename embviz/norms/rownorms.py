"""`row_norms`: the L2 norm of every row of a table, accurate and bounded in memory.

On the CPU the numba kernel (`embviz.norms.kernel`, ``backend="native"``) reads the rows in place
and accumulates each in float64; the torch path (``backend="torch"``) runs
`torch.linalg.vector_norm` over chunks of about 1 MiB. On CUDA it is one ``vector_norm`` call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from embviz.norms.kernel import check_backend, native_row_norms, row_norm_backend
from embviz.norms.layout import Piece, as_index, table_layout

__all__ = ["MEMORY_BUDGET_BYTES", "row_norms"]

#: Extra memory `row_norms` may allocate beyond its float32 result, whatever the table size.
MEMORY_BUDGET_BYTES = 64 * 2**20

# Buffers may take this share of the budget; the rest covers the small tensors torch allocates.
_BUFFER_SHARE = 0.75


def _chunk_rows(budget: int, per_row: int) -> int:
    """Rows per chunk whose buffers (``per_row`` bytes a row) fit the budget; 0 if none does.

    Chunks are as large as the budget allows: each torch call is one parallel region of torch's
    intra-op threads, and on a busy machine every region costs a wait for all of them.
    """
    return int(budget * _BUFFER_SHARE) // max(1, per_row)


def _norms_serial(
    out: torch.Tensor,
    src: torch.Tensor,
    index: torch.Tensor | None,
    start: int,
    stop: int,
    chunk: int,
    buffers: tuple[torch.Tensor | None, torch.Tensor | None],
) -> None:
    """``out[i] = ||src[index[i] if index else i]||`` for ``start <= i < stop``, with torch ops.

    Row slices of an fp32 table go straight into `torch.linalg.vector_norm`; anything else is
    first copied into the float32 buffer (``copy_`` converts fp16 with F16C), because the norm of
    an fp16 input with ``dtype=float32`` converts the whole input at once.
    """
    vector_norm = torch.linalg.vector_norm
    buf, gathered = buffers
    for s in range(start, stop, chunk):
        e = min(s + chunk, stop)
        if buf is None:
            vector_norm(src[s:e], dim=1, out=out[s:e])
            continue
        b = buf[: e - s]
        if index is None:
            b.copy_(src[s:e])
        elif gathered is None:
            torch.index_select(src, 0, index[s:e], out=b)
        else:
            g = gathered[: e - s]
            torch.index_select(src, 0, index[s:e], out=g)
            b.copy_(g)
        vector_norm(b, dim=1, out=out[s:e])


def _norms_wide_rows(out: torch.Tensor, src: torch.Tensor, index: torch.Tensor | None) -> None:
    """Rows too wide for a float32 buffer within the budget: one row at a time, column blocks."""
    block = max(1, int(MEMORY_BUDGET_BYTES * _BUFFER_SHARE) // 8)
    for i in range(out.shape[0]):
        row = src[int(index[i]) if index is not None else i]
        total = 0.0
        for c in range(0, row.shape[0], block):
            part = row[c : c + block].to(torch.float64)
            total += float(torch.dot(part, part))
        out[i] = math.sqrt(total)


def _cuda_norms(
    out: torch.Tensor, src: torch.Tensor, index: torch.Tensor | None, budget: int
) -> None:
    """Row norms of a piece on a device other than the CPU, with torch ops."""
    n, cols, itemsize = out.shape[0], int(src.shape[1]), src.element_size()
    low_or_single = src.dtype in (torch.float16, torch.bfloat16, torch.float32)
    if src.device.type == "cuda" and index is None and low_or_single:
        # CUDA reduces fp16/bf16 into float32 reading the input as it is (torch's
        # make_reduction special case): one call, nothing allocated beyond the result.
        torch.linalg.vector_norm(src, dim=1, dtype=torch.float32, out=out)
        return
    # Elsewhere chunks bound what a gather (sampled rows) or a cast allocates.
    chunk = max(1, (budget // 2) // (cols * max(4, itemsize)))
    if index is not None:
        index = index.to(src.device)
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        x = src[s:e] if index is None else torch.index_select(src, 0, index[s:e])
        if low_or_single:
            torch.linalg.vector_norm(x, dim=1, dtype=torch.float32, out=out[s:e])
        else:
            torch.linalg.vector_norm(x.float(), dim=1, out=out[s:e])


def _native_norms(
    out: torch.Tensor, src: torch.Tensor, index: torch.Tensor | None, budget: int
) -> bool:
    """Row norms of a CPU piece with the numba kernel; False when a row is too wide to buffer.

    Rows with unit column stride are read in place; gathered rows (``index``) and rows whose
    columns are spaced are first copied, a chunk at a time, into a buffer of their own dtype.
    """
    if index is None and (src.shape[1] == 1 or src.stride(1) == 1):
        native_row_norms(src, out)
        return True
    cols = int(src.shape[1])
    chunk = _chunk_rows(budget, cols * src.element_size())
    if chunk == 0:
        return False
    buf = torch.empty((min(chunk, out.shape[0]), cols), dtype=src.dtype)
    for s in range(0, out.shape[0], chunk):
        e = min(s + chunk, out.shape[0])
        b = buf[: e - s]
        if index is None:
            b.copy_(src[s:e])
        else:
            torch.index_select(src, 0, index[s:e], out=b)
        native_row_norms(b, out[s:e])
    return True


def _piece_norms(
    out: torch.Tensor,
    src: torch.Tensor,
    index: torch.Tensor | None,
    budget: int,
    backend: str = "auto",
) -> None:
    """Row norms of one 2-D piece (or of its rows ``index``) into ``out``."""
    n = out.shape[0]
    if n == 0:
        return
    src = src.detach()
    cols = int(src.shape[1])
    if cols == 0:
        out.zero_()
        return
    with torch.no_grad():
        if src.device.type != "cpu":
            _cuda_norms(out, src, index, budget)
            return
        if row_norm_backend(src.dtype, backend) == "native" and _native_norms(
            out, src, index, budget
        ):
            return
        need_gather = index is not None and src.dtype != torch.float32
        per_row = cols * 4 + (cols * src.element_size() if need_gather else 0)
        # fp32 rows in place: one call, nothing allocated (vector_norm writes into ``out``).
        direct = src.dtype == torch.float32 and index is None
        chunk = n if direct else _chunk_rows(budget, per_row)
        if chunk == 0:
            _norms_wide_rows(out, src, index)
            return
        buf = None if direct else torch.empty((min(chunk, n), cols), dtype=torch.float32)
        gathered = torch.empty((min(chunk, n), cols), dtype=src.dtype) if need_gather else None
        _norms_serial(out, src, index, 0, n, chunk, (buf, gathered))


def row_norms(
    weight: Any,
    rows: torch.Tensor | Sequence[int] | None = None,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """The L2 norm of every row of an embedding table, as float32, accurate and bounded in memory.

    Parameters
    ----------
    weight : torch.Tensor, ShardedTensor, or list of local shards
        The table (rows x dim), fp32, fp16, bf16 or fp64, on any device. Also accepted, for a
        sharded table, the shards this process holds:

        - a ``torch.distributed._shard.sharded_tensor.ShardedTensor`` (what a sharded
          ``EmbeddingBagCollection``'s ``state_dict()`` holds): its ``local_shards()``;
        - a list of ``Shard`` objects (with ``metadata.shard_offsets``), or of
          ``(row_offset, tensor)`` pairs for row-wise pieces.

        Column-wise shards of the same rows are combined (sum of squared norms); a row some of
        whose columns live on another rank raises `NormError`. DTensors are not accepted: pass
        ``[(row_offset, dtensor.to_local())]``.
    rows : tensor or sequence of int, optional
        Only these rows (positions among the local rows, see `local_row_ids`), in this order.
    backend : {"auto", "native", "torch"}
        How CPU tables are normed (see Notes and `row_norm_backend`). ``"auto"``: the numba
        kernel where numba is installed and ``EMBVIZ_NATIVE`` is not ``0``, else torch ops.

    Returns
    -------
    torch.Tensor
        float32, one norm per row (per local row, in ascending global row order, for shards;
        per entry of ``rows`` when given), on the table's device.

    Notes
    -----
    Accuracy, measured against ``torch.linalg.vector_norm(weight.double(), dim=1)``: the numba
    kernel widens every value to float64 (where its square is exact), sums each row in float64
    and rounds the root once, so its relative error is at most about 2**-24 (half a float32
    ulp) at any width and on any CPU. The torch path is `torch.linalg.vector_norm` over float32
    (fp16/bf16 rows widened first), as accurate as torch itself on the machine's CPU capability.
    Neither is bit-for-bit equal to a particular float32 summation order, and no test asks that.

    On the CPU the numba kernel reads fp32, fp16 and bf16 rows in place on numba's worker threads
    (no buffer at all); gathered rows (``rows``) and rows with spaced columns are first copied a
    chunk at a time. The torch path (``backend="torch"``, ``EMBVIZ_NATIVE=0``, no numba, or
    float64) runs chunks of about 1 MiB: fp32 rows straight into `torch.linalg.vector_norm`,
    other dtypes first converted into a preallocated float32 buffer, with torch's own intra-op
    threads (the thread count is left as it is). `row_norm_backend` says which is used. Either
    way, beyond the result at most `MEMORY_BUDGET_BYTES` (64 MiB) are allocated, whatever the
    table size. On CUDA it is `torch.linalg.vector_norm` with float32 accumulation.

    Raises
    ------
    NormError
        A tensor that is not 2-D or not floating point, on the meta device, shards that overlap
        or split a row across ranks; an unknown ``backend``, or ``"native"`` without numba.
    RowIndexError
        An entry of ``rows`` outside ``[0, local rows)``.
    """
    check_backend(backend)
    layout = table_layout(weight)
    index = None if rows is None else as_index(rows, layout.rows)
    total = layout.rows if index is None else int(index.numel())
    out = torch.empty(total, dtype=torch.float32, device=layout.device)
    if total == 0:
        return out
    if len(layout.groups) == 1 and len(layout.groups[0][2]) == 1:
        _piece_norms(out, layout.groups[0][2][0].tensor, index, MEMORY_BUDGET_BYTES, backend)
        return out
    # Several groups: each group's rows (or the requested positions in it) in turn.
    starts = np.cumsum([0] + [n for _, n, _ in layout.groups])
    for g, (_row0, n, pieces) in enumerate(layout.groups):
        lo, hi = int(starts[g]), int(starts[g] + n)
        if index is None:
            dest, local = out[lo:hi], None
        else:
            mask = (index >= lo) & (index < hi)
            if not bool(mask.any()):
                continue
            where = mask.nonzero().flatten()
            local = (index[where] - lo).to(pieces[0].tensor.device)
            dest = torch.empty(local.numel(), dtype=torch.float32, device=layout.device)
        if len(pieces) == 1:
            _piece_norms(dest, pieces[0].tensor, local, MEMORY_BUDGET_BYTES, backend)
        else:
            _column_pieces_norms(dest, pieces, local, backend)
        if index is not None:
            out[where.to(out.device)] = dest
    return out


def _column_pieces_norms(
    dest: torch.Tensor, pieces: list[Piece], local: torch.Tensor | None, backend: str
) -> None:
    """Norms of rows split by columns over ``pieces``: ``sqrt(sum of the pieces' squares)``.

    Done in row chunks with float64 sums so that, with each piece's own norms, the work stays
    within the budget whatever the number of rows.
    """
    count = dest.numel()
    # float64 sum + float64 and float32 copies of one piece's norms: 20 bytes a row, in a
    # quarter of the budget; the pieces' norms get half.
    step = max(1, (MEMORY_BUDGET_BYTES // 4) // 20)
    size = min(step, count)
    squares = torch.empty(size, dtype=torch.float64, device=dest.device)
    part64 = torch.empty(size, dtype=torch.float64, device=dest.device)
    part = torch.empty(size, dtype=torch.float32, device=dest.device)
    for a in range(0, count, step):
        b = min(a + step, count)
        total, wide, norms = squares[: b - a], part64[: b - a], part[: b - a]
        total.zero_()
        for piece in pieces:
            if local is None:
                _piece_norms(norms, piece.tensor[a:b], None, MEMORY_BUDGET_BYTES // 2, backend)
            else:
                _piece_norms(norms, piece.tensor, local[a:b], MEMORY_BUDGET_BYTES // 2, backend)
            wide.copy_(norms)
            total.addcmul_(wide, wide)
        torch.sqrt(total, out=wide)
        dest[a:b].copy_(wide)
