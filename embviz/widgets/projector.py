"""`ProjectorView`: the interactive side of `embviz.Projector` (wiring only).

A WebGL scatter of every shown row (``jupyter-scatter``, built on anywidget: the coordinates go
to the browser as binary arrays, the selection and the hovered point come back as traits), a
norm histogram linked to the selection (`embviz.plots.projection.plot_norm_selection`), and the
neighbours of a clicked point (`Projector.neighbours`, i.e. `embviz.nearest`).
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import numpy as np
import pandas as pd

from embviz.widgets._common import ERROR_COLOR, FigureView, guarded, message_html

if TYPE_CHECKING:
    from embviz.projector import Projector

__all__ = ["ProjectorView"]

HISTOGRAM_FIGSIZE = (6.4, 2.4)
SCATTER_HEIGHT = 480
_STYLE = (
    "<style>.embviz-projector-neighbours table {border-collapse: collapse; font-size: 12px;}"
    ".embviz-projector-neighbours th, .embviz-projector-neighbours td {padding: 2px 8px;"
    " text-align: right; border-bottom: 1px solid var(--jp-border-color2, #ddd);}</style>"
)


def _scatter_data(projector: Projector) -> tuple[pd.DataFrame, str]:
    """What the scatter holds: coordinates, the colour column, and the hover's fields."""
    from embviz.norms.projection import color_values

    frame = projector.frame
    values, title, _ = color_values(frame, projector.color)
    label = title.split(" (")[0]
    data: dict[str, Any] = {"x": frame["x"].to_numpy(), "y": frame["y"].to_numpy(), label: values}
    data["row"] = frame["row"].to_numpy()
    if "entity" in frame.columns:
        # Text (Arrow strings: fast to make), so the hover can show a row without an id (JSON
        # has no integer NA; jupyter-scatter writes "NA" for a missing string).
        data["entity"] = frame["entity"].astype("string[pyarrow]")
    data["norm"] = frame["norm"].to_numpy()
    if projector.color not in ("norm", *data):
        data[projector.color] = frame[projector.color].to_numpy()
    return pd.DataFrame(data), label


