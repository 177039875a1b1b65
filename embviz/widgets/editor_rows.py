"""What the editor's grid shows for each row, and the headless handles on a row's cells.

`row_data` turns a `Row` (its typed fields, its problems) and its bytes in the last valid config
into the plain data `TableGrid` draws. `CellControl` is what `CollectionEditor.controls` hands
out: an object whose ``.value`` reads what the cell shows and, when set, does exactly what typing
into the cell does in the browser (the same editor method handles both).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from embviz.config import DataType
from embviz.widgets.editor_model import FIELDS, OPTIMIZERS, field_of

if TYPE_CHECKING:
    from embviz.widgets.editor_model import Row

__all__ = ["BYTE_COLUMNS", "COLUMNS", "CellControl", "RowAction", "RowMessage", "row_data"]

# Byte columns of memory_table the grid shows, with their headers.
BYTE_COLUMNS = {
    "weight_bytes": "weights",
    "optimizer_bytes": "optimizer state",
    "total_bytes": "total",
    "planner_bytes": "planner estimate",
}
ROW_ACTIONS = (
    ("times10", "×10", "10 times the rows"),
    ("divide10", "÷10", "a tenth of the rows"),
    ("duplicate", "copy", "duplicate this table"),
    ("remove", "✕", "remove this table"),
)
COLUMNS: list[dict[str, Any]] = [
    {"key": "selected", "label": "", "kind": "selection", "width": "26px"},
    {"key": "name", "label": "table", "kind": "text", "width": "170px", "sortable": True},
    {
        "key": "num_embeddings",
        "label": "rows",
        "kind": "text",
        "width": "118px",
        "sortable": True,
        "title": "num_embeddings: thousands separators welcome",
    },
    {"key": "embedding_dim", "label": "dim", "kind": "text", "width": "52px", "sortable": True},
    {
        "key": "data_type",
        "label": "dtype",
        "kind": "select",
        "options": [d.value for d in DataType],
        "width": "66px",
    },
    {
        "key": "optimizer",
        "label": "optimizer",
        "kind": "select",
        "options": list(OPTIMIZERS),
        "width": "86px",
    },
    {"key": "lr", "label": "lr", "kind": "text", "width": "70px"},
    {"key": "log", "label": "log", "kind": "check", "width": "36px", "title": "tables_to_log"},
    *(
        {"key": key, "label": label, "kind": "bytes", "width": "84px", "sortable": True}
        for key, label in BYTE_COLUMNS.items()
    ),
    {"key": "actions", "label": "", "kind": "actions", "width": "164px", "actions": ROW_ACTIONS},
    {"key": "message", "label": "", "kind": "message", "width": "480px"},
]


def row_data(
    row: Row,
    problems: list[tuple[str, str]],
    byte_values: dict[str, int] | None,
) -> dict[str, Any]:
    """The grid's data for one row.

    ``problems`` are table-relative (location, message); each is marked at the field it names
    and listed in the row's message, after which come the row's warnings. ``byte_values`` are
    the row's bytes in the last valid config (None for a row that is not in it yet).
    """
    from embviz.memory import human_bytes

    errors: dict[str, str] = {}
    lines = []
    for location, message in problems:
        text = f"{location}: {message}" if location else message
        name = field_of(location) or "name"
        errors[name] = f"{errors[name]}\n{text}" if name in errors else text
        lines.append(text)
    lines += row.notes
    values = {name: row.texts[name] for name in FIELDS}
    values["log"] = bool(values["log"])
    for name in ("num_embeddings", "embedding_dim", "lr"):
        if not isinstance(values[name], str):
            values[name] = str(values[name])
    byte_cells = {}
    if byte_values is not None:
        byte_cells = {k: [str(v), human_bytes(v)] for k, v in byte_values.items()}
    return {
        "id": row.id,
        "values": values,
        "errors": errors,
        "message": "\n".join(lines),
        "bytes": byte_cells,
    }


class CellControl:
    """One cell of a row: ``.value`` is what it shows; setting it is typing into it.

    The setter runs the editor's edit synchronously: when it returns, `CollectionEditor.config`,
    `~CollectionEditor.memory` and `~CollectionEditor.error` are up to date.
    """

    def __init__(self, editor: Any, row: Row, field: str):
        self._editor = editor
        self._row = row
        self.field = field

    @property
    def value(self) -> Any:
        """What the cell shows: the text (or tick) as typed."""
        return self._row.texts[self.field]

    @value.setter
    def value(self, text: Any) -> None:
        self._editor._edit(self._row, self.field, text)

    @property
    def error(self) -> str:
        """The problems marked at this cell ("" when it is fine)."""
        return self._editor._cell_error(self._row, self.field)

    def __repr__(self) -> str:
        return f"CellControl({self._row.texts['name']!r}, {self.field!r}, value={self.value!r})"


class RowMessage:
    """A row's message: its problems, then its warnings (``.value``, "" when fine)."""

    def __init__(self, editor: Any, row: Row):
        self._editor = editor
        self._row = row

    @property
    def value(self) -> str:
        """The message text."""
        return self._editor.grid.row(self._row.id)["message"]


class RowAction:
    """A row's button (``times10``, ``divide10``, ``duplicate``, ``remove``): `click` it."""

    def __init__(self, run: Callable[[], Any]):
        self._run = run

    def click(self) -> Any:
        """Do what the button does."""
        return self._run()
