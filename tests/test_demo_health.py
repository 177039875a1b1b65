"""The demo's collapse, and the settings under which its neighbours share a community."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import embviz
from embviz.demo import TRANSLATED_LR_SCALE, TWHIN_LR_SCALE, train_demo
from embviz.errors import ArgumentError

SETTINGS = {"scale": 0.05, "steps": 100, "checkpoint_every": 50, "progress": False}


def _movement(run) -> dict:
    last = run.save_dir / str(run.steps)
    return {
        t: embviz.read_table(last, t) - embviz.read_table(run.save_dir / "0", t)
        for t in ("user", "tweet")
    }


def _purity(run, table: str) -> pd.Series:
    seen = np.flatnonzero(run.counts[table].to_numpy() >= 5)  # rows training really moved
    weight = embviz.read_table(run.save_dir / str(run.steps), table)
    return embviz.neighbour_purity(weight, run.communities[table], rows=seen)


def test_twhin_loss_collapses_onto_one_direction(tmp_path):
    run = train_demo(tmp_path / "twhin", **SETTINGS)
    moved = embviz.health(_movement(run), progress=False)
    # Almost all of the rows' squared movement lies along one direction (the translations').
    assert (moved["top_energy_share"] > 0.99).all()
    assert (moved["effective_rank"] < 1.5).all()
    for table in ("user", "tweet"):
        purity = _purity(run, table)
        assert purity["purity"] < 1.5 * purity["chance"]  # neighbours are popularity, not graph
    counts = run.counts
    assert list(counts) == ["user", "tweet"]
    for table, series in counts.items():
        pd.testing.assert_series_equal(series, run.entities[table]["lookups"])
    assert run.config.table("user").optimizer.sgd.lr == pytest.approx(0.01 * TWHIN_LR_SCALE)


def test_translated_negatives_learn_the_communities(tmp_path):
    run = train_demo(
        tmp_path / "communities", translate_negatives=True, community_shift=0, **SETTINGS
    )
    assert run.config.table("user").optimizer.sgd.lr == pytest.approx(0.01 * TRANSLATED_LR_SCALE)
    moved = embviz.health(_movement(run), progress=False)
    assert (moved["top_energy_share"] < 0.7).all()
    assert (moved["effective_rank"] > 3).all()  # of 4 dimensions
    for table in ("user", "tweet"):
        purity = _purity(run, table)
        assert purity["purity"] > 3 * purity["chance"]
    frame = embviz.health(run.save_dir / str(run.steps), counts=run.counts, progress=False)
    assert (frame["norm_frequency_spearman"] > 0.2).all()  # popular rows grow most


def test_community_shift_must_be_a_non_negative_integer(tmp_path):
    with pytest.raises(ArgumentError, match=r"^community_shift: "):
        train_demo(tmp_path / "x", community_shift=-1, scale=0.01, progress=False)
