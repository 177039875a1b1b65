"""`CollectionEditor`: edit a config's tables and see their memory, GPU fit and placement live.

Wiring only: bytes come from `embviz.memory`, placements from `embviz.plan`, drawings from
`embviz.plots.memory`, YAML from `embviz.config`. What the widget adds is the bookkeeping that
makes live editing pleasant: every keystroke rebuilds the candidate config from the controls and
validates it with pydantic (only the rows that changed), problems are marked at their control,
and the outputs keep showing the last valid config until the input is valid again.
"""

from __future__ import annotations

import asyncio
import base64
import html
import os
import traceback
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import traitlets
from pydantic import ValidationError

from embviz.config import (
    ConfigError,
    DataType,
    EmbeddingBagConfig,
    FusedKernelWarning,
    LargeEmbeddingsConfig,
    Mode,
    OptimizerConfig,
    SgdConfig,
    dump_config,
    load_config,
    parse_config,
)
from embviz.errors import EmbvizError
from embviz.widgets._common import (
    ERROR_COLOR,
    OK_COLOR,
    WARN_COLOR,
    FigureView,
    format_count,
    guarded,
    mark_invalid,
    message_html,
    parse_count,
)

if TYPE_CHECKING:
    import pandas as pd

    from embviz.memory import GpuFit

__all__ = ["CollectionEditor"]

ROW_FIELDS = ("name", "num_embeddings", "embedding_dim", "data_type", "optimizer", "lr", "log")
_OPTIMIZERS = ("sgd", "adagrad", "adam")
# The table fields the row shows; every other field (pretrained, vocab, ...) rides along as is.
_SHOWN_TABLE_FIELDS = ("name", "num_embeddings", "embedding_dim", "data_type", "optimizer")

_WIDTHS = {
    "name": "170px",
    "num_embeddings": "125px",
    "steps": "80px",
    "embedding_dim": "72px",
    "data_type": "72px",
    "optimizer": "92px",
    "lr": "84px",
    "log": "34px",
    "actions": "80px",
}
_HEADERS = {
    "name": "table",
    "num_embeddings": "num_embeddings",
    "steps": "",
    "embedding_dim": "dim",
    "data_type": "dtype",
    "optimizer": "optimizer",
    "lr": "lr",
    "log": "log",
    "actions": "",
}
# Byte columns of memory_table shown in the table, with their headers.
_BYTE_HEADERS = {
    "weight_bytes": "weights",
    "optimizer_bytes": "optimizer state",
    "total_bytes": "total",
    "fp32_total_bytes": "total as fp32",
    "fp16_total_bytes": "total as fp16",
    "planner_bytes": "planner estimate",
}
_ROW_CACHE_LIMIT = 20_000
MEMORY_FIGSIZE = (7.4, 4.4)
DTYPE_FIGSIZE = (7.4, 4.4)
PLACEMENT_FIGSIZE = (6.4, 3.6)

_STYLE = """
<style>
.embviz-memory-table table, .embviz-placement-table table {border-collapse: collapse;
  font-size: 12px; margin-bottom: 6px;}
.embviz-memory-table th, .embviz-memory-table td,
.embviz-placement-table th, .embviz-placement-table td {padding: 2px 8px; text-align: right;
  border-bottom: 1px solid var(--jp-border-color2, #ddd); white-space: nowrap;}
.embviz-memory-table th:first-child, .embviz-memory-table td:first-child,
.embviz-placement-table th:first-child, .embviz-placement-table td:first-child {
  text-align: left;}
.embviz-memory-table tr.embviz-total-row td {font-weight: bold;
  border-top: 2px solid var(--jp-border-color1, #999);}
.embviz-memory-table td.embviz-differs {text-decoration: underline dotted;}
.embviz-memory-table ol.embviz-notes {font-size: 12px; color: var(--jp-ui-font-color2, #666);
  margin: 4px 0 0 0;}
</style>
"""


def _join(prefix: str, location: str) -> str:
    if not location:
        return prefix
    return prefix + location if location.startswith("[") else f"{prefix}.{location}"


def _field_of(location: str) -> str:
    """The row control a table-relative pydantic location belongs to ("" for the row itself)."""
    head = location.split(".", 1)[0].split("[", 1)[0]
    if head == "optimizer":
        return "lr" if location.endswith(".lr") else "optimizer"
    return head if head in ROW_FIELDS else ""


