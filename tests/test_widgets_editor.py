"""CollectionEditor driven headless: set cells, send grid messages, compare with pure functions.

Every expected number comes from `memory_table` / `gpu_fit` / the plot functions called directly
on the config the editor should hold, never from the widget itself. The 2,000-table tests use
tests/wide_config.py.
"""

from __future__ import annotations

import asyncio
import datetime
import html
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from wide_config import wide_config

import embviz
from embviz import DataType, Mode
from embviz.memory import UnknownTableError, gpu_fit, memory_table, totals
from embviz.placement import PlanError, plan
from embviz.plots.dtypes import plot_dtype_savings
from embviz.plots.memory import plot_memory, plot_placement
from embviz.widgets import CollectionEditor
from embviz.widgets.editor import DTYPE_FIGSIZE, MEMORY_FIGSIZE, PLACEMENT_FIGSIZE

from conftest import DATA

GIB = 1024**3


@pytest.fixture(scope="module")
def ranker() -> embviz.LargeEmbeddingsConfig:
    return embviz.load_config(embviz.example("ranker"))


@pytest.fixture
def editor(ranker) -> CollectionEditor:
    return CollectionEditor(ranker, gpus=2, hbm_gib=16)


def replace_table(cfg, name, **changes):
    """The config with one table's fields changed."""
    tables = [t.model_copy(update=changes) if t.name == name else t for t in cfg.tables]
    return cfg.model_copy(update={"tables": tables})


def shown_total(editor) -> int:
    """The exact byte count the total widget shows (its data-bytes attribute)."""
    return int(re.search(r'data-bytes="(\d+)"', editor.outputs["total"].value).group(1))


def unescape(text: str) -> str:
    return html.unescape(text)


def is_marked(control) -> bool:
    """A grid cell (`CellControl`: its ``error``) or a question widget (red border) is marked."""
    if hasattr(control, "error"):
        return bool(control.error)
    return bool(control.layout.border) and bool(control.tooltip)


def drawn(fig: Figure) -> list:
    """What a figure shows, artist by artist: bars, lines, limits, ticks, texts, legend."""
    out = []
    for ax in fig.axes:
        legend = ax.get_legend()
        out.append(
            (
                [
                    (p.get_x(), p.get_y(), p.get_width(), p.get_height(), p.get_facecolor())
                    for p in ax.patches
                    if p.get_visible()
                ],
                [line.get_xydata().tolist() for line in ax.lines if line.get_visible()],
                ax.get_xlim(),
                ax.get_xscale(),
                [t.get_text() for t in ax.get_yticklabels()],
                [(t.get_text(), t.get_position(), t.get_color()) for t in ax.texts],
                ax.get_title(),
                ax.get_xlabel(),
                ax.get_ylabel(),
                [t.get_text() for t in legend.get_texts()] if legend is not None else [],
            )
        )
    return out


def direct_figures(frame: pd.DataFrame, hbm_bytes: int) -> tuple[Figure, Figure]:
    """The same drawings made by calling the plot functions on fresh Axes of the same size."""
    memory = Figure(figsize=MEMORY_FIGSIZE, layout="constrained")
    plot_memory(frame, ax=memory.add_subplot(), hbm_bytes=hbm_bytes, sort=True, max_tables=20)
    dtype = Figure(figsize=DTYPE_FIGSIZE, layout="constrained")
    plot_dtype_savings(frame, ax=dtype.add_subplot(), max_tables=20)
    return memory, dtype


def assert_outputs_match(editor, cfg, *, gpus=2, hbm_gib=16, **question):
    frame = memory_table(cfg, **question)
    pd.testing.assert_frame_equal(editor.memory, frame)
    assert shown_total(editor) == totals(frame)["total_bytes"]
    assert editor.fit == gpu_fit(frame, gpus, hbm_gib)
    memory_fig, dtype_fig = direct_figures(frame, round(hbm_gib * GIB))
    assert drawn(editor.figures["memory"]) == drawn(memory_fig)
    assert drawn(editor.figures["dtype"]) == drawn(dtype_fig)


# --------------------------------------------------------------------------- start and edits


def test_starts_with_the_config_and_its_memory(editor, ranker):
    assert editor.config == ranker
    assert editor.error == ""
    assert editor.config_version == 0
    assert_outputs_match(editor, ranker)
    assert [editor.controls(t.name)["name"].value for t in ranker.tables] == ranker.table_names
    row = editor.controls("user_id")
    assert row["num_embeddings"].value == "100,000,000"
    assert (row["embedding_dim"].value, row["data_type"].value) == ("64", "fp16")
    assert (row["optimizer"].value, row["lr"].value, row["log"].value) == ("sgd", "0.01", True)
    assert editor.controls("app_version")["log"].value is False
    assert set(row) == {
        "name",
        "num_embeddings",
        "embedding_dim",
        "data_type",
        "optimizer",
        "lr",
        "log",
    }


def test_typing_rows_updates_config_memory_figures_and_trait(editor, ranker):
    seen = []
    editor.observe(lambda change: seen.append(change["new"]), names="config")
    memory_figure = editor.figures["memory"]
    editor.controls("user_id")["num_embeddings"].value = "50,000,000"
    expected = replace_table(ranker, "user_id", num_embeddings=50_000_000)
    assert editor.error == ""
    assert editor.config == expected
    assert seen == [expected]
    assert editor.config_version == 1
    assert_outputs_match(editor, expected)
    assert editor.figures["memory"] is memory_figure  # redrawn in place, not replaced


@pytest.mark.parametrize(
    "typed", ["2000000", "2,000,000", "2_000_000", "2 000 000", "2e6", " 2,000,000 "]
)
def test_row_count_text_forms(editor, typed):
    editor.controls("topic")["num_embeddings"].value = typed
    assert editor.error == ""
    assert editor.config.table("topic").num_embeddings == 2_000_000
    assert editor.controls("topic")["num_embeddings"].value == typed  # never reformatted


