"""`CollectionEditor`: edit a config's tables and see their memory, GPU fit and placement live.

Wiring only: rows and validation live in `editor_model` (bytes from `embviz.memory`), what a
row shows in `editor_rows`, search/sort/filters in `editor_find`, the figures in
`editor_tabs` (drawings from `embviz.plots.memory`), and every row is drawn by one
`TableGrid` widget, which sends typed text back as data. Python is the one validator: a problem
is marked at its cell and the outputs keep the last valid config until the input is valid again.
"""

from __future__ import annotations

import html
import os
import traceback
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import traitlets

from embviz.config import (
    DataType,
    EmbeddingBagConfig,
    LargeEmbeddingsConfig,
    Mode,
    load_config,
)
from embviz.errors import ArgumentError, EmbvizError
from embviz.widgets._common import (
    ERROR_COLOR,
    OK_COLOR,
    WARN_COLOR,
    format_count,
    guarded,
    mark_invalid,
    message_html,
)
from embviz.widgets.editor_find import FindMixin, FindState, count_of
from embviz.widgets.editor_io import IOMixin
from embviz.widgets.editor_model import FIELDS, EditorRows, Row, field_of
from embviz.widgets.editor_rows import (
    BYTE_COLUMNS,
    COLUMNS,
    CellControl,
    RowAction,
    RowMessage,
    row_data,
)
from embviz.widgets.editor_tabs import (
    DTYPE_FIGSIZE,
    MEMORY_FIGSIZE,
    PLACEMENT_FIGSIZE,
    FigureTabs,
    placement_html,
)
from embviz.widgets.table_grid import TableGrid

if TYPE_CHECKING:
    import pandas as pd

    from embviz.memory import GpuFit

__all__ = ["DTYPE_FIGSIZE", "MEMORY_FIGSIZE", "PLACEMENT_FIGSIZE", "CollectionEditor"]

ROW_FIELDS = FIELDS
_STATUS_LINES = 12


