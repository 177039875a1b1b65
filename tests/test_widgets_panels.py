"""BuildPanel and NormsPanel driven headless, compared with the functions they wire."""

from __future__ import annotations

import html

import pandas as pd
import pytest
import torch

import embviz
from embviz.build import (
    BuildError,
    BuildRefused,
    measure_collection,
    predicted_vs_measured,
    preflight,
    scale_config,
)
from embviz.memory import human_bytes, memory_table
from embviz.widgets import BuildPanel, CollectionEditor

SCALE = 0.001  # the ranker at a thousandth of its rows: about 30 MiB on the CPU


@pytest.fixture(scope="module")
def ranker() -> embviz.LargeEmbeddingsConfig:
    return embviz.load_config(embviz.example("ranker"))


def text(widget) -> str:
    return html.unescape(widget.value)


# --------------------------------------------------------------------------- BuildPanel


def test_preflight_shown_as_the_function_says(ranker):
    panel = BuildPanel(ranker, device="cpu", scale=SCALE, progress=False)
    expected = preflight(ranker, "cpu", scale=SCALE)
    assert panel.preflight.needed_bytes == expected.needed_bytes
    assert f"needs {human_bytes(expected.needed_bytes)}" in text(panel.outputs["preflight"])
    assert panel.error == ""


def test_refusal_is_a_message_not_a_traceback(ranker):
    huge = ranker.model_copy(
        update={
            "tables": [
                t.model_copy(update={"num_embeddings": t.num_embeddings * 1000})
                for t in ranker.tables
            ]
        }
    )
    panel = BuildPanel(huge, device="cpu", progress=False)
    with pytest.raises(BuildRefused) as refused:
        preflight(huge, "cpu")
    first_line = str(refused.value).splitlines()[0]
    assert first_line.startswith("refusing to build on cpu")
    assert panel.error.splitlines()[0] == first_line
    assert first_line in text(panel.outputs["preflight"])
    assert panel.preflight is None
    panel.controls["build"].click()
    assert panel.collection is None
    assert "not built" in text(panel.outputs["status"])
    assert panel.outputs["exceptions"].outputs == ()


def test_build_measures_exactly_the_prediction(ranker):
    panel = BuildPanel(ranker, device="cpu", scale=SCALE, progress=False)
    panel.controls["build"].click()
    collection = panel.collection
    assert collection is not None
    assert all(bag.weight.device.type == "cpu" for bag in collection.embedding_bags.values())
    scaled = scale_config(ranker, SCALE)
    assert [(n, b.weight.shape[0]) for n, b in collection.embedding_bags.items()] == [
        (t.name, t.num_embeddings) for t in scaled.tables
    ]
    # The panel's numbers are the build module's, and those equal memory_table("torch").
    pd.testing.assert_frame_equal(
        panel.comparison, predicted_vs_measured(ranker, panel.measured, scale=SCALE)
    )
    pd.testing.assert_series_equal(
        panel.comparison["measured_total_bytes"],
        memory_table(scaled, "torch")["total_bytes"],
        check_names=False,
    )
    status = text(panel.outputs["status"])
    total = int(memory_table(scaled, "torch")["total_bytes"].sum())
    assert f"measured {human_bytes(total)} ({total:,} bytes)" in status
    assert "exactly as predicted" in status
    comparison = panel.outputs["comparison"].value
    assert all(name in comparison for name in ranker.table_names)
    # Ranker's Adagrad tables have eps=0: the build module's NaN warning is shown, not lost.
    assert "BuildWarning" in text(panel.outputs["warnings"])
    remeasured = measure_collection(collection)
    assert remeasured["total_bytes"].equals(panel.measured["total_bytes"])


def test_meta_build_has_shapes_and_nothing_to_measure(ranker):
    panel = BuildPanel(ranker, device="meta", progress=False)
    assert "shapes only" in text(panel.outputs["preflight"])
    panel.controls["build"].click()
    assert panel.collection is not None
    assert panel.collection.embedding_bags["user_id"].weight.device.type == "meta"
    assert panel.comparison is None
    assert "nothing to measure" in text(panel.outputs["status"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a CPU-only machine")
def test_cuda_without_cuda_is_explained(ranker):
    panel = BuildPanel(ranker, device="cpu", scale=SCALE, progress=False)
    panel.controls["device"].value = "cuda"
    with pytest.raises(BuildError) as expected:
        preflight(ranker, "cuda", scale=SCALE)
    assert panel.error == str(expected.value)
    assert "CUDA is not available" in text(panel.outputs["preflight"])
    panel.controls["build"].click()
    assert panel.collection is None


@pytest.mark.parametrize("scale", [0.0, 2.0, -1.0])
def test_bad_scale_is_explained(ranker, scale):
    panel = BuildPanel(ranker, device="cpu", scale=SCALE, progress=False)
    panel.controls["scale"].value = scale
    assert panel.error == f"scale must be a number in (0, 1], got {scale!r}"
    panel.controls["scale"].value = SCALE
    assert panel.error == ""


def test_follows_an_editor(ranker):
    editor = CollectionEditor(ranker)
    panel = BuildPanel(editor, device="cpu", scale=SCALE, progress=False)
    panel.controls["build"].click()
    editor.controls("user_id")["num_embeddings"].value = "10,000,000"
    assert panel.config == editor.config
    assert panel.config.table("user_id").num_embeddings == 10_000_000
    expected = preflight(editor.config, "cpu", scale=SCALE)
    assert panel.preflight.needed_bytes == expected.needed_bytes
    assert "press Build again" in text(panel.outputs["status"])
    editor.controls("user_id")["num_embeddings"].value = "oops"  # invalid: panel keeps last valid
    assert panel.config.table("user_id").num_embeddings == 10_000_000
