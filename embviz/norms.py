"""Row norms of embedding tables: exact, fast, bounded in memory, and over training steps.

the-algorithm-ml's ``log_ebc_norms`` (``common/log_weights.py``) logs one number per table and
rank: the mean L2 norm of up to 4,000,000 rows picked with ``torch.randperm`` over all rows,
gathered and copied to the CPU. This module computes the norm of *every* row instead, faster than
that sample, and turns the norms into distributions (`norm_stats`), their movement over
checkpoints (`norm_history`), and a look at the rows themselves (`nearest`, `project`,
`fp16_error`).

Tables come from three kinds of *source*:

- an ``nn.Module`` holding an ``EmbeddingBagCollection`` (the collection itself, a model, a
  ``DistributedModelParallel``), whose ``state_dict()`` keys end in
  ``embedding_bags.<name>.weight``;
- a state dict (a mapping of those keys to tensors, or of table names to 2-D tensors);
- the path of a torchsnapshot (``save_dir/<step>``), read with `embviz.snapshots.read_table`,
  one table at a time and only the tables asked for.

Speed and memory: `row_norms` allocates the float32 result and at most `MEMORY_BUDGET_BYTES`
(64 MiB) more, whatever the size of the table. On the CPU it runs a small C kernel compiled once
per machine (cached under ``~/.cache/embviz/native``; ``EMBVIZ_NATIVE=0`` or no C compiler means
torch ops instead, same results): on 2 cores an 8M x 64 table takes about as long as
``torch.sum`` over it. On CUDA it is one ``vector_norm`` call. The statistics add an O(rows)
float32 copy of the norms for the exact quantiles.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from embviz.errors import EmbvizError

if TYPE_CHECKING:
    import pandas as pd

    from embviz.config import LargeEmbeddingsConfig

__all__ = [
    "MEMORY_BUDGET_BYTES",
    "QUANTILES",
    "STAT_COLUMNS",
    "EmptyTableError",
    "NormError",
    "RowIndexError",
    "UnknownEntityError",
    "exact_quantiles",
    "fp16_error",
    "fp16_error_table",
    "load_table",
    "local_row_ids",
    "nearest",
    "norm_histogram",
    "norm_history",
    "norm_stats",
    "project",
    "resolve_snapshot",
    "row_norm_backend",
    "row_norm_throughput",
    "row_norms",
    "sample_rows",
    "table_names",
]

#: Extra memory `row_norms` may allocate beyond its float32 result, whatever the table size.
MEMORY_BUDGET_BYTES = 64 * 2**20

#: Quantiles reported by `norm_stats`, by column name.
QUANTILES: dict[str, float] = {"p1": 0.01, "p5": 0.05, "p50": 0.50, "p95": 0.95, "p99": 0.99}

#: Columns of `norm_stats` (after the ``table`` index), in order.
STAT_COLUMNS = [
    "rows",
    "sampled",
    "mean",
    "std",
    "min",
    *QUANTILES,
    "max",
    "zero_share",
    "unchanged_share",
]

# Rows of fp32 work per CPU chunk: 1 MiB of float32 keeps a worker's buffer in its L2 cache while
# each chunk still amortises the few microseconds of Python around its two torch calls.
_CPU_CHUNK_BYTES = 2**20
# Rows per task of the native kernel: about 4 MiB of table.
_NATIVE_TASK_BYTES = 4 * 2**20
# Below this many elements a table is done inline, without worker threads.
_THREADED_MIN_ELEMENTS = 2**21
# Buffers per worker may take this share of the budget; the rest covers thread stacks and the
# small tensors torch allocates per call.
_BUFFER_SHARE = 0.75

# ``embedding_bags.<name>.weight`` at the end of a state-dict key or manifest path, whatever the
# prefix; torchrec table names are ModuleDict keys and hold no dots.
_TABLE_KEY = re.compile(r"(?:^|[./])embedding_bags\.(?P<name>[^./]+)\.weight$")


# --------------------------------------------------------------------------- errors


class NormError(EmbvizError, ValueError):
    """An argument or a table the norm functions cannot work with (the message says which)."""


class EmptyTableError(NormError):
    """A table with no rows: it has no norm distribution."""


class RowIndexError(EmbvizError, IndexError):
    """A row index outside ``[0, rows)``."""


class UnknownEntityError(EmbvizError, KeyError):
    """An entity id the vocabulary does not hold."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


def _unknown_tables(unknown: list[str], known: list[str]) -> EmbvizError:
    from embviz.memory import UnknownTableError

    return UnknownTableError(unknown, known)


# --------------------------------------------------------------------------- local pieces


@dataclass(frozen=True)
class _Piece:
    """A 2-D block of a table held here: global rows ``row0:row0+n``, columns ``col0:col0+d``."""

    row0: int
    col0: int
    tensor: torch.Tensor


@dataclass(frozen=True)
class _Layout:
    """The local rows of a table, as groups of pieces that share one row range.

    A plain tensor is one group of one piece. Row-wise shards are one group each; column-wise
    shards of the same rows form a group whose row norms combine the pieces' squared norms.
    """

    groups: list[tuple[int, int, list[_Piece]]]  # (row0, rows, pieces covering every column)
    cols: int
    device: torch.device

    @property
    def rows(self) -> int:
        return sum(n for _, n, _ in self.groups)

    def row_ids(self) -> torch.Tensor:
        parts = [torch.arange(r0, r0 + n, dtype=torch.int64) for r0, n, _ in self.groups]
        return torch.cat(parts) if parts else torch.empty(0, dtype=torch.int64)


def _sharded_tensor_type() -> type | None:
    try:
        from torch.distributed._shard.sharded_tensor import ShardedTensor
    except Exception:  # torch built without distributed
        return None
    return ShardedTensor


def _shard_to_piece(shard: Any) -> _Piece:
    offsets = list(shard.metadata.shard_offsets)
    tensor = shard.tensor
    if tensor.dim() != 2 or len(offsets) != 2:
        raise NormError(f"a shard must be 2-D (rows x dim), got shape {tuple(tensor.shape)}")
    return _Piece(int(offsets[0]), int(offsets[1]), tensor)


