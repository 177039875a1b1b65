"""Row-norm statistics of whole tables inside a distributed training job: `log_norms`.

the-algorithm-ml's trainer calls ``log_ebc_norms`` on every rank: one number per table and rank
(the mean L2 norm of up to 4,000,000 rows of the rank's shard, picked with ``torch.randperm``),
all-gathered. `log_norms` is its replacement: called on every rank of a
``DistributedModelParallel`` job (torchrun; gloo on CPUs, NCCL on GPUs), it returns on every
rank the same flat dict of the distribution of the row norms of each *whole* table, ready for
``SummaryWriter.add_scalar`` or ``wandb.log``. It runs on the job's own torch.distributed ranks:
nothing is started, gathered onto one machine or written to disk.

How the rows are shared out. Every rank reads the same global description of each table (a
``ShardedTensor``'s metadata lists every shard and its rank) and cuts the table into *units*
that one rank norms:

- rows whose columns all live on one rank (row-wise, table-wise shards, column shards that
  landed on the same rank): that rank norms them, in place, with `embviz.norms.row_norms`;
- rows whose columns are split over ranks (column-wise): every holder computes the float64 sum
  of squares of its columns for a block of at most `SPLIT_BLOCK_ROWS` rows, the blocks are
  reduced (summed) onto one rank each, round robin, which takes the square root;
- a plain tensor while a process group of ``W`` ranks is running (a ``data_parallel`` table,
  replicated by DDP): rank ``r`` norms rows ``[r*R//W, (r+1)*R//W)``, so each row counts once.

Each rank keeps its rows' float32 norms (4 bytes a row); the statistics are then merged without
moving them: count, mean and sum of squared deviations in float64 (Chan's parallel update, in
rank order, so every rank computes the same numbers), and the quantiles by an exact distributed
selection on the norms' float32 bit patterns (non-negative floats order like their bits): a
histogram of the top 11 bits summed over the ranks finds the bucket of each order statistic,
then the next 10 bits within those buckets, then the last 10. Three small all-reduces give the
exact order statistics at any table size, and the quantiles use `torch.quantile`'s 'linear'
rule in float32, as `embviz.norm_stats` does.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
import threading
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch

from embviz.errors import UnknownTableError
from embviz.norms import QUANTILES, EmptyTableError, NormError, row_norms, sample_rows

__all__ = ["LOG_STATS", "SPLIT_BLOCK_ROWS", "log_norms"]

#: Statistics `log_norms` returns per table, in order (a subset of `embviz.norm_stats`'s).
LOG_STATS = ["rows", "sampled", "mean", "std", "min", *QUANTILES, "max"]

#: Rows of a block of rows held in several column pieces: their float64 partial sums of
#: squares (8 MiB) are added up, and reduced in one message when the pieces span ranks.
SPLIT_BLOCK_ROWS = 2**20

# Norms per step of a pass over them: on the CPU, 256 KiB of float32 (its float64 and int32
# temporaries stay in a core's cache); on a GPU, large steps amortise the kernel launches.
_CPU_PASS_VALUES = 2**16
_GPU_PASS_VALUES = 2**22

# The exact selection: (prefix shift, digit shift, digit bits) per round over a float32's 31
# non-sign bits. The first round's prefix is empty (every value's bits >> 31 is 0).
_ROUNDS = ((31, 20, 11), (20, 10, 10), (10, 0, 10))

_TABLE_KEY = re.compile(r"(?:^|[./])embedding_bags\.(?P<name>[^./]+)\.weight$")


# --------------------------------------------------------------------------- the job


@dataclass(frozen=True)
class _Job:
    """The process group, or a single process: rank, world size, device of the collectives."""

    rank: int
    world: int
    device: torch.device | None  # None: no process group (or one rank): no collectives

    @staticmethod
    def current() -> _Job:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return _Job(0, 1, None)
        world = dist.get_world_size()
        if world == 1:
            return _Job(0, 1, None)
        backend = str(dist.get_backend()).lower()
        if "nccl" in backend and "gloo" not in backend:
            device = torch.device("cuda", torch.cuda.current_device())
        else:
            device = torch.device("cpu")
        return _Job(dist.get_rank(), world, device)

    def all_gather(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` of every rank stacked in rank order (``world x ...``)."""
        if self.device is None:
            return values.unsqueeze(0)
        import torch.distributed as dist

        local = values.to(self.device).contiguous()
        parts = [torch.empty_like(local) for _ in range(self.world)]
        dist.all_gather(parts, local)
        return torch.stack(parts).cpu()

    def all_reduce(self, values: torch.Tensor) -> torch.Tensor:
        """The sum over the ranks of ``values`` (integers: exact, so equal on every rank)."""
        if self.device is None:
            return values
        import torch.distributed as dist

        local = values.to(self.device).contiguous()
        dist.all_reduce(local)
        return local.to(values.device)

    def reduce(self, values: torch.Tensor, owner: int) -> torch.Tensor:
        """The sum over the ranks of ``values``, valid on ``owner`` only."""
        if self.device is None:
            return values
        import torch.distributed as dist

        local = values.to(self.device).contiguous()
        dist.reduce(local, dst=owner)
        return local.to(values.device)


