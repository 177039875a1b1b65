"""ServingPanel driven headless, compared with memory_table, serving_fit and quantization_error."""

from __future__ import annotations

import html
import math
import re

import pytest
import torch
from report_html import cells

import embviz
from embviz.errors import ArgumentError
from embviz.memory import human_bytes, memory_table
from embviz.serving import serving_fit
from embviz.widgets import CollectionEditor, ServingPanel


@pytest.fixture(scope="module")
def ranker() -> embviz.LargeEmbeddingsConfig:
    return embviz.load_config(embviz.example("ranker"))


def text(widget) -> str:
    return cells(html.unescape(widget.value))


def test_bytes_equal_memory_table_and_follow_the_all_control(ranker):
    panel = ServingPanel(ranker, serving_dtype="int8", hosts=2, host_gib=8)
    expected = memory_table(ranker, mode="inference", serving_dtype="int8")
    assert panel.frame.equals(expected)
    assert f"{int(expected['total_bytes'].sum()):,}" in text(panel.outputs["table"])
    for dtype in ("int4", "fp16", "fp32", "int2"):
        panel.controls["all"].value = dtype
        expected = memory_table(ranker, mode="inference", serving_dtype=dtype)
        assert panel.frame.equals(expected), dtype
        assert set(panel.serving_dtype.values()) == {dtype}
        for name in ("user_id", "device_type"):
            assert f"{int(expected.loc[name, 'total_bytes']):,}" in text(panel.outputs["table"])
    panel.controls["all"].value = "config dtype"
    assert panel.serving_dtype == {t.name: t.data_type.value for t in ranker.tables}


def test_one_table_dtype_and_the_fit_on_hosts(ranker):
    panel = ServingPanel(ranker, serving_dtype="int8", hosts=1, host_gib=8)
    panel.controls["table"].value = "user_id"
    assert panel.controls["dtype"].value == "int8"  # shows the table's current choice
    panel.controls["dtype"].value = "int4"
    chosen = {t.name: "int8" for t in ranker.tables} | {"user_id": "int4"}
    expected = memory_table(ranker, mode="inference", serving_dtype=chosen)
    assert panel.frame.equals(expected)
    fit = serving_fit(expected, 1, 8)
    assert panel.fit == fit and not fit.fits
    assert f"needs at least {fit.min_hosts} serving hosts" in text(panel.outputs["fit"])
    panel.controls["hosts"].value = fit.min_hosts
    assert panel.fit.fits and panel.fit.hosts == fit.min_hosts
    assert "fits on" in text(panel.outputs["fit"])
    panel.controls["host_gib"].value = 2.5
    assert panel.fit == serving_fit(expected, fit.min_hosts, 2.5)


def test_a_refused_width_is_marked_and_the_last_choice_kept(ranker):
    # Every ranker table takes int2; make one 4 wide (int2 needs a multiple of 8).
    narrow = ranker.model_copy(
        update={
            "tables": [
                t.model_copy(update={"embedding_dim": 4}) if t.name == "country" else t
                for t in ranker.tables
            ]
        }
    )
    panel = ServingPanel(narrow, serving_dtype="int8")
    panel.controls["table"].value = "country"
    panel.controls["dtype"].value = "int2"
    assert "embedding_dim 4 cannot be served as int2" in panel.error
    assert "int2 needs embedding_dim % 8 == 0" in panel.controls["dtype"].tooltip
    assert "last valid" in text(panel.outputs["status"])
    assert panel.frame.loc["country", "serving_dtype"] == "int8"
    panel.controls["dtype"].value = "int4"
    assert panel.error == "" and panel.frame.loc["country", "serving_dtype"] == "int4"
    assert not panel.controls["dtype"].tooltip
    # "all" applies a dtype to the tables whose width takes it and names the others.
    panel.controls["all"].value = "int2"
    assert panel.frame.loc["country", "serving_dtype"] == "fp32"
    assert (panel.frame.drop(index="country")["serving_dtype"] == "int2").all()
    assert "refused by the width of 1 table(s)" in text(panel.outputs["status"])
    assert "country" in text(panel.outputs["status"])