def _capture_validation(func, *args: Any) -> tuple[Any, list[tuple[str, str]], list[str]]:
    """Run a pydantic validation; return (result or None, problems, FusedKernelWarning texts)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FusedKernelWarning)
        try:
            result, problems = func(*args), []
        except ValidationError as exc:
            result, problems = None, ConfigError.from_validation_error(exc).problems
    notes = []
    for item in caught:
        if issubclass(item.category, FusedKernelWarning):
            notes.append(str(item.message))
        else:  # not ours to swallow
            warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
    return result, problems, notes


class _TableRow:
    """The controls of one table, plus the fields of the table the controls do not show."""

    def __init__(self, table: EmbeddingBagConfig, logged: bool):
        data = table.model_dump(mode="json", exclude_none=True, exclude_unset=True)
        self.hidden = {k: v for k, v in data.items() if k not in _SHOWN_TABLE_FIELDS}
        optimizer = data["optimizer"]
        kind = table.optimizer.name
        # The schedule (learning_rate) stays whatever optimizer is picked.
        self.schedule = {k: v for k, v in optimizer.items() if k not in _OPTIMIZERS}
        # Settings other than lr, per optimizer kind, so switching sgd -> adam -> sgd restores
        # sgd's momentum; lr is one control shared by all kinds.
        self.settings: dict[str, dict[str, Any]] = {
            kind: {k: v for k, v in optimizer[kind].items() if k != "lr"}
        }

        def layout(field: str) -> widgets.Layout:
            return widgets.Layout(width=_WIDTHS[field], flex="0 0 auto")

        self.name = widgets.Text(value=table.name, layout=layout("name"))
        self.num_embeddings = widgets.Text(
            value=format_count(table.num_embeddings), layout=layout("num_embeddings")
        )
        small = {"width": "38px", "padding": "0"}
        self.times10 = widgets.Button(
            description="×10", tooltip="10 times the rows", layout=widgets.Layout(**small)
        )
        self.divide10 = widgets.Button(
            description="÷10", tooltip="a tenth of the rows", layout=widgets.Layout(**small)
        )
        self.embedding_dim = widgets.IntText(
            value=table.embedding_dim, continuous_update=True, layout=layout("embedding_dim")
        )
        self.data_type = widgets.Dropdown(
            options=[d.value for d in DataType],
            value=table.data_type.value,
            layout=layout("data_type"),
        )
        self.optimizer = widgets.Dropdown(
            options=list(_OPTIMIZERS), value=kind, layout=layout("optimizer")
        )
        self.lr = widgets.FloatText(
            value=table.optimizer.settings.lr, continuous_update=True, layout=layout("lr")
        )
        self.log = widgets.Checkbox(
            value=logged, indent=False, tooltip="log this table's norms (tables_to_log)"
        )
        self.log.layout = layout("log")
        self.duplicate = widgets.Button(
            icon="copy", tooltip="duplicate this table", layout=widgets.Layout(**small)
        )
        self.remove = widgets.Button(
            icon="trash", tooltip="remove this table", layout=widgets.Layout(**small)
        )
        self.message = widgets.HTML(layout=widgets.Layout(flex="1 1 auto"))
        for field in ROW_FIELDS:
            self.controls[field].add_class(f"embviz-{field.replace('_', '-')}")
        for name, button in self.buttons.items():
            button.add_class(f"embviz-{name}")
        self.message.add_class("embviz-row-message")
        self.box = widgets.HBox(
            [
                self.name,
                self.num_embeddings,
                widgets.HBox([self.times10, self.divide10], layout=layout("steps")),
                self.embedding_dim,
                self.data_type,
                self.optimizer,
                self.lr,
                self.log,
                widgets.HBox([self.duplicate, self.remove], layout=layout("actions")),
                self.message,
            ],
            layout=widgets.Layout(align_items="center", flex="0 0 auto"),
        )
        self.box.add_class("embviz-row")
        self.model: EmbeddingBagConfig | None = table
        self.problems: list[tuple[str, str]] = []
        self.notes: list[str] = []
        self.shown: tuple[Any, ...] = ()
        self.dirty = True

    @property
    def controls(self) -> dict[str, widgets.Widget]:
        return {
            "name": self.name,
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "data_type": self.data_type,
            "optimizer": self.optimizer,
            "lr": self.lr,
            "log": self.log,
        }

    @property
    def buttons(self) -> dict[str, widgets.Button]:
        return {
            "times10": self.times10,
            "divide10": self.divide10,
            "duplicate": self.duplicate,
            "remove": self.remove,
        }

    def candidate(self) -> dict[str, Any]:
        """The table as plain data, from the controls and the hidden fields.

        The optimizer's other settings (betas, eps, momentum) are looked up by the kind picked,
        so switching sgd -> adam -> sgd finds sgd's momentum again; lr is the shared control.
        """
        rows = parse_count(self.num_embeddings.value)
        kind = self.optimizer.value
        optimizer = {**self.schedule, kind: {"lr": self.lr.value, **self.settings.get(kind, {})}}
        return {
            "name": self.name.value,
            # Text that is not an integer goes to pydantic as typed, so its message names it.
            "num_embeddings": rows if rows is not None else self.num_embeddings.value,
            "embedding_dim": self.embedding_dim.value,
            **self.hidden,
            "optimizer": optimizer,
            "data_type": self.data_type.value,
        }

    def validate(self) -> None:
        self.model, self.problems, self.notes = _capture_validation(
            EmbeddingBagConfig.model_validate, self.candidate()
        )
        self.dirty = False

    def show(self, problems: list[tuple[str, str]]) -> None:
        """Mark the controls named in ``problems`` (table-relative) and write the row's message."""
        shown = (tuple(problems), tuple(self.notes))
        if shown == self.shown:
            return  # nothing changed: leave the DOM alone
        self.shown = shown
        by_field: dict[str, list[str]] = {}
        for location, message in problems:
            by_field.setdefault(_field_of(location), []).append(f"{location}: {message}")
        for field, control in self.controls.items():
            mark_invalid(control, "\n".join(by_field.get(field, [])))
        lines = [f"{loc}: {msg}" if loc else msg for loc, msg in problems]
        text = message_html("\n".join(lines), ERROR_COLOR)
        if self.notes:
            text += message_html("\n".join(self.notes), WARN_COLOR)
        self.message.value = text


