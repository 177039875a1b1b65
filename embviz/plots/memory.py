"""Memory figures: bytes per table and bytes per rank of a plan (dtypes: `embviz.plots.dtypes`).

Every function draws on the Axes it is given (or a new Figure sized for the data), clears that
Axes first, touches no other Axes, and returns the Figure. The memory figure can also be updated
in place: `MemoryPlot` keeps its artists and `MemoryPlot.update` only moves bars, texts, the budget
line and the limits (then call ``fig.canvas.draw_idle()``); `plot_memory` is that same update on
fresh artists, so both draw the same thing. The other figures are redrawn by calling the same
function again with the same ``ax``.

Bars are horizontal so that table names stay legible. The memory figure is on a log2 bytes axis
(small tables show beside huge ones) with bar ends at the DataFrame's exact bytes; the others
use one binary unit per figure (named on the axis), lengths equal to the bytes in that unit. Colours
are from the Okabe-Ito colour-blind-safe palette. No bytes are computed here: the numbers come
from `embviz.memory` and `embviz.placement`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from embviz.errors import ArgumentError
from embviz.memory import (
    PLANNER_RESERVED_FRACTION,
    binary_unit,
    compact_bytes,
    human_bytes,
    largest_tables,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from embviz.placement import Placement

__all__ = [
    "OKABE_ITO",
    "MemoryPlot",
    "plot_memory",
    "plot_placement",
    "usable_bytes",
]

# Okabe & Ito (2008), colour-blind safe; black last.
OKABE_ITO: dict[str, str] = {
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
    "black": "#000000",
}
_GREY = "#999999"
_LIGHT_GREY = "#cccccc"
_WEIGHTS = OKABE_ITO["blue"]
_STATE = OKABE_ITO["orange"]
_FP32 = OKABE_ITO["sky_blue"]
_FP16 = OKABE_ITO["bluish_green"]
_LIMIT = OKABE_ITO["vermillion"]
_TABLE_COLOURS = [
    OKABE_ITO[c]
    for c in (
        "blue",
        "orange",
        "bluish_green",
        "reddish_purple",
        "sky_blue",
        "vermillion",
        "yellow",
    )
]

# At most this many bars per figure by default; the rest are summed into one "(k others)" bar.
MAX_TABLES = 30


def _axes(ax: Axes | None, bars: int) -> tuple[Figure, Axes]:
    """The given Axes, cleared, or a new Figure tall enough for ``bars`` labelled rows."""
    if ax is None:
        import matplotlib.pyplot as plt

        # Made through pyplot so that Jupyter's inline backend knows how to show it, then
        # closed so that it is shown once (as the return value) and not kept by pyplot.
        fig, ax = plt.subplots(figsize=(8.0, max(2.8, 0.32 * bars + 1.4)), layout="constrained")
        plt.close(fig)
    else:
        ax.clear()
    return ax.get_figure(), ax  # type: ignore[return-value]


def _label_size(bars: int) -> float:
    """Tick label size that keeps ``bars`` names apart."""
    return float(np.clip(10 - (bars - 12) / 6, 6, 10))


def _unit(*values: float) -> tuple[str, int]:
    largest = max((abs(float(v)) for v in values if v is not None), default=0.0)
    return binary_unit(largest)


def _mode_text(frame: pd.DataFrame) -> str:
    """``" (fused state, train)"``: how `memory_table` counted, from its own columns."""
    parts = []
    for column, suffix in (("optimizer_state", " state"), ("mode", "")):
        values = frame[column].dropna().unique() if column in frame.columns else []
        if len(values) == 1:
            parts.append(f"{values[0]}{suffix}")
    if (
        "optimizer_kernel" in frame.columns
        and (frame["optimizer_kernel"] == "EXACT_ROWWISE_ADAGRAD").any()
    ):
        parts.append("row-wise Adagrad")
    return f" ({', '.join(parts)})" if parts else ""


def _log2_ticks(low: float, high: float, most: int = 8) -> list[float]:
    """Powers of two between ``low`` and ``high``, at most ``most`` of them, evenly spaced."""
    first, last = math.floor(math.log2(low)), math.ceil(math.log2(high))
    step = next((s for s in (1, 2, 5, 10, 20) if (last - first) / s <= most), 20)
    start = math.ceil(first / step) * step
    return [2.0**k for k in range(start, last + 1, step) if low <= 2.0**k <= high]


def usable_bytes(hbm_bytes: int, reserved_fraction: float = PLANNER_RESERVED_FRACTION) -> int:
    """One GPU's memory the planner may fill: ``hbm_bytes`` less its reservation (floored)."""
    return int(hbm_bytes * (1 - reserved_fraction))