def test_many_tables_show_the_largest_and_count_all():
    cfg = embviz.LargeEmbeddingsConfig.model_validate(
        {
            "tables": [
                {
                    "name": f"t{i:03d}",
                    "num_embeddings": 1_000 * (i + 1),
                    "embedding_dim": 16,
                    "data_type": "fp32",
                    "optimizer": {"sgd": {"lr": 0.1}},
                }
                for i in range(200)
            ]
        }
    )
    panel = ServingPanel(cfg, serving_dtype="int4", max_tables=10)
    shown = text(panel.outputs["table"])
    assert shown.count("<tr") == 1 + 10 + 1  # header, 9 largest + "(191 others)", total
    assert "(191 others)" in shown
    assert re.search(r'class="[^"]*\btotal\b[^"]*"\s*>total</td>', panel.outputs["table"].value)
    total = int(memory_table(cfg, mode="inference", serving_dtype="int4")["total_bytes"].sum())
    assert f"{total:,}" in shown


def test_quality_shown_is_quantization_error():
    cfg = embviz.LargeEmbeddingsConfig.model_validate(
        {
            "tables": [
                {
                    "name": "t",
                    "num_embeddings": 2_000,
                    "embedding_dim": 16,
                    "data_type": "fp32",
                    "optimizer": {"sgd": {"lr": 0.1}},
                }
            ]
        }
    )
    weight = torch.randn(2_000, 16, generator=torch.Generator().manual_seed(1))
    state = {"embedding_bags.t.weight": weight}
    quality = embviz.quantization_error_table(state, dtypes=["int8", "int4"], progress=False)
    panel = ServingPanel(cfg, serving_dtype="int4", quality=quality)
    direct = embviz.quantization_error(weight, "int4", progress=False)
    shown = text(panel.outputs["table"])
    assert f"<td>{direct['knn_kept_mean']:.3g}</td>" in shown
    assert f"<td>{direct['bag_rel_err_mean']:.3g}</td>" in shown
    assert "<th>neighbours kept</th>" in shown and "<th>bag error</th>" in shown
    panel.controls["all"].value = "int8"
    direct = embviz.quantization_error(weight, "int8", progress=False)
    assert f"<td>{direct['knn_kept_mean']:.3g}</td>" in text(panel.outputs["table"])


def test_follows_the_editor(ranker):
    editor = CollectionEditor(ranker)
    panel = ServingPanel(editor, serving_dtype="int8")
    editor.controls("topic")["num_embeddings"].value = "200,000"
    assert panel.config.table("topic").num_embeddings == 200_000
    expected = memory_table(editor.config, mode="inference", serving_dtype="int8")
    assert panel.frame.equals(expected)
    assert human_bytes(int(expected["total_bytes"].sum())) in text(panel.outputs["table"])


def test_serving_fit_arithmetic_and_errors(ranker):
    frame = memory_table(ranker, mode="inference", serving_dtype="int4")
    needed = int(frame["total_bytes"].sum())
    fit = serving_fit(frame, 3, 4)
    assert fit.needed_bytes == needed and fit.available_bytes == 3 * 4 * 2**30
    assert fit.min_hosts == math.ceil(needed / 2**32)
    assert fit.fits == (needed <= 3 * 2**32)
    assert fit.largest_table == "user_id"
    with pytest.raises(ArgumentError, match="hosts"):
        serving_fit(frame, 0, 4)
    with pytest.raises(ArgumentError, match="host_gib"):
        serving_fit(frame, 1, -1)


def test_the_editors_serving_tab(ranker):
    editor = CollectionEditor(ranker)
    tabs = editor.outputs["tabs"]
    assert tabs.titles[-1] == "serving"
    box = tabs.children[-1]
    assert box.children == ()  # nothing is computed for the tab before it opens
    tabs.selected_index = len(tabs.children) - 1
    (panel,) = box.children
    assert isinstance(panel, ServingPanel) and panel is editor.serving
    editor.controls("topic")["num_embeddings"].value = "300,000"
    expected = memory_table(editor.config, mode="inference", serving_dtype="int8")
    assert expected.at["topic", "num_embeddings"] == 300_000
    assert panel.frame.equals(expected)
    assert f"{int(expected['total_bytes'].sum()):,}" in text(panel.outputs["table"])
