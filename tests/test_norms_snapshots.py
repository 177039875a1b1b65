"""Norms read from torchsnapshots and from the demo model's checkpoints.

The demo (embviz.demo.train_demo) trains TwHIN-style tables with SGD applied in backward: a row
that is never looked up keeps its initial value exactly, and popular rows are looked up (and
moved) far more often than rare ones. The norms read back from the checkpoints must show that.
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchrec

import embviz
from embviz.memory import UnknownTableError
from embviz.norms import (
    QUANTILES,
    STAT_COLUMNS,
    EmptyTableError,
    norm_history,
    norm_stats,
    row_norms,
)
from embviz.snapshots import METADATA_FILE, SnapshotError, resolve_snapshot


class Wrapper(torch.nn.Module):
    """the-algorithm-ml's nesting: model.large_embeddings.ebc."""

    def __init__(self, ebc: torch.nn.Module):
        super().__init__()
        self.large_embeddings = torch.nn.Module()
        self.large_embeddings.ebc = ebc


def _collection(seed: int = 0) -> torchrec.EmbeddingBagCollection:
    torch.manual_seed(seed)
    return torchrec.EmbeddingBagCollection(
        tables=[
            torchrec.EmbeddingBagConfig(
                name="user", num_embeddings=20_000, embedding_dim=16, feature_names=["user"]
            ),
            torchrec.EmbeddingBagConfig(
                name="tweet",
                num_embeddings=5_000,
                embedding_dim=8,
                feature_names=["tweet"],
                data_type=torchrec.DataType.FP16,
            ),
        ]
    )


def _expected(weight: torch.Tensor) -> dict[str, float]:
    """The statistics in float64 (the exact reference the float32 results are held to)."""
    norms = torch.linalg.vector_norm(weight.double(), dim=1)
    q = torch.quantile(norms, torch.tensor(list(QUANTILES.values()), dtype=torch.float64))
    return {
        "mean": float(norms.mean()),
        "std": float(norms.std()),
        "min": float(norms.min()),
        **dict(zip(QUANTILES, q.tolist(), strict=True)),
        "max": float(norms.max()),
    }


@pytest.fixture
def snap(tmp_path):
    ebc = _collection()
    path = embviz.save_snapshot(Wrapper(ebc), tmp_path / "snap")
    return path, ebc


# --------------------------------------------------------------------------- one snapshot


def test_table_names_and_load_table_agree_across_sources(snap):
    path, ebc = snap
    live = {name: bag.weight.detach() for name, bag in ebc.embedding_bags.items()}
    for source in (path, ebc, Wrapper(ebc), ebc.state_dict()):
        assert embviz.table_names(source) == ["user", "tweet"]
        for name, weight in live.items():
            loaded = embviz.load_table(source, name)
            assert loaded.dtype == weight.dtype
            torch.testing.assert_close(loaded, weight, rtol=0, atol=0)
        with pytest.raises(embviz.UnknownTableError, match=r"ghost.*user, tweet"):
            embviz.load_table(source, "ghost")


def test_snapshot_stats_equal_torch_and_the_live_collection(snap):
    path, ebc = snap
    stats = norm_stats(path, progress=False)
    assert list(stats.index) == ["user", "tweet"]
    assert list(stats.columns) == STAT_COLUMNS
    live = norm_stats(ebc, progress=False)
    # The same values streamed from disk and held in memory: the same norms, the same statistics
    # (one kernel, row by row, on both paths).
    assert stats.equals(live)
    for name in ("user", "tweet"):
        weight = ebc.embedding_bags[name].weight.detach()
        for column, value in _expected(weight).items():
            # float32 norms of 16 or 8 values: a few ulps from the float64 reference.
            assert stats.loc[name, column] == pytest.approx(value, rel=2e-6), (name, column)
    assert ebc.embedding_bags["tweet"].weight.dtype == torch.float16


def test_snapshot_reads_only_the_tables_asked_for(snap, monkeypatch):
    import embviz.snapshot_reader

    path, _ = snap
    calls = []
    real = embviz.snapshot_reader.iter_table_blocks

    def spy(p, name, *args, **kwargs):
        calls.append(name)
        return real(p, name, *args, **kwargs)

    monkeypatch.setattr(embviz.snapshot_reader, "iter_table_blocks", spy)
    stats = norm_stats(path, tables=["tweet"], sample=1_000, progress=False)
    assert calls == ["tweet"]
    assert stats.loc["tweet", "sampled"] == 1_000
    assert stats.loc["tweet", "rows"] == 5_000


