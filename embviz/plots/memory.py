"""Memory figures: bytes per table and bytes per rank of a plan (dtypes: `embviz.plots.dtypes`).

Every function draws on the Axes it is given (or a new Figure sized for the data), clears that
Axes first, touches no other Axes, and returns the Figure. To update a figure in place (a
widget), call the same function again with the same ``ax`` and then ``fig.canvas.draw_idle()``:
nothing accumulates between calls. That clear-and-redraw is the update path (there are no
``update_*`` functions): on the development machine it takes about 0.15 s for the ranker's 12
tables (matplotlib's tick and patch set-up; at most ``max_tables`` bars are drawn whatever the
config size), so call it when the data changed, not on every event.

Bars are horizontal so that table names stay legible; lengths are in one binary unit per
figure (named on the axis) and equal the DataFrame's exact bytes divided by that unit. Colours
are from the Okabe-Ito colour-blind-safe palette. No bytes are computed here: the numbers come
from `embviz.memory` and `embviz.placement`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from embviz.memory import (
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
    "plot_memory",
    "plot_placement",
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


def plot_memory(
    frame: pd.DataFrame,
    ax: Axes | None = None,
    budget_bytes: int | None = None,
    sort: bool = True,
    *,
    max_tables: int = MAX_TABLES,
) -> Figure:
    """Weights and optimizer state per table, stacked horizontal bars.

    Parameters
    ----------
    frame : pandas.DataFrame
        From `embviz.memory_table`.
    ax : matplotlib Axes, optional
        Drawn on after clearing it; a new Figure when None.
    budget_bytes : int, optional
        Draws a vertical line there (e.g. one GPU's memory) and names it.
    sort : bool
        Largest table on top; config order (first on top) otherwise.
    max_tables : int
        Beyond this many tables, the largest ``max_tables - 1`` are drawn and the rest summed
        into one ``"(k others)"`` bar.

    Returns
    -------
    matplotlib.figure.Figure
        Bars (``ax.containers``): weights first, then optimizer state; lengths in the unit
        named on the x axis. Each bar is labelled with its table's total.
    """
    shown = largest_tables(frame, max_tables)
    if sort:
        shown = shown.sort_values("total_bytes", ascending=False, kind="stable")
    fig, ax = _axes(ax, len(shown))
    unit, scale = _unit(shown["total_bytes"].max(), budget_bytes or 0)
    # First row on top: barh draws from the bottom, so positions count down.
    y = np.arange(len(shown))[::-1]
    weights = shown["weight_bytes"].to_numpy(dtype=np.float64) / scale
    state = shown["optimizer_bytes"].to_numpy(dtype=np.float64) / scale
    ax.barh(y, weights, color=_WEIGHTS, label="weights", height=0.7)
    ax.barh(y, state, left=weights, color=_STATE, label="optimizer state", height=0.7)
    size = _label_size(len(shown))
    ax.set_yticks(y, [str(name) for name in shown.index], fontsize=size)
    for position, total in zip(y, shown["total_bytes"], strict=True):
        ax.text(
            total / scale,
            position,
            f" {human_bytes(int(total))}",
            va="center",
            ha="left",
            fontsize=size - 1,
        )
    right = max(float((weights + state).max(initial=0)), 0.0)
    if budget_bytes is not None:
        ax.axvline(
            budget_bytes / scale,
            color=_LIMIT,
            linestyle="--",
            linewidth=1.5,
            label=f"budget {compact_bytes(budget_bytes)}",
        )
        right = max(right, budget_bytes / scale)
    ax.set_xlim(0, right * 1.22 if right > 0 else 1)
    ax.set_xlabel(f"bytes ({unit})")
    total = int(frame["total_bytes"].sum())
    ax.set_title(
        f"Memory per table{_mode_text(frame)}: {human_bytes(total)} in {len(frame)} tables",
        fontsize=11,
    )
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
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