def test_every_row_control_reaches_the_config(editor, ranker):
    row = editor.controls("country")
    row["embedding_dim"].value = "32"
    row["data_type"].value = "fp16"
    row["lr"].value = 0.5
    row["log"].value = True
    row["name"].value = "nation"
    table = editor.config.table("nation")
    assert (table.embedding_dim, table.data_type, table.optimizer.adam.lr) == (
        32,
        DataType.FP16,
        0.5,
    )
    assert editor.config.tables_to_log == [*ranker.tables_to_log, "nation"]
    assert editor.config.table_names.index("nation") == ranker.table_names.index("country")
    assert editor.controls("nation") is not None
    with pytest.raises(UnknownTableError, match="no table named 'country'"):
        editor.controls("country")
    assert_outputs_match(editor, editor.config)
    assert editor.memory.loc["nation", "logged"]


def test_power_of_ten_buttons(editor):
    buttons = editor.row_buttons("topic")
    buttons["times10"].click()
    assert editor.controls("topic")["num_embeddings"].value == "1,000,000"
    assert editor.config.table("topic").num_embeddings == 1_000_000
    buttons["divide10"].click()
    buttons["divide10"].click()
    assert editor.config.table("topic").num_embeddings == 10_000
    editor.controls("topic")["num_embeddings"].value = "7"
    buttons["divide10"].click()
    assert editor.config.table("topic").num_embeddings == 1  # never below one row


def test_lr_edit_changes_config_but_not_memory(editor):
    before = editor.memory
    editor.controls("topic")["lr"].value = 0.002
    assert editor.config.table("topic").optimizer.adam.lr == 0.002
    assert editor.memory is before  # same bytes: nothing recomputed downstream
    editor.controls("topic")["lr"].value = "1e-3"  # typed text
    assert editor.config.table("topic").optimizer.adam.lr == 0.001


@pytest.fixture
def plot_calls(monkeypatch) -> list[str]:
    """Figure updates from now on: ``update_memory`` (in place) and ``plot_dtype_savings``."""
    from embviz.plots.memory import MemoryPlot

    calls: list[str] = []
    update = MemoryPlot.update

    def counted_update(self, *args, **kwargs):
        calls.append("update_memory")
        return update(self, *args, **kwargs)

    monkeypatch.setattr(MemoryPlot, "update", counted_update)
    import embviz.plots.dtypes

    original = embviz.plots.dtypes.plot_dtype_savings

    def counted(*args, **kwargs):
        calls.append("plot_dtype_savings")
        return original(*args, **kwargs)

    monkeypatch.setattr(embviz.plots.dtypes, "plot_dtype_savings", counted)
    return calls


def test_an_edit_updates_the_visible_figure_only_and_in_place(editor, ranker, plot_calls):
    figure = editor.figures["memory"]
    patches = list(figure.axes[0].patches)
    plot_calls.clear()
    editor.controls("topic")["num_embeddings"].value = "5,000"
    assert plot_calls == ["update_memory"]
    # The same artists, moved: nothing cleared or made again.
    assert list(editor.figures["memory"].axes[0].patches) == patches
    editor.outputs["tabs"].selected_index = 1  # fp32 vs fp16: drawn when opened
    assert plot_calls == ["update_memory", "plot_dtype_savings"]
    editor.outputs["tabs"].selected_index = 1
    editor.controls("topic")["lr"].value = 0.5  # no byte changes: nothing to redraw
    editor.settings["hbm_gib"].value = 40  # the budget line is on the memory figure only
    assert plot_calls == ["update_memory", "plot_dtype_savings"]
    editor.outputs["tabs"].selected_index = 0
    assert plot_calls == ["update_memory", "plot_dtype_savings", "update_memory"]
    assert_outputs_match(editor, editor.config, hbm_gib=40)


def test_in_a_kernel_the_figure_waits_for_a_pause_in_typing(ranker, plot_calls):
    """Inside a running event loop (a kernel), a burst of keys redraws the figure once."""

    async def type_then_pause() -> CollectionEditor:
        editor = CollectionEditor(ranker, gpus=2, hbm_gib=16, figure_delay_s=0.05)
        plot_calls.clear()
        for typed in ("1", "12", "123", "1234"):
            editor.controls("topic")["num_embeddings"].value = typed
            expected = replace_table(ranker, "topic", num_embeddings=int(typed))
            assert shown_total(editor) == totals(memory_table(expected))["total_bytes"]
        assert plot_calls == []
        await asyncio.sleep(0.5)
        assert plot_calls == ["update_memory"]
        return editor

    editor = asyncio.run(type_then_pause())
    assert_outputs_match(editor, replace_table(ranker, "topic", num_embeddings=1234))


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("field", "value", "location", "message"),
    [
        ("num_embeddings", "12x", "num_embeddings", "must be an integer, got '12x' (str)"),
        ("num_embeddings", "0", "num_embeddings", "must be > 0, got 0"),
        ("num_embeddings", "1.5", "num_embeddings", "must be an integer, got '1.5' (str)"),
        ("num_embeddings", "", "num_embeddings", "must be an integer, got '' (str)"),
        ("embedding_dim", 0, "embedding_dim", "must be > 0, got 0"),
        ("embedding_dim", "-8", "embedding_dim", "must be > 0, got -8"),
        ("embedding_dim", "wide", "embedding_dim", "must be an integer, got 'wide' (str)"),
        ("lr", -0.1, "optimizer.adam.lr", "must be >= 0, got -0.1"),
        ("lr", "fast", "optimizer.adam.lr", "must be a number, got 'fast' (str)"),
        ("name", "  ", "name", "must not be empty"),
    ],
)
def test_invalid_input_is_marked_and_the_last_valid_config_kept(
    editor, ranker, field, value, location, message
):
    memory = editor.memory
    control = editor.controls("topic")[field]
    control.value = value
    index = ranker.table_names.index("topic")
    assert editor.error == f"tables[{index}].{location}: {message}"
    # Marked at the control, said in the row and the status line, typed text kept.
    assert is_marked(control) and message in control.error
    assert control.value == value
    row_name = value if field == "name" else "topic"
    assert message in unescape(editor.row_message(row_name).value)
    status = unescape(editor.outputs["status"].value)
    assert "problem" in status and "last valid" in status and message in status
    # Outputs keep the last valid config.
    assert editor.config == ranker
    assert editor.memory is memory
    assert_outputs_match(editor, ranker)
    others = [c for f, c in editor.controls(row_name).items() if f != field]
    assert not any(is_marked(c) for c in others)


