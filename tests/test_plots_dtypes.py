"""The dtype figure: fp16 against the current config, serving bytes and measured quality."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.colors import to_rgba

import embviz
from embviz.memory import dtype_savings, human_bytes, memory_table
from embviz.plots import plot_dtype_savings
from embviz.plots.dtypes import DTYPE_COLOURS

from figure_audit import audit

GIB = 1024**3
SERVING = ("fp32", "fp16", "int8", "int4", "int2")


@pytest.fixture(scope="module")
def ranker():
    return embviz.load_config(embviz.example("ranker"))


@pytest.fixture(scope="module")
def frame(ranker):
    return memory_table(ranker)


def _rows(ax):
    labels = [label.get_text() for label in ax.get_yticklabels()]
    return [label for _, label in sorted(zip(ax.get_yticks(), labels, strict=True), reverse=True)]


def _widths(container):
    bars = sorted(container.patches, key=lambda p: p.get_y(), reverse=True)
    return np.array([patch.get_width() for patch in bars])


def test_fp16_panel_measures_against_the_current_config(frame):
    fig = plot_dtype_savings(frame)
    (ax,) = fig.axes
    current, fp16 = ax.containers
    savings = dtype_savings(frame)
    order = ["(total)", *savings.iloc[:-1].sort_values("current_bytes", ascending=False).index]
    labels = _rows(ax)
    assert [label.split(" [")[0] for label in labels] == order
    assert "user_id [fp16]" in labels and "author_id [fp32]" in labels
    expected = savings.loc[order]
    np.testing.assert_allclose(_widths(current), expected["current_bytes"] / GIB)
    np.testing.assert_allclose(_widths(fp16), expected["fp16_bytes"] / GIB)
    texts = [t.get_text().strip() for t in ax.texts]
    assert texts == [
        "already fp16" if already is not pd.NA and already else f"saves {human_bytes(int(saved))}"
        for saved, already in zip(expected["saved_bytes"], expected["already_fp16"], strict=True)
    ]
    # The tables already in fp16 are marked and the title's saving is the config's own.
    assert texts.count("already fp16") == int(frame["data_type"].eq("fp16").sum()) == 4
    assert human_bytes(948_096_768) in ax.get_title()
    assert human_bytes(int(frame["total_bytes"].sum())) in ax.get_title()
    assert fp16.patches[0].get_facecolor() == to_rgba(DTYPE_COLOURS["fp16"])
    assert audit(fig)["axes"][0]["legend_covers"] == []


def test_serving_panel_bars_equal_serving_bytes(ranker, frame):
    serving = embviz.serving_bytes(ranker)
    fig = plot_dtype_savings(frame, serving=serving)
    first, second = fig.axes
    assert len(second.containers) == len(SERVING)
    order = [label.split(" [")[0] for label in _rows(first)]
    for container, dtype in zip(second.containers, SERVING, strict=True):
        assert container.get_label() == dtype
        column = serving[f"{dtype}_bytes"].astype("int64")
        expected = [column.sum(), *column.loc[order[1:]]]
        np.testing.assert_allclose(_widths(container), np.array(expected) / GIB)
        # The same bytes memory_table gives for that serving dtype.
        served = memory_table(ranker, mode="inference", serving_dtype=dtype)
        assert served["weight_bytes"].sum() == column.sum()
    assert human_bytes(int(serving["int8_bytes"].sum())) in second.get_title()
    found = audit(fig)
    assert all(ax["legend_covers"] == [] for ax in found["axes"])


def _demo_like():
    return embviz.LargeEmbeddingsConfig.model_validate(
        {
            "tables": [
                {
                    "name": "wide",
                    "num_embeddings": 3_000,
                    "embedding_dim": 16,
                    "data_type": "fp32",
                    "optimizer": {"sgd": {"lr": 0.1}},
                },
                {
                    "name": "narrow",
                    "num_embeddings": 2_000,
                    "embedding_dim": 4,
                    "data_type": "fp16",
                    "optimizer": {"sgd": {"lr": 0.1}},
                },
            ]
        }
    )


def test_quality_panel_shows_quantization_error(tmp_path):
    cfg = _demo_like()
    generator = torch.Generator().manual_seed(0)
    state = {
        "embedding_bags.wide.weight": torch.randn(3_000, 16, generator=generator),
        "embedding_bags.narrow.weight": torch.randn(2_000, 4, generator=generator),
    }
    quality = embviz.quantization_error_table(
        state, dtypes=["int8", "int4", "int2"], tables=["wide"], progress=False
    )
    serving = embviz.serving_bytes(cfg)
    fig = plot_dtype_savings(memory_table(cfg), serving=serving, quality=quality)
    first, second, third = fig.axes
    order = [label.split(" [")[0] for label in _rows(first)]
    assert order == ["(total)", "wide", "narrow"]
    assert [c.get_label() for c in third.containers] == ["int8", "int4", "int2"]
    for container in third.containers:
        dtype = container.get_label()
        # One bar: the measured table; its length is quantization_error's share of neighbours.
        (bar,) = container.patches
        direct = embviz.quantization_error(
            state["embedding_bags.wide.weight"], dtype, progress=False
        )
        assert bar.get_width() == pytest.approx(direct["knn_kept_mean"])
    assert "not measured" in [t.get_text() for t in third.texts]
    # int2 needs a width that is a multiple of 8: narrow (dim 4) is refused, so no int2 total.
    int2 = second.containers[SERVING.index("int2")]
    assert len(int2.patches) == 1
    assert "int2 refused for 1 tables" in second.get_title()
    # The legend's colours are the bars' colours, int2 included (its total bar is not drawn).
    legend = third.get_legend()
    shown = {
        text.get_text(): handle.get_facecolor()
        for text, handle in zip(legend.get_texts(), legend.legend_handles, strict=True)
    }
    for dtype in SERVING:
        assert shown[dtype] == to_rgba(DTYPE_COLOURS[dtype])
    found = audit(fig)
    assert all(ax["legend_covers"] == [] for ax in found["axes"])
    assert all(ax["xlabel"] and ax["title"] for ax in found["axes"])


def test_panels_need_their_axes(frame, ranker):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2)
    serving = embviz.serving_bytes(ranker)
    assert plot_dtype_savings(frame, axes, serving=serving) is fig
    with pytest.raises(ValueError, match="need 2 Axes"):
        plot_dtype_savings(frame, axes[0], serving=serving)
    with pytest.raises(ValueError, match="quality needs serving"):
        plot_dtype_savings(frame, quality=pd.DataFrame())
    plt.close(fig)
