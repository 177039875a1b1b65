"""The editor's figure tabs: memory per table (updated in place), fp32 vs fp16, placement.

The memory figure is a `MemoryPlot`: after an edit its bars, texts, budget line and limits are
moved and the canvas asked to ``draw_idle``; nothing is cleared. In a running kernel that waits
for a pause in typing (``delay_s`` after the last edit; each edit restarts the wait), while the
total and fit follow every keystroke. Figures in closed tabs are drawn when their tab opens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from embviz.widgets._common import FigureView, format_count

__all__ = ["DTYPE_FIGSIZE", "MEMORY_FIGSIZE", "PLACEMENT_FIGSIZE", "FigureTabs"]

MEMORY_FIGSIZE = (7.8, 5.0)
DTYPE_FIGSIZE = (7.4, 4.4)
PLACEMENT_FIGSIZE = (6.4, 3.6)


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running this callback (a Jupyter kernel's), or None (scripts, tests)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def layout_key(ax: Any) -> tuple[Any, ...]:
    """What the figure's margins depend on: the set of table labels and the legend entries."""
    legend = ax.get_legend()
    return (
        tuple(sorted(t.get_text() for t in ax.get_yticklabels())),
        tuple(t.get_text() for t in legend.get_texts()) if legend is not None else (),
    )