def test_fixing_the_input_clears_the_marks(editor, ranker):
    control = editor.controls("topic")["num_embeddings"]
    control.value = "12x"
    assert editor.error
    version = editor.config_version
    control.value = "100,000"  # back to the original value
    assert editor.error == ""
    assert not is_marked(control)
    assert editor.row_message("topic").value == ""
    assert editor.config == ranker
    assert editor.config_version == version  # the valid config did not change


def test_two_problems_in_two_rows(editor, ranker):
    editor.controls("topic")["embedding_dim"].value = 0
    editor.controls("country")["num_embeddings"].value = "-5"
    assert editor.error.splitlines() == [
        f"tables[{ranker.table_names.index('topic')}].embedding_dim: must be > 0, got 0",
        f"tables[{ranker.table_names.index('country')}].num_embeddings: must be > 0, got -5",
    ]
    assert editor.config == ranker


def test_duplicate_name_is_marked_on_the_later_row(editor, ranker):
    editor.controls("country")["name"].value = "language"
    country, language = ranker.table_names.index("country"), ranker.table_names.index("language")
    assert editor.error == (
        f"tables[{language}].name: duplicate table name 'language' (also tables[{country}])"
    )
    # Both rows named "language" are marked, the renamed one and the original.
    assert is_marked(editor.controls("language")["name"])
    assert all(
        "duplicate table name" in unescape(editor.row_message(name).value) for name in ("language",)
    )
    assert editor.config == ranker
    editor.controls("language")["name"].value = "country"  # the first row named language
    assert editor.error == ""
    assert editor.row_message("language").value == ""


def test_invalid_row_does_not_hide_a_duplicate_name_elsewhere(editor, ranker):
    editor.controls("topic")["embedding_dim"].value = 0
    editor.controls("country")["name"].value = "language"
    assert len(editor.error.splitlines()) == 2
    assert "duplicate table name 'language'" in editor.error


def test_unfused_dim_is_a_warning_not_an_error(editor, ranker):
    editor.controls("topic")["embedding_dim"].value = "30"
    assert editor.error == ""
    assert editor.config.table("topic").embedding_dim == 30
    assert "not a multiple of 4" in editor.row_message("topic").value
    assert not is_marked(editor.controls("topic")["embedding_dim"])


# --------------------------------------------------------------------------- hidden fields


@pytest.fixture
def rich(ranker) -> embviz.LargeEmbeddingsConfig:
    """Ranker plus a table with every field the rows do not show."""
    data = embviz.config.config_to_dict(ranker)
    data["tables"].append(
        {
            "name": "pretrained_user",
            "num_embeddings": 4000,
            "embedding_dim": 8,
            "pretrained": {"emb_name": "user", "embedding_snapshot_uri": "/snapshots/step_9"},
            "vocab": "/vocab/user",
            "optimizer": {
                "adam": {"lr": 0.003, "betas": [0.8, 0.9], "eps": 1e-5},
                "learning_rate": {
                    "piecewise_constant": {
                        "learning_rate_boundaries": [10],
                        "learning_rate_values": [0.003, 0.001],
                    }
                },
            },
            "data_type": "fp32",
        }
    )
    return embviz.LargeEmbeddingsConfig.model_validate(data)


def test_export_without_edits_is_the_loaded_yaml(rich):
    editor = CollectionEditor(rich)
    assert editor.to_yaml() == embviz.dump_config(rich)
    text = editor.export_yaml()
    assert text == embviz.dump_config(rich)
    assert editor.io_controls["yaml"].value == text
    assert embviz.parse_config(text) == rich


def test_hidden_fields_survive_every_edit(rich):
    editor = CollectionEditor(rich)
    row = editor.controls("pretrained_user")
    row["num_embeddings"].value = "8000"
    row["embedding_dim"].value = "16"
    row["data_type"].value = "fp16"
    row["lr"].value = 0.004
    row["optimizer"].value = "sgd"  # betas/eps are adam's: gone while sgd, back with adam
    assert editor.config.table("pretrained_user").optimizer.sgd.lr == 0.004
    row["optimizer"].value = "adam"
    row["name"].value = "pretrained_user_v2"
    row["log"].value = True
    table = embviz.parse_config(editor.export_yaml()).table("pretrained_user_v2")
    source = rich.table("pretrained_user")
    assert table.pretrained == source.pretrained
    assert table.vocab == source.vocab
    assert table.optimizer.learning_rate == source.optimizer.learning_rate
    assert table.optimizer.adam == source.optimizer.adam.model_copy(update={"lr": 0.004})
    assert (table.num_embeddings, table.embedding_dim, table.data_type) == (
        8000,
        16,
        DataType.FP16,
    )


