"""BuildPanel and NormsPanel driven headless, compared with the functions they wire."""

from __future__ import annotations

import html

import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

import embviz
from embviz.build import BuildError, BuildRefused, preflight, scale_config
from embviz.measure import measure_collection, predicted_vs_measured
from embviz.memory import human_bytes, memory_table
from embviz.norms import (
    UnknownEntityError,
    fp16_error_table,
    nearest,
    norm_histogram,
    norm_history,
    norm_stats,
)
from embviz.plots.norms import (
    plot_fp16_tradeoff,
    plot_norm_bands,
    plot_norm_histograms,
)
from embviz.projector import Projector
from embviz.snapshots import read_table
from embviz.vocab import load_vocab
from embviz.widgets import BuildPanel, CollectionEditor, NormsPanel

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
    # The needed bytes are exact; the free RAM moves with the other processes on the machine.
    needed = first_line.split(" but ")[0]
    assert panel.error.split(" but ")[0] == needed
    assert "available" in panel.error.splitlines()[0]
    assert needed in text(panel.outputs["preflight"])
    # The largest tables, with their exact sizes, as the build module lists them.
    largest = str(refused.value).split("what to do instead")[0].splitlines()[1:]
    assert largest[0] == "largest tables:"
    assert panel.error.splitlines()[1 : 1 + len(largest)] == largest
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
    assert panel.error == f"scale: must be a number in (0, 1], got {scale!r}"
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


# --------------------------------------------------------------------------- NormsPanel


def drawn(fig) -> list:
    """What a figure shows: bars, lines, collections' points, texts, per Axes."""
    out = []
    for ax in fig.axes:
        out.append(
            (
                [(p.get_x(), p.get_y(), p.get_width(), p.get_height()) for p in ax.patches],
                [line.get_xydata().tolist() for line in ax.lines],
                [c.get_offsets().tolist() for c in ax.collections if hasattr(c, "get_offsets")],
                [t.get_text() for t in ax.get_yticklabels()] if ax.get_yscale() == "linear" else [],
                ax.get_title(),
                ax.get_xlabel(),
            )
        )
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from embviz.demo import train_demo

    return train_demo(
        tmp_path_factory.mktemp("norms") / "run",
        scale=0.05,
        steps=40,
        checkpoint_every=20,
        progress=False,
    )


@pytest.fixture
def panel(run) -> NormsPanel:
    return NormsPanel(run.save_dir, config=run.config)


def snapshot(run, step: int) -> str:
    return str(run.save_dir / str(step))


def test_opens_a_checkpoint_folder_at_its_last_step(panel, run):
    assert (panel.table, panel.step) == ("user", 40)
    assert panel.controls["step"].options == (0, 20, 40)
    assert panel.controls["table"].options == ("user", "tweet")  # tables_to_log first
    expected = norm_stats(
        snapshot(run, 40), tables=["user"], initial=snapshot(run, 0), progress=False
    )
    pd.testing.assert_frame_equal(panel.data["stats"], expected)
    assert f"{expected.loc['user', 'mean']:.4g}" in panel.outputs["stats"].value
    assert panel.error == ""


def test_histogram_is_the_functions(panel, run):
    hist = norm_histogram(snapshot(run, 40), tables=["user"], progress=False)
    pd.testing.assert_frame_equal(panel.data["histogram"].frame, hist.frame)
    assert panel.data["histogram"].zero_rows == hist.zero_rows == {"user": 0}
    direct = Figure(figsize=(6.4, 3.8))
    plot_norm_histograms(hist, panel.data["stats"], axes=direct.add_subplot(), tables=["user"])
    assert drawn(panel.figures["histogram"]) == drawn(direct)


def test_bands_over_steps_mark_the_step_shown(panel, run):
    panel.outputs["tabs"].selected_index = 1
    history = norm_history(run.save_dir, tables=["user"], initial="first", progress=False)
    pd.testing.assert_frame_equal(panel.data["history"], history)
    ax = panel.figures["bands"].axes[0]
    direct = Figure()
    plot_norm_bands(history, axes=direct.add_subplot(), tables=["user"])
    drawn_lines = [line.get_xydata().tolist() for line in ax.lines]
    direct_lines = [line.get_xydata().tolist() for line in direct.axes[0].lines]
    assert drawn_lines[:-1] == direct_lines
    assert drawn_lines[-1][0][0] == 40  # the step marker
    panel.controls["step"].value = 20
    assert panel.figures["bands"].axes[0].lines[-1].get_xdata()[0] == 20
    assert panel.data["history"] is history or panel.data["history"].equals(history)


def test_step_slider_moves_every_view(panel, run):
    panel.controls["step"].value = 0
    expected = norm_stats(
        snapshot(run, 0), tables=["user"], initial=snapshot(run, 0), progress=False
    )
    pd.testing.assert_frame_equal(panel.data["stats"], expected)
    assert expected.loc["user", "unchanged_share"] == 1.0
    pd.testing.assert_frame_equal(
        panel.data["histogram"].frame,
        norm_histogram(snapshot(run, 0), tables=["user"], progress=False).frame,
    )


def test_projection_tab_is_a_projector_of_the_table(panel, run):
    panel.outputs["tabs"].selected_index = 2
    weight = read_table(snapshot(run, 40), "user")
    vocab = load_vocab(run.config.table("user").vocab)
    expected = Projector(weight, vocab=vocab).frame
    pd.testing.assert_frame_equal(panel.data["projection"], expected)
    assert len(expected) == weight.shape[0]  # every row
    assert panel.outputs["tabs"].children[2].children == (panel.projector.widget,)
    # The tab's projector is live: a selection there is the table's rows.
    rows = expected["row"].iloc[[3, 9]].tolist()
    assert panel.projector.select(rows)["row"].tolist() == rows