# --------------------------------------------------------------------------- units of rows


@dataclass(frozen=True)
class _Piece:
    """A block this rank holds: global rows ``row0:row0+rows``, columns from ``col0``."""

    row0: int
    col0: int
    tensor: torch.Tensor


@dataclass
class _Unit:
    """Rows ``row0:row0+rows`` normed onto ``owner``; ``split``: their columns span ranks."""

    row0: int
    rows: int
    owner: int
    split: bool
    local: list[_Piece] = field(default_factory=list)  # this rank's pieces covering the rows


@dataclass
class _Table:
    name: str
    rows: int
    cols: int
    units: list[_Unit]


def _sharded_type() -> type | None:
    try:
        from torch.distributed._shard.sharded_tensor import ShardedTensor
    except Exception:  # torch built without distributed
        return None
    return ShardedTensor


def _check_tensor(tensor: Any, name: str) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise NormError(f"table {name!r}: a shard is a {type(tensor).__name__}, not a tensor")
    if tensor.dim() != 2:
        raise NormError(f"table {name!r}: expected 2-D rows x dim, got {tuple(tensor.shape)}")
    if tensor.layout != torch.strided:
        raise NormError(f"table {name!r}: a {tensor.layout} tensor; the table must be dense")
    if tensor.device.type == "meta":
        raise NormError(f"table {name!r}: on the meta device, it holds no values")
    if not tensor.is_floating_point():
        raise NormError(f"table {name!r}: dtype {tensor.dtype} is not a floating-point type")


def _describe(name: str, weight: Any, job: _Job) -> _Table:
    """Cut one table into units, the same on every rank (from the global shard metadata)."""
    sharded = _sharded_type()
    if sharded is not None and isinstance(weight, sharded):
        return _describe_sharded(name, weight, job)
    if type(weight).__name__ == "DTensor":
        raise NormError(
            f"table {name!r}: a DTensor (torchrec's 2-D parallel output); log_norms reads "
            "ShardedTensors and replicated tensors"
        )
    _check_tensor(weight, name)
    rows, cols = (int(s) for s in weight.shape)
    piece = _Piece(0, 0, weight.detach())
    # One process, or a replica on each of `world` ranks: rank r norms its share of the rows.
    units = []
    for r in range(job.world):
        lo, hi = r * rows // job.world, (r + 1) * rows // job.world
        if hi > lo:
            units.append(_Unit(lo, hi - lo, r, False, [piece] if r == job.rank else []))
    return _Table(name, rows, cols, units)