def test_switching_optimizer_keeps_lr_and_restores_settings(editor, ranker):
    row = editor.controls("app_version")  # sgd, lr 0.05, momentum 0.9
    row["optimizer"].value = "adam"
    adam = editor.config.table("app_version").optimizer
    assert adam.adam.lr == 0.05 and adam.adam.betas == (0.9, 0.999)
    assert editor.memory.loc["app_version", "optimizer"] == "adam"
    row["optimizer"].value = "sgd"
    assert editor.config == ranker  # momentum 0.9 is back
    assert editor.memory.loc["app_version", "note"] == "fused EXACT_SGD does not use SGD momentum"


def test_schedules_and_log_order_in_exported_yaml(editor, ranker):
    editor.controls("topic")["log"].value = False
    editor.controls("topic")["log"].value = True  # now logged last
    editor.controls("country")["log"].value = True
    exported = embviz.parse_config(editor.export_yaml())
    assert exported.tables_to_log == ["user_id", "item_id", "query_token", "topic", "country"]
    assert [t.optimizer for t in exported.tables] == [t.optimizer for t in ranker.tables]


def test_no_tables_to_log_stays_unset():
    cfg = embviz.parse_config(
        "tables: [{name: a, num_embeddings: 10, embedding_dim: 4, data_type: fp32,"
        " optimizer: {sgd: {lr: 0.1}}}]"
    )
    editor = CollectionEditor(cfg)
    editor.controls("a")["log"].value = True
    editor.controls("a")["log"].value = False
    assert editor.config.tables_to_log is None
    assert "tables_to_log" not in editor.to_yaml()


# --------------------------------------------------------------------------- add / remove


def test_add_duplicate_remove(editor, ranker):
    controls = editor.add_table()
    assert controls["name"].value == "table"
    assert editor.config.table("table") == embviz.EmbeddingBagConfig(
        name="table",
        num_embeddings=1000,
        embedding_dim=16,
        data_type="fp32",
        optimizer={"sgd": {"lr": 0.01}},
    )
    editor.buttons["add"].click()
    assert editor.config.table_names[-2:] == ["table", "table_2"]

    editor.row_buttons("query_token")["duplicate"].click()
    names = editor.config.table_names
    assert names[names.index("query_token") + 1] == "query_token_copy"
    copy, source = editor.config.table("query_token_copy"), ranker.table("query_token")
    assert copy.model_copy(update={"name": "query_token"}) == source  # schedule, betas too
    assert "query_token_copy" not in editor.config.logged_tables

    editor.row_buttons("query_token_copy")["remove"].click()
    editor.remove_table("table")
    editor.remove_table("table_2")
    assert editor.config == ranker
    assert_outputs_match(editor, ranker)
    with pytest.raises(UnknownTableError):
        editor.remove_table("nope")


def test_removing_every_table_is_an_error_not_an_empty_config(ranker):
    cfg = embviz.LargeEmbeddingsConfig(tables=ranker.tables[:2])
    editor = CollectionEditor(cfg)
    editor.remove_table("user_id")
    editor.remove_table("item_id")
    assert editor.error == "tables: must list at least one table"
    assert editor.config == embviz.LargeEmbeddingsConfig(tables=ranker.tables[1:2])


def test_removing_a_logged_table_drops_it_from_tables_to_log(editor):
    editor.remove_table("item_id")
    assert editor.config.tables_to_log == ["user_id", "query_token", "topic"]


def test_duplicate_of_an_invalid_row_keeps_the_typed_text(editor):
    editor.controls("topic")["num_embeddings"].value = "lots"
    copy = editor.duplicate_table("topic")
    assert copy["num_embeddings"].value == "lots"
    assert len(editor.error.splitlines()) == 2


# --------------------------------------------------------------------------- question


@pytest.mark.parametrize(
    "question",
    [
        {"mode": Mode.EVALUATE},
        {"mode": Mode.INFERENCE},
        {"optimizer_state": "torch"},
        {"adagrad": "rowwise"},
        {"optimizer_state": "torch", "mode": Mode.EVALUATE},
    ],
)
def test_question_controls(editor, ranker, question):
    for name, value in question.items():
        editor.settings[name].value = value.value if isinstance(value, Mode) else value
    assert editor.error == ""
    assert_outputs_match(editor, ranker, **question)


def test_gpus_and_hbm_change_the_fit(editor, ranker):
    editor.settings["gpus"].value = 1
    editor.settings["hbm_gib"].value = 8
    frame = memory_table(ranker)
    assert editor.fit == gpu_fit(frame, 1, 8)
    assert not editor.fit.fits
    assert 'data-fits="false"' in editor.outputs["fit"].value
    assert editor.fit.message in unescape(editor.outputs["fit"].value)
    assert_outputs_match(editor, ranker, gpus=1, hbm_gib=8)


def test_invalid_question_is_marked_and_outputs_kept(editor, ranker):
    editor.settings["optimizer_state"].value = "torch"
    editor.settings["adagrad"].value = "rowwise"
    assert editor.error.startswith("adagrad: 'rowwise' (EXACT_ROWWISE_ADAGRAD) is a fused")
    assert is_marked(editor.settings["adagrad"])
    pd.testing.assert_frame_equal(editor.memory, memory_table(ranker, optimizer_state="torch"))
    editor.settings["gpus"].value = 0
    assert editor.error.splitlines()[1] == "gpus: must be an integer >= 1, got 0"
    assert is_marked(editor.settings["gpus"])
    editor.settings["adagrad"].value = "exact"
    editor.settings["gpus"].value = 2
    assert editor.error == ""
    assert not any(is_marked(c) for c in editor.settings.values())
    assert_outputs_match(editor, ranker, optimizer_state="torch")


# --------------------------------------------------------------------------- placement