class FigureTabs:
    """Three tabs of figures fed by ``source()``: (memory frame, its serial, hbm bytes or None).

    Parameters
    ----------
    source : callable
        Returns the frame to draw, a number that changes whenever the frame does, and one GPU's
        bytes (None while the GPU settings are invalid).
    guard : callable
        Wraps callbacks so that their exceptions are shown (`embviz.widgets._common.guarded`).
    interactive : bool, optional
        ipympl canvases or static PNG images (see `FigureView`).
    max_tables : int
        Bars per figure: the largest tables, the rest summed into one bar.
    delay_s : float
        In a running kernel, draw this long after the last edit (0: after every edit).
    """

    def __init__(
        self,
        source: Callable[[], tuple[Any, int, int | None]],
        guard: Callable[[Any], Any],
        interactive: bool | None,
        max_tables: int,
        delay_s: float,
    ):
        from embviz.plots.memory import MemoryPlot

        self._source = source
        self._guard = guard
        self.max_tables = max_tables
        self.delay_s = delay_s
        self._pending: asyncio.TimerHandle | None = None
        self._drawn: dict[str, Any] = {}
        self.memory_view = FigureView(
            MEMORY_FIGSIZE, interactive=interactive, css_class="embviz-memory-figure"
        )
        self.memory_plot = MemoryPlot(self.memory_view.ax, max_tables)
        self.dtype_view = FigureView(
            DTYPE_FIGSIZE, interactive=interactive, css_class="embviz-dtype-figure"
        )
        # Made on first use (a plan, or `figures`): most sessions never plan.
        self._interactive = interactive
        self._placement_view: FigureView | None = None
        self._placement_box = widgets.VBox()
        self.placement_html = widgets.HTML()
        self.placement_html.add_class("embviz-placement-table")
        self.plan_output = widgets.Output()
        self.plan_button = widgets.Button(
            description="Plan placement", icon="sitemap", tooltip="run torchrec's planner"
        )
        self.plan_button.add_class("embviz-plan")
        self.placement_status = widgets.HTML()
        self.placement_status.add_class("embviz-placement-status")
        self.tabs = widgets.Tab(
            children=[
                self.memory_view.widget,
                self.dtype_view.widget,
                widgets.VBox(
                    [
                        widgets.HBox([self.plan_button, self.placement_status]),
                        self.plan_output,
                        self._placement_box,
                        self.placement_html,
                    ]
                ),
            ],
            titles=["memory per table", "fp32 vs fp16", "placement"],
        )
        self.tabs.add_class("embviz-figure-tabs")
        self.tabs.observe(guard(lambda _: self.draw_visible()), names="selected_index")

    @property
    def placement_view(self) -> FigureView:
        """The placement figure's view (made on first use, hidden until a plan is drawn)."""
        if self._placement_view is None:
            view = FigureView(
                PLACEMENT_FIGSIZE,
                interactive=self._interactive,
                css_class="embviz-placement-figure",
            )
            view.widget.layout.display = "none"
            self._placement_box.children = [view.widget]
            self._placement_view = view
        return self._placement_view

    @property
    def figures(self) -> dict[str, Any]:
        """The Figures, the memory and dtype ones brought up to date."""
        self.cancel()
        self.draw("memory")
        self.draw("dtype")
        return {
            "memory": self.memory_view.figure,
            "dtype": self.dtype_view.figure,
            "placement": self.placement_view.figure,
        }

    def schedule(self, force: bool = False) -> None:
        """Draw the visible figure now, or, in a running kernel, once typing pauses."""
        self.cancel()
        loop = running_loop()
        if force:
            self.draw("memory", True)
            self.draw("dtype", True)
        elif loop is None or self.delay_s <= 0:
            self.draw_visible()
        else:
            self._pending = loop.call_later(self.delay_s, self._guard(self.draw_visible))

    def cancel(self) -> None:
        """Forget a draw waiting for a pause in typing."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None

    def draw_visible(self) -> None:
        """Draw the figure of the open tab (if it is a memory or dtype one)."""
        self._pending = None
        visible = {0: "memory", 1: "dtype"}.get(self.tabs.selected_index)
        if visible is not None:
            self.draw(visible)

    def draw(self, which: str, force: bool = False) -> None:
        """Bring one figure up to date with ``source()`` when what it shows changed."""
        from embviz.plots.dtypes import plot_dtype_savings

        frame, serial, hbm_bytes = self._source()
        key = (serial, hbm_bytes) if which == "memory" else (serial,)
        if not force and self._drawn.get(which) == key:
            return
        self._drawn[which] = key
        if which == "memory":
            # Margins estimated from the labels: no layout engine while the user types.
            self.memory_plot.update(frame, hbm_bytes=hbm_bytes, sort=True)
            self.memory_plot.fit_margins()
            self.memory_view.refresh(relayout=False)
        else:
            view = self.dtype_view
            plot_dtype_savings(frame, ax=view.ax, max_tables=self.max_tables)
            view.refresh(layout_key(view.ax))


def placement_html(placement: Any) -> str:
    """Per-rank and per-table tables of a `Placement` (human sizes, exact tooltips)."""
    import pandas as pd

    from embviz.htmltable import html_table, human

    def exact(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
        """Each byte cell's tooltip: its exact count."""
        return pd.DataFrame(
            {c: [f"{format_count(int(n))} bytes" for n in frame[c]] for c in columns},
            index=frame.index,
        )

    ranks = placement.ranks
    per_rank = pd.DataFrame(
        {
            "rank": ranks["rank"],
            "planner HBM": ranks["hbm_bytes"],
            "table bytes": ranks["table_bytes"],
            "shards": ranks["num_shards"],
            "tables": [", ".join(t) for t in ranks["tables"]],
        },
        dtype=object,
    ).reset_index(drop=True)
    tables = placement.tables
    per_table = pd.DataFrame(
        {
            "table": tables["table"].astype(str),
            "sharding": tables["sharding_type"].astype(str),
            "kernel": tables["compute_kernel"].astype(str),
            "ranks": [", ".join(str(int(r)) for r in rs) for rs in tables["ranks"]],
            "table bytes": tables["table_bytes"],
            "planner HBM": tables["hbm_bytes"],
        },
        dtype=object,
    ).reset_index(drop=True)
    sizes = ["planner HBM", "table bytes"]
    return html_table(
        per_rank,
        dict.fromkeys(sizes, human),
        name="placement_ranks",
        titles=exact(per_rank, sizes),
        styles={"tables": "text-align: left"},
    ) + (
        '<div style="max-height:300px; overflow:auto">'
        + html_table(
            per_table,
            dict.fromkeys(sizes, human),
            name="placement_tables",
            titles=exact(per_table, sizes),
        )
        + "</div>"
    )