def _describe_sharded(name: str, weight: Any, job: _Job) -> _Table:
    size = tuple(int(s) for s in weight.size())
    if len(size) != 2:
        raise NormError(f"table {name!r}: expected a 2-D sharded table, got shape {size}")
    rows, cols = size
    shards = []  # (row0, rows, col0, cols, rank)
    for meta in weight.metadata().shards_metadata:
        r0, c0 = (int(x) for x in meta.shard_offsets)
        n, w = (int(x) for x in meta.shard_sizes)
        rank = meta.placement.rank() if meta.placement is not None else 0
        if rank >= job.world:
            raise NormError(
                f"table {name!r}: a shard is placed on rank {rank}, the process group has "
                f"{job.world} ranks (log_norms uses the default group)"
            )
        if n and w:
            shards.append((r0, n, c0, w, rank))
    held = []
    for shard in weight.local_shards():
        _check_tensor(shard.tensor, name)
        r0, c0 = (int(x) for x in shard.metadata.shard_offsets)
        held.append(_Piece(r0, c0, shard.tensor.detach()))
    # Elementary row intervals: between two shard boundaries the same shards cover the rows.
    # A sweep keeps the shards that cover the current interval.
    cuts = sorted({0, rows, *(s[0] for s in shards), *(s[0] + s[1] for s in shards)})
    pending = sorted(shards, key=lambda s: s[0])
    active: list[tuple[int, int, int, int, int]] = []
    units: list[_Unit] = []
    split_blocks = 0
    next_shard = 0
    for lo, hi in itertools.pairwise(cuts):
        if lo >= rows:
            break
        while next_shard < len(pending) and pending[next_shard][0] <= lo:
            active.append(pending[next_shard])
            next_shard += 1
        active = [s for s in active if s[0] + s[1] > lo]
        covering = sorted(active, key=lambda s: s[2])
        col = 0
        for s in covering:
            if s[2] != col:
                break
            col += s[3]
        if col != cols or sum(s[3] for s in covering) != cols:
            raise NormError(
                f"table {name!r}: the shards do not cover rows {lo}:{hi} once in every column "
                f"(columns covered: {[(s[2], s[2] + s[3]) for s in covering]}, width {cols})"
            )
        ranks = {s[4] for s in covering}
        local = [
            _Piece(p.row0, p.col0, p.tensor)
            for p in held
            if p.row0 <= lo and hi <= p.row0 + int(p.tensor.shape[0])
        ]
        if len(covering) == 1:
            units.append(_Unit(lo, hi - lo, ranks.pop(), False, local))
            continue
        # Rows in several column pieces: blocks of float64 partial sums (bounded memory). On
        # one rank, that rank adds them up; on several, they are reduced onto the ranks in turn.
        for start in range(lo, hi, SPLIT_BLOCK_ROWS):
            stop = min(start + SPLIT_BLOCK_ROWS, hi)
            if len(ranks) == 1:
                units.append(_Unit(start, stop - start, next(iter(ranks)), False, local))
            else:
                units.append(_Unit(start, stop - start, split_blocks % job.world, True, local))
                split_blocks += 1
    return _Table(name, rows, cols, units)


def _allocate(units: Sequence[_Unit], rows: int, sample: int | None) -> list[int]:
    """Rows to describe in each unit: all, or ``sample`` spread in proportion to unit size."""
    if sample is None or sample >= rows:
        return [u.rows for u in units]
    base = [sample * u.rows // rows for u in units]
    remainders = [sample * u.rows % rows for u in units]
    left = sample - sum(base)
    # Largest remainders first, ties to the earlier unit: the same on every rank.
    for i in sorted(range(len(units)), key=lambda i: (-remainders[i], i))[:left]:
        base[i] += 1
    return base


def _unit_seed(seed: int, name: str, index: int) -> int:
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode()) * 4099 + index) % 2**62


# --------------------------------------------------------------------------- local norms


def _piece_rows(piece: _Piece, lo: int, hi: int) -> torch.Tensor:
    """A view of global rows ``lo:hi`` of a piece (no copy)."""
    return piece.tensor[lo - piece.row0 : hi - piece.row0]


