"""`norm_stats` and `health` on a snapshot larger than it may hold: peak memory, time vs ``cat``.

A 16,000,000 x 64 fp32 table (4.1 GB), written with plain torchsnapshot into a temporary folder
(``Snapshot.take``, as a training job does), then:

- ``cat`` of the snapshot's data files to ``/dev/null``, warm page cache (best of 3);
- ``embviz.norm_stats`` on the snapshot in a fresh process: its peak RSS
  (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, which includes the interpreter, torch and the
  file pages it maps) and the seconds of the call (best of 2; warm page cache). The modules it
  imports are imported, and the row-norm kernel compiled (numba compiles it once per process),
  before the clock starts; the compile time is reported on its own line;
- its statistics against a float64 reference computed by the writer from the same tensor;
- ``embviz.health`` of the same table in a fresh process, once (warm page cache): its peak RSS
  and seconds. It streams the row norms (4 bytes a row) to choose its sample (the 25,000 rows
  of largest norm and 75,000 drawn from the others), then gathers those rows block by block
  (`embviz.SnapshotTable`): the table is never held. Its effective rank is printed beside the
  float64 one of the whole table (the writer's Gram matrix), as a check of what it read.

Goals (exit 1 when one is missed): peak RSS <= 1.5 GiB (goal 1 GiB), for both; time <= 2.5x
``cat`` (goal 1.25x); mean, min, max and the quantiles within 1e-5 (relative) of float64.

It needs 4.1 GB of free disk twice over (refused under 12 GB free: pass ``--rows`` to scale down)
and about 5 GB of memory while writing. Temporary files are deleted afterwards.

Reproduce: ``.venv/bin/python benchmarks/bench_snapshots.py [--rows N]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROWS, DIM = 16_000_000, 64
GIB = 2**30
RSS_BAR, RSS_GOAL = 1.5 * GIB, 1.0 * GIB
TIME_BAR, TIME_GOAL = 2.5, 1.25
NEEDED_FREE = 12 * 10**9

WRITER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import torch
    from torchsnapshot import Snapshot, StateDict

    path, rows, dim = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    weight = torch.empty(rows, dim)
    generator = torch.Generator().manual_seed(0)
    step = 1_000_000
    norms = np.empty(rows, dtype=np.float64)
    gram = torch.zeros(dim, dim, dtype=torch.float64)
    for r in range(0, rows, step):
        block = weight[r : r + step]
        block.normal_(generator=generator).mul_(0.05)
        wide = block.double()
        norms[r : r + step] = wide.square().sum(1).sqrt().numpy()
        gram += wide.T @ wide
        del wide
    Snapshot.take(path, {"model": StateDict(**{"embedding_bags.big.weight": weight})})
    q = [0.01, 0.05, 0.5, 0.95, 0.99]
    ref = dict(zip(["p1", "p5", "p50", "p95", "p99"], np.quantile(norms, q).tolist()))
    ref.update(mean=float(norms.mean()), std=float(norms.std(ddof=1)), min=float(norms.min()),
               max=float(norms.max()))
    sigma = np.sqrt(np.clip(np.linalg.eigvalsh(gram.numpy()), 0, None))
    p = sigma / sigma.sum()
    ref["effective_rank"] = float(np.exp(-(p * np.log(p)).sum()))
    print(json.dumps(ref))
    """
)

READER = textwrap.dedent(
    """
    import json, resource, sys, time
    import embviz
    import pandas, torch, torchsnapshot, tqdm.auto  # imported before timing (see bench_cli.py)

    # The row-norm kernel is compiled once per process on first use (numba, in memory): that
    # one-off cost is timed on its own, then the read is timed with the kernel ready.
    start = time.perf_counter()
    embviz.row_norms(torch.ones(1 << 15, 64))  # 2**21 values: the parallel kernel too
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    stats = embviz.norm_stats(sys.argv[1], tables="big", progress=False)
    seconds = time.perf_counter() - start
    print(json.dumps({
        "compile_seconds": compile_s,
        "seconds": seconds,
        "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "stats": {k: float(v) for k, v in stats.loc["big"].items()},
    }))
    """
)


HEALTH_READER = textwrap.dedent(
    """
    import json, resource, sys, time
    import embviz
    import pandas, torch, torchsnapshot, tqdm.auto  # imported before timing

    embviz.row_norms(torch.ones(1 << 15, 64))  # compile the row-norm kernel first
    start = time.perf_counter()
    frame = embviz.health(sys.argv[1], tables="big", progress=False)
    seconds = time.perf_counter() - start
    print(json.dumps({
        "seconds": seconds,
        "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "sampled": int(frame.loc["big", "sampled"]),
        "effective_rank": float(frame.loc["big", "effective_rank"]),
    }))
    """
)


