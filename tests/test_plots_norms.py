"""Norm figures draw exactly the numbers of the DataFrames they are given."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.collections import PathCollection, PolyCollection
from matplotlib.patches import Rectangle

import embviz
from embviz.memory import dtype_savings, memory_table
from embviz.norms import (
    QUANTILES,
    fp16_error_table,
    norm_histogram,
    norm_stats,
    project,
)
from embviz.plots import (
    plot_fp16_tradeoff,
    plot_norm_bands,
    plot_norm_histograms,
    plot_projection,
)
from embviz.plots.memory import OKABE_ITO

from figure_audit import audit

CONFIG = embviz.parse_config(
    """
tables:
  - {name: user, num_embeddings: 3_000, embedding_dim: 8, data_type: fp32,
     optimizer: {sgd: {lr: 0.1}}}
  - {name: tweet, num_embeddings: 2_000, embedding_dim: 16, data_type: fp16,
     optimizer: {adam: {lr: 0.1}}}
"""
)


@pytest.fixture
def state():
    generator = torch.Generator().manual_seed(0)
    return {
        "user": torch.randn(3_000, 8, generator=generator)
        * torch.rand(3_000, 1, generator=generator),
        "tweet": (torch.randn(2_000, 16, generator=generator) * 0.1).half(),
    }


def _bars(ax) -> list[Rectangle]:
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def test_histogram_bars_equal_counts_and_quantile_lines_equal_stats(state):
    hist = norm_histogram(state, bins=25, progress=False)
    stats = norm_stats(state, progress=False)
    fig = plot_norm_histograms(hist, stats)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2
    for ax, name in zip(axes, ["user", "tweet"], strict=True):
        part = hist[hist.table == name]
        bars = _bars(ax)
        assert [b.get_height() for b in bars] == part["count"].tolist()
        np.testing.assert_allclose([b.get_x() for b in bars], part["left"])
        np.testing.assert_allclose([b.get_x() + b.get_width() for b in bars], part["right"])
        assert ax.get_yscale() == "log"
        lines = {line.get_label(): line for line in ax.get_lines()}
        for column in QUANTILES:
            assert lines[column].get_xdata()[0] == stats.loc[name, column]
        assert lines["mean"].get_xdata()[0] == stats.loc[name, "mean"]
        assert lines["p50"].get_color() == OKABE_ITO["black"]
        assert name in ax.get_title()
        assert ax.get_xlabel() == "row L2 norm"


def test_log_scale_histogram_and_zero_rows(state):
    state = {"user": state["user"].clone()}
    state["user"][:10] = 0
    hist = norm_histogram(state, bins=30, scale="log", progress=False)
    assert hist.attrs == {"scale": "log", "zero_rows": {"user": 10}}
    fig = plot_norm_histograms(hist)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert [b.get_height() for b in _bars(ax)] == hist["count"].tolist()
    assert any("10 rows of norm 0 not shown" in t.get_text() for t in ax.texts)


def test_histograms_on_given_axes_redraw_without_accumulating(state):
    hist = norm_histogram(state, bins=10, progress=False)
    fig, axes = plt.subplots(1, 2)
    for _ in range(3):
        out = plot_norm_histograms(hist, axes=axes)
    assert out is fig
    assert len(_bars(axes[0])) == 10 and len(_bars(axes[1])) == 10
    # One Axes for one table, and the wrong number of Axes is refused.
    single = plot_norm_histograms(hist, tables="tweet", axes=axes[0])
    assert single is fig
    with pytest.raises(ValueError, match="need 2 Axes"):
        plot_norm_histograms(hist, axes=axes[0])
    with pytest.raises(ValueError, match="no table 'item'"):
        plot_norm_histograms(hist, tables=["item"])
    plt.close(fig)


def _history() -> pd.DataFrame:
    rows = []
    for step in (0, 10, 20, 30):
        for table, scale in (("user", 1.0), ("tweet", 2.0)):
            base = scale * (1 + step / 10)
            rows.append(
                {
                    "step": step,
                    "table": table,
                    "mean": base * 1.1,
                    "p1": base * 0.5,
                    "p5": base * 0.7,
                    "p50": base,
                    "p95": base * 1.5,
                    "p99": base * 2.0,
                }
            )
    return pd.DataFrame(rows)


def _band_edges(collection: PolyCollection, steps: np.ndarray) -> tuple[list, list]:
    """Lower and upper y of a fill_between polygon at each step."""
    vertices = collection.get_paths()[0].vertices
    lower, upper = [], []
    for step in steps:
        ys = vertices[np.isclose(vertices[:, 0], step)][:, 1]
        lower.append(ys.min())
        upper.append(ys.max())
    return lower, upper


def test_band_edges_equal_quantiles_over_steps():
    history = _history()
    fig = plot_norm_bands(history)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    for ax, name in zip(axes, ["user", "tweet"], strict=True):
        part = history[history.table == name]
        steps = part["step"].to_numpy()
        outer, inner = [c for c in ax.collections if isinstance(c, PolyCollection)]
        assert _band_edges(outer, steps) == (part["p1"].tolist(), part["p99"].tolist())
        assert _band_edges(inner, steps) == (part["p5"].tolist(), part["p95"].tolist())
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert lines["median"].get_ydata().tolist() == part["p50"].tolist()
        assert lines["mean"].get_ydata().tolist() == part["mean"].tolist()
        assert lines["median"].get_xdata().tolist() == steps.tolist()
        assert ax.get_xlabel() == "training step"


def test_bands_show_a_change_the_quantiles_hide():
    # The demo's tweet table: 2/3 of the rows keep their initial values, so every quantile is
    # flat while the max climbs 40-fold; the log axis, the max line and the title show it.
    steps = [0, 150, 300]
    history = pd.DataFrame(
        {
            "step": steps,
            "table": "tweet",
            "mean": 0.00417,
            "p1": 0.00157,
            "p5": 0.00236,
            "p50": 0.00423,
            "p95": 0.00573,
            "p99": 0.00623,
            "max": [0.0072790, 0.0705, 0.287191],
            "unchanged_share": [1.0, 0.77, 0.674221],
        }
    )
    fig = plot_norm_bands(history)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert lines["max"].get_ydata().tolist() == history["max"].tolist()
    assert "max 0.00728 \u2192 0.287" in ax.get_title()
    assert "rows unchanged 100% \u2192 67%" in ax.get_title()
    low, high = ax.get_ylim()
    assert low <= 0.00157 and high >= 0.287
    assert audit(fig)["axes"][0]["legend_covers"] == []


def test_bands_from_a_real_history(tmp_path):
    from embviz.norms import norm_history

    for step in (0, 1):
        torch.manual_seed(step)
        module = torch.nn.Module()
        module.embedding_bags = torch.nn.ModuleDict({"t": torch.nn.EmbeddingBag(500, 4)})
        embviz.save_snapshot(module, tmp_path / str(step))
    history = norm_history(tmp_path, progress=False)
    fig = plot_norm_bands(history)
    outer = next(c for c in fig.axes[0].collections if isinstance(c, PolyCollection))
    assert _band_edges(outer, np.array([0, 1])) == (history["p1"].tolist(), history["p99"].tolist())


def test_projection_points_colours_and_colourbar(state):
    projection = project(state["user"], n=500, seed=1)
    frame = projection.frame
    fig = plot_projection(projection)
    ax = fig.axes[0]
    points = next(c for c in ax.collections if isinstance(c, PathCollection))
    np.testing.assert_array_equal(points.get_offsets(), frame[["x", "y"]].to_numpy())
    np.testing.assert_array_equal(points.get_array(), frame["norm"].to_numpy())
    assert points.get_cmap().name == "viridis"
    assert len(fig.axes) == 2  # the colourbar
    assert fig.axes[1].get_ylabel() == "row L2 norm"
    assert "500 rows of 3,000" in ax.get_title()
    # Redrawing on the same Axes reuses its colourbar instead of adding one each time.
    for _ in range(3):
        plot_projection(projection, ax=ax)
    assert len(fig.axes) == 2


def test_fp16_tradeoff_bars_equal_errors_and_saved_bytes(state):
    errors = fp16_error_table(state, pairs=500, progress=False)
    memory = memory_table(CONFIG)
    saved = dtype_savings(memory)
    fig = plot_fp16_tradeoff(errors, memory)
    left, right = fig.axes[:2]
    unit_scale = 2**10 if "KiB" in left.get_xlabel() else 2**20
    assert "KiB" in left.get_xlabel() or "MiB" in left.get_xlabel()
    widths = [b.get_width() for b in _bars(left)]
    np.testing.assert_allclose(widths, saved.loc[["user", "tweet"], "saved_bytes"] / unit_scale)
    error_bars = _bars(right)
    np.testing.assert_allclose(
        [b.get_width() for b in error_bars],
        [*errors["norm_rel_err_max"], *errors["cos_abs_err_max"]],
    )
    assert right.get_xscale() == "linear" and right.get_xlim()[0] == 0
    assert [t.get_text() for t in left.get_yticklabels()] == ["user", "tweet"]
    # Saved bytes given directly, on given Axes.
    fig2, axes = plt.subplots(1, 2)
    out = plot_fp16_tradeoff(errors, {"user": 2**20, "tweet": 0}, axes=axes)
    assert out is fig2
    assert [b.get_width() for b in _bars(axes[0])] == [1.0, 0.0]
    # The legend lies outside both panels: it covers no bar (tweet's is the last, at the bottom).
    for figure in (fig, fig2):
        assert [ax["legend_covers"] for ax in audit(figure)["axes"]] == [[], []]
        box = figure.axes[1].get_legend().get_window_extent()
        for bar in _bars(figure.axes[1]):
            assert not box.overlaps(bar.get_window_extent())
    assert axes[0].get_xlabel() == "saved by fp16 (MiB)"
    # A value beyond fp16's range: infinite norm error, written out instead of a bar.
    overflowing = errors.copy()
    overflowing.loc["user", "norm_rel_err_max"] = float("inf")
    overflowing.loc["user", "overflow_rows"] = 3
    fig3 = plot_fp16_tradeoff(overflowing, saved)
    right3 = fig3.axes[1]
    assert _bars(right3)[0].get_width() == 0
    assert any("inf: 3 rows overflow fp16" in t.get_text() for t in right3.texts)
    with pytest.raises(ValueError, match="no saved bytes for table 'tweet'"):
        plot_fp16_tradeoff(errors, {"user": 1})
    plt.close(fig2)
