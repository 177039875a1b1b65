"""Kernel-side record of what every displayed matplotlib figure shows (used by test_notebooks).

`install` adds one IPython display formatter to the kernel. Whenever a `matplotlib.figure.Figure`
is displayed (a cell's last value, the inline backend's show at the end of a cell, or
``display(fig)`` inside an Output widget), IPython asks every formatter for its representation, so
next to the ``image/png`` the output carries an ``AUDIT_MIME`` entry: for each Axes its titles,
axis labels (its own or those of the Axes it shares that axis with) and which drawn artists each
legend box covers. Frontends ignore the unknown MIME type; the test reads it from the executed
notebook, so a notebook cannot fake it: it is computed from the Figure object that was drawn.

The test starts the kernel with ``--IPKernelApp.exec_lines`` that import this file and call
`install`; notebooks never import it.
"""

from __future__ import annotations

import sys
from typing import Any

AUDIT_MIME = "application/vnd.embviz.figure-audit+json"


def _title(ax: Any) -> str:
    return " | ".join(t for t in (ax.get_title(loc) for loc in ("left", "center", "right")) if t)


def _shared_label(ax: Any, axis: str) -> str:
    """The axis label of `ax`, or of an Axes that shares that axis with it (subplots' outer label)."""
    own = ax.get_xlabel() if axis == "x" else ax.get_ylabel()
    if own:
        return own
    group = ax.get_shared_x_axes() if axis == "x" else ax.get_shared_y_axes()
    for sibling in group.get_siblings(ax):
        label = sibling.get_xlabel() if axis == "x" else sibling.get_ylabel()
        if label:
            return label
    return ""


def _describe(artist: Any) -> str:
    label = artist.get_label() if hasattr(artist, "get_label") else ""
    text = artist.get_text() if hasattr(artist, "get_text") else ""
    name = text or (label if label and not label.startswith("_") else "")
    return f"{type(artist).__name__} {name!r}" if name else type(artist).__name__


def _covered(artist: Any, box: Any) -> bool:
    """Whether a drawn part of `artist` lies inside the display-space box `box`."""
    import numpy as np
    from matplotlib.collections import Collection, LineCollection, PathCollection
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox

    def inside(points: Any) -> bool:
        points = points[np.isfinite(points).all(axis=1)]
        x, y = points[:, 0], points[:, 1]
        return bool(((x >= box.x0) & (x <= box.x1) & (y >= box.y0) & (y <= box.y1)).any())

    def area(extent: Any) -> bool:
        inter = Bbox.intersection(extent, box)
        return inter is not None and inter.width > 0 and inter.height > 0

    if isinstance(artist, Line2D):
        path = artist.get_transform().transform_path(artist.get_path())
        if artist.get_linestyle() not in ("None", "none", "", " ") and path.intersects_bbox(
            box, filled=False
        ):
            return True
        if artist.get_marker() not in ("None", "none", "", " ", None):
            return inside(path.vertices)
        return False
    if isinstance(artist, Text):
        return bool(artist.get_text()) and area(artist.get_window_extent())
    if isinstance(artist, Patch):
        return area(artist.get_window_extent())
    if isinstance(artist, PathCollection):  # scatter: one marker per offset
        return inside(artist.get_offset_transform().transform(np.asarray(artist.get_offsets())))
    if isinstance(artist, Collection):  # fill_between, vlines, ...: paths in data space
        transform = artist.get_transform()
        filled = not isinstance(artist, LineCollection)
        return any(
            transform.transform_path(p).intersects_bbox(box, filled=filled)
            for p in artist.get_paths()
        )
    return False


def _legend_covers(legend: Any, axes: list[Any]) -> list[str]:
    """Artists of `axes` drawn under `legend`'s box (clipped to each Axes, as they are drawn)."""
    from matplotlib.transforms import Bbox

    legend_box = legend.get_window_extent()
    covered = []
    for ax in axes:
        box = Bbox.intersection(legend_box, ax.bbox)
        if box is None or box.width <= 0 or box.height <= 0:
            continue
        for artist in (*ax.lines, *ax.patches, *ax.collections, *ax.texts):
            if artist.get_visible() and artist is not legend and _covered(artist, box):
                covered.append(_describe(artist))
    return covered


def audit(figure: Any) -> dict[str, Any]:
    """Titles, labels and legend coverage of `figure`, as drawn at its current size."""
    figure.draw_without_rendering()  # lays the figure out as savefig did
    axes_records = []
    data_axes = [ax for ax in figure.axes if ax.get_label() != "<colorbar>"]
    for ax in figure.axes:
        legend = ax.get_legend()
        axes_records.append(
            {
                "colorbar": ax.get_label() == "<colorbar>",
                "shown": bool(ax.get_visible() and ax.axison),
                "has_data": bool(ax.has_data()),
                "title": _title(ax),
                "xlabel": _shared_label(ax, "x"),
                "ylabel": _shared_label(ax, "y"),
                "x_shown": bool(ax.xaxis.get_visible()),
                "y_shown": bool(ax.yaxis.get_visible()),
                "legend_covers": _legend_covers(legend, [ax]) if legend else [],
            }
        )
    figure_legends = [_legend_covers(legend, data_axes) for legend in figure.legends]
    return {
        "suptitle": figure.get_suptitle(),
        "axes": axes_records,
        "figure_legend_covers": [c for covers in figure_legends for c in covers],
    }


def install(shell: Any = None) -> None:
    """Add the figure-audit formatter to the running IPython kernel."""
    from IPython import get_ipython
    from IPython.core.formatters import JSONFormatter
    from traitlets import Unicode

    class FigureAuditFormatter(JSONFormatter):
        format_type = Unicode(AUDIT_MIME)

        def __call__(self, obj: Any) -> dict[str, Any] | None:
            # Not registered by type: the inline backend drops every Figure formatter it did not
            # register itself when it activates.
            figure_module = sys.modules.get("matplotlib.figure")
            if figure_module is None or not isinstance(obj, figure_module.Figure):
                return None
            try:
                return audit(obj)
            except Exception as error:  # the test reports it; the cell's figure still shows
                return {"error": f"{type(error).__name__}: {error}"}

    shell = shell or get_ipython()
    formatters = shell.display_formatter.formatters
    formatters[AUDIT_MIME] = FigureAuditFormatter(parent=shell.display_formatter)
