"""Speed of reading a large config: libyaml's parser against PyYAML's pure-Python one.

A 50 MB config (250,000 tables, written as people write them: block style, every table with
its optimizer and a schedule) is generated in a temporary folder and read with
`embviz.load_config` (YAML, every limit of `embviz.yamlload`, and pydantic validation). A
5 MB config with the first tenth of those tables is read by both parsers in the same run, for
the ratio. Before libyaml was used, the 50 MB config took 457 s.

Goals (exit 1 when missed), in CPU time (the process's own, so that other work sharing the
machine does not count; the wall time is printed beside it):
- the 50 MB config validates in under 60 s;
- on the 5 MB config, libyaml's loader takes at most half the time of the pure-Python one.

The 50 MB read holds about 3 GiB at its peak (PyYAML's node graph), once.

Reproduce: ``.venv/bin/python benchmarks/bench_config.py``
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import yaml

from embviz import load_config, yamlload

COMMAND = ".venv/bin/python benchmarks/bench_config.py"
LARGE_TABLES = 250_000
SMALL_TABLES = 25_000
LARGE_GOAL_S = 60.0
RATIO_GOAL = 0.5

_OPTIMIZERS = (
    "      sgd:\n        lr: 0.01\n",
    "      adagrad:\n        lr: 0.05\n        eps: 1.0e-8\n",
    "      adam:\n        lr: 0.001\n        betas: [0.9, 0.999]\n",
)


def write_config(path: Path, tables: int) -> int:
    """A config of ``tables`` tables in block style; returns its size in bytes."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("tables:\n")
        for i in range(tables):
            handle.write(
                f"  - name: feature_{i:07d}\n"
                f"    num_embeddings: {1000 + 7 * i:_}\n"
                f"    embedding_dim: {4 * (1 + i % 64)}\n"
                f"    data_type: {'fp16' if i % 3 else 'fp32'}\n"
                f"    optimizer:\n{_OPTIMIZERS[i % 3]}"
                "      learning_rate:\n        constant: 0.01\n"
            )
    return path.stat().st_size


def timed_load(path: Path, loader: type) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of `load_config` with ``loader``."""
    saved = yamlload.LOADER
    yamlload.LOADER = loader
    try:
        cpu, wall = time.process_time(), time.perf_counter()
        cfg = load_config(path)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        yamlload.LOADER = saved
    assert len(cfg.tables) > 0
    return cpu, wall


def main() -> int:
    if not yaml.__with_libyaml__:
        print("PyYAML was built without libyaml: nothing to compare", file=sys.stderr)
        return 1
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        small, large = Path(folder) / "small.yaml", Path(folder) / "large.yaml"
        small_bytes = write_config(small, SMALL_TABLES)
        python_s, _ = timed_load(small, yamlload.PyLoader)
        c_s, _ = timed_load(small, yamlload.CLoader)
        ratio = c_s / python_s
        large_bytes = write_config(large, LARGE_TABLES)
        large_s, large_wall = timed_load(large, yamlload.CLoader)
    rows.append(
        (
            f"`load_config`, {large_bytes / 1e6:.0f} MB config ({LARGE_TABLES:,} tables), "
            f"libyaml: CPU time (wall {large_wall:.1f} s)",
            f"{large_s:.1f} s",
            f"< {LARGE_GOAL_S:g} s",
            large_s < LARGE_GOAL_S,
        )
    )
    rows.append(
        (
            f"`load_config`, {small_bytes / 1e6:.0f} MB config: libyaml against pure-Python "
            f"PyYAML, CPU time ({c_s:.1f} s vs {python_s:.1f} s)",
            f"{ratio:.2f}",
            f"<= {RATIO_GOAL:g}",
            ratio <= RATIO_GOAL,
        )
    )
    print("| measurement | result | goal | met |")
    print("| --- | --- | --- | --- |")
    for name, value, goal, met in rows:
        print(f"| {name} | {value} | {goal} | {'yes' if met else 'NO'} |")
    print(f"\nReproduce: `{COMMAND}`")
    return 0 if all(met for *_, met in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
