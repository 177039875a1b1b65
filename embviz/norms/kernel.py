"""Which backend `row_norms` uses, and the checked entry point of its numba kernel.

Two backends compute row norms on the CPU:

- ``"native"``: the numba kernel of `embviz.norms.jit`, compiled in memory on first use (about a
  second per dtype; nothing is cached on disk). It reads fp32, fp16 and bf16 rows in place,
  accumulates each row in float64 and rounds the norm once to float32, on numba's worker
  threads for large tables.
- ``"torch"``: torch ops only (`torch.linalg.vector_norm` on chunks of rows, float32
  accumulation), always available.

``backend="auto"`` (the default) picks ``"native"`` where numba is installed, unless the
environment variable ``EMBVIZ_NATIVE`` is ``0`` (or ``false``/``no``/``off``). float64 tables
and tables on other devices always go through torch.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Literal

import torch

from embviz.norms.errors import NormError

__all__ = ["BACKENDS", "NATIVE_DTYPES", "native_available", "row_norm_backend"]

#: Values of ``backend`` that `row_norms` accepts.
BACKENDS = ("auto", "native", "torch")

#: dtypes the numba kernel reads.
NATIVE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# Tables of at least this many elements run on numba's worker threads; smaller ones inline.
_PARALLEL_MIN_ELEMENTS = 2**21
# Rows per task of the parallel kernel: about 1 MiB of table, enough to amortise scheduling.
_TASK_BYTES = 2**20

_state: dict[str, Any] = {}
_compile_lock = threading.Lock()
# numba's "workqueue" threading layer (where neither TBB nor OpenMP is found) must not be
# entered from two threads at once: parallel calls take turns.
_parallel_lock = threading.Lock()


def _disabled() -> bool:
    return os.environ.get("EMBVIZ_NATIVE", "1").strip().lower() in ("0", "false", "no", "off")


def _kernels() -> dict[str, tuple[Any, Any]] | None:
    """The numba kernels by dtype name, or None where numba cannot be imported."""
    with _compile_lock:
        if "kernels" not in _state:
            try:
                from embviz.norms.jit import KERNELS
            except ImportError:
                _state["kernels"] = None
            else:
                _state["kernels"] = KERNELS
    return _state["kernels"]


def native_available() -> bool:
    """Whether the numba kernel can run here (numba importable), whatever ``EMBVIZ_NATIVE``."""
    return _kernels() is not None


def check_backend(backend: Any) -> str:
    """``backend`` when it is one of `BACKENDS`; ``"native"`` also needs numba."""
    if backend not in BACKENDS:
        shown = ", ".join(repr(b) for b in BACKENDS)
        raise NormError(f"backend must be one of {shown}, got {backend!r}")
    if backend == "native" and not native_available():
        raise NormError("backend='native' needs numba (pip install numba); use 'auto' or 'torch'")
    return backend


def row_norm_backend(
    dtype: torch.dtype = torch.float32, backend: str = "auto"
) -> Literal["native", "torch"]:
    """Which implementation `row_norms` uses for a CPU table of ``dtype``.

    ``"native"``: the numba kernel (float64 accumulation, see `embviz.norms.jit`); ``"torch"``:
    torch ops only, because ``backend="torch"``, or ``backend="auto"`` with ``EMBVIZ_NATIVE=0``
    set or numba not installed, or a dtype the kernel does not read (float64).
    """
    check_backend(backend)
    if backend == "torch" or dtype not in NATIVE_DTYPES:
        return "torch"
    if backend == "auto" and (_disabled() or not native_available()):
        return "torch"
    return "native"


def native_row_norms(x: torch.Tensor, out: torch.Tensor) -> None:
    """``out[i] = ||x[i]||`` with the numba kernel; ``x`` is read in place.

    Parameters
    ----------
    x : torch.Tensor
        2-D, on the CPU, dtype in `NATIVE_DTYPES`, unit column stride (rows may be spaced).
    out : torch.Tensor
        1-D contiguous float32 on the CPU, one entry per row of ``x``.

    Raises
    ------
    NormError
        An argument that breaks one of these conditions (the message says which), or numba
        missing.
    """
    if not isinstance(x, torch.Tensor) or not isinstance(out, torch.Tensor):
        raise NormError("native_row_norms takes two tensors")
    if x.dim() != 2 or x.device.type != "cpu" or x.layout != torch.strided:
        raise NormError(f"kernel input must be a dense 2-D CPU tensor, got {tuple(x.shape)}")
    if x.dtype not in NATIVE_DTYPES:
        raise NormError(f"kernel input dtype {x.dtype} is not one of {NATIVE_DTYPES}")
    rows, cols = int(x.shape[0]), int(x.shape[1])
    if cols > 1 and x.stride(1) != 1:
        raise NormError(f"kernel input must have unit column stride, got strides {x.stride()}")
    if (
        out.dtype != torch.float32
        or out.device.type != "cpu"
        or out.dim() != 1
        or int(out.shape[0]) != rows
        or not out.is_contiguous()
    ):
        raise NormError(
            f"kernel output must be a contiguous float32 CPU vector of {rows} entries, got "
            f"{out.dtype} of shape {tuple(out.shape)}"
        )
    kernels = _kernels()
    if kernels is None:
        raise NormError("the native kernel needs numba (pip install numba)")
    if rows == 0:
        return
    name = str(x.dtype).removeprefix("torch.")
    serial, parallel = kernels[name]
    data = x.detach()
    array = (data if x.dtype == torch.float32 else data.view(torch.int16)).numpy()
    result = out.detach().numpy()
    if rows * cols < _PARALLEL_MIN_ELEMENTS:
        serial(array, result, 0, rows)
        return
    task_rows = max(1, _TASK_BYTES // max(1, cols * x.element_size()))
    with _parallel_lock:
        parallel(array, result, task_rows)
