"""HTML tables of DataFrames through pandas' `Styler`, for the report and the widgets.

Values and headings are escaped (``escape="html"``), the index is hidden and a missing value is
an empty cell; ``title`` tooltips, CSS classes and styles are set per cell.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence

import pandas as pd

from embviz.memory import human_bytes

__all__ = ["count", "html_table", "human", "row_classes"]


def human(value: object) -> str:
    """Bytes in binary human units (`embviz.human_bytes`)."""
    return human_bytes(int(value))  # type: ignore[call-overload]


def count(value: object) -> str:
    """A whole number with thousands separators."""
    return f"{int(value):,}"  # type: ignore[call-overload]


def html_table(
    frame: pd.DataFrame,
    formats: Mapping[str, Callable[[object], str]],
    *,
    name: str,
    classes: pd.DataFrame | None = None,
    titles: pd.DataFrame | None = None,
    table_class: str | None = None,
    refused: Sequence[str] = (),
    styles: Mapping[str, str] | None = None,
) -> str:
    """``frame`` as an HTML table through pandas' `Styler`, every cell and heading escaped.

    ``formats`` maps columns to the function giving their text; a missing value is an empty cell
    (``"refused"`` in the columns of ``refused``). ``classes`` and ``titles`` are frames like
    ``frame`` of CSS classes and plain-text tooltips (the cell's ``title``) per cell.
    ``styles`` maps columns to CSS declarations for all their cells (``"text-align: left"``).
    """
    from pandas.io.formats.style import Styler

    styler = (
        Styler(frame, uuid=name)
        .format(dict(formats), na_rep="", escape="html")
        .format_index(escape="html", axis=1)
        .hide(axis="index")
    )
    if refused:
        styler = styler.format(
            {c: formats.get(c) for c in refused},
            subset=list(refused),
            na_rep="refused",
            escape="html",
        )
    if table_class is not None:
        styler = styler.set_table_attributes(f'class="{table_class}"')
    if classes is not None:
        styler = styler.set_td_classes(classes)
    if titles is not None:  # Styler writes a title attribute as given: escape it here
        styler = styler.set_tooltips(
            titles.map(lambda t: html.escape(t) if isinstance(t, str) else t),
            as_title_attribute=True,
        )
    for column, css in (styles or {}).items():
        styler = styler.apply(lambda c, css=css: [css] * len(c), subset=[column])
    return styler.to_html()


def row_classes(frame: pd.DataFrame, rows: Mapping[object, str]) -> pd.DataFrame:
    """A class for every cell of some rows of ``frame`` (index label -> class), none elsewhere."""
    classes = pd.DataFrame("", index=frame.index, columns=frame.columns)
    for label, css in rows.items():
        classes.loc[label] = css
    return classes