def _squares(unit: _Unit, positions: torch.Tensor | None, count: int) -> torch.Tensor:
    """float64 sum over this rank's pieces of the squared norms of the unit's rows."""
    device = unit.local[0].tensor.device if unit.local else torch.device("cpu")
    total = torch.zeros(count, dtype=torch.float64, device=device)
    for piece in unit.local:
        view = _piece_rows(piece, unit.row0, unit.row0 + unit.rows)
        part = row_norms(view, positions).to(torch.float64)
        total.addcmul_(part, part)
    return total


def _table_norms(table: _Table, job: _Job, sample: int | None, seed: int) -> list[torch.Tensor]:
    """Float32 norms this rank computes for ``table`` (all its units' rows, or their samples)."""
    counts = _allocate(table.units, table.rows, sample)
    norms = []
    for index, (unit, count) in enumerate(zip(table.units, counts, strict=True)):
        if count == 0:
            continue
        positions = None
        if count < unit.rows:
            # The same seed on every rank: holders of a split unit draw the same rows.
            positions = sample_rows(unit.rows, count, _unit_seed(seed, table.name, index))
        if unit.split:
            squares = job.reduce(_squares(unit, positions, count), unit.owner)
            if job.rank == unit.owner:
                norms.append(torch.sqrt_(squares).to(torch.float32))
        elif unit.owner == job.rank:
            if len(unit.local) == 1:
                view = _piece_rows(unit.local[0], unit.row0, unit.row0 + unit.rows)
                norms.append(row_norms(view, positions))
            else:  # column shards of these rows that all landed on this rank
                norms.append(torch.sqrt_(_squares(unit, positions, count)).to(torch.float32))
    return norms


# --------------------------------------------------------------------------- merged statistics


def _chunks(norms: list[torch.Tensor]) -> list[torch.Tensor]:
    """The norms in pieces, for passes of a few torch ops per piece.

    On the CPU the pieces are small enough that each pass's temporaries stay in the core's
    cache; on a GPU they are large.
    """
    out = []
    for part in norms:
        step = _CPU_PASS_VALUES if part.device.type == "cpu" else _GPU_PASS_VALUES
        out.extend(part[start : start + step] for start in range(0, part.numel(), step))
    return out


def _for_each_chunk(chunks: list[torch.Tensor], make_work: Callable[[], Any]) -> list[Any]:
    """Run ``work(i, chunk)`` over the chunks; one ``work = make_work()`` per worker, returned.

    On the CPU, as many worker threads as torch has intra-op threads pull chunks in turn, each
    running torch with one thread: the per-chunk ops are too small to share, and OpenMP teams
    that wait for a core another process took make them hundreds of times slower. (torchrun
    starts each rank with one thread: there the loop runs inline.)
    """
    threads = torch.get_num_threads()
    # One table's norms live on one device (its shards').
    on_cpu = bool(chunks) and chunks[0].device.type == "cpu"
    workers = min(threads, len(chunks)) if on_cpu else 1
    if workers <= 1:
        work = make_work()
        for i, chunk in enumerate(chunks):
            work(i, chunk)
        return [work]
    lock = threading.Lock()
    cursor = [0]

    def run(work: Any) -> None:
        torch.set_num_threads(1)  # this thread's OpenMP setting; put back below
        try:
            with torch.no_grad():
                while True:
                    with lock:
                        i = cursor[0]
                        cursor[0] += 1
                    if i >= len(chunks):
                        return
                    work(i, chunks[i])
        finally:
            torch.set_num_threads(threads)

    works = [make_work() for _ in range(workers)]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="embviz-lognorms") as pool:
        for future in [pool.submit(run, w) for w in works]:
            future.result()
    return works


