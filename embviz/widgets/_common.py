"""Pieces the widgets share: guarded callbacks, figures made once, number text, small HTML.

Nothing here computes bytes or statistics: the widgets call the pure modules for that.
"""

from __future__ import annotations

import functools
import html
import io
import math
import re
import traceback
import warnings
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import ipywidgets as widgets

__all__ = [
    "FigureView",
    "format_count",
    "guarded",
    "mark_invalid",
    "message_html",
    "parse_count",
]

F = TypeVar("F", bound=Callable[..., Any])

# Colours of the status lines (readable on light and dark JupyterLab themes).
OK_COLOR = "#1a7f37"
ERROR_COLOR = "#cf222e"
WARN_COLOR = "#9a6700"
INVALID_BORDER = "2px solid #cf222e"

# Separators people type inside big integers: 1,000,000 / 1_000_000 / 1 000 000 / 1'000'000.
_SEPARATORS = re.compile(r"[,_' \u00a0\u202f]")
_INTEGER = re.compile(r"[+-]?\d+")
_SCIENTIFIC = re.compile(r"[+-]?\d+(\.\d+)?[eE]\+?\d+")


def parse_count(text: str) -> int | None:
    """The integer a user typed as ``"1,000,000"``, ``"1_000_000"`` or ``"1e6"``; None if not one.

    None means "not an integer": the caller passes the raw text on to pydantic, whose message
    then says what is wrong, so the parsing here never invents its own rules.
    """
    stripped = _SEPARATORS.sub("", text.strip())
    if _INTEGER.fullmatch(stripped):
        return int(stripped)
    if _SCIENTIFIC.fullmatch(stripped):
        value = float(stripped)
        if value.is_integer() and math.isfinite(value):
            return int(value)
    return None


def format_count(value: int) -> str:
    """``1,000,000``: thousands separators, as the row-count controls show them."""
    return f"{value:,}"


def message_html(text: str, color: str, css_class: str = "") -> str:
    """One escaped line of coloured text (``""`` for no text)."""
    if not text:
        return ""
    lines = "<br>".join(html.escape(line) for line in text.splitlines())
    klass = f' class="{css_class}"' if css_class else ""
    return f'<span{klass} style="color:{color}">{lines}</span>'


def mark_invalid(widget: widgets.Widget, message: str) -> None:
    """Red border, the message as tooltip, and the ``embviz-invalid`` class; "" clears them."""
    if message:
        widget.layout.border = INVALID_BORDER
        widget.tooltip = message
        widget.add_class("embviz-invalid")
    else:
        widget.layout.border = None
        widget.tooltip = None
        widget.remove_class("embviz-invalid")


def guarded(output: widgets.Output, on_error: Callable[[BaseException], None] | None = None):
    """Decorate a widget callback so an exception lands in ``output`` instead of vanishing.

    JupyterLab drops exceptions raised in widget callbacks (nothing is shown). Here the
    traceback replaces the content of ``output``, which is made visible, and ``on_error`` (if
    given) is told, e.g. to put a one-line message in a status bar. A later successful call
    does not clear it: the user should see what went wrong until they look.
    """

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except Exception as exc:  # a bug or an unexpected failure: show it, never lose it
                output.outputs = ()
                output.append_stderr("".join(traceback.format_exception(exc)))
                output.layout.display = None
                if on_error is not None:
                    on_error(exc)
                return None

        return wrapper  # type: ignore[return-value]

    return decorate


def _ipympl_canvas_class() -> Any | None:
    import importlib.util

    if importlib.util.find_spec("ipympl") is None:
        return None
    import matplotlib.pyplot as plt

    # `import ipympl` makes ipympl pyplot's backend, so every figure the user makes afterwards
    # (embviz's plot functions included) would become a widget that a returned Figure cannot
    # show. Load the user's backend first (for Jupyter's inline backend that is what hooks
    # figures into IPython's display), then put it back after the import.
    backend = plt.get_backend()
    plt.switch_backend(backend)
    from ipympl.backend_nbagg import Canvas, FigureManager

    if plt.get_backend() != backend:
        plt.switch_backend(backend)
    return Canvas, FigureManager