class MemoryPlot:
    """The artists of `plot_memory`, made once on an Axes and then updated in place.

    `update` sets the bars' extents, the labels, the texts, the budget line and the limits, so
    a widget can call it after every edit and then ``draw_idle``: nothing is cleared or made
    again unless the number of bars changes. `plot_memory` is ``MemoryPlot(ax).update(...)``,
    so a figure updated in place shows exactly what a fresh `plot_memory` call draws.

    Parameters
    ----------
    ax : matplotlib Axes
        Cleared, then owned by this object.
    max_tables : int
        Bars at most: the largest ``max_tables - 1`` tables and one ``"(k others)"`` bar.
    """

    def __init__(self, ax: Axes, max_tables: int = MAX_TABLES):
        self.ax = ax
        self.max_tables = max_tables
        self._bars = -1
        self._legend_key: tuple[str, ...] = ()
        self.weights: Any = None
        self.state: Any = None
        self.texts: list[Any] = []
        self.budget_line: Any = None
        self.reservation: Any = None

    def _build(self, bars: int) -> None:
        ax = self.ax
        ax.clear()
        y = np.arange(bars)[::-1]
        ones = np.ones(bars)
        self.weights = ax.barh(y, ones, left=ones, color=_WEIGHTS, label="weights", height=0.7)
        self.state = ax.barh(y, ones, left=ones, color=_STATE, label="optimizer state", height=0.7)
        size = _label_size(bars)
        self.texts = [
            ax.text(1, position, "", va="center", ha="left", fontsize=size - 1) for position in y
        ]
        self.reservation = ax.axvspan(
            1, 2, facecolor=_GREY, alpha=0.25, hatch="//", edgecolor=_GREY, linewidth=0
        )
        self.budget_line = ax.axvline(1, color=_LIMIT, linestyle="--", linewidth=1.5)
        ax.set_xscale("log", base=2)
        ax.set_yticks(y)
        ax.set_ylim(-0.6, bars - 0.4)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: compact_bytes(x)))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.grid(axis="x", alpha=0.3)
        ax.set_axisbelow(True)
        self._bars = bars
        self._legend_key = ()

    def update(
        self,
        frame: pd.DataFrame,
        *,
        hbm_bytes: int | None = None,
        reserved_fraction: float = PLANNER_RESERVED_FRACTION,
        budget_bytes: int | None = None,
        sort: bool = True,
    ) -> Figure:
        """Show ``frame`` (a `memory_table`); see `plot_memory` for the parameters."""
        if hbm_bytes is not None and budget_bytes is not None:
            raise ArgumentError("budget_bytes", "give hbm_bytes or budget_bytes, not both")
        shown = largest_tables(frame, self.max_tables)
        if sort:
            shown = shown.sort_values("total_bytes", ascending=False, kind="stable")
        if len(shown) != self._bars:
            self._build(len(shown))
        ax = self.ax
        weights = shown["weight_bytes"].to_numpy(dtype=np.float64)
        state = shown["optimizer_bytes"].to_numpy(dtype=np.float64)
        totals = shown["total_bytes"].to_numpy(dtype=np.int64)
        usable = None
        if hbm_bytes is not None:
            usable = usable_bytes(hbm_bytes, reserved_fraction)
        elif budget_bytes is not None:
            usable = int(budget_bytes)
        top = max(float(totals.max(initial=1)), float(hbm_bytes or usable or 1))
        # A floor a little under the smallest weights, so every bar shows, on a power of 2.
        smallest = float(weights.min()) if len(weights) else 1.0
        floor = 2.0 ** math.floor(math.log2(max(8.0, smallest) / 8))
        # The "(k others)" bar sums many tables: grey, and never marked over the budget.
        others = np.array([str(name).endswith(" others)") for name in shown.index])
        for patch, w, other in zip(self.weights.patches, weights, others, strict=True):
            patch.set_x(floor)
            patch.set_width(w - floor)
            patch.set_facecolor(_GREY if other else _WEIGHTS)
        for patch, w, s, other in zip(self.state.patches, weights, state, others, strict=True):
            patch.set_x(w)
            patch.set_width(s)
            patch.set_facecolor(_LIGHT_GREY if other else _STATE)
        for text, total, other in zip(self.texts, totals, others, strict=True):
            text.set_x(float(total))
            text.set_text(f" {human_bytes(int(total))}")
            over = usable is not None and total > usable and not other
            text.set_color(_LIMIT if over else "black")
        ax.set_yticklabels([str(name) for name in shown.index], fontsize=_label_size(len(shown)))
        legend = ["weights", "optimizer state"]
        self.budget_line.set_visible(usable is not None)
        self.reservation.set_visible(hbm_bytes is not None)
        if usable is not None:
            self.budget_line.set_xdata([usable, usable])
        if hbm_bytes is not None and usable is not None:
            self.reservation.set_x(usable)
            self.reservation.set_width(hbm_bytes - usable)
            self.budget_line.set_label(
                f"one GPU: {compact_bytes(usable)} usable of {compact_bytes(hbm_bytes)}"
            )
            self.reservation.set_label(f"planner's {reserved_fraction:.0%} reservation")
            legend += [self.budget_line.get_label(), self.reservation.get_label()]
        elif usable is not None:
            self.budget_line.set_label(f"budget {compact_bytes(usable)}")
            legend.append(self.budget_line.get_label())
        ax.set_xlim(floor, top * 2.0**2.5)  # room on the right for the total texts
        ax.xaxis.set_major_locator(FixedLocator(_log2_ticks(floor, top * 2.0**2.5)))
        ax.set_xlabel("bytes per table (log2 scale)")
        ax.set_ylabel("table")
        total = int(frame["total_bytes"].sum())
        title = f"Memory per table{_mode_text(frame)}: {human_bytes(total)} in {len(frame)} tables"
        if hbm_bytes is not None:
            over = int((frame["total_bytes"] > usable).sum())
            title += f"\nbudget: one GPU's usable memory; {over} over it (need sharding)"
        ax.set_title(title, fontsize=11)
        if tuple(legend) != self._legend_key:
            # Proxies: the bars' own colours vary (the "others" bar is grey).
            handles = [Patch(color=_WEIGHTS), Patch(color=_STATE)]
            if usable is not None:
                handles.append(self.budget_line)
            if hbm_bytes is not None:
                handles.append(self.reservation)
            ax.legend(
                handles,
                legend,
                loc="upper center",
                bbox_to_anchor=(0.5, -0.1),
                ncol=2,
                fontsize=8,
                frameon=False,
            )
            self._legend_key = tuple(legend)
        return ax.get_figure()  # type: ignore[return-value]

    def fit_margins(self) -> None:
        """Set the Figure's margins for this plot's labels without a layout engine.

        An estimate from the text sizes (labels, two-line title, tick labels, x label and the
        legend below): microseconds, where matplotlib's constrained layout measures every text
        (a tenth of a second or more). For a widget that updates the figure as the user types;
        `plot_memory` itself uses the Figure's own layout engine.
        """
        fig = self.ax.get_figure()
        width, height = fig.get_size_inches() * 72  # points
        labels = self.ax.get_yticklabels()
        longest = max((len(t.get_text()) for t in labels), default=0)
        size = labels[0].get_fontsize() if labels else 10
        left = (longest * size * 0.62 + 14) / width
        top = (2 * 11 * 1.3 + 10) / height
        bottom = (10 * 1.4 + 10 * 1.4 + 2 * 8 * 1.6 + 18) / height
        fig.subplots_adjust(left=min(left, 0.5), right=0.98, top=1 - top, bottom=bottom)