def test_plan_button_shows_torchrecs_placement(ranker):
    editor = CollectionEditor(ranker, gpus=4, hbm_gib=16)
    assert editor.placement is None
    editor.buttons["plan"].click()
    expected = plan(ranker, 4, 16, progress=False)
    pd.testing.assert_frame_equal(editor.placement.ranks, expected.ranks)
    pd.testing.assert_frame_equal(editor.placement.tables, expected.tables)
    direct = Figure(figsize=PLACEMENT_FIGSIZE, layout="constrained")
    plot_placement(expected, ax=direct.add_subplot(), hbm_bytes=16 * GIB)
    assert drawn(editor.figures["placement"]) == drawn(direct)
    assert "torchrec's placement of 12 tables on 4 x 16 GiB" in unescape(
        editor.outputs["placement"].value
    )
    # An edit makes the placement stale (it is re-planned only on request).
    editor.controls("topic")["num_embeddings"].value = "200,000"
    assert "press Plan again" in editor.outputs["placement"].value
    assert editor.placement.tables.equals(expected.tables)
    editor.controls("topic")["num_embeddings"].value = "100,000"
    assert "torchrec's placement" in unescape(editor.outputs["placement"].value)


def test_plan_refusal_is_a_message(ranker):
    editor = CollectionEditor(ranker, gpus=1, hbm_gib=8)
    editor.buttons["plan"].click()
    with pytest.raises(PlanError) as expected:
        plan(ranker, 1, 8, progress=False)
    assert str(expected.value) in unescape(editor.outputs["placement"].value)
    assert editor.placement is None
    assert editor.outputs["exceptions"].outputs == ()


# --------------------------------------------------------------------------- load


def upload(editor, name: str, content: bytes) -> None:
    editor.io_controls["upload"].value = (
        {
            "name": name,
            "type": "application/x-yaml",
            "size": len(content),
            "content": memoryview(content),
            "last_modified": datetime.datetime.now(tz=datetime.timezone.utc),
        },
    )


def test_upload_replaces_the_tables(editor):
    twhin_path = embviz.example("twhin")
    editor.io_controls["key"].value = "model.embeddings"
    upload(editor, "twhin.yaml", twhin_path.read_bytes())
    twhin = embviz.load_config(twhin_path, key="model.embeddings")
    assert editor.config == twhin
    assert editor.error == ""
    assert "loaded 2 tables" in editor.io_controls["message"].value
    assert_outputs_match(editor, twhin)


@pytest.mark.parametrize(
    "bad", ["duplicate_names.yaml", "syntax_error.yaml", "rows_string.yaml", "empty.yaml"]
)
def test_bad_upload_shows_the_error_and_keeps_the_config(editor, ranker, bad):
    path = DATA / "bad" / bad
    upload(editor, bad, path.read_bytes())
    with pytest.raises(embviz.ConfigError) as expected:
        embviz.parse_config(path.read_text(), source=bad)
    message = editor.io_controls["message"].value
    assert "embviz-load-error" in message
    assert str(expected.value).splitlines()[0] in unescape(message)
    assert editor.config == ranker
    assert editor.error == ""


def test_not_utf8_upload(editor, ranker):
    upload(editor, "binary.yaml", (DATA / "bad" / "not_utf8.yaml").read_bytes())
    assert "not UTF-8" in editor.io_controls["message"].value
    assert editor.config == ranker


def test_load_from_path_and_key(editor, ranker):
    editor.io_controls["path"].value = str(embviz.example("twhin"))
    editor.io_controls["key"].value = "model.tables"
    editor.buttons["load"].click()
    assert "no &#x27;tables&#x27; under model" in editor.io_controls["message"].value
    assert editor.config == ranker
    editor.io_controls["key"].value = "model.embeddings"
    editor.buttons["load"].click()
    assert editor.config == embviz.load_config(embviz.example("twhin"), key="model.embeddings")


def test_load_missing_path(editor, ranker, tmp_path):
    editor.io_controls["path"].value = str(tmp_path / "nope.yaml")
    editor.buttons["load"].click()
    message = editor.io_controls["message"].value
    assert "nope.yaml: no such file" in message
    assert editor.config == ranker


def test_assigning_config_loads_it(editor):
    twhin = embviz.load_config(embviz.example("twhin"), key="model.embeddings")
    editor.config = twhin
    assert editor.controls("user")["num_embeddings"].value == "424,241"
    assert editor.config == twhin and editor.error == ""
    assert_outputs_match(editor, twhin)


def test_constructor_takes_a_path():
    editor = CollectionEditor(embviz.example("twhin"), key="model.embeddings")
    assert editor.config.table_names == ["user", "tweet"]


# --------------------------------------------------------------------------- robustness


