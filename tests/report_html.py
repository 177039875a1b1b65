"""Report pages with pandas Styler's per-cell ids, classes and layout taken out.

``cells(page)`` turns ``<td id="T_memory_row0_col0" class="data row0 col0" >user_id</td>`` and
the whitespace between cells into ``<td>user_id</td>``, so tests can look for a row's cells in
order. Attributes other than id/class (``title``) are kept.
"""

from __future__ import annotations

import re


def _cell(match: re.Match[str]) -> str:
    kept = re.sub(r'\s+(?:id|class)="[^"]*"', "", match[2])
    return f"<{match[1]}{' ' + kept.strip() if kept.strip() else ''}>"


def cells(page: str) -> str:
    """``page`` with each cell's id and class taken out and no whitespace between tags."""
    page = re.sub(r"<(td|th)\b([^>]*)>", _cell, page)
    return re.sub(r">\s+<", "><", page)
