"""`row_norms`: the L2 norm of every row of a table, exact and bounded in memory.

On the CPU, worker threads run the native kernel (`embviz.norms.kernel`) over row ranges, or
torch ops in chunks of about 1 MiB; on CUDA it is one ``vector_norm`` call.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from embviz.norms.kernel import _NATIVE_TASK_BYTES, native_kernel
from embviz.norms.layout import Piece, as_index, table_layout

__all__ = ["MEMORY_BUDGET_BYTES", "row_norms"]

#: Extra memory `row_norms` may allocate beyond its float32 result, whatever the table size.
MEMORY_BUDGET_BYTES = 64 * 2**20

# Rows of fp32 work per CPU chunk: 1 MiB of float32 keeps a worker's buffer in its L2 cache while
# each chunk still amortises the few microseconds of Python around its two torch calls.
_CPU_CHUNK_BYTES = 2**20
# Below this many elements a table is done inline, without worker threads.
_THREADED_MIN_ELEMENTS = 2**21
# Buffers per worker may take this share of the budget; the rest covers thread stacks and the
# small tensors torch allocates per call.
_BUFFER_SHARE = 0.75


def _worker_rows(cols: int, workers: int, budget: int, need_gather: bool, itemsize: int) -> int:
    """Rows per chunk so that ``workers`` buffers of that many rows fit ``budget`` bytes."""
    per_row = cols * 4 + (cols * itemsize if need_gather else 0)
    target = max(1, _CPU_CHUNK_BYTES // max(1, cols * 4))
    cap = int(budget * _BUFFER_SHARE) // max(1, workers * per_row)
    return max(1, min(target, cap)) if cap >= 1 else 0


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


def _run_workers(n: int, workers: int, task_rows: int, make_job: Any) -> None:
    """Run ``job(start, stop)`` over ``range(n)`` in tasks of ``task_rows``, on worker threads.

    Workers pull the next task when they finish one, so a core slowed by other work on the
    machine takes fewer tasks instead of holding everyone up. Each worker runs torch with one
    intra-op thread, so two workers use two cores without OpenMP teams competing for them (a loop
    of OpenMP-parallel calls collapses when another process takes a core). That setting is per
    thread in OpenMP and MKL; the shared default is put back before a worker ends.
    ``make_job()`` is called once per worker (to give each its own buffers).
    """
    restore = torch.get_num_threads()
    lock = threading.Lock()
    cursor = [0]

    def run() -> None:
        torch.set_num_threads(1)
        try:
            job = make_job()
            with torch.no_grad():
                while True:
                    with lock:
                        start = cursor[0]
                        cursor[0] = start + task_rows
                    if start >= n:
                        return
                    job(start, min(start + task_rows, n))
        finally:
            torch.set_num_threads(restore)

    if workers == 1:
        with torch.no_grad():
            job = make_job()
            for start in range(0, n, task_rows):
                job(start, min(start + task_rows, n))
        return
    pool = _pool(workers)
    futures = [pool.submit(run) for _ in range(workers)]
    for future in futures:
        future.result()


_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    """One lasting pool of worker threads per worker count.

    A table streamed in many blocks (`embviz.norms.streaming`) then starts no threads per block.
    """
    with _POOLS_LOCK:
        pool = _POOLS.get(workers)
        if pool is None:
            pool = _POOLS[workers] = ThreadPoolExecutor(
                max_workers=workers, thread_name_prefix="embviz-norms"
            )
        return pool


def _piece_norms(
    out: torch.Tensor, src: torch.Tensor, index: torch.Tensor | None, budget: int
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
    itemsize = src.element_size()
    if src.device.type != "cpu":
        low_or_single = src.dtype in (torch.float16, torch.bfloat16, torch.float32)
        if src.device.type == "cuda" and index is None and low_or_single:
            # CUDA reduces fp16/bf16 into float32 reading the input as it is (torch's
            # make_reduction special case): one call, nothing allocated beyond the result.
            with torch.no_grad():
                torch.linalg.vector_norm(src, dim=1, dtype=torch.float32, out=out)
            return
        # Elsewhere chunks bound what a gather (sampled rows) or a cast allocates.
        chunk = max(1, (budget // 2) // (cols * max(4, itemsize)))
        if index is not None:
            index = index.to(src.device)
        with torch.no_grad():
            for s in range(0, n, chunk):
                e = min(s + chunk, n)
                x = src[s:e] if index is None else torch.index_select(src, 0, index[s:e])
                if x.dtype in (torch.float16, torch.bfloat16, torch.float32):
                    torch.linalg.vector_norm(x, dim=1, dtype=torch.float32, out=out[s:e])
                else:
                    torch.linalg.vector_norm(x.float(), dim=1, out=out[s:e])
        return
    threads = max(1, torch.get_num_threads())
    threaded = threads > 1 and n * cols >= _THREADED_MIN_ELEMENTS
    workers = min(threads, n) if threaded else 1

    kernel = native_kernel(src.dtype) if index is None and src.stride(1) == 1 else None
    if kernel is not None:
        # No buffers at all: the kernel reads the rows in place and writes the norms.
        base, stride, dest = src.data_ptr(), src.stride(0), out.data_ptr()
        task_rows = max(1024, _NATIVE_TASK_BYTES // max(1, cols * itemsize))

        def make_native_job() -> Any:
            def job(a: int, b: int) -> None:
                kernel(base + a * stride * itemsize, b - a, cols, stride, dest + a * 4)

            return job

        _run_workers(n, workers, task_rows, make_native_job)
        return

    need_gather = index is not None and src.dtype != torch.float32
    chunk = _worker_rows(cols, workers, budget, need_gather, itemsize)
    while chunk == 0 and workers > 1:
        workers -= 1
        chunk = _worker_rows(cols, workers, budget, need_gather, itemsize)
    if chunk == 0:
        with torch.no_grad():
            _norms_wide_rows(out, src, index)
        return
    direct = src.dtype == torch.float32 and index is None

    def make_job() -> Any:
        buf = None if direct else torch.empty((chunk, cols), dtype=torch.float32)
        gathered = torch.empty((chunk, cols), dtype=src.dtype) if need_gather else None

        def job(a: int, b: int) -> None:
            _norms_serial(out, src, index, a, b, chunk, (buf, gathered))

        return job

    # Tasks of a few chunks: few lock round trips, still fine-grained enough to balance.
    _run_workers(n, workers, chunk * 8, make_job)


def row_norms(weight: Any, rows: torch.Tensor | Sequence[int] | None = None) -> torch.Tensor:
    """The L2 norm of every row of an embedding table, as float32, exact and bounded in memory.

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

    Returns
    -------
    torch.Tensor
        float32, one norm per row (per local row, in ascending global row order, for shards;
        per entry of ``rows`` when given), on the table's device.

    Notes
    -----
    On the CPU, one worker thread per intra-op thread (each running torch with one thread) pulls
    row ranges from a shared queue. A small C kernel, compiled once per machine with the system's
    C compiler and cached under ``~/.cache/embviz/native`` (``EMBVIZ_NATIVE=0`` turns it off),
    reads fp32, fp16 and bf16 rows in place with the arithmetic of torch's own kernel: no buffer
    at all, and memory speed on 2 cores. Without it (no compiler, float64, gathered rows, columns
    not contiguous) torch ops run in chunks of about 1 MiB: fp32 rows straight into
    `torch.linalg.vector_norm`, other dtypes first converted into a preallocated float32 buffer.
    `row_norm_backend` says which is used. Either way, beyond the result at most
    `MEMORY_BUDGET_BYTES` (64 MiB) are allocated, whatever the table size, and the norms equal
    ``torch.linalg.vector_norm(weight.float(), dim=1)`` (bit for bit with torch's AVX2 builds;
    within a few ulps where a build orders the last additions differently).

    Raises
    ------
    NormError
        A tensor that is not 2-D or not floating point, on the meta device, shards that overlap
        or split a row across ranks.
    RowIndexError
        An entry of ``rows`` outside ``[0, local rows)``.
    """
    layout = table_layout(weight)
    index = None if rows is None else as_index(rows, layout.rows)
    total = layout.rows if index is None else int(index.numel())
    out = torch.empty(total, dtype=torch.float32, device=layout.device)
    if total == 0:
        return out
    if len(layout.groups) == 1 and len(layout.groups[0][2]) == 1:
        _piece_norms(out, layout.groups[0][2][0].tensor, index, MEMORY_BUDGET_BYTES)
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
            _piece_norms(dest, pieces[0].tensor, local, MEMORY_BUDGET_BYTES)
        else:
            _column_pieces_norms(dest, pieces, local)
        if index is not None:
            out[where.to(out.device)] = dest
    return out


def _column_pieces_norms(
    dest: torch.Tensor, pieces: list[Piece], local: torch.Tensor | None
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
                _piece_norms(norms, piece.tensor[a:b], None, MEMORY_BUDGET_BYTES // 2)
            else:
                _piece_norms(norms, piece.tensor, local[a:b], MEMORY_BUDGET_BYTES // 2)
            wide.copy_(norms)
            total.addcmul_(wide, wide)
        torch.sqrt(total, out=wide)
        dest[a:b].copy_(wide)
