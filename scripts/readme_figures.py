"""Regenerate the README's figures in docs/ from the bundled configs and the demo run.

    .venv/bin/python scripts/readme_figures.py

docs/editor.png comes from the browser test instead (EMBVIZ_UPDATE_DOCS=1 make test).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import embviz
from embviz.demo import train_demo
from embviz.plots import plot_norm_bands, plot_norm_histograms

DOCS = Path(__file__).resolve().parent.parent / "docs"


def save(figure, name: str) -> None:
    figure.savefig(DOCS / name, dpi=90, bbox_inches="tight")
    print(DOCS / name)


def main() -> None:
    DOCS.mkdir(exist_ok=True)
    ranker = embviz.load_config(embviz.example("ranker"))
    memory = embviz.memory_table(ranker)
    save(embviz.plot_memory(memory, hbm_bytes=16 * 2**30), "memory.png")
    save(
        embviz.plot_dtype_savings(memory, serving=embviz.serving_bytes(ranker)),
        "dtype_savings.png",
    )
    placement = embviz.plan(ranker, gpus=4, hbm_gib=16, progress=False)
    save(embviz.plot_placement(placement, hbm_bytes=placement.hbm_bytes), "placement.png")

    run = train_demo(Path(tempfile.mkdtemp()) / "run", progress=False)
    latest = run.save_dir / str(run.checkpoint_steps[-1])
    stats = embviz.norm_stats(latest, config=run.config, progress=False)
    hist = embviz.norm_histogram(latest, config=run.config, scale="log", progress=False)
    save(plot_norm_histograms(hist, stats), "norm_histograms.png")
    history = embviz.norm_history(run.save_dir, config=run.config, initial="first", progress=False)
    save(plot_norm_bands(history), "norm_bands.png")
    quality = embviz.quantization_error_table(
        latest, ["fp16", "int8", "int4", "int2"], rows=50_000, progress=False
    )
    save(
        embviz.plot_dtype_savings(
            embviz.memory_table(run.config),
            serving=embviz.serving_bytes(run.config),
            quality=quality,
        ),
        "serving_quality.png",
    )


if __name__ == "__main__":
    main()