class ProjectorView(widgets.VBox):
    """The projector's widget: scatter, hover line, selection, neighbours, norm histogram.

    Parameters
    ----------
    projector : embviz.Projector
        Its frame is shown; its selection follows the scatter's (and the other way round).
    height : int
        Scatter height in pixels.
    interactive_figures : bool, optional
        The histogram as an ipympl canvas (default when installed) or a static PNG image.
    """

    def __init__(
        self,
        projector: Projector,
        *,
        height: int = SCATTER_HEIGHT,
        interactive_figures: bool | None = None,
    ):
        import jscatter

        super().__init__()
        self.add_class("embviz-projector")
        self._projector = projector
        self._neighbour_frame: pd.DataFrame | None = None
        self._exceptions = widgets.Output(layout=widgets.Layout(display="none"))
        self._exceptions.add_class("embviz-exceptions")
        guard = guarded(self._exceptions, self._on_unexpected)

        data, label = _scatter_data(projector)
        # Categories get jupyter-scatter's categorical palette (Okabe-Ito up to 8, Glasbey
        # beyond): a continuous map would give them its first, nearly equal, colours.
        categorical = isinstance(data[label].dtype, pd.CategoricalDtype)
        hover = [c for c in ("row", "entity", "norm", label, projector.color) if c in data]
        axis = ("PC 1", "PC 2") if projector.projection.method == "pca" else ("UMAP 1", "UMAP 2")
        self._scatter = jscatter.Scatter(
            data=data,
            x="x",
            y="y",
            color_by=label,
            color_map="auto" if categorical else "viridis",
            tooltip=True,
            tooltip_properties=list(dict.fromkeys(hover)),
            legend=True,
            axes=True,
            axes_labels=list(axis),
            height=height,
        )
        self._canvas = self._scatter.widget
        self._canvas.show()  # the toolbar: pan/zoom, lasso, lasso type, reset
        self._info = widgets.HTML(message_html(projector.description, "inherit"))
        self._info.add_class("embviz-projector-info")
        self._hover = widgets.HTML()
        self._hover.add_class("embviz-projector-hover")
        self._selected = widgets.HTML()
        self._selected.add_class("embviz-projector-selection")
        self._k = widgets.BoundedIntText(value=projector.k, min=1, max=1000, description="k")
        self._k.layout.width = "150px"
        self._neighbours = widgets.HTML()
        self._neighbours.add_class("embviz-projector-neighbours")
        self._histogram = FigureView(HISTOGRAM_FIGSIZE, interactive=interactive_figures)
        self._histogram.widget.add_class("embviz-projector-histogram")

        self._canvas.observe(guard(self._on_scatter_selection), names="selection")
        self._canvas.observe(guard(self._on_hover), names="hovering")
        self._k.observe(guard(lambda _: self._show_selection(projector.selection)), names="value")
        projector.observe_selection(guard(self._on_projector_selection))
        self.children = [
            widgets.HTML(_STYLE),
            self._info,
            self._canvas,
            self._hover,
            self._selected,
            self._histogram.widget,
            widgets.HBox([widgets.HTML("<b>neighbours of a clicked point</b>"), self._k]),
            self._neighbours,
            self._exceptions,
        ]
        self._show_selection(projector.selection)

    # ------------------------------------------------------------------ public API

    @property
    def controls(self) -> dict[str, widgets.Widget]:
        """The controls: ``scatter`` and ``k``.

        ``scatter`` is jupyter-scatter's widget: its ``selection`` and ``hovering`` traits are
        what the browser sets. ``k``: neighbours shown for a single selected point.
        """
        return {"scatter": self._canvas, "k": self._k}

    @property
    def outputs(self) -> dict[str, widgets.Widget]:
        """The displays: ``info``, ``hover``, ``selection``, ``neighbours``, ``histogram``.

        Also ``exceptions`` (an Output shown when a callback fails).
        """
        return {
            "info": self._info,
            "hover": self._hover,
            "selection": self._selected,
            "neighbours": self._neighbours,
            "histogram": self._histogram.widget,
            "exceptions": self._exceptions,
        }

    @property
    def figure(self) -> Any:
        """The linked norm histogram's Figure."""
        return self._histogram.figure

    @property
    def neighbours(self) -> pd.DataFrame | None:
        """The neighbour table shown (`Projector.neighbours` of the one selected row), or None."""
        return self._neighbour_frame

    @property
    def scatter(self) -> Any:
        """The ``jscatter.Scatter`` (its API changes colours, sizes, views)."""
        return self._scatter

    # ------------------------------------------------------------------ internals

    def _on_unexpected(self, exc: BaseException) -> None:
        self._selected.value = message_html(
            f"unexpected error in the projector (traceback below): {exc!r}", ERROR_COLOR
        )

    def _on_scatter_selection(self, change: dict[str, Any]) -> None:
        positions = np.asarray(change["new"] if change["new"] is not None else [], np.int64)
        self._projector._set_positions(np.unique(positions))

    def _on_projector_selection(self, selection: pd.DataFrame) -> None:
        positions = self._projector.positions
        current = self._canvas.selection
        if current is None or not np.array_equal(np.sort(current.astype(np.int64)), positions):
            self._scatter.selection(positions)
        self._show_selection(selection)

    def _on_hover(self, change: dict[str, Any]) -> None:
        index = change["new"]
        frame = self._projector.frame
        if index is None or not 0 <= index < len(frame):
            self._hover.value = ""
            return
        index = int(index)
        parts = [f"row {int(frame['row'].iat[index]):,}"]
        if "entity" in frame.columns:
            entity = frame["entity"].iat[index]
            parts.append("no entity id" if pd.isna(entity) else f"entity {entity}")
        parts.append(f"norm {float(frame['norm'].iat[index]):.4g}")
        self._hover.value = html.escape("hover: " + ", ".join(parts))

    def _show_selection(self, selection: pd.DataFrame) -> None:
        from embviz.errors import EmbvizError
        from embviz.plots.projection import plot_norm_selection

        count = len(selection)
        self._selected.value = (
            f"<b>{count:,} row{'s' if count != 1 else ''} selected</b> "
            "(<code>projector.selection</code>)"
            if count
            else "no rows selected: click a point, or lasso (shift + drag) to select"
        )
        plot_norm_selection(
            self._projector.frame["norm"].to_numpy(),
            selection["norm"].to_numpy() if count else None,
            ax=self._histogram.ax,
        )
        self._histogram.refresh(layout_key=count > 0)
        self._neighbour_frame = None
        if count != 1:
            self._neighbours.value = ""
            return
        row = int(selection["row"].iloc[0])
        try:
            found = self._projector.neighbours(row, k=self._k.value)
        except EmbvizError as exc:  # a row of norm 0, k too large
            self._neighbours.value = message_html(str(exc), ERROR_COLOR, "embviz-projector-error")
            return
        self._neighbour_frame = found
        what = f"row {row:,}"
        if "entity" in selection.columns and not pd.isna(selection["entity"].iloc[0]):
            what += f" (entity {selection['entity'].iloc[0]})"
        self._neighbours.value = f"<b>{len(found)} nearest to {what} by cosine</b>" + found.to_html(
            index=False, float_format=lambda v: f"{v:.4g}", na_rep=""
        )