class FigureView:
    """A matplotlib Figure made once, shown by a widget, redrawn in place.

    With ipympl installed (``%matplotlib widget``'s backend) the widget is ipympl's canvas:
    `refresh` asks the front end to redraw (``draw_idle``). Without it, the widget is an
    ``ipywidgets.Image`` whose PNG is re-rendered by `refresh`. Either way the Figure and its
    Axes are the same objects for the widget's whole life.

    Parameters
    ----------
    figsize : (float, float)
        Size in inches.
    interactive : bool, optional
        Force ipympl (True) or the static image (False); by default ipympl when importable.
    css_class : str
        Class added to the widget, for browser tests and styling.
    ncols : int
        Axes side by side (``axes``; ``ax`` is the first), sharing y when more than one.
    relayout_always : bool
        Constrained layout on every draw (figures that add Axes, e.g. a colorbar) instead of
        only when `refresh` is told the layout changed.
    """

    def __init__(
        self,
        figsize: tuple[float, float],
        *,
        interactive: bool | None = None,
        css_class: str = "",
        ncols: int = 1,
        relayout_always: bool = False,
    ):
        from matplotlib.figure import Figure

        # A bare Figure, not pyplot: no global figure registry, nothing shown twice in notebooks.
        # No layout engine on every draw: constrained layout runs in `refresh` only when the
        # labels change (it costs as much as the drawing itself).
        self.figure = Figure(figsize=figsize, layout="constrained" if relayout_always else None)
        self._layout_key: Hashable = object()
        self.axes = list(self.figure.subplots(1, ncols, sharey=ncols > 1, squeeze=False)[0])
        self.ax = self.axes[0]
        ipympl = _ipympl_canvas_class() if interactive is not False else None
        if interactive and ipympl is None:
            raise ImportError("interactive figures need ipympl (pip install ipympl)")
        self.interactive = ipympl is not None
        if ipympl is not None:
            canvas_class, manager_class = ipympl
            canvas = canvas_class(self.figure)
            with warnings.catch_warnings():
                # ipympl 0.10's Toolbar passes an argument traitlets deprecates; not ours to fix.
                warnings.filterwarnings(
                    "ignore", "Passing unrecognized arguments", DeprecationWarning
                )
                # Sets canvas.manager, which ipympl's message handling needs.
                manager_class(canvas, 0)
            canvas.header_visible = False
            canvas.footer_visible = False
            canvas.toolbar_visible = "fade-in-fade-out"
            canvas.resizable = False
            self.widget: widgets.DOMWidget = canvas
        else:
            from matplotlib.backends.backend_agg import FigureCanvasAgg

            FigureCanvasAgg(self.figure)
            self.widget = widgets.Image(format="png")
        if css_class:
            self.widget.add_class(css_class)

    def refresh(self, layout_key: Hashable = None, relayout: bool = True) -> None:
        """Show the Figure's current artists (call after changing them).

        ``layout_key`` summarises what the layout depends on (e.g. the tick labels); the
        constrained layout is recomputed when it differs from the last one. ``relayout=False``
        leaves the margins as the caller set them.
        """
        no_engine = self.figure.get_layout_engine() is None
        if relayout and no_engine and (layout_key is None or layout_key != self._layout_key):
            from matplotlib.layout_engine import ConstrainedLayoutEngine

            ConstrainedLayoutEngine().execute(self.figure)
            self._layout_key = layout_key
        if self.interactive:
            self.widget.draw_idle()
        else:
            buffer = io.BytesIO()
            self.figure.savefig(buffer, format="png")
            self.widget.value = buffer.getvalue()

    def render(self) -> None:
        """Rasterise now (Agg), as the front end's redraw would; for benchmarks and tests."""
        self.figure.canvas.draw()