def plot_memory(
    frame: pd.DataFrame,
    ax: Axes | None = None,
    budget_bytes: int | None = None,
    sort: bool = True,
    *,
    max_tables: int = MAX_TABLES,
    hbm_bytes: int | None = None,
    reserved_fraction: float = PLANNER_RESERVED_FRACTION,
) -> Figure:
    """Weights and optimizer state per table, stacked horizontal bars on a log2 bytes axis.

    The budget has one meaning: one GPU's memory that torchrec's planner may fill, ``hbm_bytes``
    less its reservation for the dense model (`PLANNER_RESERVED_FRACTION`, shaded). A table
    past that line fits only when row- or column-wise sharded; its total is written in red.
    The axis is log2 so that tables of a few KiB show beside tables of tens of GiB.

    Parameters
    ----------
    frame : pandas.DataFrame
        From `embviz.memory_table`.
    ax : matplotlib Axes, optional
        Drawn on after clearing it; a new Figure when None.
    budget_bytes : int, optional
        A plain budget line at these bytes (kept for older calls; prefer ``hbm_bytes``).
    sort : bool
        Largest table on top; config order (first on top) otherwise.
    max_tables : int
        Beyond this many tables, the largest ``max_tables - 1`` are drawn and the rest summed
        into one ``"(k others)"`` bar.
    hbm_bytes : int, optional
        One GPU's memory: draws the usable part as the budget line and the reservation.
    reserved_fraction : float
        The planner's reservation (torchrec's default, 15%).

    Returns
    -------
    matplotlib.figure.Figure
        Bars (``ax.containers``): weights first (from the axis floor to the weight bytes), then
        optimizer state (from the weight bytes to the total), in bytes. Each bar is labelled
        with its table's total. To update it in place, use `MemoryPlot`.
    """
    shown = min(len(frame), max_tables)
    fig, ax = _axes(ax, shown)
    MemoryPlot(ax, max_tables).update(
        frame,
        hbm_bytes=hbm_bytes,
        reserved_fraction=reserved_fraction,
        budget_bytes=budget_bytes,
        sort=sort,
    )
    return fig


