"""Build, demo-training and snapshot-reading figures on this machine, with goals.

Goals (exit 1 when one is missed):
- `train_demo` on the bundled twhin.yaml (424,241 + 72,543 rows, 300 steps, 7 checkpoints)
  finishes in under 60 s.
- `build_collection` + `measure_collection` of the ranker at scale 0.01 (290 MiB with optimizer
  state) measures exactly the predicted bytes.
- `read_table` of the small table of a snapshot that also holds a 512 MB table takes under a
  tenth of the time of restoring the whole snapshot (it reads only that tensor; best of 3).

Reproduce: ``.venv/bin/python benchmarks/bench_build.py``
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torchrec  # imported before timing so no figure includes its import

import embviz
from embviz.demo import train_demo
from embviz.measure import build_and_measure


def timed(work):
    start = time.perf_counter()
    result = work()
    return result, time.perf_counter() - start


def main() -> int:
    rows = []
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        run, demo_s = timed(lambda: train_demo(Path(tmp) / "demo", progress=False))
        rows.append(("train_demo(twhin, 300 steps, 7 checkpoints)", f"{demo_s:.1f} s", "< 60 s"))
        if demo_s >= 60:
            failed.append("demo time")
        loss = f"{run.losses[0]:.4f} -> {sum(run.losses[-20:]) / 20:.4f}"
        rows.append(("demo loss (first step -> mean of last 20)", loss, "falls"))

        ranker = embviz.load_config(embviz.example("ranker"))
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            check, build_s = timed(
                lambda: build_and_measure(ranker, "cpu", scale=0.01, progress=False)
            )
        exact = check.measured_bytes == check.predicted_bytes
        rows.append(
            (
                "build + measure ranker scale 0.01 on cpu",
                f"{build_s:.2f} s ({check.seconds:.2f} s building), "
                f"{check.measured_bytes:,} bytes measured",
                "= predicted",
            )
        )
        if not exact:
            failed.append("ranker bytes")
        del check

        big = torchrec.EmbeddingBagCollection(
            tables=[
                torchrec.EmbeddingBagConfig(
                    name="big", num_embeddings=2_000_000, embedding_dim=64, feature_names=["b"]
                ),
                torchrec.EmbeddingBagConfig(
                    name="small", num_embeddings=1_000, embedding_dim=16, feature_names=["s"]
                ),
            ]
        )
        path = embviz.save_snapshot(big, Path(tmp) / "big")
        embviz.read_table(path, "small")  # warm-up: imports, page cache
        one_s = min(timed(lambda: embviz.read_table(path, "small"))[1] for _ in range(3))
        from torchsnapshot import Snapshot

        all_s = min(timed(lambda: Snapshot(str(path)).restore({"model": big}))[1] for _ in range(3))
        rows.append(
            (
                "read_table(small) vs restoring the snapshot (512 MB + 64 KB)",
                f"{one_s * 1e3:.1f} ms vs {all_s * 1e3:.1f} ms",
                "< a tenth",
            )
        )
        if one_s >= all_s / 10:
            failed.append("read_table")

    print("| figure | value | goal |")
    print("| --- | --- | --- |")
    for name, value, goal in rows:
        print(f"| {name} | {value} | {goal} |")
    print(f"\nreproduce: {sys.executable} benchmarks/bench_build.py")
    if failed:
        print(f"goals missed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