def _layout(weight: Any, what: str = "table") -> _Layout:
    """The local pieces of ``weight``; see `row_norms` for what is accepted."""
    sharded = _sharded_tensor_type()
    cols: int | None = None
    if isinstance(weight, torch.nn.Parameter | torch.Tensor) and (
        sharded is None or not isinstance(weight, sharded)
    ):
        if type(weight).__name__ == "DTensor":
            raise NormError(
                f"{what}: a DTensor; pass its local rows as [(row_offset, weight.to_local())]"
            )
        if weight.dim() != 2:
            raise NormError(
                f"{what}: expected a 2-D table (rows x dim), got shape {tuple(weight.shape)}"
            )
        pieces = [_Piece(0, 0, weight)]
        cols = int(weight.shape[1])
    elif sharded is not None and isinstance(weight, sharded):
        size = weight.size()
        if len(size) != 2:
            raise NormError(f"{what}: expected a 2-D sharded table, got shape {tuple(size)}")
        cols = int(size[1])
        pieces = [_shard_to_piece(s) for s in weight.local_shards()]
    elif isinstance(weight, Sequence) and not isinstance(weight, str | bytes):
        pieces = []
        for item in weight:
            if hasattr(item, "metadata") and hasattr(item, "tensor"):
                pieces.append(_shard_to_piece(item))
            elif (
                isinstance(item, tuple)
                and len(item) == 2
                and isinstance(item[0], int)
                and isinstance(item[1], torch.Tensor)
            ):
                if item[1].dim() != 2:
                    raise NormError(
                        f"{what}: shard at row {item[0]} is not 2-D (shape {tuple(item[1].shape)})"
                    )
                pieces.append(_Piece(int(item[0]), 0, item[1]))
            else:
                raise NormError(
                    f"{what}: a list must hold torch Shards or (row_offset, tensor) pairs, "
                    f"got {type(item).__name__}"
                )
    else:
        raise NormError(
            f"{what}: expected a 2-D tensor, a ShardedTensor, or a list of local shards, "
            f"got {type(weight).__name__}"
        )
    for piece in pieces:
        t = piece.tensor
        if t.layout != torch.strided:
            raise NormError(f"{what}: a {t.layout} tensor; pass a dense (strided) table")
        if t.device.type == "meta":
            raise NormError(
                f"{what}: on the meta device, it holds no values (materialise it, "
                "e.g. build the collection on 'cpu')"
            )
        if not t.is_floating_point():
            raise NormError(f"{what}: dtype {t.dtype} is not a floating-point type")
        if piece.row0 < 0 or piece.col0 < 0:
            raise NormError(f"{what}: negative shard offset ({piece.row0}, {piece.col0})")
    devices = {p.tensor.device for p in pieces}
    if len(devices) > 1:
        raise NormError(f"{what}: local shards on several devices ({sorted(map(str, devices))})")
    device = devices.pop() if devices else torch.device("cpu")
    if cols is None:
        # A list of pieces: the width is where the widest piece ends.
        cols = max((p.col0 + int(p.tensor.shape[1]) for p in pieces), default=0)
    # Group pieces by row range; each group must cover every column exactly once.
    by_rows: dict[tuple[int, int], list[_Piece]] = {}
    for piece in pieces:
        by_rows.setdefault((piece.row0, int(piece.tensor.shape[0])), []).append(piece)
    groups = []
    for (row0, n), members in sorted(by_rows.items()):
        members.sort(key=lambda p: p.col0)
        col = 0
        for p in members:
            if p.col0 != col:
                raise NormError(
                    f"{what}: rows {row0}:{row0 + n} have columns {col}:{p.col0} on another "
                    "rank (column-wise sharding); a row norm needs the whole row: gather the "
                    "table or norm a row-wise/table-wise sharded copy"
                )
            col += int(p.tensor.shape[1])
        if col != cols:
            raise NormError(
                f"{what}: rows {row0}:{row0 + n} have columns {col}:{cols} on another rank "
                "(column-wise sharding); a row norm needs the whole row"
            )
        groups.append((row0, n, members))
    for (a0, an, _), (b0, _, _) in itertools.pairwise(groups):
        if b0 < a0 + an:
            raise NormError(f"{what}: local shards overlap (rows {a0}:{a0 + an} and from {b0})")
    return _Layout(groups, cols, device)


def local_row_ids(weight: Any) -> torch.Tensor:
    """Global row ids of the rows `row_norms` returns, in the same order (int64, on the CPU).

    For a plain tensor that is ``arange(rows)``; for local shards, the rows this process holds,
    in ascending order.
    """
    return _layout(weight).row_ids()


# --------------------------------------------------------------------------- row norms


