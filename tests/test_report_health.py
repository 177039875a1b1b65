"""The report's health section, when it is given a snapshot or a checkpoint folder."""

from __future__ import annotations

import pytest
from report_html import cells

import embviz
from embviz.memory import human_bytes
from embviz.report import write_report


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from embviz.demo import train_demo

    return train_demo(
        tmp_path_factory.mktemp("report") / "run",
        scale=0.05,
        steps=40,
        checkpoint_every=20,
        progress=False,
    )


def test_checkpoint_folder_gives_health_of_its_latest_step(run, tmp_path):
    report = write_report(run.config, tmp_path / "out", snapshot=run.save_dir)
    page = cells(report.index.read_text())
    assert "<h2>Embedding health</h2>" in page
    expected = embviz.health(
        run.save_dir / "40", initial=run.save_dir / "0", config=run.config, progress=False
    )
    for name, row in expected.iterrows():
        assert f"<td>{name}</td><td>{int(row['rows']):,}</td>" in page
        assert f"<td>{row['effective_rank']:.3g}</td>" in page
        assert f"<td>{100 * row['unchanged_share']:.2f}%</td>" in page
    spectra = [p for p in report.figures if p.name.startswith("spectrum_")]
    assert [p.name for p in spectra] == ["spectrum_0.png", "spectrum_1.png"]
    assert all(p.stat().st_size > 1000 for p in spectra)


def test_a_collapsed_table_gets_a_smaller_dim(tmp_path):
    import torch

    cfg = embviz.LargeEmbeddingsConfig.model_validate(
        {"tables": [{"name": "t", "num_embeddings": 2_000, "embedding_dim": 32,
                     "optimizer": {"sgd": {"lr": 0.1}}, "data_type": "fp32"}]}
    )  # fmt: skip
    module = torch.nn.Module()
    module.embedding_bags = torch.nn.ModuleDict({"t": torch.nn.EmbeddingBag(2_000, 32)})
    with torch.no_grad():  # rank 3
        low = torch.randn(2_000, 3) @ torch.randn(3, 32)
        module.embedding_bags["t"].weight.copy_(low)
    embviz.save_snapshot(module, tmp_path / "snap")
    page = cells(write_report(cfg, tmp_path / "out", snapshot=tmp_path / "snap").index.read_text())
    row = embviz.health(str(tmp_path / "snap"), config=cfg, progress=False).loc["t"]
    assert row["smaller_dim"] == 4
    assert f"<td>4</td><td>{human_bytes(2_000 * 28 * 4)}</td>" in page


def test_cli_report_with_snapshot(run, tmp_path, run_cli):
    config = run.save_dir / "config.yaml"
    done = run_cli("report", config, "--out", tmp_path / "r", "--snapshot", run.save_dir / "20")
    assert done.returncode == 0, done.stderr
    assert "Embedding health" in (tmp_path / "r" / "index.html").read_text()
    bad = run_cli("report", config, "--out", tmp_path / "r2", "--snapshot", tmp_path / "nope")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