def _local_moments(norms: list[torch.Tensor]) -> list[float]:
    """[count, mean, M2, min, max, has NaN] of this rank's norms (float64 moments)."""
    chunks = _chunks(norms)
    if not chunks:
        return [0.0, 0.0, 0.0, math.inf, -math.inf, 0.0]
    # Per chunk: mean, M2, min, max (float64), filled in by index from any worker.
    rows = torch.empty((len(chunks), 4), dtype=torch.float64, device=chunks[0].device)

    def make_work() -> Any:
        def work(i: int, chunk: torch.Tensor) -> None:
            low, high = torch.aminmax(chunk)
            # Sums of the values less a pivot inside their range (the first one): M2 is then
            # free of the cancellation of plain sums of squares.
            pivot = chunk[0].to(torch.float64)
            shifted = chunk.to(torch.float64).sub_(pivot)
            total = shifted.sum()
            n = chunk.numel()
            rows[i, 0] = pivot + total / n
            rows[i, 1] = torch.dot(shifted, shifted) - total * total / n
            rows[i, 2], rows[i, 3] = low, high

        return work

    _for_each_chunk(chunks, make_work)
    rows = rows.cpu()
    n = torch.tensor([c.numel() for c in chunks], dtype=torch.float64)
    total, mean, m2 = _merge(torch.stack([n, rows[:, 0], rows[:, 1]], dim=1))
    nan = bool(torch.isnan(rows[:, 2:]).any())
    return [total, mean, m2, float(rows[:, 2].min()), float(rows[:, 3].max()), float(nan)]


def _merge(parts: torch.Tensor) -> tuple[float, float, float]:
    """(count, mean, M2) of the union of the ranks' (count, mean, M2) rows, in rank order."""
    n, means, m2s = parts[:, 0], parts[:, 1], parts[:, 2]
    total = float(n.sum())
    if total == 0:
        return 0.0, math.nan, math.nan
    mean = float((n * means).sum() / total)
    return total, mean, float(m2s.sum() + (n * (means - mean) ** 2).sum())


class _Histogram:
    """One worker's counts for a selection round (see `_order_statistics`).

    A value's bin is its digit ``(bits >> digit_shift) & (width - 1)`` in the histogram of its
    prefix ``bits >> prefix_shift``; ``lut`` maps the wanted prefixes to the first bin of
    histograms ``0..J-1`` and every other prefix to histogram ``J``, whose bins are dropped.
    Without ``lut`` (the first round) every value shares the empty prefix.
    """

    def __init__(self, width: int, size: int, digit_shift: int, prefix_shift: int, lut: Any):
        self.width, self.size = width, size
        self.digit_shift, self.prefix_shift = digit_shift, prefix_shift
        self.lut: torch.Tensor | None = lut
        self.counts: torch.Tensor | None = None

    def __call__(self, index: int, chunk: torch.Tensor) -> None:
        code = chunk.view(torch.int32)
        if self.counts is None:
            self.counts = torch.zeros(self.size, dtype=torch.int64, device=code.device)
            self.lut = None if self.lut is None else self.lut.to(code.device)
        if self.lut is None:
            bins = torch.bitwise_right_shift(code, self.digit_shift)
        else:
            if self.digit_shift:
                bins = torch.bitwise_right_shift(code, self.digit_shift)
                bins.bitwise_and_(self.width - 1)
            else:
                bins = torch.bitwise_and(code, self.width - 1)
            # The lookup table holds each prefix's first bin.
            bins += torch.index_select(self.lut, 0, code >> self.prefix_shift)
        self.counts += torch.bincount(bins, minlength=self.size)


