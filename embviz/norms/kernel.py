"""The native CPU kernel of `row_norms`, and which backend a dtype gets."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Literal

import torch

__all__ = ["row_norm_backend"]

# Rows per task of the native kernel: about 4 MiB of table.
_NATIVE_TASK_BYTES = 4 * 2**20

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


def native_kernel(dtype: torch.dtype) -> Any:
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
    return "native" if native_kernel(dtype) is not None else "torch"
