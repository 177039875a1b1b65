"""Print the ATEN_CPU_CAPABILITY values this CPU supports, one a line (``default`` first).

torch picks its vectorised kernels by CPU capability (``default``: no explicit SIMD, ``avx2``:
8 float lanes, ``avx512``: 16), and ``ATEN_CPU_CAPABILITY`` can lower it. The row-norm accuracy
tests (``pytest -m capability``) run under each of them, so they check more than one summation
order on any machine; the Makefile's ``test`` target loops over this script's output.

The highest capability is torch's own choice (``torch.backends.cpu.get_cpu_capability()`` in a
process without ``ATEN_CPU_CAPABILITY``); where torch cannot say, the flags in ``/proc/cpuinfo``
decide as torch does (avx2 needs AVX2 and FMA; avx512 needs AVX-512 F, BW, DQ and VL).

    python scripts/cpu_capabilities.py            # e.g. default, avx2, avx512
    python scripts/cpu_capabilities.py --others   # all but the one torch uses by default
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

ORDER = ["default", "avx2", "avx512"]


def from_torch() -> str | None:
    """torch's own capability on this CPU (lower case), or None where torch cannot tell."""
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
        )
    except (OSError, subprocess.SubprocessError):
        return None
    value = done.stdout.strip().lower()
    return value if done.returncode == 0 and value in ORDER else None


def from_cpuinfo(path: str = "/proc/cpuinfo") -> str:
    """The highest capability the CPU's flags allow, by torch's rules; ``default`` elsewhere."""
    flags: set[str] = set()
    try:
        with open(path) as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        return "default"
    if {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags and "fma" in flags:
        return "avx512"
    if {"avx2", "fma"} <= flags:
        return "avx2"
    return "default"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--others", action="store_true", help="leave out torch's default")
    args = parser.parse_args()
    best = from_torch() or from_cpuinfo()
    supported = ORDER[: ORDER.index(best) + 1]
    for capability in supported:
        if not (args.others and capability == best):
            print(capability)
    return 0


if __name__ == "__main__":
    sys.exit(main())