def test_snapshot_errors(snap, tmp_path):
    path, _ = snap
    with pytest.raises(UnknownTableError) as info:
        norm_stats(path, tables=["users"], progress=False)
    assert str(info.value) == "no table named 'users' (tables: user, tweet)"
    with pytest.raises(SnapshotError, match="no such snapshot"):
        norm_stats(tmp_path / "missing", progress=False)
    # Partial: torchsnapshot writes its metadata last; without it the snapshot is unfinished.
    partial = tmp_path / "partial"
    shutil.copytree(path, partial)
    (partial / METADATA_FILE).unlink()
    with pytest.raises(SnapshotError, match="unfinished or not a snapshot"):
        norm_stats(partial, progress=False)
    # Corrupt: the metadata is there but a table's data file is gone.
    corrupt = tmp_path / "corrupt"
    shutil.copytree(path, corrupt)
    data = [p for p in corrupt.rglob("*") if p.is_file() and p.name != METADATA_FILE]
    for file in data:
        file.unlink()
    with pytest.raises(SnapshotError, match=r"batched/.*: data file of table '\w+' is missing"):
        norm_stats(corrupt, tables=["user"], progress=False)
    garbled = tmp_path / "garbled"
    shutil.copytree(path, garbled)
    (garbled / METADATA_FILE).write_text("{not: [valid")
    with pytest.raises(SnapshotError, match="corrupt snapshot"):
        norm_stats(garbled, progress=False)


def test_empty_table_in_a_module():
    # torchsnapshot cannot write a tensor with no rows, so an empty table only exists in memory.
    module = torch.nn.Module()
    module.embedding_bags = torch.nn.ModuleDict(
        {"empty": torch.nn.EmbeddingBag(0, 4), "full": torch.nn.EmbeddingBag(3, 4)}
    )
    assert norm_stats(module, tables=["full"], progress=False).loc["full", "rows"] == 3
    with pytest.raises(EmptyTableError, match="table 'empty' has no rows"):
        norm_stats(module, progress=False)


def test_resolve_snapshot_in_a_checkpoint_folder(tmp_path):
    for step in (0, 5, 10):
        embviz.save_snapshot(Wrapper(_collection(step)), tmp_path / "run" / str(step))
    (tmp_path / "run" / "15").mkdir()  # being written: no metadata yet
    run = tmp_path / "run"
    assert resolve_snapshot(run) == str(run / "10")
    assert resolve_snapshot(run, step=5) == str(run / "5")
    assert resolve_snapshot(run / "5") == str(run / "5")
    with pytest.raises(
        SnapshotError, match=r"no finished checkpoint at step 15 \(steps: 0, 5, 10\)"
    ):
        resolve_snapshot(run, step=15)
    with pytest.raises(SnapshotError, match="only applies to a checkpoint folder"):
        resolve_snapshot(run / "5", step=5)
    # norm_stats wants one snapshot and says which steps the folder has.
    with pytest.raises(SnapshotError, match="a checkpoint folder"):
        norm_stats(run, progress=False)


# --------------------------------------------------------------------------- the demo's run


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    save_dir = tmp_path_factory.mktemp("demo") / "run"
    return embviz.train_demo(save_dir, steps=120, checkpoint_every=40, progress=False)


@pytest.mark.slow
def test_norm_history_equals_norm_stats_of_every_checkpoint(demo):
    history = norm_history(demo.save_dir, initial="first", progress=False)
    assert list(history.columns) == ["step", "table", *STAT_COLUMNS]
    steps = list(demo.checkpoint_steps)
    assert steps == [0, 40, 80, 120]
    assert history["step"].tolist() == [s for s in steps for _ in range(2)]
    assert history["table"].tolist() == ["user", "tweet"] * len(steps)
    for step in steps:
        path = demo.save_dir / str(step)
        expected = norm_stats(path, initial=demo.save_dir / "0", progress=False)
        got = history[history.step == step].set_index("table")[STAT_COLUMNS]
        assert got.equals(expected), step
    # The last checkpoint holds what the collection holds after training.
    live = norm_stats(demo.collection, progress=False)
    last = history[history.step == steps[-1]].set_index("table")
    assert np.array_equal(last[["mean", "p50", "max"]], live[["mean", "p50", "max"]])