def _files(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if p.is_file() and p.name[0] != ".")


def _cat_seconds(files: list[str]) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run(["cat", *files], stdout=subprocess.DEVNULL, check=True)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=ROWS, help=f"rows (default {ROWS:,})")
    parser.add_argument("--dir", default=None, help="where to write (default: the temp folder)")
    args = parser.parse_args()
    rows = args.rows
    base = args.dir or tempfile.gettempdir()
    free = shutil.disk_usage(base).free
    size = rows * DIM * 4
    if rows == ROWS and free < NEEDED_FREE:
        print(
            f"only {free / 1e9:.1f} GB free in {base} (needs 12 GB): rerun with a smaller --rows",
            file=sys.stderr,
        )
        return 1
    print(
        f"free disk in {base}: {free / 1e9:.1f} GB; "
        f"table {rows:,} x {DIM} fp32 = {size / 1e9:.2f} GB"
    )
    folder = Path(tempfile.mkdtemp(prefix="embviz-bench-snapshots-", dir=base))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parents[1])]
            + [p for p in [os.environ.get("PYTHONPATH")] if p]
        ),
    }
    try:
        snap = folder / "snap"
        start = time.perf_counter()
        written = subprocess.run(
            [sys.executable, "-c", WRITER, str(snap), str(rows), str(DIM)],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        write_s = time.perf_counter() - start
        reference = json.loads(written.stdout.strip().splitlines()[-1])
        files = _files(snap)
        stored = sum(os.path.getsize(f) for f in files)
        cat_s = _cat_seconds(files)  # also warms the page cache
        runs = []
        for _ in range(2):
            out = subprocess.run(
                [sys.executable, "-c", READER, str(snap)],
                capture_output=True,
                text=True,
                check=True,
                env=env,
            )
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        cat_after = _cat_seconds(files)
        out = subprocess.run(
            [sys.executable, "-c", HEALTH_READER, str(snap)],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        health = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    cat_best = min(cat_s, cat_after)
    seconds = min(r["seconds"] for r in runs)
    compile_s = min(r["compile_seconds"] for r in runs)
    maxrss = max(r["maxrss"] for r in runs)
    stats = runs[0]["stats"]
    ratio = seconds / cat_best
    errors = {
        k: abs(stats[k] - reference[k]) / abs(reference[k])
        for k in ("mean", "std", "min", "p1", "p5", "p50", "p95", "p99", "max")
    }
    worst = max(errors, key=errors.get)
    failed = []
    if maxrss > RSS_BAR:
        failed.append("peak RSS")
    if health["maxrss"] > RSS_BAR:
        failed.append("peak RSS of health")
    if ratio > TIME_BAR:
        failed.append("time")
    if errors[worst] > 1e-5 or stats["rows"] != rows:
        failed.append("accuracy")
    table = [
        (
            "snapshot written by torchsnapshot",
            f"{len(files)} files, {stored / 1e9:.2f} GB in {write_s:.0f} s",
            "",
        ),
        (
            "peak RSS of norm_stats (fresh process, includes torch)",
            f"{maxrss / GIB:.2f} GiB",
            "<= 1.5 GiB (goal 1 GiB)",
        ),
        (
            "norm_stats against cat of the same files (warm)",
            f"{ratio:.2f}x ({seconds:.2f} s vs {cat_best:.2f} s)",
            "<= 2.5x (goal 1.25x)",
        ),
        ("once per process: compiling the row-norm kernel (numba)", f"{compile_s:.1f} s", ""),
        ("largest relative error against float64", f"{errors[worst]:.1e} ({worst})", "<= 1e-5"),
        (
            "peak RSS of health (fresh process, includes torch)",
            f"{health['maxrss'] / GIB:.2f} GiB ({health['seconds']:.1f} s, "
            f"{health['sampled']:,} rows sampled)",
            "<= 1.5 GiB (goal 1 GiB)",
        ),
        (
            "health's effective rank against the whole table's (float64)",
            f"{health['effective_rank']:.3f} vs {reference['effective_rank']:.3f}",
            "",
        ),
    ]
    load = os.getloadavg()
    print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; {os.cpu_count()} cores")
    print("| what | measured | goal |\n| --- | --- | --- |")
    for row in table:
        print("| " + " | ".join(row) + " |")
    print(
        "\nReproduce: .venv/bin/python benchmarks/bench_snapshots.py"
        + (f" --rows {rows}" if rows != ROWS else "")
    )
    if failed:
        print(f"goals missed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
