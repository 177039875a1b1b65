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
from embviz.memory import PLANNER_RESERVED_FRACTION, human_bytes, memory_table
from embviz.plots import plot_dtype_savings, plot_memory, plot_placement
from embviz.plots.memory import OKABE_ITO, MemoryPlot

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


def _ends(container):
    """Right ends of the bars (bytes on the memory figure's log axis), top down."""
    return _lefts(container) + _widths(container)


def _reservation(ax):
    """The shaded planner reservation (the one patch that is not a bar)."""
    bars = {id(p) for c in ax.containers for p in c.patches}
    (span,) = [p for p in ax.patches if id(p) not in bars]
    return span


def test_plot_memory_bars_equal_bytes(frame):
    fig = plot_memory(frame, hbm_bytes=80 * GIB)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    weights, state = ax.containers
    expected = frame.sort_values("total_bytes", ascending=False)
    # Largest table first (on top), on a log2 bytes axis so that KiB tables show beside GiB ones.
    assert ax.get_xscale() == "log" and ax.xaxis.get_transform().base == 2
    assert ax.get_xlabel() == "bytes per table (log2 scale)"
    assert _rows(ax) == list(expected.index)
    floor = ax.get_xlim()[0]
    assert np.log2(floor).is_integer() and floor <= expected["weight_bytes"].min() / 8
    np.testing.assert_array_equal(_lefts(weights), floor)
    np.testing.assert_allclose(_ends(weights), expected["weight_bytes"], rtol=1e-12)
    np.testing.assert_allclose(_lefts(state), expected["weight_bytes"], rtol=1e-12)
    np.testing.assert_allclose(_widths(state), expected["optimizer_bytes"], rtol=1e-12)
    # Each bar says its total in human units, at the total.
    texts = [t.get_text().strip() for t in ax.texts]
    assert texts == [human_bytes(int(b)) for b in expected["total_bytes"]]
    assert [t.get_position()[0] for t in ax.texts] == list(expected["total_bytes"])
    # One meaning for the budget: one GPU's memory less the planner's 15% reservation.
    usable = int(80 * GIB * (1 - PLANNER_RESERVED_FRACTION))
    (line,) = ax.lines
    assert line.get_xdata()[0] == usable
    span = _reservation(ax)
    assert span.get_x() == usable and span.get_x() + span.get_width() == 80 * GIB
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [
        "weights",
        "optimizer state",
        "one GPU: 68 GiB usable of 80 GiB",
        "planner's 15% reservation",
    ]
    assert "33.85 GiB" in ax.get_title() and "12 tables" in ax.get_title()
    assert "budget: one GPU's usable memory; 0 over it" in ax.get_title()
    assert weights.patches[0].get_facecolor() == to_rgba(OKABE_ITO["blue"])
    assert state.patches[0].get_facecolor() == to_rgba(OKABE_ITO["orange"])


def test_tables_over_one_gpu_are_named_in_red(frame):
    ax = plot_memory(frame, hbm_bytes=8 * GIB).axes[0]
    usable = int(8 * GIB * (1 - PLANNER_RESERVED_FRACTION))
    over = {n for n in frame.index if frame.loc[n, "total_bytes"] > usable}
    assert over == {"item_id", "user_id"}
    red = to_rgba(OKABE_ITO["vermillion"])
    for name, text in zip(_rows(ax), ax.texts, strict=True):
        assert (to_rgba(text.get_color()) == red) == (name in over)
    assert "2 over it" in ax.get_title()


def test_plot_memory_config_order_and_a_plain_budget(ranker):
    small = memory_table(ranker).iloc[7:]  # item_category ... device_type: KiB to MiB
    ax = plot_memory(small, sort=False, budget_bytes=GIB).axes[0]
    weights, _ = ax.containers
    assert _rows(ax) == list(small.index)  # config order, first on top
    np.testing.assert_allclose(_ends(weights), small["weight_bytes"], rtol=1e-12)
    (line,) = ax.lines
    assert line.get_xdata()[0] == GIB and not _reservation(ax).get_visible()
    assert [t.get_text() for t in ax.get_legend().get_texts()][-1] == "budget 1 GiB"
    bare = plot_memory(small).axes[0]
    assert not any(line.get_visible() for line in bare.lines)
    with pytest.raises(embviz.ArgumentError, match="not both"):
        plot_memory(small, budget_bytes=GIB, hbm_bytes=GIB)


def test_redraw_on_the_same_axes_replaces(frame, ranker):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    plot_memory(frame, ax=ax, hbm_bytes=40 * GIB)
    smaller = memory_table(embviz.with_dtype(ranker, "fp16"))
    out = plot_memory(smaller, ax=ax)
    assert out is fig and fig.axes == [ax]
    assert len(ax.containers) == 2
    assert not any(line.get_visible() for line in ax.lines)
    assert len(ax.texts) == len(smaller)
    weights, _ = ax.containers
    expected = smaller.sort_values("total_bytes", ascending=False)
    np.testing.assert_allclose(_ends(weights), expected["weight_bytes"], rtol=1e-12)
    plot_dtype_savings(frame, ax=ax)
    assert len(ax.containers) == 2
    plt.close(fig)


def _drawn(ax):
    legend = ax.get_legend()
    return (
        [
            (p.get_x(), p.get_y(), p.get_width(), p.get_height(), p.get_facecolor())
            for p in ax.patches
            if p.get_visible()
        ],
        [line.get_xydata().tolist() for line in ax.lines if line.get_visible()],
        ax.get_xlim(),
        [t.get_text() for t in ax.get_yticklabels()],
        list(ax.get_xticks()),
        [(t.get_text(), t.get_position(), t.get_color()) for t in ax.texts],
        ax.get_title(),
        [t.get_text() for t in legend.get_texts()],
    )


def test_memory_plot_updates_in_place_as_a_fresh_call_draws(frame, ranker):
    fig = Figure()
    ax = fig.add_subplot()
    memory_plot = MemoryPlot(ax)
    memory_plot.update(frame, hbm_bytes=80 * GIB)
    patches, texts = list(ax.patches), list(ax.texts)
    changed = memory_table(embviz.with_dtype(ranker, "fp16"), optimizer_state="torch")
    memory_plot.update(changed, hbm_bytes=16 * GIB)
    assert list(ax.patches) == patches and list(ax.texts) == texts  # moved, not made again
    fresh = plot_memory(changed, hbm_bytes=16 * GIB).axes[0]
    assert _drawn(ax) == _drawn(fresh)
    # Fewer bars than before: made again, and still what a fresh call draws.
    memory_plot.update(changed.iloc[:5])
    assert _drawn(ax) == _drawn(plot_memory(changed.iloc[:5]).axes[0])


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
    # The 29 largest are shown; the rest add up to the grey "others" bar.
    rest = frame.sort_values("total_bytes").iloc[:11]
    assert set(labels) == {*frame.index.difference(rest.index), "(11 others)"}
    ends = _ends(weights)
    assert ends[labels.index("(11 others)")] == pytest.approx(rest["weight_bytes"].sum())
    bars = sorted(weights.patches, key=lambda p: p.get_y(), reverse=True)
    assert bars[labels.index("(11 others)")].get_facecolor() == to_rgba("#999999")
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
