"""`TableGrid`: one widget holding every table row as data, drawn in the browser with scrolling.

An anywidget: the rows travel once as JSON (``rows``), and the browser draws only the rows in
view (virtual scrolling, `table_grid.js`), so 2,000 tables are one widget model instead of tens of
thousands. What the user types comes back as a message ``{"type": "edit", "table": name, "row":
id, "field": field, "text": text}``; Python validates it and sends back the rows that changed
(``{"type": "patch", "rows": [...]}``), each with the problems to mark at its cells. The order
and the subset shown (search, sort, filters) are the ``view`` trait: row ids, in order.

No validation or arithmetic happens here or in the browser: the editor decides what each row
shows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import anywidget
import traitlets

__all__ = ["TableGrid"]

_HERE = Path(__file__).parent


class TableGrid(anywidget.AnyWidget):
    """Rows of editable cells with byte columns, problems marked at their cells.

    Traits (synced with the browser)
    --------------------------------
    columns : list of dict
        ``{"key", "label", "kind"}``: ``kind`` is ``"text"``, ``"select"`` (with
        ``"options"``), ``"check"`` or ``"bytes"`` (read-only, shown as text with the exact
        count as tooltip); ``"sortable"`` marks headers that sort when clicked.
    rows : list of dict
        One per table: ``id``, ``values`` (field -> what the cell shows), ``errors`` (field ->
        message), ``message`` (the row's problems and warnings, one text), ``bytes`` (column ->
        ``[exact, human]``).
    view : list of int
        Row ids shown, in order.
    selected : list of int
        Row ids ticked in the selection column.
    sort : list
        ``[column key, ascending]`` of the current sort, shown on the header.
    """

    _esm = _HERE / "table_grid.js"
    _css = _HERE / "table_grid.css"

    columns = traitlets.List().tag(sync=True)
    rows = traitlets.List().tag(sync=True)
    view = traitlets.List().tag(sync=True)
    selected = traitlets.List().tag(sync=True)
    sort = traitlets.List().tag(sync=True)
    height = traitlets.Int(420).tag(sync=True)

    def __init__(self, columns: list[dict[str, Any]], **kwargs: Any):
        super().__init__(columns=columns, **kwargs)
        self._handlers: dict[str, Callable[[dict[str, Any]], None]] = {}
        self._index: dict[int, int] = {}
        self.on_msg(self._on_message)

    def on(self, kind: str, handler: Callable[[dict[str, Any]], None]) -> None:
        """Call ``handler(message)`` for browser messages of this ``type`` (edit, sort, action)."""
        self._handlers[kind] = handler

    def set_rows(self, rows: list[dict[str, Any]], view: list[int] | None = None) -> None:
        """Replace every row (sent whole: use after structural changes)."""
        self._index = {row["id"]: i for i, row in enumerate(rows)}
        with self.hold_sync():
            self.rows = rows
            self.view = view if view is not None else [row["id"] for row in rows]

    def patch(self, rows: Iterable[dict[str, Any]]) -> None:
        """Update some rows in place: Python's copy, and the browser's by one message.

        The ``rows`` list is changed in place (traitlets sees no new value, so nothing else is
        sent); a browser that connects later still gets the current rows from the kernel.
        """
        changed = []
        for row in rows:
            i = self._index.get(row["id"])
            if i is None:  # not sent yet: the next `set_rows` carries it
                continue
            self.rows[i] = row
            changed.append(row)
        if changed:
            self.send({"type": "patch", "rows": changed})

    def row(self, row_id: int) -> dict[str, Any]:
        """The data shown for one row."""
        return self.rows[self._index[row_id]]

    def _on_message(self, _: Any, content: Any, buffers: Any) -> None:
        if isinstance(content, dict):
            handler = self._handlers.get(str(content.get("type")))
            if handler is not None:
                handler(content)
