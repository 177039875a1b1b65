"""Finding and changing rows among thousands: search, sort, filters, selection, bulk edits.

`view_ids` is a pure function: from the rows, a `FindState` (the search text, the sort, the
filters) and the bytes of the last valid config, the row ids to show, in order. Rows not in the
last valid config (new, invalid) sort last and pass no byte filter. `FindMixin` is the part of
`CollectionEditor` that wires those to the find bar, the grid's view and selection, and bulk
edits (which go through the editor's own edit path, validated as one edit).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from embviz.config import DataType
from embviz.errors import ArgumentError
from embviz.widgets._common import OK_COLOR, format_count, mark_invalid, message_html, parse_count

if TYPE_CHECKING:
    from embviz.widgets.editor_model import Row

__all__ = ["BULK_FIELDS", "SORT_KEYS", "FindMixin", "FindState", "view_ids"]

# Fields `bulk_set` may set on many rows at once.
BULK_FIELDS = ("data_type", "optimizer", "lr", "embedding_dim", "num_embeddings", "log")

# Sort keys and whether they sort ascending by default (names A-Z, sizes largest first).
SORT_KEYS: dict[str, bool] = {
    "config": True,
    "name": True,
    "num_embeddings": False,
    "embedding_dim": False,
    "weight_bytes": False,
    "optimizer_bytes": False,
    "total_bytes": False,
    "planner_bytes": False,
}


@dataclass
class FindState:
    """What the grid shows: rows whose name contains ``search`` (any case), filtered, sorted."""

    search: str = ""
    sort: str = "config"
    ascending: bool = True
    logged: bool | None = None
    over_budget: bool | None = None


def check_sort(column: str) -> str:
    if column not in SORT_KEYS:
        raise ArgumentError("column", f"cannot sort by {column!r}; one of {', '.join(SORT_KEYS)}")
    return column


def _sort_value(row: Row, column: str, byte_values: dict[int, dict[str, int]]) -> Any:
    if column == "name":
        return row.name.lower()
    if column in ("num_embeddings", "embedding_dim"):
        text = row.texts[column]
        return parse_count(text) if isinstance(text, str) else text
    return byte_values.get(row.id, {}).get(column)


def view_ids(
    rows: list[Row],
    state: FindState,
    byte_values: dict[int, dict[str, int]],
    usable_bytes: int | None,
) -> list[int]:
    """Row ids to show, in order.

    Parameters
    ----------
    rows : list of Row
        In config order.
    state : FindState
        Search, sort and filters.
    byte_values : dict
        Row id -> byte column -> bytes, for the rows of the last valid config.
    usable_bytes : int, optional
        One GPU's memory the planner may fill; a row is over budget when its total is larger.
        None (the GPU settings are invalid): the over-budget filter passes nothing.
    """
    needle = state.search.strip().lower()
    chosen = []
    for row in rows:
        if needle and needle not in str(row.texts["name"]).lower():
            continue
        if state.logged is not None and bool(row.texts["log"]) != state.logged:
            continue
        if state.over_budget is not None:
            total = byte_values.get(row.id, {}).get("total_bytes")
            if total is None or usable_bytes is None:
                continue
            if (total > usable_bytes) != state.over_budget:
                continue
        chosen.append(row)
    if state.sort != "config":
        keyed = [(_sort_value(r, state.sort, byte_values), r) for r in chosen]
        known = [item for item in keyed if item[0] is not None]
        unknown = [r for value, r in keyed if value is None]
        known.sort(key=lambda item: item[0], reverse=not state.ascending)
        chosen = [r for _, r in known] + unknown
    elif not state.ascending:
        chosen.reverse()
    return [r.id for r in chosen]


def count_of(row: Row) -> int | None:
    """The row count typed in a row, or None when the text is not an integer."""
    text = row.texts["num_embeddings"]
    if isinstance(text, str):
        return parse_count(text)
    return text if isinstance(text, int) else None


class FindMixin:
    """Search, sort, filters, selection and bulk edits of `CollectionEditor` (see there)."""

    _find: FindState
    grid: Any
    _model: Any

    def _build_find(self) -> None:
        """Search, sort and filters; selection and bulk edits of the selected or shown rows."""
        self._search = widgets.Text(
            placeholder="search table names",
            description="find",
            continuous_update=True,
            layout=widgets.Layout(width="260px"),
        )
        self._search.add_class("embviz-search")
        self._sort = widgets.Dropdown(
            description="sort",
            options=list(SORT_KEYS),
            value="config",
            layout=widgets.Layout(width="210px"),
        )
        self._sort.add_class("embviz-sort")
        self._logged_only = widgets.Checkbox(description="logged only", indent=False)
        self._over_only = widgets.Checkbox(description="over one GPU's usable memory", indent=False)
        self._logged_only.add_class("embviz-filter-logged")
        self._over_only.add_class("embviz-filter-over")
        self._shown_label = widgets.HTML()
        self._shown_label.add_class("embviz-shown")
        self._search.observe(self._guard(lambda c: self.search(c["new"])), names="value")
        self._sort.observe(self._guard(lambda c: self.sort_by(c["new"])), names="value")
        self._logged_only.observe(self._guard(lambda _: self._on_filters()), names="value")
        self._over_only.observe(self._guard(lambda _: self._on_filters()), names="value")
        self._find_bar = widgets.HBox(
            [self._search, self._sort, self._logged_only, self._over_only, self._shown_label]
        )
        self._select_shown = widgets.Button(description="select shown", icon="check-square")
        self._select_none = widgets.Button(description="clear selection", icon="square")
        self._select_shown.add_class("embviz-select-shown")
        self._select_none.add_class("embviz-select-none")
        self._select_shown.on_click(self._guard(lambda _: self.select()))
        self._select_none.on_click(self._guard(lambda _: self.select([])))
        self._bulk_dtype = widgets.Dropdown(
            options=[d.value for d in DataType], layout=widgets.Layout(width="80px")
        )
        self._bulk_optimizer = widgets.Dropdown(
            options=["sgd", "adagrad", "adam"], layout=widgets.Layout(width="96px")
        )
        self._bulk_factor = widgets.Text(value="2", layout=widgets.Layout(width="60px"))
        self._bulk_dtype.add_class("embviz-bulk-dtype-value")
        self._bulk_optimizer.add_class("embviz-bulk-optimizer-value")
        self._bulk_factor.add_class("embviz-bulk-factor")
        self._bulk_buttons = {
            "data_type": widgets.Button(description="set dtype"),
            "optimizer": widgets.Button(description="set optimizer"),
            "scale": widgets.Button(description="scale rows ×"),
        }
        for name, button in self._bulk_buttons.items():
            button.add_class(f"embviz-bulk-{name.replace('_', '-')}")
            button.layout.width = "110px"
        self._bulk_buttons["data_type"].on_click(
            self._guard(lambda _: self.bulk_set(None, "data_type", self._bulk_dtype.value))
        )
        self._bulk_buttons["optimizer"].on_click(
            self._guard(lambda _: self.bulk_set(None, "optimizer", self._bulk_optimizer.value))
        )
        self._bulk_buttons["scale"].on_click(self._guard(lambda _: self._on_scale()))
        self._bulk_message = widgets.HTML()
        self._bulk_message.add_class("embviz-bulk-message")
        self._bulk_bar = widgets.HBox(
            [
                self._select_shown,
                self._select_none,
                self._bulk_buttons["data_type"],
                self._bulk_dtype,
                self._bulk_buttons["optimizer"],
                self._bulk_optimizer,
                self._bulk_buttons["scale"],
                self._bulk_factor,
                self._bulk_message,
            ]
        )

    @property
    def find_controls(self) -> dict[str, widgets.ValueWidget]:
        """The find and bulk-edit controls.

        ``search`` (Text), ``sort`` (Dropdown), ``logged`` and ``over_budget`` (Checkbox), and
        the bulk values ``dtype``, ``optimizer`` (Dropdown) and ``factor`` (Text).
        """
        return {
            "search": self._search,
            "sort": self._sort,
            "logged": self._logged_only,
            "over_budget": self._over_only,
            "dtype": self._bulk_dtype,
            "optimizer": self._bulk_optimizer,
            "factor": self._bulk_factor,
        }

    @property
    def shown(self) -> list[str]:
        """Names of the rows the grid shows (search, filters, sort applied), in order."""
        by_id = self._model.by_id
        return [by_id[i].texts["name"] for i in self.grid.view]

    @property
    def selected(self) -> list[str]:
        """Names of the selected rows, in config order."""
        ids = set(self.grid.selected)
        return [r.texts["name"] for r in self._model.rows if r.id in ids]

    def search(self, text: str) -> list[str]:
        """Show the rows whose name contains ``text`` (any case; "" shows all); returns them."""
        self._find.search = str(text)
        if self._search.value != self._find.search:
            self._search.value = self._find.search  # its observer calls back: same state
        self._show_view()
        return self.shown

    def sort_by(self, column: str, ascending: bool | None = None, *, toggle: bool = False):
        """Sort the shown rows by ``column``; returns the names shown, in order.

        ``column``: ``"config"`` (config order), ``"name"``, ``"num_embeddings"``,
        ``"embedding_dim"``, ``"weight_bytes"``, ``"optimizer_bytes"``, ``"total_bytes"``,
        ``"planner_bytes"``. ``ascending`` defaults to A-Z for names and largest first for
        sizes; ``toggle`` reverses the order when already sorted by ``column`` (header clicks).
        Rows are not moved while typed in: sort again after edits.
        """
        column = check_sort(column)
        if toggle and self._find.sort == column:
            ascending = not self._find.ascending
        self._find.sort = column
        self._find.ascending = SORT_KEYS[column] if ascending is None else bool(ascending)
        if self._sort.value != column:
            self._sort.value = column
        self._show_view()
        return self.shown

    def filter(self, logged: bool | None = None, over_budget: bool | None = None) -> list[str]:
        """Show only logged (or unlogged) rows, and rows over (or within) the budget.

        The budget is one GPU's usable memory (`usable_bytes`). None leaves a filter off.
        Returns the names shown.
        """
        # The check boxes first: their observers set the state, then the exact one is set.
        self._logged_only.value = bool(logged)
        self._over_only.value = bool(over_budget)
        self._find.logged = None if logged is None else bool(logged)
        self._find.over_budget = None if over_budget is None else bool(over_budget)
        self._show_view()
        return self.shown

    def select(self, tables: Iterable[str] | None = None) -> list[str]:
        """Select ``tables`` (names); None selects every shown row, ``[]`` clears."""
        if tables is None:
            ids = list(self.grid.view)
        else:
            ids = [self._row(name).id for name in tables]
        self.grid.selected = ids
        return self.selected

    def bulk_set(self, tables: Iterable[str] | None, field: str, value: Any) -> int:
        """Type ``value`` into ``field`` of many rows at once, validated as one edit.

        ``tables``: names; None means the selected rows, or the shown ones when none is
        selected. ``field``: ``data_type``, ``optimizer``, ``lr``, ``embedding_dim``,
        ``num_embeddings`` or ``log``. Returns the number of rows set.
        """
        if field not in BULK_FIELDS:
            raise ArgumentError("field", f"{field!r} cannot be bulk-set; one of {BULK_FIELDS}")
        rows = self._bulk_rows(tables)
        return self._bulk_apply(rows, lambda _: value, field, f"set {field} = {value}")

    def scale_rows(self, tables: Iterable[str] | None, factor: float) -> int:
        """Multiply the row counts of ``tables`` (as in `bulk_set`) by ``factor`` (at least 1).

        Rows whose count is not a number are left as typed (they show their problem).
        """
        factor = float(factor)
        if not factor > 0:
            raise ArgumentError("factor", f"must be > 0, got {factor}")
        rows = [r for r in self._bulk_rows(tables) if count_of(r) is not None]

        def scaled(row: Row) -> str:
            return format_count(max(1, round(count_of(row) * factor)))  # type: ignore[operator]

        return self._bulk_apply(rows, scaled, "num_embeddings", f"scaled rows by {factor:g}")

    def _bulk_rows(self, tables: Iterable[str] | None) -> list[Row]:
        if tables is not None:
            return [self._row(name) for name in tables]
        ids = set(self.grid.selected) or set(self.grid.view)
        return [r for r in self._model.rows if r.id in ids]

    def _bulk_apply(self, rows: list[Row], value, field: str, what: str) -> int:
        try:
            for row in rows:
                self._model.set_text(row, field, value(row))
            self._after_edit(rows)
        except Exception as exc:  # keep the last valid config and say so at the first row
            if rows:
                self._fail(exc, rows[0], field)
            return 0
        self._bulk_message.value = message_html(f"{what}: {len(rows)} tables", OK_COLOR)
        return len(rows)

    def _on_filters(self) -> None:
        self._find.logged = True if self._logged_only.value else None
        self._find.over_budget = True if self._over_only.value else None
        self._show_view()

    def _on_scale(self) -> None:
        try:
            factor = float(self._bulk_factor.value.replace(",", ""))
        except ValueError:
            factor = float("nan")
        if not factor > 0:
            mark_invalid(self._bulk_factor, "a number > 0")
            return
        mark_invalid(self._bulk_factor, "")
        self.scale_rows(None, factor)

    def _view_ids(self) -> list[int]:
        return view_ids(self._model.rows, self._find, self._byte_values, self.usable_bytes)

    def _show_view(self) -> None:
        self.grid.view = self._view_ids()
        self.grid.sort = [self._find.sort, self._find.ascending]
        self._show_selection()

    def _show_selection(self) -> None:
        self._shown_label.value = (
            f'<span class="embviz-shown-count" data-shown="{len(self.grid.view)}">'
            f"{len(self.grid.view)} of {len(self._model.rows)} shown, "
            f"{len(self.grid.selected)} selected</span>"
        )