class CollectionEditor(widgets.VBox):
    """Edit the tables of a config and see, as you type, what they take and where they go.

    One row per table (name, rows, dim, dtype, optimizer, lr, log), add/duplicate/remove, YAML
    load (upload or path) and export; question controls (optimizer-state mode, `Mode`, GPUs,
    HBM per GPU); live outputs: the `memory_table` frame with totals, memory per table, dtype
    savings, the GPU fit, and torchrec's placement on request.

    Parameters
    ----------
    cfg : LargeEmbeddingsConfig or path
        The config to start from (a path is read with `embviz.load_config`).
    gpus : int
        Number of GPUs for the fit and the placement.
    hbm_gib : float
        Memory per GPU, GiB.
    optimizer_state : {"fused", "torch"}
        How optimizer state is counted (see `embviz.memory_table`).
    mode : Mode or str
        TRAIN keeps optimizer state; EVALUATE and INFERENCE do not.
    adagrad : {"exact", "rowwise"}
        Count Adagrad tables as exact or as the row-wise what-if.
    key : str, optional
        Section holding the tables when ``cfg`` is a path (``"model.embeddings"``).
    interactive_figures : bool, optional
        ipympl canvases (default when ipympl is installed) or static PNG images.
    figure_delay_s : float
        In a running kernel, redraw the figures this long after the last edit (0: after every
        edit). The table, total and fit always follow every edit.
    max_figure_tables : int
        Bars per figure: the largest tables, the rest summed into one bar (the plot
        functions' ``max_tables``).

    Attributes
    ----------
    config : LargeEmbeddingsConfig
        The last valid config (a traitlets trait: observe it, or set it to load another).
    config_version : int
        Increases by one each time the valid config changes (observable).
    error : str
        Every current problem, one per line; ``""`` when the input is valid (observable).
    figures : dict of str to matplotlib.figure.Figure
        ``"memory"``, ``"dtype"`` and ``"placement"``: made once, redrawn in place.

    Examples
    --------
    >>> editor = embviz.CollectionEditor(embviz.load_config(embviz.example("ranker")))
    >>> editor.controls("user_id")["num_embeddings"].value = "50,000,000"
    >>> editor.memory.loc["user_id", "total_bytes"]
    """

    config = traitlets.Instance(LargeEmbeddingsConfig)
    config_version = traitlets.Int(0, read_only=True)
    error = traitlets.Unicode("", read_only=True)

    def __init__(
        self,
        cfg: LargeEmbeddingsConfig | str | os.PathLike[str],
        *,
        gpus: int = 1,
        hbm_gib: float = 80.0,
        optimizer_state: str = "fused",
        mode: Mode | str = Mode.TRAIN,
        adagrad: str = "exact",
        key: str | None = None,
        interactive_figures: bool | None = None,
        figure_delay_s: float = 0.25,
        max_figure_tables: int = 20,
    ):
        super().__init__()
        self.add_class("embviz-editor")
        if not isinstance(cfg, LargeEmbeddingsConfig):
            cfg = load_config(cfg, key=key)
        self._internal = False
        self.config = cfg  # before the observer that loads assigned configs is attached
        self._rows: list[_TableRow] = []
        self._log_order: list[_TableRow] = []
        self._log_unset = True
        self._memory: pd.DataFrame | None = None
        self._memory_key: tuple[Any, ...] | None = None
        self._memory_serial = 0
        self._fit: GpuFit | None = None
        self._drawn: dict[str, Any] = {}
        self._row_html: dict[tuple[Any, ...], str] = {}
        self._note_numbers: dict[str, int] = {}
        self._placement: Any = None
        self._placement_key: tuple[Any, ...] | None = None
        self._question_problems: dict[str, str] = {}
        self._last_exception = ""
        self._figure_delay_s = figure_delay_s
        self._pending_draw: asyncio.TimerHandle | None = None

        self._exceptions = widgets.Output(layout=widgets.Layout(display="none"))
        self._exceptions.add_class("embviz-exceptions")
        self._guard = guarded(self._exceptions, self._on_unexpected)

        self._build_question(gpus, hbm_gib, optimizer_state, mode, adagrad)
        self._build_io(key)
        self._build_outputs(interactive_figures, max_figure_tables)
        self._rows_box = widgets.VBox(
            layout=widgets.Layout(max_height="430px", overflow="auto", flex="0 0 auto")
        )
        self._rows_box.add_class("embviz-rows")
        header = widgets.HBox(
            [
                widgets.HTML(f"<b>{label}</b>", layout=widgets.Layout(width=_WIDTHS[field]))
                for field, label in _HEADERS.items()
            ]
        )
        self.children = [
            widgets.HTML(_STYLE),
            self._load_bar,
            self._question_bar,
            self._status,
            header,
            self._rows_box,
            widgets.HBox([self._add_button, self._export_button, self._download]),
            self._yaml,
            widgets.HBox([self._total, self._fit_html]),
            self._tabs,
            self._table_html,
            self._exceptions,
        ]
        self._load_rows(cfg)
        self.observe(self._guard(self._on_config_set), names="config")

    # ------------------------------------------------------------------ building

    def _build_question(
        self, gpus: int, hbm_gib: float, optimizer_state: str, mode: Mode | str, adagrad: str
    ) -> None:
        style = {"description_width": "initial"}
        self._optimizer_state = widgets.Dropdown(
            description="optimizer state",
            options=[("fused (FBGEMM, sharded)", "fused"), ("torch.optim (unsharded)", "torch")],
            value=optimizer_state,
            style=style,
        )
        self._mode = widgets.Dropdown(
            description="mode", options=[m.value for m in Mode], value=Mode(mode).value
        )
        self._mode.layout.width = "190px"
        self._adagrad = widgets.Dropdown(
            description="adagrad",
            options=[("exact", "exact"), ("row-wise what-if", "rowwise")],
            value=adagrad,
            layout=widgets.Layout(width="210px"),
        )
        self._gpus = widgets.IntText(
            description="GPUs",
            value=gpus,
            continuous_update=True,
            layout=widgets.Layout(width="130px"),
        )
        self._hbm = widgets.FloatText(
            description="GiB per GPU",
            value=hbm_gib,
            continuous_update=True,
            style=style,
            layout=widgets.Layout(width="170px"),
        )
        for name, control in self.settings.items():
            control.add_class(f"embviz-{name.replace('_', '-')}")
            control.observe(self._guard(self._on_question), names="value")
        self._question_bar = widgets.HBox(list(self.settings.values()))

    def _build_io(self, key: str | None) -> None:
        self._upload = widgets.FileUpload(accept=".yaml,.yml", multiple=False, description="YAML")
        self._path = widgets.Text(placeholder="path/to/config.yaml", description="path")
        self._key = widgets.Text(
            value=key or "",
            placeholder="section, e.g. model.embeddings",
            description="key",
            layout=widgets.Layout(width="260px"),
        )
        self._load_button = widgets.Button(description="Load", icon="folder-open")
        self._load_message = widgets.HTML()
        self._load_message.add_class("embviz-load-message")
        self._upload.observe(self._guard(self._on_upload), names="value")
        self._load_button.on_click(self._guard(self._on_load_path))
        self._load_bar = widgets.HBox(
            [self._upload, self._path, self._key, self._load_button, self._load_message]
        )
        self._add_button = widgets.Button(description="Add table", icon="plus")
        self._add_button.on_click(self._guard(lambda _: self.add_table()))
        self._export_button = widgets.Button(description="Export YAML", icon="download")
        self._export_button.on_click(self._guard(lambda _: self.export_yaml()))
        self._download = widgets.HTML()
        self._yaml = widgets.Textarea(
            layout=widgets.Layout(width="100%", height="260px", display="none")
        )
        self._yaml.add_class("embviz-yaml")
        self._status = widgets.HTML()
        self._status.add_class("embviz-status")

    def _build_outputs(self, interactive: bool | None, max_figure_tables: int) -> None:
        self._total = widgets.HTML(layout=widgets.Layout(margin="0 24px 0 0"))
        self._total.add_class("embviz-total")
        self._fit_html = widgets.HTML()
        self._fit_html.add_class("embviz-fit")
        self._table_html = widgets.HTML()
        self._table_html.add_class("embviz-memory-table")
        self._max_figure_tables = max_figure_tables
        self._memory_view = FigureView(
            MEMORY_FIGSIZE, interactive=interactive, css_class="embviz-memory-figure"
        )
        self._dtype_view = FigureView(
            DTYPE_FIGSIZE, interactive=interactive, css_class="embviz-dtype-figure"
        )
        self._placement_view = FigureView(
            PLACEMENT_FIGSIZE, interactive=interactive, css_class="embviz-placement-figure"
        )
        self._placement_view.widget.layout.display = "none"
        self._placement_html = widgets.HTML()
        self._placement_html.add_class("embviz-placement-table")
        self._plan_output = widgets.Output()
        self._plan_button = widgets.Button(
            description="Plan placement", icon="sitemap", tooltip="run torchrec's planner"
        )
        self._plan_button.add_class("embviz-plan")
        self._plan_button.on_click(self._guard(lambda _: self.plan_placement()))
        self._placement_status = widgets.HTML()
        self._placement_status.add_class("embviz-placement-status")
        # One figure shown at a time: an edit redraws the visible one, the others when their
        # tab is opened (or `figures` is read).
        self._tabs = widgets.Tab(
            children=[
                self._memory_view.widget,
                self._dtype_view.widget,
                widgets.VBox(
                    [
                        widgets.HBox([self._plan_button, self._placement_status]),
                        self._plan_output,
                        self._placement_view.widget,
                        self._placement_html,
                    ]
                ),
            ],
            titles=["memory per table", "fp32 vs fp16", "placement"],
        )
        self._tabs.add_class("embviz-figure-tabs")
        self._tabs.observe(self._guard(lambda _: self._draw_visible()), names="selected_index")

    # ------------------------------------------------------------------ public API

    @property
    def memory(self) -> pd.DataFrame:
        """`embviz.memory_table` of the last valid config and question settings."""
        assert self._memory is not None  # set in __init__
        return self._memory

    @property
    def fit(self) -> GpuFit | None:
        """`embviz.gpu_fit` for the current GPUs and HBM (None while those are invalid)."""
        return self._fit

    @property
    def placement(self) -> Any:
        """The last `embviz.placement.Placement` computed with `plan_placement` (None before)."""
        return self._placement

    @property
    def figures(self) -> dict[str, Any]:
        """The editor's matplotlib Figures: ``"memory"``, ``"dtype"``, ``"placement"``.

        Made once and redrawn in place. Reading this property first brings every figure up to
        date (an edit redraws only the figure whose tab is open).
        """
        self._cancel_pending_draw()
        self._draw("memory", False)
        self._draw("dtype", False)
        return {
            "memory": self._memory_view.figure,
            "dtype": self._dtype_view.figure,
            "placement": self._placement_view.figure,
        }

    @property
    def figure_widgets(self) -> dict[str, widgets.DOMWidget]:
        """The widgets showing `figures`: ipympl canvases, or Image widgets (static PNG)."""
        return {
            "memory": self._memory_view.widget,
            "dtype": self._dtype_view.widget,
            "placement": self._placement_view.widget,
        }

    @property
    def settings(self) -> dict[str, widgets.ValueWidget]:
        """The question's controls.

        Keys: ``optimizer_state``, ``mode``, ``adagrad`` (Dropdown), ``gpus`` (IntText),
        ``hbm_gib`` (FloatText).
        """
        return {
            "optimizer_state": self._optimizer_state,
            "mode": self._mode,
            "adagrad": self._adagrad,
            "gpus": self._gpus,
            "hbm_gib": self._hbm,
        }

    @property
    def buttons(self) -> dict[str, widgets.Button]:
        """Editor-wide buttons: ``add``, ``export``, ``load`` (the path) and ``plan``."""
        return {
            "add": self._add_button,
            "export": self._export_button,
            "load": self._load_button,
            "plan": self._plan_button,
        }

    @property
    def io_controls(self) -> dict[str, widgets.Widget]:
        """Load and export widgets.

        Keys: ``upload`` (FileUpload), ``path`` and ``key`` (Text), ``yaml`` (the export
        Textarea) and ``message`` (the load/export message, HTML).
        """
        return {
            "upload": self._upload,
            "path": self._path,
            "key": self._key,
            "yaml": self._yaml,
            "message": self._load_message,
        }

    @property
    def outputs(self) -> dict[str, widgets.Widget]:
        """The display widgets, for tests and custom layouts.

        Keys: ``status`` (the status line), ``total``, ``fit``, ``table`` (the memory table),
        ``placement`` (the planner's status line), all HTML; ``exceptions`` (the Output that
        receives tracebacks of unexpected errors in callbacks); ``tabs`` (the Tab holding the
        figures: memory, fp32 vs fp16, placement).
        """
        return {
            "status": self._status,
            "total": self._total,
            "fit": self._fit_html,
            "table": self._table_html,
            "placement": self._placement_status,
            "exceptions": self._exceptions,
            "tabs": self._tabs,
        }

    @property
    def last_exception(self) -> str:
        """Traceback text of the last unexpected error in a callback (``""`` if none)."""
        return self._last_exception

    def controls(self, table: str) -> dict[str, widgets.ValueWidget]:
        """The row of ``table`` (by the name currently typed): its value controls.

        Keys: ``name``, ``num_embeddings`` (Text, thousands separators), ``embedding_dim``
        (IntText), ``data_type`` and ``optimizer`` (Dropdown), ``lr`` (FloatText), ``log``
        (Checkbox).
        """
        return self._row(table).controls

    def row_message(self, table: str) -> widgets.HTML:
        """The row's message: its problems (red) and warnings (amber), empty when fine."""
        return self._row(table).message

    def row_buttons(self, table: str) -> dict[str, widgets.Button]:
        """The row's buttons: ``times10``, ``divide10``, ``duplicate``, ``remove``."""
        return self._row(table).buttons

    def add_table(self, table: EmbeddingBagConfig | None = None) -> dict[str, widgets.Widget]:
        """Append a table (a fresh 1,000 x 16 fp32 SGD one by default); returns its controls."""
        if table is None:
            table = self._default_table()
        row = self._new_row(table, logged=False)
        self._rows.append(row)
        self._rows_box.children = [*self._rows_box.children, row.box]
        self._settle()
        return row.controls

    def duplicate_table(self, table: str) -> dict[str, widgets.Widget]:
        """Insert a copy of ``table``'s row (all its fields, as typed) below it."""
        source = self._row(table)
        copy = _TableRow(source.model or self._default_table(), logged=False)
        copy.hidden = dict(source.hidden)
        copy.schedule = dict(source.schedule)
        copy.settings = {k: dict(v) for k, v in source.settings.items()}
        for field in ("num_embeddings", "embedding_dim", "data_type", "optimizer", "lr"):
            # As typed, even when invalid: the copy shows the same problem as its source.
            copy.controls[field].value = source.controls[field].value
        copy.name.value = self._free_name(f"{source.name.value}_copy")
        self._wire_row(copy)
        index = self._rows.index(source) + 1
        self._rows.insert(index, copy)
        self._rows_box.children = [r.box for r in self._rows]
        self._settle()
        return copy.controls

    def remove_table(self, table: str) -> None:
        """Remove ``table``'s row (the config keeps at least one table to be valid)."""
        row = self._row(table)
        self._rows.remove(row)
        if row in self._log_order:
            self._log_order.remove(row)
        self._rows_box.children = [r.box for r in self._rows]
        self._settle()

    def load(self, cfg: LargeEmbeddingsConfig | str | os.PathLike[str], key: str | None = None):
        """Replace every row with ``cfg``'s tables (a path is read with `embviz.load_config`)."""
        if not isinstance(cfg, LargeEmbeddingsConfig):
            cfg = load_config(cfg, key=key)
        self._load_rows(cfg)

    def to_yaml(self) -> str:
        """The last valid config as YAML (`embviz.dump_config`): hidden fields included."""
        return dump_config(self.config)

    def export_yaml(self) -> str:
        """Show the YAML in the text area and as a download link; return it."""
        text = self.to_yaml()
        self._yaml.value = text
        self._yaml.layout.display = None
        payload = base64.b64encode(text.encode()).decode()
        self._download.value = (
            f'<a download="embeddings.yaml" href="data:text/yaml;base64,{payload}">'
            "download embeddings.yaml</a>"
        )
        note = "exported the last valid config" + (
            " (the current input has problems, see above)" if self.error else ""
        )
        self._load_message.value = message_html(note, WARN_COLOR if self.error else OK_COLOR)
        return text

    def plan_placement(self) -> Any:
        """Run torchrec's planner (`embviz.placement.plan`) on the last valid config; draw it.

        Returns the Placement, or None when the planner refused (its message is shown).
        """
        from embviz.placement import plan
        from embviz.plots.memory import plot_placement

        if "gpus" in self._question_problems or "hbm_gib" in self._question_problems:
            self._placement_status.value = message_html(
                "fix GPUs / GiB per GPU first", ERROR_COLOR, "embviz-plan-error"
            )
            return None
        self._placement_status.value = message_html("planning with torchrec's planner ...", "")
        key = self._plan_key()
        _, gpus, hbm_gib, mode, adagrad = key
        self._plan_output.clear_output()
        try:
            with self._plan_output:  # the planner's progress bar, when it searches
                placement = plan(
                    self.config, gpus, hbm_gib, mode=mode, adagrad=adagrad, progress=True
                )
        except EmbvizError as exc:  # PlanError (no placement, min GPUs), ArgumentError
            self._placement_status.value = message_html(str(exc), ERROR_COLOR, "embviz-plan-error")
            return None
        self._placement, self._placement_key = placement, key
        view = self._placement_view
        plot_placement(placement, ax=view.ax, hbm_bytes=placement.hbm_bytes)
        view.widget.layout.display = None
        view.refresh()
        self._placement_html.value = _placement_html(placement)
        self._show_placement_state()
        return placement

    def _plan_key(self) -> tuple[Any, ...]:
        return (
            self.config,
            self._gpus.value,
            self._hbm.value,
            self._mode.value,
            self._adagrad.value,
        )

    # ------------------------------------------------------------------ rows

    def _row(self, table: str) -> _TableRow:
        for row in self._rows:
            if row.name.value == table:
                return row
        from embviz.memory import UnknownTableError

        raise UnknownTableError([table], [r.name.value for r in self._rows])

    def _free_name(self, stem: str) -> str:
        taken = {r.name.value for r in self._rows}
        if stem not in taken:
            return stem
        i = 2
        while f"{stem}_{i}" in taken:
            i += 1
        return f"{stem}_{i}"

    def _default_table(self) -> EmbeddingBagConfig:
        return EmbeddingBagConfig(
            name=self._free_name("table"),
            num_embeddings=1000,
            embedding_dim=16,
            data_type=DataType.FP32,
            optimizer={"sgd": {"lr": 0.01}},
        )

    @staticmethod
    def _placeholder(row: _TableRow) -> EmbeddingBagConfig:
        """Stands in for an invalid row in the cross-table checks (duplicate names, log).

        Built without validation: only its name is read by those checks, and the config it
        goes into is thrown away, since the row's own problems already make the input invalid.
        The other fields are set to harmless values because pydantic still runs model
        validators on instances.
        """
        return EmbeddingBagConfig.model_construct(
            name=row.name.value,
            num_embeddings=1,
            embedding_dim=4,
            data_type=DataType.FP32,
            optimizer=OptimizerConfig.model_construct(sgd=SgdConfig.model_construct(lr=0.0)),
        )

    def _new_row(self, table: EmbeddingBagConfig, logged: bool) -> _TableRow:
        row = _TableRow(table, logged)
        self._wire_row(row)
        if logged:
            self._log_order.append(row)
        return row

    def _wire_row(self, row: _TableRow) -> None:
        for field, control in row.controls.items():
            control.observe(
                self._guard(lambda change, r=row, f=field: self._on_edit(r, f, change)),
                names="value",
            )
        row.times10.on_click(self._guard(lambda _, r=row: self._step_rows(r, 10)))
        row.divide10.on_click(self._guard(lambda _, r=row: self._step_rows(r, 0.1)))
        row.duplicate.on_click(self._guard(lambda _, r=row: self.duplicate_table(r.name.value)))
        row.remove.on_click(self._guard(lambda _, r=row: self._remove_row(r)))

    def _remove_row(self, row: _TableRow) -> None:
        self._rows.remove(row)
        if row in self._log_order:
            self._log_order.remove(row)
        self._rows_box.children = [r.box for r in self._rows]
        self._settle()

    def _step_rows(self, row: _TableRow, factor: float) -> None:
        rows = parse_count(row.num_embeddings.value)
        if rows is None:
            return  # the row already says what is wrong with the text
        stepped = rows * 10 if factor > 1 else max(1, rows // 10)
        row.num_embeddings.value = format_count(stepped)

    def _load_rows(self, cfg: LargeEmbeddingsConfig) -> None:
        logged = set(cfg.logged_tables)
        self._log_order = []
        self._rows = [_TableRow(t, t.name in logged) for t in cfg.tables]
        for row in self._rows:
            self._wire_row(row)
        # tables_to_log keeps its order (and its absence) when the toggles do not change it.
        by_name = {r.name.value: r for r in self._rows}
        self._log_order = [by_name[n] for n in cfg.logged_tables if n in by_name]
        self._log_unset = cfg.tables_to_log is None
        self._rows_box.children = [r.box for r in self._rows]
        self._set_config(cfg)
        self._settle(force=True)

    # ------------------------------------------------------------------ callbacks

    def _on_edit(self, row: _TableRow, field: str, change: dict[str, Any]) -> None:
        if field == "log":
            if change["new"] and row not in self._log_order:
                self._log_order.append(row)
            elif not change["new"] and row in self._log_order:
                self._log_order.remove(row)
        row.dirty = True
        self._settle()

    def _on_question(self, change: dict[str, Any]) -> None:
        self._settle()

    def _on_config_set(self, change: dict[str, Any]) -> None:
        if not self._internal:  # someone assigned editor.config: show that config
            self._load_rows(change["new"])

    def _on_upload(self, change: dict[str, Any]) -> None:
        files = change["new"]
        if not files:
            return
        upload = files[0]
        name = upload.get("name", "upload")
        content = bytes(upload["content"])
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError as exc:
            self._show_load_error(f"{name}: not UTF-8 text (byte at offset {exc.start})")
            return
        self._load_from(lambda: parse_config(text, self._key.value.strip() or None, source=name))

    def _on_load_path(self, _: Any) -> None:
        path = self._path.value.strip()
        if not path:
            self._show_load_error("type the path of a YAML file first")
            return
        self._load_from(
            lambda: load_config(Path(path).expanduser(), self._key.value.strip() or None)
        )

    def _load_from(self, read) -> None:
        # FusedKernelWarning of a loaded table shows in its row (validated again there).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FusedKernelWarning)
            try:
                cfg = read()
            except ConfigError as exc:  # names the file, the place in it, and the problem
                self._show_load_error(str(exc))
                return
        self._load_rows(cfg)
        self._load_message.value = message_html(
            f"loaded {len(cfg.tables)} tables", OK_COLOR, "embviz-load-ok"
        )

    def _show_load_error(self, message: str) -> None:
        self._load_message.value = message_html(
            f"not loaded (the editor keeps its tables): {message}", ERROR_COLOR, "embviz-load-error"
        )

    def _on_unexpected(self, exc: BaseException) -> None:
        self._last_exception = "".join(traceback.format_exception(exc))
        self._status.value = message_html(
            f"unexpected error in the editor (traceback below): {exc!r}", ERROR_COLOR
        )

    # ------------------------------------------------------------------ validation

    def _set_config(self, cfg: LargeEmbeddingsConfig) -> None:
        if cfg == self.config:
            return
        self._internal = True
        try:
            self.config = cfg
        finally:
            self._internal = False
        self.set_trait("config_version", self.config_version + 1)

    def _tables_to_log(self) -> list[str] | None:
        names = [r.name.value for r in self._log_order]
        return None if not names and self._log_unset else names

    def _settle(self, force: bool = False) -> None:
        """Validate what the controls say; on success adopt it; refresh what changed."""
        problems: list[tuple[str, str]] = []
        per_row: list[list[tuple[str, str]]] = []
        for i, row in enumerate(self._rows):
            if row.dirty:
                row.validate()
            per_row.append(list(row.problems))
            problems += [(_join(f"tables[{i}]", loc), msg) for loc, msg in row.problems]
        data: dict[str, Any] = {
            "tables": [r.model if r.model is not None else self._placeholder(r) for r in self._rows]
        }
        log = self._tables_to_log()
        if log is not None:
            data["tables_to_log"] = log
        candidate, cross, _ = _capture_validation(LargeEmbeddingsConfig.model_validate, data)
        for location, message in cross:
            problems.append((location, message))
            if location.startswith("tables["):
                index_text, _, rest = location[len("tables[") :].partition("]")
                index, field = int(index_text), rest.lstrip(".")
                per_row[index].append((field, message))
                if field == "name":
                    # pydantic names the later of two equal names; the user may be typing in
                    # the earlier one, so mark every row that carries the name.
                    name = self._rows[index].name.value
                    for other, row in enumerate(self._rows):
                        if other != index and row.name.value == name:
                            per_row[other].append((field, message))
        for row, row_problems in zip(self._rows, per_row, strict=True):
            row.show(row_problems)
        if not problems:
            self._set_config(candidate)
        self._refresh_outputs(force)
        lines = [f"{loc}: {msg}" if loc else msg for loc, msg in problems]
        lines += list(self._question_problems.values())
        self.set_trait("error", "\n".join(lines))
        self._show_status(problems)

    def _show_status(self, problems: list[tuple[str, str]]) -> None:
        if self.error:
            count = len(problems) + len(self._question_problems)
            head = f"✗ {count} problem{'s' if count > 1 else ''}; the outputs show the last valid"
            head += " config:" if problems else " settings:"
            self._status.value = message_html(f"{head}\n{self.error}", ERROR_COLOR)
        else:
            notes = sum(bool(r.notes) for r in self._rows)
            text = f"✓ valid: {len(self._rows)} tables"
            if notes:
                text += f" ({notes} with warnings, see their rows)"
            self._status.value = message_html(text, OK_COLOR)

    # ------------------------------------------------------------------ outputs

    def _refresh_outputs(self, force: bool) -> None:
        """Recompute what depends on what changed: memory on config/question, fit on GPUs."""
        from embviz.errors import ArgumentError
        from embviz.memory import gpu_fit, memory_table

        self._question_problems = {}
        question = (self._optimizer_state.value, self._mode.value, self._adagrad.value)
        memory_key = (self.config, *question)
        if force or memory_key != self._memory_key:
            try:
                frame = memory_table(
                    self.config,
                    optimizer_state=question[0],
                    mode=question[1],
                    adagrad=question[2],
                )
            except ArgumentError as exc:
                self._question_problems[exc.argument] = str(exc)
            else:
                self._memory_key = memory_key
                # An lr edit leaves every byte alone: keep the frame, skip the redraws.
                if force or self._memory is None or not frame.equals(self._memory):
                    self._memory = frame
                    self._memory_serial += 1
                    self._show_memory_table()
        try:
            # Cheap (a sum over the tables); the HTML only travels when its text changes.
            self._fit = gpu_fit(self.memory, self._gpus.value, self._hbm.value)
        except ArgumentError as exc:
            self._question_problems[exc.argument] = str(exc)
        self._show_fit()
        self._schedule_draws(force)
        for name, control in self.settings.items():
            mark_invalid(control, self._question_problems.get(name, ""))
        self._show_placement_state()

    def _schedule_draws(self, force: bool) -> None:
        """Redraw the visible figure now, or, inside a running kernel, once typing pauses.

        In a kernel, the figure is redrawn `figure_delay_s` after the last edit (each new edit
        restarts the wait): the table, total and fit follow every keystroke, while the figure,
        which takes far longer to draw, is drawn once per burst instead of once per key.
        Without a running event loop (scripts, tests) it is redrawn at once. Figures in closed
        tabs are redrawn when their tab opens.
        """
        self._cancel_pending_draw()
        loop = _running_loop()
        if force:
            self._draw("memory", True)
            self._draw("dtype", True)
        elif loop is None or self._figure_delay_s <= 0:
            self._draw_visible()
        else:
            self._pending_draw = loop.call_later(
                self._figure_delay_s, self._guard(self._draw_visible)
            )

    def _cancel_pending_draw(self) -> None:
        if self._pending_draw is not None:
            self._pending_draw.cancel()
            self._pending_draw = None

    def _draw_visible(self) -> None:
        self._pending_draw = None
        visible = {0: "memory", 1: "dtype"}.get(self._tabs.selected_index)
        if visible is not None:
            self._draw(visible, False)

    def _draw(self, which: str, force: bool) -> None:
        """Redraw one figure from the current frame, when what it shows changed."""
        from embviz.plots.memory import plot_dtype_savings, plot_memory

        frame = self.memory
        if which == "memory":
            budget = self._fit.hbm_bytes if self._fit is not None else None
            key: tuple[Any, ...] = (self._memory_serial, budget)
            view = self._memory_view
        else:
            key = (self._memory_serial,)
            view = self._dtype_view
        if not force and self._drawn.get(which) == key:
            return
        self._drawn[which] = key
        # The plot functions clear the Axes and draw again on it: the Figure stays the same.
        if which == "memory":
            plot_memory(
                frame,
                ax=view.ax,
                budget_bytes=budget,
                sort=True,
                max_tables=self._max_figure_tables,
            )
        else:
            plot_dtype_savings(frame, ax=view.ax, max_tables=self._max_figure_tables)
        view.refresh(_layout_key(view.ax))

    def _show_fit(self) -> None:
        fit = self._fit
        if fit is None or self._question_problems.keys() & {"gpus", "hbm_gib"}:
            self._fit_html.value = message_html("fit: fix GPUs / GiB per GPU", ERROR_COLOR)
            return
        color = OK_COLOR if fit.fits else ERROR_COLOR
        mark = "✓" if fit.fits else "✗"
        self._fit_html.value = (
            f'<span data-fits="{str(fit.fits).lower()}" data-min-gpus="{fit.min_gpus}" '
            f'style="color:{color}">{mark} {html.escape(fit.message)}</span>'
        )

    def _show_memory_table(self) -> None:
        from embviz.memory import human_bytes, totals

        frame = self.memory
        sums = totals(frame)
        self._total.value = (
            f'<b>Total</b> <span class="embviz-total-bytes" data-bytes="{sums["total_bytes"]}">'
            f"{human_bytes(sums['total_bytes'])} ({format_count(sums['total_bytes'])} bytes)"
            f"</span> &middot; weights {human_bytes(sums['weight_bytes'])} &middot; "
            f"optimizer state {human_bytes(sums['optimizer_bytes'])}"
        )
        headers = "".join(
            f"<th>{h}</th>"
            for h in (
                "table",
                "rows",
                "dim",
                "dtype",
                "optimizer",
                *_BYTE_HEADERS.values(),
                "log",
            )
        )
        if len(self._row_html) > _ROW_CACHE_LIMIT:
            self._row_html.clear()
        body = []
        for record in frame.itertuples():
            html_row = self._row_html.get(record)
            if html_row is None:
                html_row = self._row_html[record] = _memory_row_html(record, self._note_numbers)
            body.append(html_row)
        # Notes as numbered footnotes: a handful of distinct texts, numbered once per editor so
        # the cached rows keep their numbers.
        present = set(frame["note"]) | set(frame["planner_note"])
        footnotes = "".join(
            f"<li value={number}>{html.escape(note)}</li>"
            for note, number in self._note_numbers.items()
            if note in present
        )
        total_cells = "".join(
            f'<td title="{format_count(sums[c])} bytes">{human_bytes(sums[c])}</td>'
            for c in _BYTE_HEADERS
        )
        body.append(
            f'<tr class="embviz-total-row"><td>total ({len(frame)} tables)</td>'
            f"<td></td><td></td><td></td><td></td>{total_cells}<td></td></tr>"
        )
        self._table_html.value = (
            f'<div style="max-height:360px; overflow:auto"><table><thead><tr>{headers}</tr>'
            f"</thead><tbody>{''.join(body)}</tbody></table></div>"
            + (f'<ol class="embviz-notes">{footnotes}</ol>' if footnotes else "")
        )

    def _show_placement_state(self) -> None:
        if self._placement is None:
            return
        current = self._plan_key()
        if current == self._placement_key:
            tables, gpus, hbm_gib = len(self.config.tables), *current[1:3]
            self._placement_status.value = message_html(
                f"torchrec's placement of {tables} tables on {gpus} x {hbm_gib:g} GiB "
                f"({current[3]}, adagrad {current[4]})",
                OK_COLOR,
                "embviz-plan-ok",
            )
        else:
            self._placement_status.value = message_html(
                "the placement below is for an earlier config or question: press Plan again",
                WARN_COLOR,
                "embviz-plan-stale",
            )


def _running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running this callback (a Jupyter kernel's), or None (scripts, tests)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _layout_key(ax: Any) -> tuple[Any, ...]:
    """What the figure's margins depend on: the set of table labels and the legend entries.

    The title's text changes with every edit but not its height, so it is left out; so is the
    labels' order (the bars are sorted by size).
    """
    return (
        tuple(sorted(t.get_text() for t in ax.get_yticklabels())),
        tuple(ax.get_legend_handles_labels()[1]),
    )


def _placement_html(placement: Any) -> str:
    """Per-rank and per-table tables of a `Placement` (human sizes, exact tooltips)."""
    from embviz.memory import human_bytes

    def size(n: Any) -> str:
        return f'<td title="{format_count(int(n))} bytes">{human_bytes(int(n))}</td>'

    ranks = "".join(
        f"<tr><td>{int(r.rank)}</td>{size(r.hbm_bytes)}{size(r.table_bytes)}"
        f"<td>{int(r.num_shards)}</td>"
        f'<td style="text-align:left">{html.escape(", ".join(r.tables))}</td></tr>'
        for r in placement.ranks.itertuples(index=False)
    )
    tables = "".join(
        f"<tr><td>{html.escape(t.table)}</td><td>{html.escape(t.sharding_type)}</td>"
        f"<td>{html.escape(t.compute_kernel)}</td>"
        f"<td>{html.escape(', '.join(str(int(r)) for r in t.ranks))}</td>"
        f"{size(t.table_bytes)}{size(t.hbm_bytes)}</tr>"
        for t in placement.tables.itertuples(index=False)
    )
    return (
        "<table><thead><tr><th>rank</th><th>planner HBM</th><th>table bytes</th>"
        f"<th>shards</th><th>tables</th></tr></thead><tbody>{ranks}</tbody></table>"
        '<div style="max-height:300px; overflow:auto"><table><thead><tr><th>table</th>'
        "<th>sharding</th><th>kernel</th><th>ranks</th><th>table bytes</th>"
        f"<th>planner HBM</th></tr></thead><tbody>{tables}</tbody></table></div>"
    )


def _memory_row_html(record: Any, note_numbers: dict[str, int]) -> str:
    """One ``<tr>`` of the memory table, from a `memory_table` row (exact bytes in tooltips).

    ``note_numbers`` maps a note's text to its footnote number; new notes are added to it.
    """
    from embviz.memory import human_bytes

    values = record._asdict()
    marks = []
    for note in (values["note"], values["planner_note"]):
        if note:
            number = note_numbers.setdefault(note, len(note_numbers) + 1)
            marks.append(f'<sup title="{html.escape(note)}">{number}</sup>')
    cells = [
        f"<td>{html.escape(str(values['Index']))}{''.join(marks)}</td>",
        f"<td>{format_count(values['num_embeddings'])}</td>",
        f"<td>{values['embedding_dim']}</td>",
        f"<td>{values['data_type']}</td>",
        f"<td>{html.escape(values['optimizer_kernel'])}</td>",
    ]
    for column in _BYTE_HEADERS:
        n = values[column]
        klass = ""
        title = f"{format_count(n)} bytes"
        if column == "planner_bytes" and values["planner_note"]:
            klass = ' class="embviz-differs"'
            title += f": {values['planner_note']}"
        cells.append(f'<td{klass} title="{html.escape(title)}">{human_bytes(n)}</td>')
    cells.append(f"<td>{'●' if values['logged'] else ''}</td>")
    return f"<tr>{''.join(cells)}</tr>"
