"""Run every ``benchmarks/bench_*.py`` in turn; exit non-zero when any goal is missed.

Each benchmark prints its figures (a Markdown table, with the command that reproduces it) and
exits non-zero when a goal it checks is missed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main() -> int:
    here = Path(__file__).parent
    failed = []
    for script in sorted(here.glob("bench_*.py")):
        print(f"\n## {script.name}\n", flush=True)
        if subprocess.call([sys.executable, str(script)]) != 0:
            failed.append(script.name)
    if failed:
        print(f"\ngoals missed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
