"""Check embviz's byte predictions on a real GPU: build, measure, compare; time against bandwidth.

Usage (on a CUDA machine with torchrec and fbgemm-gpu-cpu installed)::

    python scripts/gpu_check.py [--config CONFIG] [--key K] [--scale S] [--tolerance 0.01]

It builds the bundled ranker config (or CONFIG) unsharded on ``cuda`` with each table's
optimizer applied in backward, scaled so that it takes at most half of the GPU's free memory,
takes one step, and prints per table the predicted bytes (`embviz.memory_table`, torch.optim
rules), the bytes of the tensors, and what ``torch.cuda.memory_allocated`` grew by. It then
prints each table's build time against the device's memory bandwidth (nominal from the device
properties, and a measured device-to-device copy). Exit status: 0 when every table's tensors are
within the tolerance of the prediction and its CUDA allocation is within the tolerance or the
caching allocator's rounding (`ALLOCATOR_SLACK` per tensor), 1 when one is not, 2 when there
is no CUDA device or the arguments are wrong.

Every section is a function of plain data, so the arithmetic is tested on the CPU
(tests/test_build.py); only `main` needs the GPU.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

import embviz
from embviz.build import BuildWarning, scale_config
from embviz.config import LargeEmbeddingsConfig, Mode
from embviz.measure import build_and_measure
from embviz.memory import human_bytes, memory_table
from embviz.optimizers import nan_on_zero_grad

TOLERANCE = 0.01
# Share of the free GPU memory the check may use.
FRACTION = 0.5
# What torch's CUDA caching allocator may count beyond a tensor's bytes: sizes are rounded up to
# 512 bytes, large tensors to 2 MiB, and the unsplit rest (< 1 MiB) of a block handed out for a
# 1-10 MiB tensor counts as allocated too. So a tensor's memory_allocated share exceeds its
# bytes by less than 2 MiB.
ALLOCATOR_SLACK = 2 * 1024**2


# --------------------------------------------------------------------------- pure parts


def needed_bytes(cfg: LargeEmbeddingsConfig, scale: float | None) -> int:
    """Peak bytes of build + measurement: the torch.optim prediction, plus a copy of each table
    whose Adam/Adagrad eps vanishes in its dtype (`measure_collection` keeps one to put the
    weights back after its zero-gradient step), plus the largest table's dense gradient, which
    lives for the length of its optimizer step."""
    scaled = scale_config(cfg, scale)
    frame = memory_table(scaled, "torch", Mode.TRAIN)
    copies = sum(
        int(frame.loc[t.name, "weight_bytes"]) for t in scaled.tables if nan_on_zero_grad(t)
    )
    gradient = int(frame["weight_bytes"].max())
    return int(frame["total_bytes"].sum()) + copies + gradient


def choose_scale(
    cfg: LargeEmbeddingsConfig, free_bytes: int, fraction: float = FRACTION
) -> float | None:
    """The largest simple scale (two significant digits) whose build takes at most ``fraction``
    of ``free_bytes``; None when the whole config fits.

    Raises
    ------
    ValueError
        When not even a one-row-per-table copy fits.
    """
    budget = free_bytes * fraction
    if needed_bytes(cfg, None) <= budget:
        return None
    scale = budget / needed_bytes(cfg, None)
    for _ in range(100):
        candidate = _two_digits_down(scale)
        if candidate > 0 and needed_bytes(cfg, candidate) <= budget:
            return candidate
        scale *= 0.9  # rows are rounded per table: step down until it fits
    raise ValueError(f"not even a tiny copy of the config fits in {human_bytes(budget)}")


def _two_digits_down(value: float) -> float:
    """``value`` rounded down to two significant digits (0.01234 -> 0.012)."""
    exponent = math.floor(math.log10(value)) - 1
    step = 10.0**exponent
    return round(math.floor(value / step) * step, max(0, -exponent))


def device_tensors(cfg: LargeEmbeddingsConfig) -> dict[str, int]:
    """Tensors each table keeps on the GPU: the weight and the optimizer's state tensors (torch
    keeps Adam's and Adagrad's 4-byte ``step`` on the CPU)."""
    state = {"sgd": 0, "adagrad": 1, "adam": 2}
    counts = {}
    for table in cfg.tables:
        extra = state[table.optimizer.name]
        if table.optimizer.name == "sgd" and table.optimizer.settings.momentum > 0:
            extra = 1
        counts[table.name] = 1 + extra
    return counts


def _relative(value: float, reference: float) -> float:
    if reference == 0:
        return 0.0 if value == 0 else math.inf
    return (value - reference) / reference


def bytes_check(
    comparison: pd.DataFrame,
    tolerance: float = TOLERANCE,
    tensor_counts: dict[str, int] | None = None,
) -> pd.DataFrame:
    """Per table: predicted, tensor and CUDA-allocated bytes, their relative differences, ``ok``.

    The tensors' bytes must be within ``tolerance`` of the prediction. The CUDA allocation must
    be within ``tolerance`` or within the allocator's rounding, ``ALLOCATOR_SLACK`` per device
    tensor of the table (``tensor_counts``, see `device_tensors`), whichever is larger: a 4 MB table
    can take 6 MB of blocks, which says nothing about the prediction.

    Parameters
    ----------
    comparison : pandas.DataFrame
        `embviz.measure.predicted_vs_measured` of a CUDA build (with ``allocated_total_bytes``;
        without it only the tensor bytes are checked).
    tolerance : float
        Largest relative difference accepted.
    tensor_counts : dict of str to int, optional
        Device tensors per table; 1 when missing.
    """
    rows = []
    for table, row in comparison.iterrows():
        predicted = int(row["predicted_total_bytes"])
        tensors = int(row["measured_total_bytes"])
        record: dict[str, Any] = {
            "table": table,
            "predicted_bytes": predicted,
            "tensor_bytes": tensors,
            "tensor_difference": _relative(tensors, predicted),
        }
        checks = [abs(record["tensor_difference"]) <= tolerance]
        if "allocated_total_bytes" in comparison:
            allocated = row["allocated_total_bytes"]
            if pd.isna(allocated):
                record["allocated_bytes"] = pd.NA
                record["allocated_difference"] = math.nan
                checks.append(False)  # a CUDA build always has it: missing is a failure
            else:
                slack = ALLOCATOR_SLACK * (tensor_counts or {}).get(str(table), 1)
                record["allocated_bytes"] = int(allocated)
                record["allocated_difference"] = _relative(int(allocated), predicted)
                record["allocator_slack"] = slack
                within = abs(int(allocated) - predicted) <= max(tolerance * predicted, slack)
                checks.append(within)
        record["ok"] = all(checks)
        rows.append(record)
    frame = pd.DataFrame(rows).set_index("table")
    if "allocated_bytes" in frame:
        frame["allocated_bytes"] = frame["allocated_bytes"].astype("Int64")
    return frame


def nominal_bandwidth(properties: Any) -> float | None:
    """Peak memory bandwidth in bytes/s from CUDA device properties (double data rate), or None
    when this torch does not expose the memory clock and bus width."""
    clock_khz = getattr(properties, "memory_clock_rate", None)
    bus_bits = getattr(properties, "memory_bus_width", None)
    if not clock_khz or not bus_bits:
        return None
    return 2.0 * clock_khz * 1e3 * bus_bits / 8


def build_vs_bandwidth(measured: pd.DataFrame, bandwidth: float) -> pd.DataFrame:
    """Each table's build time against writing its weights once at ``bandwidth`` bytes/s.

    Returns
    -------
    pandas.DataFrame
        Indexed by table, plus a ``(total)`` row: ``weight_bytes``, ``build_seconds``,
        ``ideal_seconds`` (bytes / bandwidth), ``achieved_bytes_per_s``, ``share_of_bandwidth``.
    """
    frame = measured[["weight_bytes", "build_seconds"]].copy()
    frame.loc["(total)"] = [frame["weight_bytes"].sum(), frame["build_seconds"].sum()]
    frame["weight_bytes"] = frame["weight_bytes"].astype("int64")
    frame["ideal_seconds"] = frame["weight_bytes"] / bandwidth
    frame["achieved_bytes_per_s"] = frame["weight_bytes"] / frame["build_seconds"]
    frame["share_of_bandwidth"] = frame["achieved_bytes_per_s"] / bandwidth
    return frame


def cuda_problem() -> str | None:
    """Why this machine cannot run the check, or None."""
    import torch

    if not torch.cuda.is_available():
        return (
            f"gpu_check: no CUDA device here (torch {torch.__version__}, CUDA build "
            f"{torch.version.cuda or 'none'}); run it on a CUDA machine, see README 'GPU'"
        )
    return None


# --------------------------------------------------------------------------- GPU sections


def copy_bandwidth(device: Any, nbytes: int = 2 * 1024**3, repeats: int = 5) -> float:
    """Device-to-device copy rate in bytes/s, counting bytes read and written (best of repeats)."""
    import torch

    elements = nbytes // 4
    source = torch.empty(elements, dtype=torch.float32, device=device)
    target = torch.empty_like(source)
    target.copy_(source)  # warm-up
    torch.cuda.synchronize(device)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        target.copy_(source)
        torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    del source, target
    torch.cuda.empty_cache()
    return 2 * elements * 4 / best


def section_environment(device: Any) -> dict[str, Any]:
    import torch
    import torchrec

    try:
        import fbgemm_gpu

        fbgemm = getattr(fbgemm_gpu, "__version__", "?")
    except ImportError:  # pragma: no cover - torchrec cannot be imported without it
        fbgemm = "missing"
    properties = torch.cuda.get_device_properties(device)
    free, total = torch.cuda.mem_get_info(device)
    print("## environment")
    print(
        f"torch {torch.__version__} (CUDA {torch.version.cuda}), torchrec "
        f"{getattr(torchrec, '__version__', '?')}, fbgemm_gpu {fbgemm}, embviz {embviz.__version__}"
    )
    print(f"{properties.name}: {human_bytes(total)} total, {human_bytes(free)} free")
    return {"properties": properties, "free": int(free), "total": int(total)}


def section_bytes(
    cfg: LargeEmbeddingsConfig, device: Any, scale: float | None, tolerance: float
) -> tuple[Any, pd.DataFrame]:
    print(f"\n## predicted vs measured bytes (scale {scale if scale is not None else 1})")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", BuildWarning)
        check = build_and_measure(cfg, device, scale=scale, progress=True)
    for warning in caught:
        print(f"warning: {warning.message}")
    frame = bytes_check(check.comparison, tolerance, device_tensors(cfg))
    print(frame.to_string())
    print(check.summary())
    return check, frame


def section_bandwidth(check: Any, properties: Any, device: Any) -> pd.DataFrame:
    print("\n## build time against memory bandwidth")
    nominal = nominal_bandwidth(properties)
    copied = copy_bandwidth(device)
    if nominal is not None:
        print(f"nominal bandwidth {nominal / 1e12:.2f} TB/s (memory clock x bus width x 2)")
    print(f"device-to-device copy {copied / 1e12:.2f} TB/s (bytes read + written)")
    frame = build_vs_bandwidth(check.measured, nominal or copied)
    print(frame.to_string(float_format=lambda v: f"{v:.4g}"))
    return frame


def section_row_norms(device: Any, rows: int) -> pd.DataFrame:
    """`embviz.row_norms` throughput on the device against ``torch.sum`` and a copy."""
    print(f"\n## row norms of a {rows:,} x 64 table against the device's bandwidth")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from bench_norms import row_norm_throughput

    frame = row_norm_throughput(device, rows=rows, dim=64, fallback=False)
    copy = frame[frame["op"] == "copy"].set_index("dtype")["gb_per_s"]
    frame["vs_copy"] = frame["gb_per_s"] / frame["dtype"].map(copy)
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return frame


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(embviz.example("ranker")))
    parser.add_argument("--key", default=None)
    parser.add_argument("--scale", type=float, default=None, help="default: fit half the GPU")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE)
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--norm-rows", type=int, default=64_000_000, help="rows of the row-norm table (0: skip)"
    )
    args = parser.parse_args(argv)
    problem = cuda_problem()
    if problem is not None:
        print(problem, file=sys.stderr)
        return 2
    import torch

    try:
        cfg = embviz.load_config(args.config, key=args.key)
    except embviz.EmbvizError as exc:
        print(exc, file=sys.stderr)
        return 2
    device = torch.device(args.device)
    environment = section_environment(device)
    scale = args.scale
    if scale is None:
        scale = choose_scale(cfg, environment["free"])
    print(
        f"config {args.config}: {len(cfg.tables)} tables, build needs "
        f"{human_bytes(needed_bytes(cfg, scale))} at scale {scale if scale is not None else 1}"
    )
    check, frame = section_bytes(cfg, device, scale, args.tolerance)
    section_bandwidth(check, environment["properties"], device)
    if args.norm_rows:
        section_row_norms(device, args.norm_rows)
    failed = frame.index[~frame["ok"]].tolist()
    if failed:
        print(
            f"\nFAILED: {', '.join(map(str, failed))} differ from the prediction by more than "
            f"{args.tolerance:.0%}",
            file=sys.stderr,
        )
        return 1
    print(f"\nOK: every table within {args.tolerance:.0%} of the prediction")
    return 0


if __name__ == "__main__":
    sys.exit(main())