def _order_statistics(norms: list[torch.Tensor], ks: list[int], job: _Job) -> dict[int, float]:
    """The ``k``-th smallest norm over every rank (0-based), exactly, for each ``k`` in ``ks``.

    Non-negative float32 values order like their int32 bit patterns; three rounds of histograms
    of those bits, summed over the ranks, narrow each ``k`` down to one bit pattern. NaNs must
    have been ruled out.
    """
    chunks = _chunks(norms)
    targets = sorted(set(ks))
    prefixes = [0] * len(targets)  # the bits found so far, per target
    left = list(targets)  # rank of the target among the values sharing its prefix
    for prefix_shift, digit_shift, bits in _ROUNDS:
        distinct = sorted(set(prefixes))
        width = 1 << bits
        size = (len(distinct) + 1) * width
        lut = None
        if prefix_shift < 31:
            lut = torch.full((1 << (31 - prefix_shift),), len(distinct) * width, dtype=torch.int32)
            lut[distinct] = torch.arange(len(distinct), dtype=torch.int32) * width
        works = _for_each_chunk(
            chunks, functools.partial(_Histogram, width, size, digit_shift, prefix_shift, lut)
        )
        hist = torch.zeros(size, dtype=torch.int64)
        for work in works:
            if work.counts is not None:
                hist += work.counts.cpu()
        # The last `width` bins held the values of other prefixes: not sent.
        hist = job.all_reduce(hist[: len(distinct) * width]).view(len(distinct), width)
        for t in range(len(targets)):
            cumulative = torch.cumsum(hist[distinct.index(prefixes[t])], 0)
            d = int(torch.searchsorted(cumulative, torch.tensor(left[t]), right=True))
            left[t] -= int(cumulative[d - 1]) if d else 0
            prefixes[t] = (prefixes[t] << bits) | d
    values = torch.tensor(prefixes, dtype=torch.int32).view(torch.float32)
    return {k: float(v) for k, v in zip(targets, values.tolist(), strict=True)}


def _quantile_ranks(n: int) -> tuple[list[int], list[int], torch.Tensor]:
    """Order statistics below and above each of `QUANTILES` among ``n`` values, and weights.

    The arithmetic of `torch.quantile` ('linear') and `embviz.exact_quantiles`: rank
    ``q * (n - 1)`` in float32 (float64 beyond 2**24 values, where float32 ranks stop being
    exact integers).
    """
    q = torch.tensor(list(QUANTILES.values()), dtype=torch.float32)
    rank_dtype = torch.float32 if n <= 2**24 else torch.float64
    ranks = q.to(rank_dtype) * (n - 1)
    below = ranks.floor().to(torch.int64)
    above = ranks.ceil().to(torch.int64)
    weights = (ranks - below.to(rank_dtype)).to(torch.float32)
    return below.tolist(), above.tolist(), weights


def _table_stats(table: _Table, job: _Job, sample: int | None, seed: int) -> dict[str, Any]:
    norms = _table_norms(table, job, sample, seed)
    gathered = job.all_gather(torch.tensor(_local_moments(norms), dtype=torch.float64))
    count, mean, m2 = _merge(gathered[:, :3])  # in rank order: the same on every rank
    n = int(count)
    stats: dict[str, Any] = {"rows": table.rows, "sampled": n}
    if bool(gathered[:, 5].any()):
        nan = math.nan
        stats.update({"mean": nan, "std": nan, "min": nan, **dict.fromkeys(QUANTILES, nan)})
        stats["max"] = nan
        return stats
    below, above, weights = _quantile_ranks(n)
    order = _order_statistics(norms, below + above, job)
    lo = torch.tensor([order[k] for k in below], dtype=torch.float32)
    hi = torch.tensor([order[k] for k in above], dtype=torch.float32)
    stats["mean"] = mean
    stats["std"] = math.sqrt(m2 / (count - 1)) if count > 1 else math.nan
    stats["min"] = float(gathered[:, 3].min())
    stats.update(zip(QUANTILES, torch.lerp(lo, hi, weights).tolist(), strict=True))
    stats["max"] = float(gathered[:, 4].max())
    return stats


# --------------------------------------------------------------------------- public