def test_callback_exception_is_shown_not_lost(editor, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom in memory_table")

    monkeypatch.setattr(embviz.memory, "memory_table", broken)
    editor.controls("topic")["num_embeddings"].value = "123"
    output = editor.outputs["exceptions"]
    assert output.layout.display is None
    text = "".join(o["text"] for o in output.outputs)
    assert "RuntimeError: boom in memory_table" in text
    assert "boom in memory_table" in editor.last_exception
    assert "unexpected error" in editor.outputs["status"].value
    monkeypatch.undo()
    editor.controls("topic")["num_embeddings"].value = "124"
    assert editor.config.table("topic").num_embeddings == 124


def test_static_figures_without_ipympl(ranker):
    editor = CollectionEditor(ranker, interactive_figures=False)
    image = editor.figure_widgets["memory"]
    first = bytes(image.value)
    assert first.startswith(b"\x89PNG")
    editor.controls("user_id")["num_embeddings"].value = "1,000"
    assert bytes(image.value).startswith(b"\x89PNG") and bytes(image.value) != first


def test_interactive_figures_are_ipympl_canvases(editor):
    from ipympl.backend_nbagg import Canvas

    assert isinstance(editor.figures["memory"].canvas, Canvas)


def test_interactive_figures_leave_the_users_matplotlib_backend_alone():
    import importlib.util

    import matplotlib
    import matplotlib.pyplot as plt

    # `import ipympl` itself switches matplotlib's backend, so only look for it here.
    if importlib.util.find_spec("ipympl") is None:
        pytest.skip("ipympl is not installed")
    before = matplotlib.get_backend()
    CollectionEditor(embviz.load_config(embviz.example("twhin")), interactive_figures=True)
    assert matplotlib.get_backend() == before
    figure, _ = plt.subplots()
    plt.close(figure)
    assert "ipympl" not in type(figure.canvas).__module__


def assert_consistent(editor) -> None:
    """`memory` is `memory_table` of `config`, and the shown total is its total."""
    frame = memory_table(editor.config)
    pd.testing.assert_frame_equal(editor.memory, frame)
    assert shown_total(editor) == totals(frame)["total_bytes"]


@pytest.mark.parametrize("error", [OverflowError, RuntimeError, ValueError])
def test_any_exception_inside_an_edit_keeps_config_and_memory_and_says_so(
    editor, ranker, monkeypatch, error
):
    """Issue 11: an exception inside a callback never leaves `error` empty with config and
    memory disagreeing: the last valid config is kept and the error shown at the cell."""

    def broken(*args, **kwargs):
        raise error("raised inside memory_table")

    monkeypatch.setattr(embviz.memory, "memory_table", broken)
    control = editor.controls("topic")["num_embeddings"]
    control.value = "123"
    assert editor.error
    assert "raised inside memory_table" in editor.error
    assert editor.error.startswith(f"tables[{ranker.table_names.index('topic')}].num_embeddings")
    assert "raised inside memory_table" in control.error  # marked at the cell
    assert editor.config == ranker
    monkeypatch.undo()
    assert_consistent(editor)
    control.value = "124"
    assert editor.error == ""
    assert editor.config.table("topic").num_embeddings == 124
    assert_consistent(editor)


def test_an_exception_while_showing_the_rows_keeps_the_pair_consistent(editor, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("grid is broken")

    monkeypatch.setattr(editor.grid, "patch", broken)
    editor.controls("topic")["num_embeddings"].value = "5,000"
    assert "grid is broken" in editor.error
    assert editor.config.table("topic").num_embeddings == 5000  # validated and adopted
    assert_consistent(editor)
    monkeypatch.undo()
    editor.controls("topic")["num_embeddings"].value = "6,000"
    assert editor.error == ""
    assert_consistent(editor)


@pytest.mark.parametrize(
    ("rows", "dim"),
    [
        (10**30, 64),  # past int64 itself: numpy would raise OverflowError
        (2**62, 64),  # fits int64, but its bytes would wrap
        (2**58, 8),  # 2**61 cells x 12 bytes (fp32 + Adam's state) wraps
    ],
)
def test_row_counts_past_int64_are_refused_at_the_cell(editor, ranker, rows, dim):
    row = editor.controls("topic")
    row["embedding_dim"].value = str(dim)
    row["num_embeddings"].value = f"{rows:,}"
    # The schema refuses it (issue 11); the editor's own check stands behind it.
    assert "the most a byte count holds (int64)" in editor.error
    assert "the most a byte count holds (int64)" in row["num_embeddings"].error
    assert editor.config.table("topic").embedding_dim == dim
    assert editor.config.table("topic").num_embeddings == 100_000
    assert_consistent(editor)
    assert (editor.memory["total_bytes"] > 0).all()


def test_the_editors_own_int64_guard_behind_the_schema(ranker):
    """Tables that slipped past the schema (built without validation) are still refused."""
    from embviz.widgets.editor_model import BytesOverflow, _check_bytes, _check_table

    table = ranker.table("topic").model_construct(
        **{**dict(ranker.table("topic")), "num_embeddings": 2**62}
    )
    with pytest.raises(BytesOverflow, match="past what int64 byte counts hold"):
        _check_table(table, 6)
    frame = memory_table(ranker)
    _check_bytes(frame, range(len(frame)))  # fine as it is
    huge = frame.copy()
    huge["total_bytes"] = np.int64(2**62)
    with pytest.raises(BytesOverflow, match="total bytes would pass int64"):
        _check_bytes(huge, [])


def test_a_total_past_int64_is_refused(ranker):
    cfg = embviz.LargeEmbeddingsConfig(tables=ranker.tables[:3])
    editor = CollectionEditor(cfg)
    names = cfg.table_names
    # Each table alone fits int64 (2**58 x 1 x 12 bytes, fp32 + Adam, about 3.5e18 bytes);
    # two together (6.9e18) too; all three (1.04e19) do not.
    for name in names:
        editor.controls(name)["embedding_dim"].value = "4"
        editor.controls(name)["optimizer"].value = "adam"
        editor.controls(name)["data_type"].value = "fp32"
    editor.controls(names[0])["num_embeddings"].value = f"{2**56:,}"
    editor.controls(names[1])["num_embeddings"].value = f"{2**56:,}"
    assert editor.error == ""
    assert editor.memory["total_bytes"].iloc[:2].tolist() == [3 * 4 * 4 * 2**56] * 2
    before = editor.config
    editor.controls(names[2])["num_embeddings"].value = f"{2**56:,}"
    assert "the most a byte count holds (int64)" in editor.error
    assert "together" in editor.error
    assert editor.config == before
    assert_consistent(editor)
    editor.controls(names[2])["num_embeddings"].value = "1,000"
    assert editor.error == ""
    assert_consistent(editor)


# --------------------------------------------------------------------------- the grid widget


def grid_messages(editor, monkeypatch) -> list:
    sent: list = []
    monkeypatch.setattr(editor.grid, "send", lambda content, buffers=None: sent.append(content))
    return sent


def browser_edit(editor, table: str, field: str, text) -> None:
    """What the grid's JavaScript sends when a cell is typed into."""
    row_id = next(r["id"] for r in editor.grid.rows if r["values"]["name"] == table)
    message = {"type": "edit", "table": table, "row": row_id, "field": field, "text": text}
    editor.grid._on_message(editor.grid, message, [])


def test_the_grid_holds_every_row_as_data(editor, ranker):
    rows = editor.grid.rows
    assert [r["values"]["name"] for r in rows] == ranker.table_names
    frame = memory_table(ranker)
    for row, (_, record) in zip(rows, frame.iterrows(), strict=True):
        assert row["bytes"]["total_bytes"][0] == str(record["total_bytes"])
        assert row["bytes"]["weight_bytes"][0] == str(record["weight_bytes"])
        assert row["values"]["num_embeddings"] == f"{record['num_embeddings']:,}"
        assert row["errors"] == {}
    assert editor.grid.view == [r["id"] for r in rows]
    # One widget for all the rows: no widget per cell.
    assert len(editor.grid.columns) > 10


def test_a_browser_edit_is_validated_in_python_and_patched_back(editor, ranker, monkeypatch):
    sent = grid_messages(editor, monkeypatch)
    browser_edit(editor, "topic", "num_embeddings", "2,000,000")
    expected = replace_table(ranker, "topic", num_embeddings=2_000_000)
    assert editor.config == expected and editor.error == ""
    assert_consistent(editor)
    (patch,) = sent
    (row,) = patch["rows"]
    assert patch["type"] == "patch" and row["values"]["name"] == "topic"
    total = memory_table(expected).loc["topic", "total_bytes"]
    assert row["bytes"]["total_bytes"][0] == str(total)
    assert editor.grid.row(row["id"]) == row  # Python's copy, for views opened later

    browser_edit(editor, "topic", "num_embeddings", "2,000,000x")
    row = sent[-1]["rows"][0]
    message = "must be an integer, got '2,000,000x' (str)"
    assert message in row["errors"]["num_embeddings"]
    assert message in row["message"]
    assert row["bytes"]["total_bytes"][0] == str(total)  # last valid bytes kept
    assert editor.config == expected


def test_a_duplicate_name_patches_both_rows(editor, monkeypatch):
    sent = grid_messages(editor, monkeypatch)
    browser_edit(editor, "country", "name", "language")
    marked = [r for r in sent[-1]["rows"] if "name" in r["errors"]]
    assert len(marked) == 2
    browser_edit(editor, "language", "name", "country")
    assert all(r["errors"] == {} for r in sent[-1]["rows"])
    assert editor.error == ""


def test_browser_actions_and_header_sort(editor, ranker):
    row_id = next(r["id"] for r in editor.grid.rows if r["values"]["name"] == "topic")
    editor.grid._on_message(
        editor.grid, {"type": "action", "action": "times10", "row": row_id, "table": "topic"}, []
    )
    assert editor.config.table("topic").num_embeddings == 1_000_000
    editor.grid._on_message(editor.grid, {"type": "sort", "by": "name"}, [])
    assert editor.shown == sorted(ranker.table_names)
    editor.grid._on_message(editor.grid, {"type": "sort", "by": "name"}, [])  # again: Z-A
    assert editor.shown == sorted(ranker.table_names, reverse=True)
    assert editor.grid.sort == ["name", False]


# --------------------------------------------------------------------------- find and bulk edits


def test_search_sort_filter(editor, ranker):
    frame = memory_table(ranker)
    assert editor.search("USER") == ["user_id", "user_follows_hashed"]
    assert editor.find_controls["search"].value == "USER"
    editor.search("")
    by_total = frame.sort_values("total_bytes", ascending=False).index.tolist()
    assert editor.sort_by("total_bytes") == by_total
    assert editor.sort_by("total_bytes", ascending=True) == by_total[::-1]
    assert editor.sort_by("num_embeddings")[0] == frame["num_embeddings"].idxmax()
    assert editor.filter(logged=True) == [
        n
        for n in frame.sort_values("num_embeddings", ascending=False).index
        if frame.loc[n, "logged"]
    ]
    editor.sort_by("config")
    assert editor.filter(logged=False) == [
        n for n in ranker.table_names if not frame.loc[n, "logged"]
    ]
    # Over budget: larger than one GPU's usable memory (16 GiB less the planner's 15%).
    usable = int(16 * GIB * 0.85)
    assert editor.usable_bytes == usable
    over = [n for n in ranker.table_names if frame.loc[n, "total_bytes"] > usable]
    assert editor.filter(over_budget=True) == over
    assert editor.filter() == ranker.table_names
    with pytest.raises(embviz.ArgumentError, match="cannot sort by 'colour'"):
        editor.sort_by("colour")


def test_select_and_bulk_set_dtype_and_optimizer(editor, ranker):
    editor.search("_id")
    shown = editor.shown
    assert editor.select() == [n for n in ranker.table_names if n in shown]
    assert editor.bulk_set(None, "data_type", "fp16") == len(shown)
    expected = ranker.model_copy(
        update={
            "tables": [
                t.model_copy(update={"data_type": DataType.FP16}) if t.name in shown else t
                for t in ranker.tables
            ]
        }
    )
    assert editor.config == expected and editor.error == ""
    assert_consistent(editor)
    assert editor.bulk_set(["topic", "country"], "optimizer", "adagrad") == 2
    assert (
        editor.config.table("topic").optimizer.adagrad.lr == ranker.table("topic").optimizer.adam.lr
    )
    assert_consistent(editor)
    editor.select([])
    editor.search("")
    assert editor.selected == []
    with pytest.raises(embviz.ArgumentError, match="cannot be bulk-set"):
        editor.bulk_set(None, "name", "x")


def test_bulk_set_invalid_marks_every_row(editor, ranker):
    editor.bulk_set(["topic", "country"], "embedding_dim", "0")
    assert len(editor.error.splitlines()) == 2
    assert editor.config == ranker


def test_scale_rows(editor, ranker):
    assert editor.scale_rows(["topic", "country"], 2.5) == 2
    assert editor.config.table("topic").num_embeddings == round(100_000 * 2.5)
    assert editor.controls("topic")["num_embeddings"].value == "250,000"
    assert editor.config.table("country").num_embeddings == round(
        ranker.table("country").num_embeddings * 2.5
    )
    assert_consistent(editor)
    editor.find_controls["factor"].value = "0.5"
    editor.select(["topic"])
    editor.buttons["bulk_scale"].click()
    assert editor.config.table("topic").num_embeddings == 125_000
    with pytest.raises(embviz.ArgumentError, match="factor"):
        editor.scale_rows(None, 0)


def test_bulk_buttons_use_the_selection(editor, ranker):
    editor.select(["topic"])
    editor.find_controls["dtype"].value = "fp16"
    editor.buttons["bulk_dtype"].click()
    assert editor.config.table("topic").data_type == DataType.FP16
    assert editor.config.table("country").data_type == ranker.table("country").data_type


# --------------------------------------------------------------------------- 2,000 tables


@pytest.fixture(scope="module")
def wide() -> embviz.LargeEmbeddingsConfig:
    return wide_config(2000)


@pytest.fixture(scope="module")
def wide_editor(wide) -> CollectionEditor:
    return CollectionEditor(wide, gpus=8, hbm_gib=80, interactive_figures=False)


def test_2000_tables_one_widget_exact_memory(wide_editor, wide):
    editor = wide_editor
    assert len(editor.grid.rows) == 2000 and editor.error == ""
    pd.testing.assert_frame_equal(editor.memory, memory_table(wide))
    table = wide.tables[1234].name
    editor.controls(table)["num_embeddings"].value = "2,000,000"
    expected = replace_table(wide, table, num_embeddings=2_000_000)
    assert editor.config == expected
    assert_consistent(editor)
    assert editor.fit == gpu_fit(memory_table(expected), 8, 80)
    memory_fig, _ = direct_figures(editor.memory, 80 * GIB)
    assert drawn(editor.figures["memory"]) == drawn(memory_fig)
    labels = [t.get_text() for t in editor.figures["memory"].axes[0].get_yticklabels()]
    assert len(labels) == 20 and "(1981 others)" in labels
    editor.controls(table)["num_embeddings"].value = f"{wide.tables[1234].num_embeddings:,}"
    assert editor.config == wide


def test_2000_tables_find_and_bulk(wide_editor, wide):
    editor = wide_editor
    frame = memory_table(wide)
    found = editor.search("geo_bucket")
    assert found == [n for n in wide.table_names if "geo_bucket" in n] and found
    editor.search("")
    assert editor.sort_by("total_bytes")[:5] == frame["total_bytes"].nlargest(5).index.tolist()
    over = editor.filter(over_budget=True)
    assert over == [
        n
        for n in frame.sort_values("total_bytes", ascending=False).index
        if frame.loc[n, "total_bytes"] > int(80 * GIB * 0.85)
    ]
    editor.filter()
    editor.sort_by("config")
    fp32 = [t.name for t in wide.tables[:300] if t.data_type == DataType.FP32]
    assert editor.bulk_set(fp32, "data_type", "fp16") == len(fp32)
    assert_consistent(editor)
    assert editor.bulk_set(fp32, "data_type", "fp32") == len(fp32)
    assert editor.config == wide


def test_editor_path_never_imports_torch():
    import subprocess
    import sys

    code = (
        "import sys; sys.path.insert(0, 'tests')\n"
        "from wide_config import wide_config\n"
        "from embviz.widgets import CollectionEditor\n"
        "e = CollectionEditor(wide_config(300))\n"
        "e.controls(e.config.tables[5].name)['num_embeddings'].value = '1,000'\n"
        "e.sort_by('total_bytes'); e.bulk_set(e.search('user'), 'data_type', 'fp16')\n"
        "e.figures\n"
        "assert e.error == '', e.error\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchrec', 'fbgemm_gpu')))\n"
    )
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_placement_tables_show_the_plan_with_exact_tooltips_and_escaped_names():
    from report_html import cells

    from embviz.widgets.editor_tabs import placement_html

    cfg = embviz.load_config(embviz.example("ranker"))
    hostile = "x<b>&"
    cfg = cfg.model_copy(
        update={
            "tables": [
                t.model_copy(update={"name": hostile}) if t.name == "topic" else t
                for t in cfg.tables
            ],
            "tables_to_log": [n for n in cfg.logged_tables if n != "topic"],
        }
    )
    placement = plan(cfg, gpus=4, hbm_gib=16, progress=False)
    page = cells(placement_html(placement))
    assert "<b>" not in page and "x&lt;b&gt;&amp;" in page
    for r in placement.ranks.itertuples(index=False):
        exact = f"{int(r.hbm_bytes):,} bytes"
        assert f'<td title="{exact}">{embviz.human_bytes(int(r.hbm_bytes))}</td>' in page
    for t in placement.tables.itertuples(index=False):
        assert f"<td>{html.escape(t.table)}</td><td>{t.sharding_type}</td>" in page
        assert f'<td title="{int(t.table_bytes):,} bytes">' in page