def _worker_rows(cols: int, workers: int, budget: int, need_gather: bool, itemsize: int) -> int:
    """Rows per chunk so that ``workers`` buffers of that many rows fit ``budget`` bytes."""
    per_row = cols * 4 + (cols * itemsize if need_gather else 0)
    target = max(1, _CPU_CHUNK_BYTES // max(1, cols * 4))
    cap = int(budget * _BUFFER_SHARE) // max(1, workers * per_row)
    return max(1, min(target, cap)) if cap >= 1 else 0


# --------------------------------------------------------------------------- native CPU kernel

# torch's `vector_norm` over the last dim of a float tensor (ReduceOpsKernel.cpp, the
# vectorised `norm_two_reduce_step` path) keeps one accumulator of LANES floats per row (8 on
# AVX2 builds, 16 on AVX-512 ones), adds ``v * v`` lane by lane (a multiply then an add, no FMA),
# sums the lanes in order, adds the leftover columns one by one, and takes the square root. In
# torch's AVX2 build GCC compiled that leftover loop as four products rounded together (when 4
# or more are left) then FMAs for the rest. This kernel does the same arithmetic, so its norms
# equal torch's bit for bit (checked at widths 1 to 39 and more on AVX2; where a build orders the
# leftover additions otherwise, within a few ulps), but it reads fp16/bf16 rows as they are (no
# float32 copy) with no Python between rows: on 2 cores it runs near memory speed, where
# copy + vector_norm cannot.
_NATIVE_SOURCE = r"""
#include <math.h>
#include <stdint.h>
#include <string.h>
#if defined(__AVX__) && defined(__F16C__)
#include <immintrin.h>
#endif

#ifndef LANES
#define LANES 8
#endif
/* Portable path: fp16/bf16 rows are widened SEG values at a time into a stack buffer. */
#define SEG (32 * LANES)

/* acc[j] += v*v over `blocks` blocks of LANES values (vectorised by the compiler). */
static inline void accumulate(float* acc, const float* r, int64_t blocks) {
    for (int64_t b = 0; b < blocks; b++) {
        for (int j = 0; j < LANES; j++) {
            float v = r[b * LANES + j];
            acc[j] = acc[j] + v * v;
        }
    }
}

/* Sum the lanes, add the `t` leftover values, take the root: torch's order of operations. */
static inline float finish(const float* acc, const float* tail, int64_t t) {
    float s = acc[0];
    for (int j = 1; j < LANES; j++) s = s + acc[j];
    int64_t d = 0;
    if (t >= 4) {
        for (; d < 4; d++) {
            float p = tail[d] * tail[d];
            s = s + p;
        }
    }
    for (; d < t; d++) s = fmaf(tail[d], tail[d], s);
    return sqrtf(s);
}

#if defined(__AVX__) && defined(__F16C__) && (LANES % 8 == 0)
/* x86: load (and widen) 8 values at a time in registers, one 8-lane accumulator per group of 8
   of the LANES lanes: the same sums as `accumulate`, but about 10% faster for fp32 and 40% for
   fp16 than the compiler's version of the portable loops on 2 cores (then memory-bound). */
#define GROUPS (LANES / 8)
#define DIRECT_ROW_NORMS(NAME, T, WIDEN8, WIDEN1)                                  \
static inline void NAME##_rows(const T* x, int64_t stride, int64_t cols, int n,    \
                               float* out) {                                       \
    /* n (1 or 2) rows at once: two independent chains keep more loads in flight. */ \
    int64_t blocks = cols / LANES;                                                 \
    __m256 acc[2][GROUPS];                                                         \
    for (int k = 0; k < n; k++)                                                    \
        for (int g = 0; g < GROUPS; g++) acc[k][g] = _mm256_setzero_ps();          \
    for (int64_t b = 0; b < blocks; b++) {                                         \
        for (int k = 0; k < n; k++) {                                              \
            for (int g = 0; g < GROUPS; g++) {                                     \
                __m256 v = WIDEN8(x + k * stride + b * LANES + g * 8);             \
                acc[k][g] = _mm256_add_ps(acc[k][g], _mm256_mul_ps(v, v));         \
            }                                                                      \
        }                                                                          \
    }                                                                              \
    int64_t t = cols - blocks * LANES;                                             \
    for (int k = 0; k < n; k++) {                                                  \
        float lanes[LANES], tail[LANES];                                           \
        for (int g = 0; g < GROUPS; g++) _mm256_storeu_ps(lanes + 8 * g, acc[k][g]); \
        const T* r = x + k * stride + blocks * LANES;                              \
        for (int64_t e = 0; e < t; e++) tail[e] = WIDEN1(r[e]);                    \
        out[k] = finish(lanes, tail, t);                                           \
    }                                                                              \
}                                                                                  \
void NAME(const T* x, int64_t rows, int64_t cols, int64_t stride, float* out) {    \
    int64_t i = 0;                                                                 \
    for (; i + 2 <= rows; i += 2) NAME##_rows(x + i * stride, stride, cols, 2, out + i); \
    if (i < rows) NAME##_rows(x + i * stride, stride, cols, 1, out + i);           \
}
static inline __m256 widen8_f32(const float* p) { return _mm256_loadu_ps(p); }
static inline float widen1_f32(float v) { return v; }
DIRECT_ROW_NORMS(embviz_row_norms_f32, float, widen8_f32, widen1_f32)
static inline __m256 widen8_f16(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)p));
}
static inline float widen1_f16(uint16_t v) { return _cvtsh_ss(v); }
DIRECT_ROW_NORMS(embviz_row_norms_f16, uint16_t, widen8_f16, widen1_f16)
int embviz_has_f16(void) { return 1; }
#define HAVE_F16 1
#else
void embviz_row_norms_f32(const float* x, int64_t rows, int64_t cols, int64_t stride,
                          float* out) {
    int64_t blocks = cols / LANES;
    for (int64_t i = 0; i < rows; i++) {
        const float* r = x + i * stride;
        float acc[LANES];
        for (int j = 0; j < LANES; j++) acc[j] = 0.0f;
        accumulate(acc, r, blocks);
        out[i] = finish(acc, r + blocks * LANES, cols - blocks * LANES);
    }
}
#endif

static inline float widen1_bf16(uint16_t v) {
    uint32_t bits = (uint32_t)v << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}
#if defined(__AVX2__) && defined(__F16C__) && (LANES % 8 == 0)
static inline __m256 widen8_bf16(const uint16_t* p) {
    __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}
DIRECT_ROW_NORMS(embviz_row_norms_bf16, uint16_t, widen8_bf16, widen1_bf16)
#else
#define WIDENED_ROW_NORMS(NAME, T, WIDEN)                                          \
void NAME(const T* x, int64_t rows, int64_t cols, int64_t stride, float* out) {    \
    float buf[SEG];                                                                \
    for (int64_t i = 0; i < rows; i++) {                                           \
        const T* r = x + i * stride;                                               \
        float acc[LANES];                                                          \
        for (int j = 0; j < LANES; j++) acc[j] = 0.0f;                             \
        int64_t d = 0;                                                             \
        for (; cols - d > SEG; d += SEG) {                                         \
            for (int k = 0; k < SEG; k++) buf[k] = WIDEN(r[d + k]);                \
            accumulate(acc, buf, SEG / LANES);                                     \
        }                                                                          \
        int n = (int)(cols - d);                                                   \
        for (int k = 0; k < n; k++) buf[k] = WIDEN(r[d + k]);                      \
        int blocks = n / LANES;                                                    \
        accumulate(acc, buf, blocks);                                              \
        out[i] = finish(acc, buf + blocks * LANES, n - blocks * LANES);            \
    }                                                                              \
}
WIDENED_ROW_NORMS(embviz_row_norms_bf16, uint16_t, widen1_bf16)
#if !defined(HAVE_F16) && defined(__FLT16_MAX__) && !defined(__x86_64__) && !defined(__i386__)
/* Other targets with a native half type (e.g. aarch64): the conversion is an instruction. */
static inline float widen1_f16(_Float16 v) { return (float)v; }
WIDENED_ROW_NORMS(embviz_row_norms_f16, _Float16, widen1_f16)
int embviz_has_f16(void) { return 1; }
#define HAVE_F16 1
#endif
#endif

#if !defined(HAVE_F16)
int embviz_has_f16(void) { return 0; }
#endif

int embviz_lanes(void) { return LANES; }
"""

_native_state: dict[str, Any] = {}
_native_lock = threading.Lock()


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    import platform

    return platform.processor()


def _native_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "embviz" / "native"


def _build_native() -> Any:
    """Compile (once per machine, cached) and load the row-norm kernel; None if impossible."""
    import ctypes
    import hashlib
    import platform
    import shutil
    import subprocess
    import tempfile

    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    compiler = compiler or shutil.which("clang")
    if compiler is None:
        return None
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")()
    lanes = 16 if "AVX512" in str(capability).upper() else 8
    try:
        version = subprocess.run(
            [compiler, "--version"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    key = hashlib.sha256(
        "\0".join(
            [_NATIVE_SOURCE, compiler, version, platform.machine(), _cpu_flags(), str(lanes)]
        ).encode()
    ).hexdigest()[:20]
    folder = _native_cache_dir()
    target = folder / f"rownorms-{key}.so"
    if not target.exists():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=folder) as tmp:
                source = Path(tmp) / "rownorms.c"
                source.write_text(_NATIVE_SOURCE)
                built = Path(tmp) / "rownorms.so"
                # -ffp-contract=off: a multiply and an add, as torch's kernel (no FMA fusion).
                base = [
                    compiler,
                    "-O3",
                    "-std=c11",
                    "-ffp-contract=off",
                    "-fno-math-errno",
                    f"-DLANES={lanes}",
                    "-shared",
                    "-fPIC",
                    str(source),
                    "-o",
                    str(built),
                ]
                for flags in (["-march=native"], []):
                    done = subprocess.run(
                        [*base[:1], *flags, *base[1:]], capture_output=True, timeout=120
                    )
                    if done.returncode == 0:
                        break
                else:
                    return None
                os.replace(built, target)  # atomic: concurrent builders never see half a file
        except (OSError, subprocess.SubprocessError):
            return None
    try:
        lib = ctypes.CDLL(str(target))
    except OSError:
        return None
    kernels = {}
    signature = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    names = {torch.float32: "embviz_row_norms_f32", torch.bfloat16: "embviz_row_norms_bf16"}
    if lib.embviz_has_f16():
        names[torch.float16] = "embviz_row_norms_f16"
    for dtype, name in names.items():
        fn = getattr(lib, name)
        fn.argtypes = signature
        fn.restype = None
        kernels[dtype] = fn
    return kernels


def _native_kernel(dtype: torch.dtype) -> Any:
    """The compiled kernel for ``dtype``, or None (disabled, no compiler, dtype not covered).

    ``EMBVIZ_NATIVE=0`` turns it off; the torch-only path then runs (same results).
    """
    if os.environ.get("EMBVIZ_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    with _native_lock:
        if "kernels" not in _native_state:
            _native_state["kernels"] = _build_native()
    kernels = _native_state["kernels"]
    return None if kernels is None else kernels.get(dtype)


def row_norm_backend(dtype: torch.dtype = torch.float32) -> Literal["native", "torch"]:
    """Which implementation `row_norms` uses for a contiguous CPU table of ``dtype``.

    ``"native"``: the compiled kernel (built on first use, see `row_norms`); ``"torch"``: torch
    ops only, because ``EMBVIZ_NATIVE=0`` is set, no C compiler was found or the build failed,
    or the dtype is not covered (float64). Both give the same norms.
    """
    return "native" if _native_kernel(dtype) is not None else "torch"


# --------------------------------------------------------------------------- CPU paths


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
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="embviz-norms") as pool:
        futures = [pool.submit(run) for _ in range(workers)]
        for future in futures:
            future.result()


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

    kernel = _native_kernel(src.dtype) if index is None and src.stride(1) == 1 else None
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
    layout = _layout(weight)
    index = None if rows is None else _as_index(rows, layout.rows)
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
    dest: torch.Tensor, pieces: list[_Piece], local: torch.Tensor | None
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


def _as_index(rows: torch.Tensor | Sequence[int], n: int) -> torch.Tensor:
    index = torch.as_tensor(rows)
    if (
        index.dim() != 1
        or (index.numel() and index.dtype.is_floating_point)
        or index.dtype == (torch.bool)
    ):
        raise NormError("rows must be a 1-D sequence of integer row positions")
    index = index.to(torch.int64).cpu()
    if index.numel():
        lo, hi = int(index.min()), int(index.max())
        if lo < 0 or hi >= n:
            bad = lo if lo < 0 else hi
            raise RowIndexError(f"row {bad} is out of range: the table has {n:,} rows")
    return index


# --------------------------------------------------------------------------- sampling


def sample_rows(num_rows: int, k: int, seed: int = 0) -> torch.Tensor:
    """``k`` distinct rows of ``range(num_rows)``, uniformly at random, sorted (int64).

    Draws with ``torch.randint`` and keeps the distinct values, drawing again until there are at
    least ``k``, then keeps a uniform ``k``-subset of them: by symmetry the set of distinct draws
    is a uniformly random subset of its size, so the result is a uniform ``k``-subset. No
    permutation of all rows is made (the-algorithm-ml's ``randperm(num_rows)[:k]`` allocates
    ``8 * num_rows`` bytes and shuffles them all). When ``k > num_rows / 2`` the complement is
    drawn instead, so the expected number of draws stays below ``1.4 * k``. Sets of at most
    4,096 values are shuffled whole.

    Raises
    ------
    NormError
        Negative ``num_rows`` or ``k``.
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0:
        raise NormError(f"sample must be a positive integer, got {k!r}")
    if num_rows < 0:
        raise NormError(f"num_rows must be >= 0, got {num_rows}")
    k, num_rows = int(k), int(num_rows)
    if k >= num_rows:
        return torch.arange(num_rows, dtype=torch.int64)
    return _subset(num_rows, k, torch.Generator().manual_seed(int(seed)))


# Sets up to this size are shuffled whole: a permutation of a few thousand ints costs nothing.
_SHUFFLE_MAX = 4096


def _subset(n: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """A uniform ``k``-subset of ``range(n)``, sorted; see `sample_rows`."""
    if k <= 0:
        return torch.empty(0, dtype=torch.int64)
    if k >= n:
        return torch.arange(n, dtype=torch.int64)
    if n <= _SHUFFLE_MAX:
        return torch.randperm(n, generator=generator)[:k].sort().values
    if k > n // 2:
        keep = torch.ones(n, dtype=torch.bool)
        keep[_subset(n, n - k, generator)] = False
        return keep.nonzero().flatten()
    have = torch.empty(0, dtype=torch.int64)
    while have.numel() < k:
        missing = k - have.numel()
        # A fresh draw is new with probability about 1 - have/n: draw a little more than needed.
        fresh_share = 1.0 - (have.numel() + missing) / n  # >= 1/2 here
        draws = torch.randint(0, n, (int(missing / fresh_share * 1.02) + 16,), generator=generator)
        have = torch.unique(torch.cat([have, draws]))
    surplus = have.numel() - k
    if surplus > 0:
        # Drop a uniform subset of the few surplus values: a smaller instance of the same draw.
        keep = torch.ones(have.numel(), dtype=torch.bool)
        keep[_subset(have.numel(), surplus, generator)] = False
        have = have[keep]
    return have


# --------------------------------------------------------------------------- quantiles


def exact_quantiles(values: torch.Tensor, q: Sequence[float]) -> torch.Tensor:
    """Quantiles of a 1-D float tensor, equal to ``torch.quantile(values, q)`` ('linear').

    torch.quantile sorts its input and refuses more than 16M elements; this finds the needed
    order statistics with ``numpy.partition`` (linear time, one copy of the values) and then
    interpolates exactly as torch does, in the values' dtype: rank ``q * (n - 1)``, the two
    neighbouring order statistics, and `torch.lerp` with weight ``rank - floor(rank)``. A NaN
    among the values makes every quantile NaN, as in torch.

    Returns
    -------
    torch.Tensor
        One value per entry of ``q``, in the dtype of ``values`` (float32 or float64), on the CPU.
    """
    v = values.detach().flatten().cpu()
    if v.dtype not in (torch.float32, torch.float64):
        raise NormError(f"quantiles need float32 or float64 values, got {v.dtype}")
    n = v.numel()
    if n == 0:
        raise EmptyTableError("quantiles of an empty set of values are undefined")
    qt = torch.as_tensor(list(q), dtype=v.dtype)
    if bool(((qt < 0) | (qt > 1)).any()):
        raise NormError(f"quantiles must lie in [0, 1], got {list(q)}")
    if bool(torch.isnan(v).any()):
        return torch.full_like(qt, float("nan"))
    # Same arithmetic as torch.quantile: ranks in the values' dtype. Beyond 2**24 values float32
    # ranks are not exact integers any more (torch refuses such inputs); use float64 ranks there.
    rank_dtype = v.dtype if n <= 2**24 else torch.float64
    ranks = qt.to(rank_dtype) * (n - 1)
    below = ranks.floor().to(torch.int64)
    above = ranks.ceil().to(torch.int64)
    weights = (ranks - below.to(rank_dtype)).to(v.dtype)
    kth = np.unique(torch.cat([below, above]).numpy())
    ordered = np.partition(v.numpy(), kth)
    lo = torch.from_numpy(ordered[below.numpy()].copy())
    hi = torch.from_numpy(ordered[above.numpy()].copy())
    return torch.lerp(lo, hi, weights)


# --------------------------------------------------------------------------- sources


@dataclass
class _Source:
    """Tables of a module, a state dict or a snapshot: names, and a loader for each."""

    label: str
    names: list[str]
    load: Any  # Callable[[str], weight]
    rows_of: Any  # Callable[[str], int]


def _state_dict_tables(state: Mapping[str, Any], plain: bool = True) -> dict[str, Any]:
    """Tables of a state dict by name; ``plain``: else every 2-D tensor under its key."""
    matches = [
        (match.group("name"), str(key), value)
        for key, value in state.items()
        if (match := _TABLE_KEY.search(str(key))) is not None
    ]
    counts: dict[str, int] = {}
    for name, _, _ in matches:
        counts[name] = counts.get(name, 0) + 1
    # Two modules holding a table of the same name: both go by their full keys (as in
    # `embviz.snapshot_tables`).
    found = {(name if counts[name] == 1 else key): value for name, key, value in matches}
    if found or not plain:
        return found
    # A plain {table name: 2-D tensor} mapping.
    return {str(k): v for k, v in state.items() if _is_table_like(v)}


def _is_table_like(value: Any) -> bool:
    sharded = _sharded_tensor_type()
    if sharded is not None and isinstance(value, sharded):
        return len(value.size()) == 2
    return isinstance(value, torch.Tensor) and value.dim() == 2


def _weight_rows(weight: Any) -> int:
    sharded = _sharded_tensor_type()
    if sharded is not None and isinstance(weight, sharded):
        return _layout(weight).rows
    return int(weight.shape[0])


def resolve_snapshot(path: str | os.PathLike[str], step: int | None = None) -> str:
    """One snapshot folder from a snapshot or a checkpoint folder (``save_dir/<step>/``).

    A checkpoint folder gives its latest finished step, or ``step``. Raises `SnapshotError`
    (missing path, no finished checkpoint, unknown step, listing the steps there are).
    """
    from embviz.snapshots import METADATA_FILE, SnapshotError, checkpoints

    text = os.fspath(path)
    if os.path.isfile(os.path.join(text, METADATA_FILE)):
        if step is not None:
            raise SnapshotError(
                f"{text}: a single snapshot; --step/step only applies to a checkpoint folder"
            )
        return text
    # A checkpoint folder holds finished <step>/ snapshots. (A snapshot's own rank folders are
    # numbered too, so digits alone do not make one: an unfinished snapshot has "0/".)
    finished = os.path.isdir(text) and any(
        name.isdigit() and os.path.isfile(os.path.join(text, name, METADATA_FILE))
        for name in os.listdir(text)
    )
    if not finished:
        # Let the snapshot reader say what is wrong with it (missing, unfinished, a file...).
        from embviz.snapshots import snapshot_tables

        snapshot_tables(text)
        return text
    frame = checkpoints(text)
    if step is None:
        return str(frame["path"].iloc[-1])
    match = frame[frame["step"] == int(step)]
    if match.empty:
        steps = ", ".join(str(s) for s in frame["step"])
        raise SnapshotError(f"{text}: no finished checkpoint at step {step} (steps: {steps})")
    return str(match["path"].iloc[0])


def _source(source: Any) -> _Source:
    if isinstance(source, str | os.PathLike):
        from embviz.snapshots import read_table, snapshot_tables

        path = os.fspath(source)
        tables = snapshot_tables(path)
        return _Source(
            label=path,
            names=[str(n) for n in tables.index],
            load=lambda name: read_table(path, name),
            rows_of=lambda name: int(tables.loc[name, "rows"]),
        )
    if isinstance(source, torch.nn.Module):
        found = _state_dict_tables(source.state_dict(), plain=False)
        if not found:
            raise NormError(
                f"{type(source).__name__}: holds no embedding tables (no state_dict key ends in "
                "'embedding_bags.<name>.weight')"
            )
        label = type(source).__name__
    elif isinstance(source, Mapping):
        found = _state_dict_tables(source)
        if not found:
            raise NormError(
                "state dict: holds no embedding tables (no key ends in "
                "'embedding_bags.<name>.weight' and no value is a 2-D tensor)"
            )
        label = "state dict"
    else:
        raise NormError(
            "source must be a module holding an EmbeddingBagCollection, a state dict, or the "
            f"path of a torchsnapshot; got {type(source).__name__}"
        )
    return _Source(
        label=label,
        names=list(found),
        load=found.__getitem__,
        rows_of=lambda name: _weight_rows(found[name]),
    )


def table_names(source: Any) -> list[str]:
    """Names of the tables a source holds: a module, a state dict, or a snapshot path.

    Tables are found by keys ending in ``embedding_bags.<name>.weight`` (a snapshot's manifest
    is read without reading any tensor). Raises `NormError` or `SnapshotError` as `norm_stats`.
    """
    return list(_source(source).names)


def load_table(source: Any, name: str) -> Any:
    """One table's weight from a module, a state dict, or a snapshot path (only that tensor).

    Raises
    ------
    UnknownTableError
        ``name`` is not a table of the source; the message lists those it holds.
    """
    src = _source(source)
    if name not in src.names:
        raise _unknown_tables([name], src.names)
    return src.load(name)


def _choose_tables(
    src: _Source, tables: str | Iterable[str] | None, config: LargeEmbeddingsConfig | None
) -> list[str]:
    if isinstance(tables, str):
        tables = [tables]
    if tables is None and config is not None:
        tables = config.logged_tables or None
    if tables is None:
        return list(src.names)
    chosen = list(dict.fromkeys(tables))
    if not chosen:
        raise NormError("tables: the list is empty; name at least one table")
    unknown = [t for t in chosen if t not in src.names]
    if unknown:
        raise _unknown_tables(unknown, src.names)
    return chosen


# --------------------------------------------------------------------------- statistics


def _unchanged_rows(weight: Any, initial: Any, index: torch.Tensor | None, name: str) -> int:
    """Rows of ``weight`` (or its rows ``index``) exactly equal to the same rows of ``initial``."""
    cur, ini = _layout(weight, name), _layout(initial, f"initial {name}")
    if (
        cur.cols != ini.cols
        or cur.rows != ini.rows
        or [(r0, n) for r0, n, _ in cur.groups] != [(r0, n) for r0, n, _ in ini.groups]
    ):
        raise NormError(
            f"table {name!r}: the initial values hold {ini.rows:,} x {ini.cols} local rows, "
            f"the table {cur.rows:,} x {cur.cols}; they must match"
        )
    same = 0
    chunk_bytes = MEMORY_BUDGET_BYTES // 4
    starts = np.cumsum([0] + [n for _, n, _ in cur.groups])
    for g, ((_, n, pieces), (_, _, ipieces)) in enumerate(zip(cur.groups, ini.groups, strict=True)):
        lo = int(starts[g])
        if index is None:
            positions = None
        else:
            sel = index[(index >= lo) & (index < lo + n)] - lo
            if sel.numel() == 0:
                continue
            positions = sel
        equal = None
        for p, ip in zip(pieces, ipieces, strict=True):
            a, b = p.tensor.detach(), ip.tensor.detach()
            if a.shape != b.shape:
                raise NormError(f"table {name!r}: initial shard shapes differ from the table's")
            count = n if positions is None else positions.numel()
            rows_per = max(1, chunk_bytes // max(1, a.shape[1] * 8))
            part = torch.empty(count, dtype=torch.bool)
            for s in range(0, count, rows_per):
                e = min(s + rows_per, count)
                if positions is None:
                    x, y = a[s:e], b[s:e]
                else:
                    pos = positions[s:e]
                    x = a.index_select(0, pos.to(a.device))
                    y = b.index_select(0, pos.to(b.device))
                y = y.to(device=x.device, dtype=x.dtype)
                part[s:e] = torch.eq(x, y).all(dim=1).cpu()
            equal = part if equal is None else equal & part
        assert equal is not None
        same += int(equal.sum())
    return same


def _stats_row(norms: torch.Tensor, rows: int, unchanged: int | None) -> dict[str, float | int]:
    """The statistics of one table's norms (float32 on the CPU), computed with torch."""
    n = int(norms.numel())
    quantiles = exact_quantiles(norms, list(QUANTILES.values())).tolist()
    row: dict[str, float | int] = {
        "rows": rows,
        "sampled": n,
        "mean": float(norms.mean()),
        "std": float(norms.std()) if n > 1 else math.nan,
        "min": float(norms.min()),
    }
    row.update(dict(zip(QUANTILES, quantiles, strict=True)))
    row["max"] = float(norms.max())
    row["zero_share"] = float((norms == 0).sum()) / n
    row["unchanged_share"] = math.nan if unchanged is None else unchanged / n
    return row


def _table_norms(
    weight: Any, name: str, sample: int | None, seed: int
) -> tuple[torch.Tensor, int, torch.Tensor | None]:
    """(norms on the CPU, local rows, sampled positions or None) of one table."""
    layout = _layout(weight, f"table {name!r}")
    rows = layout.rows
    if rows == 0:
        raise EmptyTableError(f"table {name!r} has no rows: its norms have no distribution")
    index = None
    if sample is not None:
        sample = _check_positive_int("sample", sample)
    if sample is not None and sample < rows:
        index = sample_rows(rows, sample, seed)
    norms = row_norms(weight, index)
    return norms.cpu(), rows, index


def norm_stats(
    source: Any,
    tables: str | Iterable[str] | None = None,
    sample: int | None = None,
    seed: int = 0,
    initial: Any = None,
    *,
    config: LargeEmbeddingsConfig | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Distribution of the row norms of each table: the one number the original logs, and more.

    Parameters
    ----------
    source : nn.Module, state dict, or path
        An ``EmbeddingBagCollection`` or a module holding one (sharded ones too: their local
        shards), a state dict, or a torchsnapshot folder (see the module docstring).
    tables : str or list of str, optional
        Tables to describe. Default: ``config.tables_to_log`` when ``config`` is given and sets
        it, else every table of the source.
    sample : int, optional
        Describe this many distinct rows per table, drawn with `sample_rows` (no permutation of
        all rows). Default: every row.
    seed : int
        Seed of the sample; the same seed gives the same rows.
    initial : same kinds as ``source``, optional
        The tables' initial values (e.g. the step-0 snapshot): ``unchanged_share`` is the share
        of (sampled) rows still exactly equal to them. NaN without it.
    config : LargeEmbeddingsConfig, optional
        Gives the default ``tables`` (its ``tables_to_log``).
    progress : bool
        Show a progress bar over the tables.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``table``, with `STAT_COLUMNS`: ``rows`` (local rows of the table),
        ``sampled`` (rows described), ``mean``, ``std`` (``torch.std``, correction 1), ``min``,
        ``p1``, ``p5``, ``p50``, ``p95``, ``p99`` (``torch.quantile``'s 'linear' rule, exact at
        any size), ``max``, ``zero_share`` (rows whose norm is 0), ``unchanged_share``.

    Raises
    ------
    UnknownTableError
        A table the source (or ``initial``) does not hold; the message lists those it holds.
    EmptyTableError
        A table with no rows.
    SnapshotError
        A snapshot path that is missing, unfinished or corrupt.
    NormError
        A source of another kind, or a table that is not 2-D floating point.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    src = _source(source)
    chosen = _choose_tables(src, tables, config)
    if sample is not None:
        sample = _check_positive_int("sample", sample)
    init = None
    if initial is not None:
        init = _source(initial)
        missing = [t for t in chosen if t not in init.names]
        if missing:
            raise _unknown_tables(missing, init.names)
    records = []
    for name in tqdm(chosen, desc="row norms", unit="table", disable=not progress):
        weight = src.load(name)
        norms, rows, index = _table_norms(weight, name, sample, seed)
        unchanged = None
        if init is not None:
            unchanged = _unchanged_rows(weight, init.load(name), index, name)
        records.append({"table": name, **_stats_row(norms, rows, unchanged)})
        del weight, norms
    return pd.DataFrame.from_records(records, columns=["table", *STAT_COLUMNS]).set_index("table")


def norm_history(
    save_dir: str | os.PathLike[str],
    tables: str | Iterable[str] | None = None,
    sample: int | None = None,
    seed: int = 0,
    initial: Literal["first"] | Any = None,
    *,
    config: LargeEmbeddingsConfig | None = None,
    steps: Iterable[int] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """`norm_stats` of every finished checkpoint of a run, as one tidy DataFrame.

    Parameters
    ----------
    save_dir : str or path-like
        The run's folder of ``<step>/`` torchsnapshots (unfinished steps are skipped).
    tables : str or list of str, optional
        Default: ``config.tables_to_log`` when given, else every table of the first checkpoint.
        Only these tables are read from each checkpoint.
    sample, seed :
        As in `norm_stats`; the same rows are described at every step.
    initial : "first", source, or None
        ``"first"``: the first checkpoint (step 0 holds the initial values in the-algorithm-ml's
        layout) gives ``unchanged_share``; its tables are kept in memory for the comparison.
        Any `norm_stats` source works too. None: ``unchanged_share`` is NaN.
    config : LargeEmbeddingsConfig, optional
        Gives the default ``tables``.
    steps : iterable of int, optional
        Only these steps.
    progress : bool
        A progress bar over (step, table) reads.

    Returns
    -------
    pandas.DataFrame
        Columns ``step``, ``table`` and `STAT_COLUMNS`, one row per step and table, by step.

    Raises
    ------
    SnapshotError
        No finished checkpoint, or a step that is not there (the message lists the steps).
    UnknownTableError, EmptyTableError, NormError
        As in `norm_stats`.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from embviz.snapshots import SnapshotError, checkpoints, read_table, snapshot_tables

    frame = checkpoints(save_dir)
    if steps is not None:
        wanted = [int(s) for s in steps]
        missing = sorted(set(wanted) - set(frame["step"]))
        if missing:
            known = ", ".join(str(s) for s in frame["step"])
            raise SnapshotError(
                f"{save_dir}: no finished checkpoint at step {missing[0]} (steps: {known})"
            )
        frame = frame[frame["step"].isin(wanted)]
    first = str(frame["path"].iloc[0])
    first_tables = snapshot_tables(first)
    names = [str(n) for n in first_tables.index]
    src = _Source(first, names, None, None)
    chosen = _choose_tables(src, tables, config)
    if sample is not None:
        sample = _check_positive_int("sample", sample)
    init_tables: dict[str, Any] = {}
    if isinstance(initial, str) and initial == "first":
        init_path = str(checkpoints(save_dir)["path"].iloc[0])
        for name in chosen:
            init_tables[name] = read_table(init_path, name)
    elif initial is not None:
        init = _source(initial)
        missing = [t for t in chosen if t not in init.names]
        if missing:
            raise _unknown_tables(missing, init.names)
        init_tables = {name: init.load(name) for name in chosen}
    records = []
    bar = tqdm(
        total=len(frame) * len(chosen), desc="norm history", unit="table", disable=not progress
    )
    try:
        for step, path in zip(frame["step"], frame["path"], strict=True):
            available = [str(n) for n in snapshot_tables(path).index]
            missing = [t for t in chosen if t not in available]
            if missing:
                raise SnapshotError(
                    f"{path}: no table {missing[0]!r} in this checkpoint (tables: "
                    f"{', '.join(available)})"
                )
            for name in chosen:
                bar.set_postfix(step=int(step), table=name)
                weight = read_table(path, name)
                norms, rows, index = _table_norms(weight, name, sample, seed)
                unchanged = None
                if name in init_tables:
                    unchanged = _unchanged_rows(weight, init_tables[name], index, name)
                records.append(
                    {"step": int(step), "table": name, **_stats_row(norms, rows, unchanged)}
                )
                del weight, norms
                bar.update(1)
    finally:
        bar.close()
    return pd.DataFrame.from_records(records, columns=["step", "table", *STAT_COLUMNS])


def norm_histogram(
    source: Any,
    tables: str | Iterable[str] | None = None,
    bins: int = 50,
    sample: int | None = None,
    seed: int = 0,
    *,
    scale: Literal["linear", "log"] = "linear",
    config: LargeEmbeddingsConfig | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Histogram of each table's row norms, from the smallest to the largest norm.

    Parameters
    ----------
    source, tables, sample, seed, config, progress :
        As in `norm_stats`.
    bins : int
        Bins per table.
    scale : {"linear", "log"}
        ``"linear"``: equal-width bins. ``"log"``: bins of equal width in ``log10(norm)``, for
        norms spread over orders of magnitude (a few trained rows far from the rest); rows of
        norm 0 have no place on that axis and are counted in ``attrs["zero_rows"]`` instead.

    Returns
    -------
    pandas.DataFrame
        Columns ``table``, ``left``, ``right``, ``count`` (int64), ``bins`` rows per table.
        Bins follow numpy's rule (``torch.histogram``): half-open ``[left, right)`` except the
        last, which includes ``right``; norms all equal get bins over ``[value - 0.5, value +
        0.5]`` (linear) or ``[value / 2, value * 2]`` (log). ``attrs``: ``scale`` and
        ``zero_rows`` (table -> rows of norm 0 left out; all 0 for ``"linear"``). Counts plus
        zero rows add up to the table's ``sampled`` rows in `norm_stats`.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise NormError(f"bins must be a positive integer, got {bins!r}")
    if scale not in ("linear", "log"):
        raise NormError(f"scale must be 'linear' or 'log', got {scale!r}")
    src = _source(source)
    chosen = _choose_tables(src, tables, config)
    parts = []
    zero_rows: dict[str, int] = {}
    for name in tqdm(chosen, desc="histograms", unit="table", disable=not progress):
        norms, _, _ = _table_norms(src.load(name), name, sample, seed)
        values = norms.double()
        zero_rows[name] = 0
        if scale == "log":
            positive = values > 0
            zero_rows[name] = int((~positive).sum())
            values = values[positive]
            if values.numel() == 0:
                raise NormError(f"table {name!r}: every norm is 0; a log-scale histogram is empty")
        lo, hi = float(values.min()), float(values.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise NormError(f"table {name!r}: norms are not finite (NaN or inf values)")
        if scale == "log":
            if lo == hi:
                lo, hi = lo / 2, hi * 2
            exponents = torch.linspace(
                math.log10(lo), math.log10(hi), bins + 1, dtype=torch.float64
            )
            edges = torch.pow(10.0, exponents)
            edges[0], edges[-1] = lo, hi  # exactly the extremes: no row falls outside
            counts, edges = torch.histogram(values, bins=edges)
        else:
            if lo == hi:
                lo, hi = lo - 0.5, hi + 0.5
            counts, edges = torch.histogram(values, bins=bins, range=(lo, hi))
        parts.append(
            pd.DataFrame(
                {
                    "table": name,
                    "left": edges[:-1].numpy(),
                    "right": edges[1:].numpy(),
                    "count": counts.numpy().astype(np.int64),
                }
            )
        )
    frame = pd.concat(parts, ignore_index=True)
    frame.attrs.update({"scale": scale, "zero_rows": zero_rows})
    return frame


# --------------------------------------------------------------------------- rows themselves


def _as_table(table: Any) -> torch.Tensor:
    weight = getattr(table, "weight", table)
    if not isinstance(weight, torch.Tensor):
        raise NormError(
            f"table must be a 2-D tensor or a module with a .weight, got {type(table).__name__}"
        )
    layout = _layout(weight)
    if layout.rows == 0:
        raise EmptyTableError("the table has no rows")
    return weight.detach()


def _as_vocab(vocab: Any, rows: int) -> pd.Series | None:
    """An entity id -> row Series from `embviz.load_vocab`'s output, a path, a mapping or frame."""
    import pandas as pd

    if vocab is None:
        return None
    if isinstance(vocab, str | os.PathLike):
        from embviz.vocab import load_vocab

        return load_vocab(vocab, num_embeddings=rows)
    if isinstance(vocab, pd.DataFrame):
        if not {"entity_id", "row"} <= set(vocab.columns):
            raise NormError("a vocabulary DataFrame needs columns 'entity_id' and 'row'")
        series = pd.Series(vocab["row"].to_numpy(), index=vocab["entity_id"].to_numpy())
    elif isinstance(vocab, pd.Series):
        series = vocab
    elif isinstance(vocab, Mapping):
        series = pd.Series(dict(vocab))
    else:
        raise NormError(
            "vocab must be a path, a Series from embviz.load_vocab, a mapping of entity id to "
            f"row, or a DataFrame with entity_id and row; got {type(vocab).__name__}"
        )
    values = series.to_numpy()
    if len(values) and (values.min() < 0 or values.max() >= rows):
        raise NormError(f"vocab maps ids to rows outside [0, {rows:,}) of the table")
    return series


def _entity_labels(vocab: pd.Series | None, rows: np.ndarray) -> Any:
    """The first entity id (in vocabulary order) mapped to each row, <NA> where none is."""
    import pandas as pd

    if vocab is None:
        return None
    ids = pd.Series(vocab.index.to_numpy(), index=vocab.to_numpy())
    first = ids[~ids.index.duplicated(keep="first")]
    return pd.array(first.reindex(rows).to_numpy(), dtype="Int64")


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise NormError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def nearest(
    table: Any,
    row_or_entity_id: int,
    k: int = 10,
    metric: Literal["cosine", "l2"] = "cosine",
    vocab: Any = None,
) -> pd.DataFrame:
    """The ``k`` rows closest to one row of a table, exactly (a chunked scan of every row).

    Parameters
    ----------
    table : torch.Tensor or module with ``.weight``
        The table (rows x dim), any float dtype and device; compared in float32.
    row_or_entity_id : int
        A row index, or with ``vocab`` an entity id.
    k : int
        How many neighbours (the row itself is left out).
    metric : {"cosine", "l2"}
        Cosine similarity (largest first; rows of norm 0 are left out) or L2 distance (smallest
        first).
    vocab : path, Series, mapping or DataFrame, optional
        Entity id -> row (`embviz.load_vocab`); then ``row_or_entity_id`` is an entity id and the
        result has an ``entity_id`` column (the first id mapped to each row).

    Returns
    -------
    pandas.DataFrame
        ``rank`` (1..k), ``row``, [``entity_id``], ``score`` (similarity or distance), ``norm``;
        ``attrs`` hold ``query_row``, ``metric`` and, with a vocabulary, ``query_entity_id``.

    Raises
    ------
    RowIndexError
        A row outside ``[0, rows)``.
    UnknownEntityError
        An entity id the vocabulary does not hold.
    NormError
        ``k`` not in ``[1, rows - 1]`` (or too few rows with a non-zero norm), an unknown
        metric, a query row of norm 0 under cosine.
    """
    import pandas as pd

    weight = _as_table(table)
    rows, cols = int(weight.shape[0]), int(weight.shape[1])
    if metric not in ("cosine", "l2"):
        raise NormError(f"metric must be 'cosine' or 'l2', got {metric!r}")
    k = _check_positive_int("k", k)
    series = _as_vocab(vocab, rows)
    query_entity = None
    if series is not None:
        query_entity = row_or_entity_id
        try:
            found = series.loc[row_or_entity_id]
        except (KeyError, TypeError):
            raise UnknownEntityError(
                f"entity id {row_or_entity_id!r} is not in the vocabulary ({len(series):,} ids)"
            ) from None
        if isinstance(found, pd.Series):  # an id listed twice: keep the first
            found = found.iloc[0]
        row = int(found)
    else:
        if isinstance(row_or_entity_id, bool) or not isinstance(row_or_entity_id, int | np.integer):
            raise NormError(f"row must be an integer, got {row_or_entity_id!r}")
        row = int(row_or_entity_id)
        if not 0 <= row < rows:
            raise RowIndexError(f"row {row} is out of range: the table has {rows:,} rows")
    if k > rows - 1:
        raise NormError(
            f"k={k} is too large: the table has {rows:,} rows, so at most {rows - 1:,} neighbours"
        )
    with torch.no_grad():
        query = weight[row].to(torch.float32)
        qnorm = float(torch.linalg.vector_norm(query))
        if metric == "cosine" and qnorm == 0:
            raise NormError(f"row {row} has norm 0: its cosine similarity is undefined")
        chunk = max(1, (MEMORY_BUDGET_BYTES // 4) // max(1, cols * 4))
        best_scores = torch.empty(0, device=weight.device)
        best_rows = torch.empty(0, dtype=torch.int64, device=weight.device)
        largest = metric == "cosine"
        for s in range(0, rows, chunk):
            e = min(s + chunk, rows)
            x = weight[s:e].to(torch.float32)
            if metric == "cosine":
                norms = torch.linalg.vector_norm(x, dim=1)
                scores = (x @ query) / (norms * qnorm)
                scores[norms == 0] = -math.inf
            else:
                scores = torch.linalg.vector_norm(x - query, dim=1)
            if s <= row < e:
                scores[row - s] = -math.inf if largest else math.inf
            ids = torch.arange(s, e, device=weight.device)
            cand_scores = torch.cat([best_scores, scores])
            cand_rows = torch.cat([best_rows, ids])
            take = min(k, cand_scores.numel())
            top = torch.topk(cand_scores, take, largest=largest, sorted=True)
            best_scores, best_rows = top.values, cand_rows[top.indices]
        if metric == "cosine" and bool(torch.isinf(best_scores).any()):
            usable = int(torch.isfinite(best_scores).sum())
            raise NormError(f"k={k} is too large: only {usable} other rows have a non-zero norm")
        result_rows = best_rows.cpu().numpy()
        result_norms = row_norms(weight, torch.from_numpy(result_rows)).cpu().numpy()
    data: dict[str, Any] = {"rank": np.arange(1, k + 1), "row": result_rows}
    if series is not None:
        data["entity_id"] = _entity_labels(series, result_rows)
    data["score"] = best_scores.cpu().numpy()
    data["norm"] = result_norms
    frame = pd.DataFrame(data)
    frame.attrs.update({"query_row": row, "metric": metric})
    if query_entity is not None:
        frame.attrs["query_entity_id"] = query_entity
    return frame


def project(
    table: Any,
    n: int = 10_000,
    method: Literal["pca"] = "pca",
    seed: int = 0,
    vocab: Any = None,
) -> pd.DataFrame:
    """2-D PCA coordinates of a sample of rows, with their row ids and norms.

    Parameters
    ----------
    table : torch.Tensor or module with ``.weight``
        The table; at least 2 columns.
    n : int
        Rows to sample (`sample_rows`; all rows when the table has fewer).
    method : {"pca"}
        `torch.pca_lowrank` on the centred sample (with a few extra components for accuracy),
        seeded, so the same seed gives the same picture. Signs are fixed so the largest loading
        of each component is positive.
    seed : int
        Seeds the sample and the randomised PCA.
    vocab : optional
        As in `nearest`: adds an ``entity_id`` column (the first id mapped to each row).

    Returns
    -------
    pandas.DataFrame
        ``row``, [``entity_id``], ``x``, ``y``, ``norm`` (the row's L2 norm), in row order;
        ``attrs["explained_variance_ratio"]`` holds the share of the sample's variance along x
        and y, ``attrs["rows"]`` the table's rows.
    """
    import pandas as pd

    if method != "pca":
        raise NormError(f"method must be 'pca', got {method!r}")
    weight = _as_table(table)
    rows, cols = int(weight.shape[0]), int(weight.shape[1])
    n = _check_positive_int("n", n)
    if cols < 2:
        raise NormError(f"a 2-D projection needs at least 2 columns, the table has {cols}")
    series = _as_vocab(vocab, rows)
    ids = sample_rows(rows, n, seed)
    if ids.numel() < 3:
        raise NormError(f"a projection needs at least 3 rows, got {ids.numel()}")
    with torch.no_grad():
        x = weight.index_select(0, ids.to(weight.device)).to(torch.float32).cpu()
        norms = torch.linalg.vector_norm(x, dim=1)
        centred = x - x.mean(dim=0, keepdim=True)
        q = min(cols, ids.numel(), 2 + 8)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            _, s, v = torch.pca_lowrank(centred, q=q, center=False, niter=6)
        components = v[:, :2]
        # Fix the sign: the loading largest in magnitude is positive.
        pivot = components.abs().argmax(dim=0)
        signs = torch.sign(components[pivot, torch.arange(2)])
        signs[signs == 0] = 1
        components = components * signs
        coords = centred @ components
        total = float(centred.square().sum())
        explained = (s[:2].square() / total).tolist() if total > 0 else [math.nan, math.nan]
    data: dict[str, Any] = {"row": ids.numpy()}
    if series is not None:
        data["entity_id"] = _entity_labels(series, ids.numpy())
    data.update({"x": coords[:, 0].numpy(), "y": coords[:, 1].numpy(), "norm": norms.numpy()})
    frame = pd.DataFrame(data)
    frame.attrs.update({"explained_variance_ratio": explained, "rows": rows, "method": method})
    return frame


# --------------------------------------------------------------------------- fp16


def fp16_error(weight: Any, pairs: int = 10_000, seed: int = 0) -> pd.Series:
    """What casting a table to fp16 costs: error of row norms and of cosine similarities.

    Parameters
    ----------
    weight : torch.Tensor or module with ``.weight``
        The table as trained (fp32; an fp16 table has nothing left to lose and gives zeros).
    pairs : int
        Random row pairs ``(i, j)``, ``i != j``, whose cosine similarity is compared.
    seed : int
        Seeds the pairs.

    Returns
    -------
    pandas.Series
        ``rows``; ``norm_rel_err_mean`` / ``norm_rel_err_max``: ``|n16 - n32| / n32`` over every
        row (0 for rows of norm 0), with ``n32`` the norm of the row and ``n16`` that of the row
        cast to fp16, both computed in float64; ``cos_abs_err_mean`` / ``cos_abs_err_max``:
        ``|c16 - c32|`` over the pairs; ``cos_rel_err_mean`` / ``cos_rel_err_max``:
        ``|c16 - c32| / |c32|`` over the pairs with ``|c32| >= 0.01`` (the relative error of a
        cosine near 0 says nothing); ``pairs`` compared (pairs with a zero row are left out);
        ``overflow_rows``: rows with a value beyond fp16's range (±65504), which become inf.
    """
    import pandas as pd

    weight = _as_table(weight)
    pairs = _check_positive_int("pairs", pairs)
    rows, cols = int(weight.shape[0]), int(weight.shape[1])
    chunk = max(1, (MEMORY_BUDGET_BYTES // 8) // max(1, cols * 8))
    err_sum, err_max, overflow = 0.0, 0.0, 0
    with torch.no_grad():
        for s in range(0, rows, chunk):
            x = weight[s : s + chunk].to(torch.float64)
            half = x.to(torch.float16).to(torch.float64)
            n64 = torch.linalg.vector_norm(x, dim=1)
            n16 = torch.linalg.vector_norm(half, dim=1)
            rel = (n16 - n64).abs() / n64
            rel[(n64 == 0) & (n16 == 0)] = 0.0
            overflow += int((~torch.isfinite(half)).any(dim=1).sum())
            err_sum += float(rel.sum())
            err_max = max(err_max, float(rel.max()))
        generator = torch.Generator().manual_seed(int(seed))
        cos_abs = torch.empty(0, dtype=torch.float64)
        cos_ref = torch.empty(0, dtype=torch.float64)
        if rows >= 2:
            i = torch.randint(0, rows, (pairs,), generator=generator)
            j = torch.randint(0, rows - 1, (pairs,), generator=generator)
            j = j + (j >= i).to(torch.int64)  # uniform over j != i
            a = weight.index_select(0, i.to(weight.device)).to(torch.float64).cpu()
            b = weight.index_select(0, j.to(weight.device)).to(torch.float64).cpu()
            a16, b16 = (t.to(torch.float16).to(torch.float64) for t in (a, b))

            def cosine(u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
                return (u * w).sum(1) / (
                    torch.linalg.vector_norm(u, dim=1) * torch.linalg.vector_norm(w, dim=1)
                )

            c64, c16 = cosine(a, b), cosine(a16, b16)
            valid = torch.isfinite(c64) & torch.isfinite(c16)
            cos_abs = (c16 - c64).abs()[valid]
            cos_ref = c64[valid]
    big = cos_ref.abs() >= 0.01
    rel_cos = cos_abs[big] / cos_ref[big].abs()

    def stat(values: torch.Tensor, fn: str) -> float:
        return float(getattr(values, fn)()) if values.numel() else math.nan

    return pd.Series(
        {
            "rows": rows,
            "norm_rel_err_mean": err_sum / rows,
            "norm_rel_err_max": err_max,
            "cos_abs_err_mean": stat(cos_abs, "mean"),
            "cos_abs_err_max": stat(cos_abs, "max"),
            "cos_rel_err_mean": stat(rel_cos, "mean"),
            "cos_rel_err_max": stat(rel_cos, "max"),
            "pairs": int(cos_abs.numel()),
            "overflow_rows": overflow,
        },
        dtype=object,
    )


def fp16_error_table(
    source: Any,
    tables: str | Iterable[str] | None = None,
    pairs: int = 10_000,
    seed: int = 0,
    *,
    config: LargeEmbeddingsConfig | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """`fp16_error` of each table of a source (module, state dict or snapshot), by table."""
    import pandas as pd
    from tqdm.auto import tqdm

    src = _source(source)
    chosen = _choose_tables(src, tables, config)
    records = {}
    for name in tqdm(chosen, desc="fp16 error", unit="table", disable=not progress):
        weight = src.load(name)
        if _layout(weight, f"table {name!r}").rows == 0:
            raise EmptyTableError(f"table {name!r} has no rows")
        records[name] = fp16_error(weight, pairs=pairs, seed=seed)
    frame = pd.DataFrame.from_dict(records, orient="index").infer_objects()
    frame.index.name = "table"
    return frame


# --------------------------------------------------------------------------- throughput


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def row_norm_throughput(
    device: str | torch.device = "cpu",
    rows: int = 8_000_000,
    dim: int = 64,
    dtypes: Sequence[torch.dtype] = (torch.float32, torch.float16),
    repeats: int = 5,
    seed: int = 0,
) -> pd.DataFrame:
    """Measured throughput of `row_norms` against ``torch.sum`` and a copy of the same table.

    For each dtype a ``rows x dim`` table is filled on ``device``; `row_norms`, ``torch.sum``
    over it (a read of every byte: the memory-bandwidth reference) and ``copy_`` into a second
    table (read + write) are timed in interleaved rounds, and the best time of each is kept (the
    least disturbed by other work on the machine). On CUDA the device is synchronised around
    every timed call.

    Returns
    -------
    pandas.DataFrame
        One row per (dtype, op) with ``dtype``, ``op`` (``row_norms``, ``sum``, ``copy``),
        ``seconds`` (best), ``median_seconds``, ``gb_per_s`` (table bytes read, plus written for
        the copy, per second, GB = 1e9 bytes) and ``vs_sum`` (sum's best time divided by the op's
        best time: 1.0 means as fast as reading the table once).
    """
    import pandas as pd

    device = torch.device(device)
    repeats = _check_positive_int("repeats", repeats)
    records = []
    generator = torch.Generator(device=device).manual_seed(int(seed))
    for dtype in dtypes:
        table = torch.empty((rows, dim), dtype=dtype, device=device)
        table.normal_(generator=generator)
        nbytes = table.numel() * table.element_size()
        copy_target = torch.empty_like(table)
        ops = {
            "row_norms": lambda t=table: row_norms(t),
            "sum": lambda t=table: torch.sum(t),
            "copy": lambda t=table, c=copy_target: c.copy_(t),
        }
        times: dict[str, list[float]] = {op: [] for op in ops}
        for op in ops.values():  # warm up: threads, allocator, caches
            op()
        _sync(device)
        for _ in range(repeats):
            for name, op in ops.items():
                _sync(device)
                start = time.perf_counter()
                op()
                _sync(device)
                times[name].append(time.perf_counter() - start)
        best_sum = min(times["sum"])
        for name, spent in times.items():
            moved = nbytes * (2 if name == "copy" else 1)
            records.append(
                {
                    "dtype": str(dtype).removeprefix("torch."),
                    "op": name,
                    "seconds": min(spent),
                    "median_seconds": float(np.median(spent)),
                    "gb_per_s": moved / min(spent) / 1e9,
                    "vs_sum": best_sum / min(spent),
                }
            )
        del table, copy_target
    return pd.DataFrame.from_records(records)
