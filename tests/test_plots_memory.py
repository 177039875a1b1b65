"""Memory figures: drawn values equal the DataFrames' bytes in the axis unit."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

import embviz
from embviz import LargeEmbeddingsConfig
from embviz.memory import human_bytes, memory_table
from embviz.plots import plot_dtype_savings, plot_memory, plot_placement
from embviz.plots.memory import OKABE_ITO

GIB = 1024**3


@pytest.fixture(scope="module")
def ranker():
    return embviz.load_config(embviz.example("ranker"))


@pytest.fixture(scope="module")
def frame(ranker):
    return memory_table(ranker)


def _rows(ax):
    """Tick labels from the top of the Axes down."""
    labels = [label.get_text() for label in ax.get_yticklabels()]
    return [label for _, label in sorted(zip(ax.get_yticks(), labels, strict=True), reverse=True)]


def _widths(container):
    """Bar lengths from the top down."""
    bars = sorted(container.patches, key=lambda p: p.get_y(), reverse=True)
    return np.array([patch.get_width() for patch in bars])


def _lefts(container):
    bars = sorted(container.patches, key=lambda p: p.get_y(), reverse=True)
    return np.array([patch.get_x() for patch in bars])


def test_plot_memory_bars_equal_bytes(frame):
    fig = plot_memory(frame, budget_bytes=80 * GIB)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    weights, state = ax.containers
    expected = frame.sort_values("total_bytes", ascending=False)
    # Largest table first (on top), the unit named on the axis.
    assert ax.get_xlabel() == "bytes (GiB)"
    assert _rows(ax) == list(expected.index)
    np.testing.assert_allclose(_widths(weights), expected["weight_bytes"] / GIB)
    np.testing.assert_allclose(_widths(state), expected["optimizer_bytes"] / GIB)
    np.testing.assert_allclose(_lefts(state), expected["weight_bytes"] / GIB)
    # Each bar says its total in human units.
    texts = [t.get_text().strip() for t in ax.texts]
    assert texts == [human_bytes(int(b)) for b in expected["total_bytes"]]
    # Budget line at 80 GiB, named in the legend.
    (line,) = ax.lines
    assert line.get_xdata()[0] == pytest.approx(80)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "budget 80 GiB" in legend and "weights" in legend and "optimizer state" in legend
    assert "33.85 GiB" in ax.get_title() and "12 tables" in ax.get_title()
    # Okabe-Ito colours.
    assert weights.patches[0].get_facecolor() == to_rgba(OKABE_ITO["blue"])
    assert state.patches[0].get_facecolor() == to_rgba(OKABE_ITO["orange"])


def test_plot_memory_config_order_and_units(ranker):
    small = memory_table(ranker).iloc[7:]  # item_category ... device_type: KiB to MiB
    fig = plot_memory(small, sort=False)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "bytes (MiB)"
    weights, _ = ax.containers
    assert _rows(ax) == list(small.index)  # config order, first on top
    np.testing.assert_allclose(_widths(weights), small["weight_bytes"] / 1024**2)
    assert len(ax.lines) == 0


def test_redraw_on_the_same_axes_replaces(frame, ranker):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    plot_memory(frame, ax=ax, budget_bytes=40 * GIB)
    smaller = memory_table(embviz.with_dtype(ranker, "fp16"))
    out = plot_memory(smaller, ax=ax)
    assert out is fig and fig.axes == [ax]
    assert len(ax.containers) == 2 and len(ax.lines) == 0
    assert len(ax.texts) == len(smaller)
    weights, _ = ax.containers
    expected = smaller.sort_values("total_bytes", ascending=False)
    np.testing.assert_allclose(_widths(weights), expected["weight_bytes"] / GIB)
    plot_dtype_savings(frame, ax=ax)
    assert len(ax.containers) == 2
    plt.close(fig)


def _many_tables(n):
    return LargeEmbeddingsConfig.model_validate(
        {
            "tables": [
                {
                    "name": f"feature_{i:02d}",
                    "num_embeddings": 1_000 * (i + 1),
                    "embedding_dim": 32,
                    "data_type": "fp32",
                    "optimizer": {"adagrad": {"lr": 0.1}},
                }
                for i in range(n)
            ]
        }
    )


def test_many_tables_are_legible(ranker):
    frame = memory_table(_many_tables(40))
    fig = plot_memory(frame, max_tables=30)
    ax = fig.axes[0]
    weights, _ = ax.containers
    assert len(weights.patches) == 30
    labels = _rows(ax)
    # The 29 largest are shown; the rest add up to the "others" bar.
    rest = frame.sort_values("total_bytes").iloc[:11]
    assert set(labels) == {*frame.index.difference(rest.index), "(11 others)"}
    widths = _widths(weights)
    assert widths[labels.index("(11 others)")] == pytest.approx(
        rest["weight_bytes"].sum() / 1024**2
    )
    assert min(t.get_fontsize() for t in ax.get_yticklabels()) >= 6
    # A new figure grows with the number of bars.
    assert fig.get_size_inches()[1] > 8


@pytest.fixture(scope="module")
def placement(ranker):
    return embviz.plan(ranker, 4, 80, progress=False)


def test_plot_placement(placement):
    fig = plot_placement(placement, top=3)
    ax = fig.axes[0]
    by_rank = placement.bytes_by_rank(3)
    assert len(ax.containers) == len(by_rank.columns) == 4
    assert [t.get_text() for t in ax.get_legend().get_texts()][-4:] == list(by_rank.columns)
    assert _rows(ax) == [f"rank {r}" for r in range(4)]
    stacked = np.zeros(4)
    for container, column in zip(ax.containers, by_rank.columns, strict=True):
        # Rank 0 on top: container patches are in rank order, drawn top down.
        np.testing.assert_allclose(_widths(container), by_rank[column] / GIB)
        np.testing.assert_allclose(_lefts(container), stacked)
        stacked += by_rank[column].to_numpy() / GIB
    np.testing.assert_allclose(stacked, placement.ranks["table_bytes"] / GIB)
    # Planner estimates as markers, GPU memory as a line.
    (markers,) = ax.collections
    np.testing.assert_allclose(markers.get_offsets()[:, 0], placement.ranks["hbm_bytes"] / GIB)
    (line,) = ax.lines
    assert line.get_xdata()[0] == pytest.approx(80)
    assert "4 x 80 GiB" in ax.get_title()
    assert ax.containers[-1].patches[0].get_facecolor() == to_rgba("#999999")  # other tables


def test_plot_placement_custom_hbm_line(placement):
    fig = plot_placement(placement, hbm_bytes=16 * GIB)
    ax = fig.axes[0]
    assert ax.lines[0].get_xdata()[0] == pytest.approx(16)
    assert "GPU memory 16 GiB" in [t.get_text() for t in ax.get_legend().get_texts()]