@pytest.mark.slow
def test_norms_move_where_training_moved_the_rows(demo):
    """Untouched rows keep their norm exactly; popular rows move more than rare ones."""
    history = norm_history(demo.save_dir, initial="first", progress=False)
    for table in ("user", "tweet"):
        entities = demo.entities[table]
        per_table = history[history.table == table]
        unchanged = per_table["unchanged_share"].tolist()
        # Step 0 is the initial state; each checkpoint leaves fewer rows untouched.
        assert unchanged[0] == 1.0
        assert all(b < a for a, b in itertools.pairwise(unchanged))
        # SGD without momentum leaves a row that was never looked up bit for bit as it was.
        assert unchanged[-1] == float((entities["lookups"] == 0).mean())

        first = row_norms(embviz.read_table(demo.save_dir / "0", table))
        last = row_norms(embviz.read_table(demo.save_dir / str(demo.steps), table))
        moved = (last - first).abs().numpy()
        never = entities["lookups"].to_numpy() == 0
        assert (moved[never] == 0).all()
        # Rows by degree in the synthetic graph: the most popular 1% moved most, then the
        # next 9%, then the rest.
        degree = entities["degree"].to_numpy()
        top1, top10 = np.quantile(degree, [0.99, 0.90])
        popular = moved[degree >= top1].mean()
        middle = moved[(degree >= top10) & (degree < top1)].mean()
        rare = moved[degree < top10].mean()
        assert popular > middle > rare, (table, popular, middle, rare)
        assert popular > 10 * rare
        # The largest norm grows as the popular rows are trained.
        assert per_table["max"].iloc[-1] > per_table["max"].iloc[0]


@pytest.mark.slow
def test_norm_history_reads_only_the_logged_tables(demo, monkeypatch):
    import embviz.snapshot_reader

    calls = []
    real = embviz.snapshot_reader.iter_table_blocks

    def spy(path, name, *args, **kwargs):
        calls.append((Path(path).name, name))
        return real(path, name, *args, **kwargs)

    monkeypatch.setattr(embviz.snapshot_reader, "iter_table_blocks", spy)
    only_tweet = demo.config.model_copy(update={"tables_to_log": ["tweet"]})
    history = norm_history(demo.save_dir, config=only_tweet, steps=[40, 120], progress=False)
    assert history["table"].tolist() == ["tweet", "tweet"]
    assert history["step"].tolist() == [40, 120]
    assert calls == [("40", "tweet"), ("120", "tweet")]
    with pytest.raises(SnapshotError, match=r"no finished checkpoint at step 7 \(steps: 0, 40"):
        norm_history(demo.save_dir, steps=[7], progress=False)
    with pytest.raises(UnknownTableError, match="no table named 'item'"):
        norm_history(demo.save_dir, tables=["item"], progress=False)


@pytest.mark.slow
def test_norm_history_shows_progress(demo, capsys):
    norm_history(demo.save_dir, tables=["tweet"], steps=[0, 40], progress=True)
    assert "norm history" in capsys.readouterr().err
    norm_history(demo.save_dir, tables=["tweet"], steps=[0, 40], progress=False)
    assert "norm history" not in capsys.readouterr().err


@pytest.mark.slow
def test_sampled_history_describes_the_same_rows_at_every_step(demo):
    history = norm_history(demo.save_dir, tables=["user"], sample=5_000, seed=3, progress=False)
    assert (history["sampled"] == 5_000).all()
    assert (history["rows"] == demo.config.table("user").num_embeddings).all()
    from embviz.norms import sample_rows

    rows = sample_rows(demo.config.table("user").num_embeddings, 5_000, seed=3)
    weight = embviz.read_table(demo.save_dir / "80", "user")
    norms = row_norms(weight, rows)
    assert history[history.step == 80]["mean"].item() == float(norms.mean())
