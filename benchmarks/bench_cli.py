"""Start-up of the CLI: ``embviz memory`` against a bare ``import pandas, pydantic, yaml``.

``embviz memory`` needs pandas, pydantic and PyYAML and nothing heavier (no torch, no torchrec),
so the bare import of those three is its floor. Each round runs both commands in a fresh
process, side by side and in alternating order, so machine load and disk cache affect both
alike; the ratio is taken per round and the median reported.

Goals (exit 1 when the bar is missed):
- ``embviz memory`` on the bundled ranker config: median at most 2.5 x the bare import (bar);
  1.5 x is the goal.
- ``embviz memory`` imports neither torch nor torchrec.

Reproduce: ``.venv/bin/python benchmarks/bench_cli.py``
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import embviz

COMMAND = ".venv/bin/python benchmarks/bench_cli.py"
ROUNDS = 9
BAR = 2.5
GOAL = 1.5


def _embviz() -> list[str]:
    """The installed console script, or ``python -m embviz`` where there is none."""
    script = Path(sys.executable).with_name("embviz")
    return [str(script)] if script.exists() else [sys.executable, "-m", "embviz"]


def _seconds(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def _heavy_imports(config: str) -> list[str]:
    code = (
        "import json, sys\n"
        "from embviz.cli import main\n"
        f"main(['memory', {config!r}])\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'torchrec', "
        "'fbgemm_gpu', 'matplotlib'})), file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return json.loads(result.stderr.strip().splitlines()[-1])


def main() -> int:
    config = str(embviz.example("ranker"))
    bare = [sys.executable, "-c", "import pandas, pydantic, yaml"]
    memory = [*_embviz(), "memory", config]
    # Warm-up: the first runs fill the page cache for both.
    _seconds(bare)
    _seconds(memory)
    bare_s, memory_s, ratios = [], [], []
    for i in range(ROUNDS):
        first, second = (bare, memory) if i % 2 == 0 else (memory, bare)
        a, b = _seconds(first), _seconds(second)
        b_s, m_s = (a, b) if first is bare else (b, a)
        bare_s.append(b_s)
        memory_s.append(m_s)
        ratios.append(m_s / b_s)
    ratio = statistics.median(ratios)
    heavy = _heavy_imports(config)

    print(f"Reproduce: `{COMMAND}` ({ROUNDS} interleaved rounds, fresh process each)\n")
    print("| measurement | value | goal |")
    print("| --- | --- | --- |")
    print(f"| bare `import pandas, pydantic, yaml` | {statistics.median(bare_s):.2f} s | - |")
    print(f"| `embviz memory ranker.yaml` | {statistics.median(memory_s):.2f} s | - |")
    print(
        f"| ratio (median of per-round ratios) | {ratio:.2f} x "
        f"(range {min(ratios):.2f}-{max(ratios):.2f}) | <= {BAR} bar, {GOAL} goal |"
    )
    print(f"| heavy modules imported by `embviz memory` | {heavy or 'none'} | none |")
    failed = ratio > BAR or bool(heavy)
    if ratio > GOAL:
        print(f"\nabove the {GOAL} x goal (bar {BAR} x)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