def plot_placement(
    placement: Placement,
    ax: Axes | None = None,
    hbm_bytes: int | None = None,
    *,
    top: int = 7,
) -> Figure:
    """Bytes per rank of a plan: exact table bytes stacked by table, planner estimate, GPU size.

    Parameters
    ----------
    placement : embviz.placement.Placement
        From `embviz.plan`.
    ax : matplotlib Axes, optional
        Drawn on after clearing it; a new Figure when None.
    hbm_bytes : int, optional
        Memory per GPU to draw as a line (default: the placement's).
    top : int
        Tables with the most bytes get their own colour; the rest are one grey segment.

    Returns
    -------
    matplotlib.figure.Figure
        One bar container per table column of ``placement.bytes_by_rank(top)`` (in order),
        rank 0 on top; a black tick per rank marks the planner's HBM estimate
        (``ranks["hbm_bytes"]``: shards plus their input/output buffers).
    """
    by_rank = placement.bytes_by_rank(top)
    if hbm_bytes is None:
        hbm_bytes = placement.hbm_bytes
    ranks = placement.ranks
    fig, ax = _axes(ax, len(by_rank))
    unit, scale = _unit(ranks["hbm_bytes"].max(), ranks["table_bytes"].max(), hbm_bytes)
    y = np.arange(len(by_rank))[::-1]
    left = np.zeros(len(by_rank))
    colours = [*_TABLE_COLOURS[: len(by_rank.columns)]]
    for i, column in enumerate(by_rank.columns):
        colour = _GREY if column == "other tables" else colours[i % len(colours)]
        width = by_rank[column].to_numpy(dtype=np.float64) / scale
        ax.barh(y, width, left=left, color=colour, label=str(column), height=0.7)
        left = left + width
    estimate = ranks["hbm_bytes"].to_numpy(dtype=np.float64) / scale
    ax.scatter(
        estimate,
        y,
        marker="|",
        s=400,
        color=OKABE_ITO["black"],
        label="planner estimate",
        zorder=3,
    )
    ax.axvline(
        hbm_bytes / scale,
        color=_LIMIT,
        linestyle="--",
        linewidth=1.5,
        label=f"GPU memory {compact_bytes(hbm_bytes)}",
    )
    size = _label_size(len(by_rank))
    ax.set_yticks(y, [f"rank {r}" for r in by_rank.index], fontsize=size)
    ax.set_xlim(
        0, max(float(left.max(initial=0)), float(estimate.max(initial=0)), hbm_bytes / scale) * 1.05
    )
    ax.set_xlabel(f"bytes ({unit})")
    ax.set_ylabel("GPU (rank)")
    ax.set_title(
        f"Placement on {placement.gpus} x {compact_bytes(placement.hbm_bytes)} "
        f"(torchrec planner, {placement.estimate} estimate)",
        fontsize=11,
    )
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    return fig


def __getattr__(name: str) -> object:
    # plot_dtype_savings moved to embviz.plots.dtypes (fp16 against the current config, serving
    # dtypes, quality); still importable from here.
    if name == "plot_dtype_savings":
        from embviz.plots.dtypes import plot_dtype_savings

        return plot_dtype_savings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
