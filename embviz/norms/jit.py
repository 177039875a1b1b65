"""The numba kernel of `row_norms`: a float64 sum of squares per row, read in place.

Kept apart from `embviz.norms.kernel` (which checks the arguments and picks a backend) because it
imports numba: a machine without numba imports only the torch path.

Each row is accumulated in float64: fp32, fp16 and bf16 values are widened to float64, where
their squares are exact, and summed; the square root is rounded once to float32. That is more
accurate than torch's float32 accumulation, and it makes the order of the additions immaterial:
the float64 sum's rounding error is at most ``cols * 2**-53`` of the sum, about 2**29 times
smaller than a float32 ulp for a 1,000-wide row, so which lanes LLVM adds in which order can
change a float32 result only where the exact norm lies within that distance of a rounding
boundary. The one fast-math flag is therefore ``reassoc`` on the row loop (so LLVM may vectorise
the float64 sum with the machine's lanes); no ``nnan``/``ninf``/``contract``: inf and NaN
propagate as in torch.

Each row also asks the CPU to prefetch the row about 2 KiB ahead (``llvm.prefetch``, every 64-byte
line of it): on its own the hardware prefetcher fell behind on 256-byte rows (about 47 ns a row
against 28 for ``torch.sum`` over the same bytes, one thread), with it the kernel reads at the
speed of ``torch.sum``.

fp16 is widened by LLVM's ``fpext half -> double`` (F16C or AVX512-FP16 instructions where the
CPU has them), bf16 by shifting its 16 bits into the high half of a float32
(``uint16 << 16``), exactly what a bf16 value is. Both arrive here as int16 views of the tensor.

Compiled in memory on first use for the CPU at hand (``cache=False``): nothing
machine-specific is written to disk.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["KERNELS"]


@intrinsic
def _fp16_to_float64(typingctx: Any, bits: Any) -> Any:
    """The fp16 value whose 16 bits are ``bits`` (int16), as float64 (exact)."""
    if bits not in (types.int16, types.uint16):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.DoubleType())

    return types.float64(bits), codegen


@intrinsic
def _bf16_to_float64(typingctx: Any, bits: Any) -> Any:
    """The bf16 value whose 16 bits are ``bits`` (int16), as float64 (exact)."""
    if bits not in (types.int16, types.uint16):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        i32 = ir.IntType(32)
        high = builder.shl(builder.zext(args[0], i32), ir.Constant(i32, 16))
        return builder.fpext(builder.bitcast(high, ir.FloatType()), ir.DoubleType())

    return types.float64(bits), codegen


@intrinsic
def _prefetch(typingctx: Any, array: Any, row: Any, col: Any) -> Any:
    """Ask the CPU to bring ``array[row, col]``'s cache line in (a hint: it never faults)."""
    if not isinstance(array, types.Array) or array.ndim != 2:
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        arytype = signature.args[0]
        ary = context.make_array(arytype)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(
            context, builder, arytype, ary, [args[1], args[2]], wraparound=False
        )
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        # read (0), high temporal locality (3), data cache (1)
        flags = [ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)]
        builder.call(fn, [builder.bitcast(ptr, i8p), *flags])
        return context.get_dummy_value()

    return types.none(array, types.intp, types.intp), codegen


@njit(cache=False, inline="always")
def _fp32_to_float64(value: Any) -> float:
    return np.float64(value)


def _kernels(widen: Any) -> tuple[Any, Any]:
    """(serial, parallel) row-norm functions for the values ``widen`` turns into float64."""

    @njit(cache=False, fastmath={"reassoc"}, boundscheck=False, nogil=True)
    def norms(x: Any, out: Any, lo: int, hi: int) -> None:
        cols = x.shape[1]
        line = max(1, 64 // x.itemsize)  # values per 64-byte cache line
        ahead = max(1, 2048 // max(1, cols * x.itemsize))  # rows in about 2 KiB
        for i in range(lo, hi):
            if i + ahead < hi:
                for j in range(0, cols, line):
                    _prefetch(x, i + ahead, j)
            total = 0.0
            for j in range(cols):
                v = widen(x[i, j])
                total += v * v
            out[i] = np.float32(np.sqrt(total))

    @njit(cache=False, parallel=True, boundscheck=False, nogil=True)
    def norms_parallel(x: Any, out: Any, task_rows: int) -> None:
        rows = x.shape[0]
        tasks = (rows + task_rows - 1) // task_rows
        for t in prange(tasks):
            norms(x, out, t * task_rows, min(rows, (t + 1) * task_rows))

    return norms, norms_parallel


#: (serial, parallel) kernels by dtype name; fp16 and bf16 take the table's int16 view.
KERNELS: dict[str, tuple[Any, Any]] = {
    "float32": _kernels(_fp32_to_float64),
    "float16": _kernels(_fp16_to_float64),
    "bfloat16": _kernels(_bf16_to_float64),
}
