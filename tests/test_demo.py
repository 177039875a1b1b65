from __future__ import annotations

import numpy as np
import pytest
import torch

import embviz
from embviz.demo import TWHIN_LR_SCALE, DemoError, DemoRun, Relation, train_demo
from embviz.errors import ArgumentError

SCALE = 0.05  # 21,212 users and 3,627 tweets


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> DemoRun:
    save_dir = tmp_path_factory.mktemp("demo") / "run"
    return train_demo(save_dir, steps=60, checkpoint_every=25, scale=SCALE, progress=False)


def test_run_layout(run):
    assert run.checkpoint_steps == (0, 25, 50, 60)
    frame = embviz.checkpoints(run.save_dir)
    assert frame["step"].tolist() == [0, 25, 50, 60]
    assert sorted(p.name for p in run.save_dir.iterdir()) == [
        "0",
        "25",
        "50",
        "60",
        "config.yaml",
        "vocab",
    ]
    assert run.steps == 60 and len(run.losses) == 60
    assert run.relations[0] == Relation("fav", "user", "tweet")


def test_config_is_scaled_twhin_with_vocab_and_scaled_lr(run):
    twhin = embviz.load_config(embviz.example("twhin"), key="model.embeddings")
    assert run.config.table_names == ["user", "tweet"]
    for table, original in zip(run.config.tables, twhin.tables, strict=True):
        assert table.num_embeddings == round(original.num_embeddings * SCALE)
        assert table.embedding_dim == original.embedding_dim
        assert table.optimizer.sgd.lr == pytest.approx(original.optimizer.sgd.lr * TWHIN_LR_SCALE)
        assert table.vocab == str(run.vocab_paths[table.name])
    assert embviz.load_config(run.save_dir / "config.yaml") == run.config


def test_checkpoints_hold_the_tables(run):
    tables = embviz.snapshot_tables(run.save_dir / "60")
    assert list(tables.index) == ["user", "tweet"]
    assert tables.loc["user", "path"] == "0/model/large_embeddings.ebc.embedding_bags.user.weight"
    for table in run.config.tables:
        assert tables.loc[table.name, "shape"] == (table.num_embeddings, table.embedding_dim)
        last = embviz.read_table(run.save_dir / "60", table.name)
        assert torch.equal(last, run.collection.embedding_bags[table.name].weight.detach())


def test_popular_rows_move_and_unseen_rows_keep_their_initial_values(run):
    for name in ("user", "tweet"):
        start = embviz.read_table(run.save_dir / "0", name)
        end = embviz.read_table(run.save_dir / "60", name)
        moved = (end - start).norm(dim=1).numpy()
        entities = run.entities[name]
        unseen = entities["lookups"].to_numpy() == 0
        assert unseen.any()
        assert (moved[unseen] == 0).all()  # SGD leaves rows without gradient untouched
        assert (moved[~unseen] > 0).all()
        top = entities["degree"].rank(ascending=False, method="first").to_numpy() <= 20
        seen_rare = (~unseen) & (entities["degree"].to_numpy() <= 2)
        assert moved[top].mean() > 10 * moved[seen_rare].mean()
    # Popular users end far from their initial norm (about sqrt(1/rows) * 1.15).
    end = embviz.read_table(run.save_dir / "60", "user").norm(dim=1).numpy()
    top_users = run.popular("user", 20).index.to_numpy()
    assert np.median(end[top_users]) > 5 * np.median(end)
    assert run.losses[-1] < run.losses[0]