def _find_tables(module: Any) -> dict[str, Any]:
    if isinstance(module, torch.nn.Module):
        state: Mapping[str, Any] = module.state_dict()
        what = type(module).__name__
    elif isinstance(module, Mapping):
        state, what = module, "state dict"
    else:
        raise NormError(
            "module must be an nn.Module holding an EmbeddingBagCollection (a "
            f"DistributedModelParallel too) or its state dict, got {type(module).__name__}"
        )
    matches = [
        (m.group("name"), str(key), value)
        for key, value in state.items()
        if (m := _TABLE_KEY.search(str(key))) is not None
    ]
    counts: dict[str, int] = {}
    for name, _, _ in matches:
        counts[name] = counts.get(name, 0) + 1
    found = {(name if counts[name] == 1 else key): value for name, key, value in matches}
    if not found and what == "state dict":
        # A plain {table name: 2-D tensor or ShardedTensor} mapping.
        sharded = _sharded_type()
        found = {
            str(k): v
            for k, v in state.items()
            if (isinstance(v, torch.Tensor) and v.dim() == 2)
            or (sharded is not None and isinstance(v, sharded) and len(v.size()) == 2)
        }
    if not found:
        raise NormError(
            f"{what}: holds no embedding tables (no key ends in 'embedding_bags.<name>.weight'"
            + (" and no value is a 2-D tensor)" if what == "state dict" else ")")
        )
    return found


def _signature(tables: list[_Table], sample: int | None, seed: int) -> int:
    text = repr(
        [(t.name, t.rows, t.cols, [(u.row0, u.rows, u.owner) for u in t.units]) for t in tables]
    )
    return zlib.crc32(f"{text}|{sample}|{seed}".encode())