class CollectionEditor(FindMixin, IOMixin, widgets.VBox):
    """Edit the tables of a config and see, as you type, what they take and where they go.

    One grid row per table (name, rows, dim, dtype, optimizer, lr, log, its bytes), drawn in
    the browser with scrolling, so thousands of tables stay quick; search, sort, filters and
    bulk edits to find and change rows; YAML load and export; question controls
    (optimizer-state mode, `Mode`, GPUs, HBM per GPU); live outputs: the total, the GPU fit,
    memory per table, dtype savings, and torchrec's placement on request.

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
        In a running kernel, redraw the figure this long after the last edit (0: after every
        edit). The grid, total and fit always follow every edit.
    max_figure_tables : int
        Bars per figure: the largest tables, the rest summed into one "others" bar.

    Attributes
    ----------
    config : LargeEmbeddingsConfig
        The last valid config (a traitlets trait: observe it, or set it to load another).
    config_version : int
        Increases by one each time the valid config changes (observable).
    error : str
        Every current problem, one per line; ``""`` when the input is valid (observable).
    grid : TableGrid
        The rows as one widget.

    Examples
    --------
    >>> editor = embviz.CollectionEditor(embviz.load_config(embviz.example("ranker")))
    >>> editor.controls("user_id")["num_embeddings"].value = "50,000,000"
    >>> editor.memory.loc["user_id", "total_bytes"]
    >>> editor.search("user"); editor.sort_by("total_bytes")
    >>> editor.bulk_set(editor.shown, "data_type", "fp16")
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
        self._exceptions = widgets.Output(layout=widgets.Layout(display="none"))
        self._exceptions.add_class("embviz-exceptions")
        self._guard = guarded(self._exceptions, self._on_unexpected)
        self._last_exception = ""
        self._unexpected: tuple[int, str, str] | None = None
        self._question_problems: dict[str, str] = {}
        self._placement: Any = None
        self._placement_key: tuple[Any, ...] | None = None
        self._fit: GpuFit | None = None
        self._serial = 0
        self._find = FindState()
        self._byte_values: dict[int, dict[str, int]] = {}
        self._build_question(gpus, hbm_gib, optimizer_state, mode, adagrad)
        self._model = EditorRows(cfg, self._question())  # an invalid question raises here
        self._frame = self._model.memory
        self.config = cfg  # before the observer that loads assigned configs is attached
        self._build_io(key)
        self._build_find()
        self.grid = TableGrid(COLUMNS)
        self.grid.add_class("embviz-rows")
        self.grid.on("edit", self._guard(self._on_grid_edit))
        self.grid.on("sort", self._guard(lambda m: self.sort_by(str(m.get("by")), toggle=True)))
        self.grid.on("action", self._guard(self._on_grid_action))
        self.grid.observe(self._guard(lambda _: self._show_selection()), names="selected")
        self._total = widgets.HTML(layout=widgets.Layout(margin="0 24px 0 0"))
        self._total.add_class("embviz-total")
        self._fit_html = widgets.HTML()
        self._fit_html.add_class("embviz-fit")
        self._status = widgets.HTML()
        self._status.add_class("embviz-status")
        self._figures = FigureTabs(
            self._figure_source, self._guard, interactive_figures, max_figure_tables, figure_delay_s
        )
        self._figures.plan_button.on_click(self._guard(lambda _: self.plan_placement()))
        # The serving tab: a ServingPanel that follows this editor's config, made when first
        # opened (nothing is computed for it before).
        self._serving_box = widgets.VBox()
        self._serving_box.add_class("embviz-serving-tab")
        tabs = self._figures.tabs
        titles = tuple(tabs.titles)
        tabs.children = (*tabs.children, self._serving_box)
        tabs.titles = (*titles, "serving")
        tabs.observe(self._guard(lambda _: self._open_serving()), names="selected_index")
        self.children = [
            self._load_bar,
            self._question_bar,
            self._status,
            self._find_bar,
            self._bulk_bar,
            self.grid,
            widgets.HBox([self._add_button, self._export_button, self._download]),
            self._yaml,
            widgets.HBox([self._total, self._fit_html]),
            self._figures.tabs,
            self._exceptions,
        ]
        self._refresh_all()
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
            description="mode",
            options=[m.value for m in Mode],
            value=Mode(mode).value,
            layout=widgets.Layout(width="190px"),
        )
        self._adagrad = widgets.Dropdown(
            description="adagrad",
            options=[("exact", "exact"), ("row-wise what-if", "rowwise")],
            value=adagrad,
            layout=widgets.Layout(width="210px"),
        )
        self._gpus = widgets.IntText(
            description="GPUs", value=gpus, continuous_update=True, layout={"width": "130px"}
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

    # ------------------------------------------------------------------ public API

    @property
    def memory(self) -> pd.DataFrame:
        """`embviz.memory_table` of the last valid config and question settings."""
        return self._frame

    @property
    def fit(self) -> GpuFit | None:
        """`embviz.gpu_fit` for the current GPUs and HBM (None while those are invalid)."""
        return self._fit

    @property
    def usable_bytes(self) -> int | None:
        """One GPU's memory the planner may fill (HBM less its reservation); the budget."""
        from embviz.plots.memory import usable_bytes

        return usable_bytes(self._fit.hbm_bytes) if self._fit is not None else None

    @property
    def placement(self) -> Any:
        """The last `embviz.placement.Placement` computed with `plan_placement` (None before)."""
        return self._placement

    @property
    def figures(self) -> dict[str, Any]:
        """The matplotlib Figures ``"memory"``, ``"dtype"``, ``"placement"``, brought up to date.

        Made once and updated in place (an edit redraws only the figure whose tab is open).
        """
        return self._figures.figures

    @property
    def figure_widgets(self) -> dict[str, widgets.DOMWidget]:
        """The widgets showing `figures`: ipympl canvases, or Image widgets (static PNG)."""
        f = self._figures
        return {
            "memory": f.memory_view.widget,
            "dtype": f.dtype_view.widget,
            "placement": f.placement_view.widget,
        }

    @property
    def settings(self) -> dict[str, widgets.ValueWidget]:
        """The question's controls.

        ``optimizer_state``, ``mode``, ``adagrad`` (Dropdown), ``gpus`` (IntText), ``hbm_gib``
        (FloatText).
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
        """Editor-wide buttons.

        ``add``, ``export``, ``load``, ``plan``, ``select_shown``, ``select_none``,
        ``bulk_dtype``, ``bulk_optimizer``, ``bulk_scale``.
        """
        return {
            "add": self._add_button,
            "export": self._export_button,
            "load": self._load_button,
            "plan": self._figures.plan_button,
            "select_shown": self._select_shown,
            "select_none": self._select_none,
            "bulk_dtype": self._bulk_buttons["data_type"],
            "bulk_optimizer": self._bulk_buttons["optimizer"],
            "bulk_scale": self._bulk_buttons["scale"],
        }

    @property
    def outputs(self) -> dict[str, widgets.Widget]:
        """The display widgets, for tests and custom layouts.

        ``status``, ``total``, ``fit``, ``placement`` (HTML), ``exceptions`` (the Output of
        callback tracebacks), ``tabs`` (the figures: memory, fp32 vs fp16, placement; then
        the serving tab, `serving`).
        """
        return {
            "status": self._status,
            "total": self._total,
            "fit": self._fit_html,
            "placement": self._figures.placement_status,
            "exceptions": self._exceptions,
            "tabs": self._figures.tabs,
        }

    @property
    def serving(self) -> Any:
        """The serving tab's `embviz.ServingPanel` (made on first use; follows the config)."""
        self._open_serving(force=True)
        return self._serving_box.children[0]

    def _open_serving(self, force: bool = False) -> None:
        if self._serving_box.children:
            return
        tabs = self._figures.tabs
        if force or tabs.children[tabs.selected_index or 0] is self._serving_box:
            from embviz.widgets.serving_panel import ServingPanel

            self._serving_box.children = (ServingPanel(self, serving_dtype="int8"),)

    @property
    def last_exception(self) -> str:
        """Traceback text of the last unexpected error in a callback (``""`` if none)."""
        return self._last_exception

    def controls(self, table: str) -> dict[str, CellControl]:
        """The cells of ``table``'s row (by the name currently typed).

        Keys: ``name``, ``num_embeddings`` (text, thousands separators welcome),
        ``embedding_dim``, ``data_type``, ``optimizer``, ``lr``, ``log``. Setting ``.value``
        is typing into the cell: `config`, `memory` and `error` are updated before it returns.
        """
        row = self._row(table)
        return {name: CellControl(self, row, name) for name in FIELDS}

    def row_message(self, table: str) -> RowMessage:
        """The row's message (``.value``): its problems, then its warnings; "" when fine."""
        return RowMessage(self, self._row(table))

    def row_buttons(self, table: str) -> dict[str, RowAction]:
        """The row's buttons (``.click()``): ``times10``, ``divide10``, ``duplicate``, ``remove``.

        The same actions as the buttons drawn in the row.
        """
        row = self._row(table)
        return {
            "times10": RowAction(lambda: self._step_rows(row, 10)),
            "divide10": RowAction(lambda: self._step_rows(row, 0.1)),
            "duplicate": RowAction(lambda: self.duplicate_table(row.texts["name"])),
            "remove": RowAction(lambda: self._remove_row(row)),
        }

    def add_table(self, table: EmbeddingBagConfig | None = None) -> dict[str, CellControl]:
        """Append a table (a fresh 1,000 x 16 fp32 SGD one by default); returns its cells."""
        if table is None:
            table = self._default_table()
        row = self._model.new_row(table)
        row.dirty = True
        self._structural(lambda: self._model.insert(len(self._model.rows), row))
        return self.controls(row.texts["name"])

    def duplicate_table(self, table: str) -> dict[str, CellControl]:
        """Insert a copy of ``table``'s row (all its fields, as typed) below it."""
        source = self._row(table)
        copy = self._model.new_row(source.model or self._default_table())
        copy.texts = {**source.texts, "log": False}
        copy.hidden = dict(source.hidden)
        copy.schedule = dict(source.schedule)
        copy.settings = {k: dict(v) for k, v in source.settings.items()}
        copy.texts["name"] = self._model.free_name(f"{source.texts['name']}_copy")
        copy.dirty = True
        index = self._model.rows.index(source) + 1
        self._structural(lambda: self._model.insert(index, copy))
        return self.controls(copy.texts["name"])

    def remove_table(self, table: str) -> None:
        """Remove ``table``'s row (the config keeps at least one table to be valid)."""
        self._remove_row(self._row(table))

    def plan_placement(self) -> Any:
        """Run torchrec's planner (`embviz.placement.plan`) on the last valid config; draw it.

        Returns the Placement, or None when the planner refused (its message is shown).
        torchrec is imported here, never before.
        """
        from embviz.placement import plan
        from embviz.plots.memory import plot_placement

        f = self._figures
        if "gpus" in self._question_problems or "hbm_gib" in self._question_problems:
            f.placement_status.value = message_html(
                "fix GPUs / GiB per GPU first", ERROR_COLOR, "embviz-plan-error"
            )
            return None
        f.placement_status.value = message_html("planning with torchrec's planner ...", "")
        key = self._plan_key()
        _, gpus, hbm_gib, mode, adagrad = key
        f.plan_output.clear_output()
        try:
            with f.plan_output:  # the planner's progress bar, when it searches
                placement = plan(
                    self.config, gpus, hbm_gib, mode=mode, adagrad=adagrad, progress=True
                )
        except EmbvizError as exc:  # PlanError (no placement, min GPUs), ArgumentError
            f.placement_status.value = message_html(str(exc), ERROR_COLOR, "embviz-plan-error")
            return None
        self._placement, self._placement_key = placement, key
        view = f.placement_view
        plot_placement(placement, ax=view.ax, hbm_bytes=placement.hbm_bytes)
        view.widget.layout.display = None
        view.refresh()
        f.placement_html.value = placement_html(placement)
        self._show_placement_state()
        return placement

    # ------------------------------------------------------------------ edits

    def _edit(self, row: Row, field: str, value: Any) -> None:
        """What typing ``value`` into a cell does (from the browser or `CellControl`)."""
        if field not in FIELDS:
            raise ArgumentError("field", f"no field {field!r}; one of {', '.join(FIELDS)}")
        try:
            self._model.set_text(row, field, value)
            self._after_edit([row])
        except Exception as exc:  # keep the last valid config and say so at the cell
            self._fail(exc, row, field)

    def _after_edit(self, touched: list[Row]) -> None:
        """Validate, adopt when valid, and update only the rows whose display changed."""
        model = self._model
        before = set(model.cross_rows) | set(model.count_problems)
        if self._unexpected is not None:
            before.add(self._unexpected[0])
        self._unexpected = None
        model.settle()
        adopted = self._sync_config()
        ids = {r.id for r in touched} | before | set(model.cross_rows) | set(model.count_problems)
        if adopted:
            recounted = model.recounted
            if recounted is None:
                self._refresh_all()
                return
            ids |= {model.counted_ids[i] for i in recounted}
            self._update_bytes(recounted)
        self._patch(ids)
        self._refresh_outputs(adopted)

    def _fail(self, exc: BaseException, row: Row, field: str) -> None:
        self._unexpected = (
            row.id,
            field,
            f"could not apply this edit ({type(exc).__name__}: {exc}); the outputs keep the "
            "last valid config",
        )
        self._on_unexpected(exc)
        with _suppress_all():
            self._sync_config()
            self._update_bytes(None)
        with _suppress_all():
            self._patch({row.id})
        with _suppress_all():
            self._refresh_outputs(True)
        self._show_error()

    def _sync_config(self) -> bool:
        """Make `config` and `memory` the model's valid pair; True when they changed."""
        model = self._model
        if model.config is self.config and model.memory is self._frame:
            return False
        if model.memory is not self._frame:
            self._serial += 1
        self._frame = model.memory
        self._set_config(model.config)
        return True

    def _set_config(self, cfg: LargeEmbeddingsConfig) -> None:
        if cfg is self.config:
            return
        self._internal = True
        try:
            self.config = cfg
        finally:
            self._internal = False
        self.set_trait("config_version", self.config_version + 1)

    def _structural(self, change) -> None:
        """Rows added or removed: apply ``change``, validate, and send every row again."""
        change()
        self._unexpected = None
        self._model.settle()
        self._sync_config()
        self._refresh_all()

    def _remove_row(self, row: Row) -> None:
        self._structural(lambda: self._model.remove(row))

    def _step_rows(self, row: Row, factor: float) -> None:
        rows = count_of(row)
        if rows is None:
            return  # the row already says what is wrong with the text
        stepped = rows * 10 if factor > 1 else max(1, rows // 10)
        self._edit(row, "num_embeddings", format_count(stepped))

    # ------------------------------------------------------------------ display

    def _row(self, table: str) -> Row:
        row = self._model.find(table)
        if row is None:
            from embviz.memory import UnknownTableError

            raise UnknownTableError([table], [r.texts["name"] for r in self._model.rows])
        return row

    def _row_problems(self, row: Row) -> list[tuple[str, str]]:
        problems = self._model.row_problems(row)
        if self._unexpected is not None and self._unexpected[0] == row.id:
            problems = [*problems, (self._unexpected[1], self._unexpected[2])]
        return problems

    def _cell_error(self, row: Row, field: str) -> str:
        texts = [
            f"{loc}: {msg}" if loc else msg
            for loc, msg in self._row_problems(row)
            if (field_of(loc) or "name") == field
        ]
        return "\n".join(texts)

    def _row_data(self, row: Row) -> dict[str, Any]:
        return row_data(row, self._row_problems(row), self._byte_values.get(row.id))

    def _patch(self, ids: Iterable[int]) -> None:
        by_id = self._model.by_id
        rows = []
        for row_id in ids:
            row = by_id.get(row_id)
            if row is None:
                continue
            data = self._row_data(row)
            if data != self.grid.row(row_id):
                rows.append(data)
        self.grid.patch(rows)

    def _update_bytes(self, positions: list[int] | None) -> None:
        """Bytes per row id from the valid frame: at ``positions``, or all (None)."""
        frame, ids = self._frame, self._model.counted_ids
        columns = list(BYTE_COLUMNS)
        if positions is None:
            values = frame[columns].to_numpy().tolist()
            self._byte_values = {
                i: dict(zip(columns, v, strict=True)) for i, v in zip(ids, values, strict=True)
            }
            return
        for i in positions:
            values = frame[columns].iloc[i].tolist()
            self._byte_values[ids[i]] = {c: int(v) for c, v in zip(columns, values, strict=True)}

    def _refresh_all(self, force: bool = False) -> None:
        """Every row, the view and every output again (after loads and structural changes)."""
        self._sync_config()
        self._update_bytes(None)
        self.grid.set_rows([self._row_data(r) for r in self._model.rows], view=self._view_ids())
        self._show_view()
        self._refresh_outputs(True, force)

    def _refresh_outputs(self, memory_changed: bool, force: bool = False) -> None:
        """Total and fit (cheap sums), the error and status, and the figure (debounced)."""
        from embviz.memory import gpu_fit

        if memory_changed:
            self._show_total()
        self._question_problems.pop("gpus", None)
        self._question_problems.pop("hbm_gib", None)
        try:
            self._fit = gpu_fit(self._frame, self._gpus.value, self._hbm.value)
        except ArgumentError as exc:
            self._fit = None
            self._question_problems[exc.argument] = str(exc)
        self._show_fit()
        for name, control in self.settings.items():
            mark_invalid(control, self._question_problems.get(name, ""))
        self._show_error()
        self._figures.schedule(force)
        self._show_placement_state()

    def _show_error(self) -> None:
        problems = self._model.problems()
        lines = [f"{loc}: {msg}" if loc else msg for loc, msg in problems]
        if self._unexpected is not None:
            row = self._model.by_id.get(self._unexpected[0])
            index = self._model.position.get(self._unexpected[0], "?")
            name = f"tables[{index}].{self._unexpected[1]}" if row is not None else ""
            lines.append(f"{name}: {self._unexpected[2]}")
        lines += list(self._question_problems.values())
        self.set_trait("error", "\n".join(lines))
        if self.error:
            count = len(lines)
            head = f"✗ {count} problem{'s' if count > 1 else ''}; the outputs show the last valid"
            if self._unexpected is not None:
                head = "unexpected error in the editor (traceback below). " + head
            head += " config:" if len(lines) > len(self._question_problems) else " settings:"
            shown = lines[:_STATUS_LINES]
            if len(lines) > _STATUS_LINES:
                shown.append(f"... and {len(lines) - _STATUS_LINES} more")
            self._status.value = message_html("\n".join([head, *shown]), ERROR_COLOR)
        else:
            notes = sum(bool(r.notes) for r in self._model.rows)
            text = f"✓ valid: {len(self._model.rows)} tables"
            if notes:
                text += f" ({notes} with warnings, see their rows)"
            self._status.value = message_html(text, OK_COLOR)

    def _show_total(self) -> None:
        from embviz.memory import human_bytes, totals

        sums = totals(self._frame)
        self._total.value = (
            f'<b>Total</b> <span class="embviz-total-bytes" data-bytes="{sums["total_bytes"]}">'
            f"{human_bytes(sums['total_bytes'])} ({format_count(sums['total_bytes'])} bytes)"
            f"</span> in {len(self._frame)} tables &middot; weights "
            f"{human_bytes(sums['weight_bytes'])} &middot; optimizer state "
            f"{human_bytes(sums['optimizer_bytes'])}"
        )

    def _show_fit(self) -> None:
        fit = self._fit
        if fit is None:
            self._fit_html.value = message_html("fit: fix GPUs / GiB per GPU", ERROR_COLOR)
            return
        color = OK_COLOR if fit.fits else ERROR_COLOR
        mark = "✓" if fit.fits else "✗"
        self._fit_html.value = (
            f'<span data-fits="{str(fit.fits).lower()}" data-min-gpus="{fit.min_gpus}" '
            f'style="color:{color}">{mark} {html.escape(fit.message)}</span>'
        )

    def _figure_source(self) -> tuple[Any, int, int | None]:
        return self._frame, self._serial, self._fit.hbm_bytes if self._fit else None

    def _show_placement_state(self) -> None:
        if self._placement is None:
            return
        current = self._plan_key()
        status = self._figures.placement_status
        if current == self._placement_key:
            tables, gpus, hbm_gib = len(self.config.tables), *current[1:3]
            status.value = message_html(
                f"torchrec's placement of {tables} tables on {gpus} x {hbm_gib:g} GiB "
                f"({current[3]}, adagrad {current[4]})",
                OK_COLOR,
                "embviz-plan-ok",
            )
        else:
            status.value = message_html(
                "the placement below is for an earlier config or question: press Plan again",
                WARN_COLOR,
                "embviz-plan-stale",
            )

    def _plan_key(self) -> tuple[Any, ...]:
        question = (self._gpus.value, self._hbm.value, self._mode.value, self._adagrad.value)
        return (self.config, *question)

    def _question(self) -> dict[str, Any]:
        return {
            "optimizer_state": self._optimizer_state.value,
            "mode": self._mode.value,
            "adagrad": self._adagrad.value,
        }

    def _default_table(self) -> EmbeddingBagConfig:
        return EmbeddingBagConfig(
            name=self._model.free_name("table") if hasattr(self, "_model") else "table",
            num_embeddings=1000,
            embedding_dim=16,
            data_type=DataType.FP32,
            optimizer={"sgd": {"lr": 0.01}},
        )

    # ------------------------------------------------------------------ callbacks

    def _on_grid_edit(self, message: dict[str, Any]) -> None:
        row = self._model.by_id.get(int(message.get("row", -1)))
        if row is not None:
            self._edit(row, str(message.get("field")), message.get("text"))

    def _on_grid_action(self, message: dict[str, Any]) -> None:
        row = self._model.by_id.get(int(message.get("row", -1)))
        action = message.get("action")
        if row is None:
            return
        if action == "times10":
            self._step_rows(row, 10)
        elif action == "divide10":
            self._step_rows(row, 0.1)
        elif action == "duplicate":
            self.duplicate_table(row.texts["name"])
        elif action == "remove":
            self._remove_row(row)

    def _on_question(self, change: dict[str, Any]) -> None:
        for name in ("optimizer_state", "mode", "adagrad"):
            self._question_problems.pop(name, None)
        question = self._question()
        if question != self._model.question:
            try:
                self._model.set_question(question)
            except ArgumentError as exc:
                self._question_problems[exc.argument] = str(exc)
            else:
                self._sync_config()
                self._update_bytes(None)
                self._patch(self._model.by_id)
                self._refresh_outputs(True)
                return
        self._refresh_outputs(False)

    def _on_config_set(self, change: dict[str, Any]) -> None:
        if not self._internal:  # someone assigned editor.config: show that config
            self._model.load(change["new"])
            self._refresh_all()
            self.set_trait("config_version", self.config_version + 1)

    def _on_unexpected(self, exc: BaseException) -> None:
        self._last_exception = "".join(traceback.format_exception(exc))
        self._exceptions.outputs = ()
        self._exceptions.append_stderr(self._last_exception)
        self._exceptions.layout.display = None
        self._status.value = message_html(
            f"unexpected error in the editor (traceback below): {exc!r}", ERROR_COLOR
        )


class _suppress_all:
    """``with _suppress_all():`` while reporting a failure, a second one is not raised."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> bool:
        return True