def test_entities_and_vocab(run):
    for table in run.config.tables:
        entities = run.entities[table.name]
        assert len(entities) == table.num_embeddings
        assert entities.index.name == "row"
        vocab = embviz.load_vocab(run.vocab_paths[table.name], table.num_embeddings)
        assert len(vocab) == table.num_embeddings
        # Not the identity: ids are large and rows are shuffled.
        assert vocab.index.min() > 10**12
        assert not np.array_equal(vocab.to_numpy(), np.arange(len(vocab)))
        by_row = vocab.reset_index().set_index("row").sort_index()["entity_id"]
        assert np.array_equal(by_row.to_numpy(), entities["entity_id"].to_numpy())
    # Degrees follow a heavy-tailed law: the top 1% of users hold a large share of the edges.
    degree = np.sort(run.entities["user"]["degree"].to_numpy())[::-1]
    assert degree[: len(degree) // 100].sum() > 0.3 * degree.sum()
    report = embviz.vocab_report(run.config)
    assert (report["mapping"] == "vocab").all()
    assert (report["utilisation"] == 1.0).all()


def test_same_seed_same_tables(tmp_path):
    kwargs = {"steps": 4, "checkpoint_every": 4, "scale": 0.01, "progress": False}
    a = train_demo(tmp_path / "a", seed=3, **kwargs)
    b = train_demo(tmp_path / "b", seed=3, **kwargs)
    c = train_demo(tmp_path / "c", seed=4, **kwargs)
    assert c.losses != a.losses
    for name in ("user", "tweet"):
        wa = embviz.read_table(tmp_path / "a" / "4", name)
        assert torch.equal(wa, embviz.read_table(tmp_path / "b" / "4", name))
        assert not torch.equal(wa, embviz.read_table(tmp_path / "c" / "4", name))
    assert a.losses == b.losses


def test_custom_config_and_relations(tmp_path):
    cfg = embviz.LargeEmbeddingsConfig.model_validate(
        {
            "tables": [
                {
                    "name": name,
                    "num_embeddings": 300,
                    "embedding_dim": 8,
                    "data_type": "fp32",
                    "optimizer": {"adagrad": {"lr": 0.5, "eps": 1e-8}},
                }
                for name in ("a", "b", "c")
            ]
        }
    )
    run = train_demo(tmp_path / "r", cfg, steps=6, checkpoint_every=3, progress=False)
    assert [r.name for r in run.relations] == ["a_to_b", "b_to_c", "c_to_a"]
    assert run.config.tables[0].optimizer.adagrad.lr == 0.5  # lr_scale 1 for a given config
    assert run.checkpoint_steps == (0, 3, 6)
    assert list(run.translations.shape) == [3, 8]
    assert not torch.isnan(run.collection.embedding_bags["a"].weight).any()


def test_demo_errors(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    with pytest.raises(DemoError, match="not empty"):
        train_demo(tmp_path / "busy", steps=1, scale=0.01, progress=False)
    mixed = embviz.LargeEmbeddingsConfig.model_validate(
        {
            "tables": [
                {
                    "name": n,
                    "num_embeddings": 10,
                    "embedding_dim": d,
                    "data_type": "fp32",
                    "optimizer": {"sgd": {"lr": 0.1}},
                }
                for n, d in (("a", 4), ("b", 8))
            ]
        }
    )
    with pytest.raises(DemoError, match=r"same embedding_dim.*a 4, b 8"):
        train_demo(tmp_path / "m", mixed, steps=1, progress=False)
    with pytest.raises(DemoError, match="no table 'x'"):
        train_demo(tmp_path / "r", mixed, relations=(Relation("r", "a", "x"),), progress=False)
    nan = embviz.LargeEmbeddingsConfig.model_validate(
        {
            "tables": [
                {
                    "name": "a",
                    "num_embeddings": 10,
                    "embedding_dim": 4,
                    "data_type": "fp32",
                    "optimizer": {"adagrad": {"lr": 0.1}},
                }
            ]
        }
    )
    with pytest.raises(DemoError, match="NaN"):
        train_demo(tmp_path / "n", nan, steps=1, progress=False)
    with pytest.raises(ArgumentError, match=r"^steps: must be an integer >= 1, got 0"):
        train_demo(tmp_path / "s", steps=0, scale=0.01, progress=False)
    with pytest.raises(ArgumentError, match=r"^lr_scale: must be a number > 0"):
        train_demo(tmp_path / "s", lr_scale=0, scale=0.01, progress=False)