def log_norms(
    module: torch.nn.Module | Mapping[str, Any],
    tables: str | Iterable[str] | None = None,
    prefix: str = "embedding_norm",
    sample: int | None = None,
    *,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, float | int]:
    """Row-norm statistics of whole tables, the same dict on every rank of a training job.

    Call it on every rank of a ``DistributedModelParallel`` job (torchrun; gloo or NCCL), in
    place of the-algorithm-ml's ``log_ebc_norms``, or in a single process (no process group)
    on an ``EmbeddingBagCollection`` or a module holding one::

        stats = embviz.log_norms(model)
        if rank == 0:
            wandb.log(stats, step=step)  # or writer.add_scalar(key, value, step) for each

    Parameters
    ----------
    module : nn.Module or state dict
        A ``DistributedModelParallel``, an ``EmbeddingBagCollection``, any module holding one,
        its ``state_dict()``, or a ``{table name: weight}`` mapping. Tables are the keys ending
        in ``embedding_bags.<name>.weight``:
        ``ShardedTensor`` (row-wise, table-wise, column-wise, table-row-wise or grid shards, read
        in place) or plain tensors (in a process group of several ranks they are taken as
        replicas, as DMP's ``data_parallel`` tables are, and each row is counted once).
    tables : str or list of str, optional
        Tables to describe; default: every table of the module.
    prefix : str
        First part of every key.
    sample : int, optional
        Describe this many distinct rows of each table (all rows when the table has fewer),
        spread over the ranks in proportion to the rows each one norms and drawn uniformly
        within each share with `embviz.sample_rows` (no permutation of all rows). The
        original's ``sample_size`` was 4,000,000 rows per rank. Default: every row.
    seed : int
        Seed of the sample; the same seed gives the same rows.
    progress : bool
        A progress bar over the tables on rank 0.

    Returns
    -------
    dict
        ``"<prefix>/<table>/<stat>"`` for each table and each stat of `LOG_STATS`: ``rows`` (the
        table's global row count), ``sampled`` (rows described), ``mean``, ``std``
        (correction 1), ``min``, ``p1``, ``p5``, ``p50``, ``p95``, ``p99`` (``torch.quantile``'s
        'linear' rule), ``max``. The same keys and the same values on every rank. A NaN
        norm makes every statistic but the counts NaN.

    Notes
    -----
    Accuracy: each row's norm is `embviz.row_norms`' float32 norm (column-split rows: the
    square root of the float64 sum of the shards' squared float32 norms). The quantiles are
    exact order statistics of those float32 norms **at any table size** (a distributed
    selection, see the module docstring), interpolated as ``torch.quantile`` does; ``mean``
    and ``std`` are accumulated in float64.

    Communication per call, whatever the tables' sizes: one all-gather of 16 bytes per rank
    (a check that every rank describes the same tables); per table, one all-gather of 48 bytes
    per rank (count, mean, sum of squared deviations, min, max, NaN flag) and three
    all-reduces of int64 counts for the quantiles (16 KiB, then at most 80 KiB twice). Rows whose
    columns live on several ranks (column-wise sharding) add 8 bytes per row (described), the
    float64 partial sums of squares, reduced in blocks of at most `SPLIT_BLOCK_ROWS` rows
    (8 MiB) onto one rank each. The norms themselves never leave their rank.

    Memory per rank: 4 bytes per row it norms, plus at most `embviz.norms.MEMORY_BUDGET_BYTES`
    inside `row_norms`, under 10 MiB of temporaries for the statistics on the CPU (the last
    round's 8 MiB lookup table; about 50 MiB on a GPU) and, for rows held in several column
    pieces, 16 MiB per block of partial sums. No shard is copied: the norms are read from the
    shards in place.

    Raises
    ------
    UnknownTableError
        A table the module does not hold; the message lists those it holds.
    EmptyTableError
        A table with no rows.
    NormError
        A module with no tables, shards that are not 2-D floating point or on the meta device,
        shards that do not cover the table, or ranks that disagree on the tables (on every
        rank, so that none waits forever for the others).
    ArgumentError
        A ``sample`` that is not a positive integer, a ``prefix`` that is not a string.
    """
    from embviz.arguments import integer

    if sample is not None:
        sample = integer("sample", sample)
    if not isinstance(prefix, str):
        from embviz.errors import ArgumentError

        raise ArgumentError("prefix", f"must be a string, got {prefix!r}")
    seed = integer("seed", seed, minimum=0)
    found = _find_tables(module)
    if tables is None:
        chosen = list(found)
    else:
        chosen = list(dict.fromkeys([tables] if isinstance(tables, str) else tables))
        if not chosen:
            raise NormError("tables: the list is empty; name at least one table")
        unknown = [t for t in chosen if t not in found]
        if unknown:
            raise UnknownTableError(unknown, list(found))
    job = _Job.current()
    described: list[_Table] = []
    problem = ""
    try:
        described = [_describe(name, found[name], job) for name in chosen]
    except NormError as exc:
        problem = str(exc)
    # Every rank learns whether all describe the same tables and could read their shards, before
    # any per-table collective: an error then stops every rank, none waits for the others.
    mine = torch.tensor([_signature(described, sample, seed), int(bool(problem))])
    everyone = job.all_gather(mine)
    if problem:
        raise NormError(problem)
    failed = [r for r in range(job.world) if int(everyone[r, 1])]
    if failed:
        raise NormError(f"rank {failed[0]} cannot read its shards (its error says why)")
    if len({int(s) for s in everyone[:, 0]}) > 1:
        raise NormError(
            "the ranks disagree on the tables (names, shapes or sharding) or on tables/sample/"
            "seed: call log_norms with the same arguments on every rank of the same model"
        )
    empty = [t.name for t in described if t.rows == 0]
    if empty:
        raise EmptyTableError(f"table {empty[0]!r} has no rows: its norms have no distribution")
    from tqdm.auto import tqdm

    out: dict[str, float | int] = {}
    head = f"{prefix}/" if prefix else ""
    with torch.no_grad():
        for table in tqdm(
            described, desc="log_norms", unit="table", disable=not progress or job.rank != 0
        ):
            stats = _table_stats(table, job, sample, seed)
            out.update({f"{head}{table.name}/{k}": stats[k] for k in LOG_STATS})
    return out