def test_neighbours_of_an_entity_id(panel, run):
    entity = int(run.entities["user"]["entity_id"].iloc[5])
    panel.controls["query"].value = f"{entity}"
    panel.controls["k"].value = 5
    panel.controls["metric"].value = "l2"
    panel.controls["find"].click()
    weight = read_table(snapshot(run, 40), "user")
    vocab = load_vocab(run.config.table("user").vocab)
    expected = nearest(weight, entity, k=5, metric="l2", vocab=vocab)
    assert expected.query_entity_id == entity and expected.metric == "l2"
    pd.testing.assert_frame_equal(panel.data["neighbours"], expected.frame)
    shown = panel.outputs["neighbours"].value
    assert f"5 nearest to entity {entity} (row {expected.query_row}) by l2" in shown
    assert all(str(int(e)) in shown for e in expected.frame["entity_id"])


def test_unknown_entity_and_bad_query_are_messages(panel, run):
    panel.controls["query"].value = "123456789123"
    panel.controls["find"].click()
    with pytest.raises(UnknownEntityError) as expected:
        nearest(
            read_table(snapshot(run, 40), "user"),
            123456789123,
            vocab=load_vocab(run.config.table("user").vocab),
        )
    assert str(expected.value) in text(panel.outputs["neighbours"])
    panel.controls["query"].value = "abc"
    panel.controls["find"].click()
    assert "type an integer entity id" in text(panel.outputs["neighbours"])
    assert panel.outputs["exceptions"].outputs == ()


def test_fp16_error_beside_the_bytes_saved(panel, run):
    panel.outputs["tabs"].selected_index = 4
    errors = fp16_error_table(snapshot(run, 40), tables=["user"], progress=False)
    pd.testing.assert_frame_equal(panel.data["fp16"], errors)
    direct = Figure(figsize=(8.0, 2.6))
    plot_fp16_tradeoff(
        errors, memory_table(run.config).loc[["user"]], axes=direct.subplots(1, 2, sharey=True)
    )
    assert drawn(panel.figures["fp16"]) == drawn(direct)


def test_fp16_without_a_config_says_what_is_missing(run):
    panel = NormsPanel(run.save_dir)
    panel.outputs["tabs"].selected_index = 4
    assert "pass the config" in panel.outputs["fp16"].value
    assert "fp16" in panel.data


def test_switching_tables(panel, run):
    panel.controls["table"].value = "tweet"
    expected = norm_stats(
        snapshot(run, 40), tables=["tweet"], initial=snapshot(run, 0), progress=False
    )
    pd.testing.assert_frame_equal(panel.data["stats"], expected)


def test_live_collection_and_single_snapshot(panel, run):
    panel.load(run.collection)
    assert panel.step is None
    assert panel.controls["step"].layout.display == "none"
    pd.testing.assert_frame_equal(
        panel.data["stats"], norm_stats(run.collection, tables=["user"], progress=False)
    )
    panel.load(snapshot(run, 20))
    assert panel.step is None
    pd.testing.assert_frame_equal(
        panel.data["stats"], norm_stats(snapshot(run, 20), tables=["user"], progress=False)
    )
    assert "snapshot" in panel.outputs["source"].value


def test_bad_source_keeps_the_current_one(panel, run, tmp_path):
    panel.controls["path"].value = str(tmp_path / "missing")
    panel.controls["open"].click()
    assert "missing" in panel.error and "no such snapshot" in panel.error
    assert "embviz-norms-error" in panel.outputs["message"].value
    assert (panel.table, panel.step) == ("user", 40)
    panel.load(42)
    assert "source must be a checkpoint folder" in panel.error


def test_norms_tables_escape_names_and_show_shares_in_percent():
    from report_html import cells

    from embviz.widgets.norms_panel import _stats_html

    stats = pd.DataFrame(
        {"rows": [12_345], "sampled": [1_000], "mean": [0.0123456], "zero_share": [0.25]},
        index=pd.Index(["x<b>&"], name="table"),
    )
    shown = cells(_stats_html(stats))
    assert "<th>table</th><th>rows</th><th>sampled</th><th>mean</th><th>zero rows</th>" in shown
    assert "<td>x&lt;b&gt;&amp;</td><td>12,345</td><td>1,000</td><td>0.01235</td>" in shown
    assert "<td>25.00%</td>" in shown


def test_comparison_table_has_signed_differences_and_exact_tooltips():
    from report_html import cells

    from embviz.widgets.build_panel import _comparison_html

    frame = pd.DataFrame(
        {
            "predicted_total_bytes": [8_000_000, 1_000],
            "measured_total_bytes": [8_000_512, 976],
            "difference_bytes": [512, -24],
            "allocated_total_bytes": [float("nan"), 2_048.0],
        },
        index=pd.Index(["a<b>", "small"], name="table"),
    )
    shown = cells(_comparison_html(frame))
    assert 'class="embviz-comparison"' in shown
    assert '<td>a&lt;b&gt;</td><td title="8,000,000 bytes">7.63 MiB</td>' in shown
    assert '<td title="512 bytes">+512 B</td><td></td>' in shown  # no CUDA figure: blank
    assert '<td title="-24 bytes">-24 B</td><td title="2,048 bytes">2.00 KiB</td>' in shown
