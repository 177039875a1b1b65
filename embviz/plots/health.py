"""Health figures: singular-value spectra, effective rank over steps, and per-row drift.

Every function takes the DataFrames of `embviz.tablehealth` / `embviz.tabledrift`, draws on the
Axes it is given (cleared first) or on a new Figure, and returns the Figure; nothing is computed
here. Steps are coloured with viridis (perceptually uniform, colour-blind safe); other lines use
the Okabe-Ito palette and differ in line style too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from embviz.plots.memory import OKABE_ITO

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_health_history", "plot_row_drift", "plot_spectrum"]

_ERANK = OKABE_ITO["blue"]
_ABUNDANCE = OKABE_ITO["vermillion"]
_DIM = OKABE_ITO["black"]
_POINTS = OKABE_ITO["blue"]


def _axes(ax: Axes | None, width: float = 5.6, height: float = 3.6) -> tuple[Figure, Axes]:
    if ax is not None:
        ax.clear()
        return ax.get_figure(), ax
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), layout="constrained")
    plt.close(fig)  # shown once by Jupyter as the returned Figure
    return fig, ax


def _one_table(frame: pd.DataFrame, table: str | None) -> tuple[str, pd.DataFrame]:
    present = list(dict.fromkeys(frame["table"]))
    if not present:
        raise ValueError("no rows to draw")
    name = present[0] if table is None else table
    if name not in present:
        raise ValueError(f"no table {name!r} in the data (tables: {', '.join(present)})")
    return name, frame[frame["table"] == name]


def plot_spectrum(
    spectra: pd.DataFrame, ax: Axes | None = None, table: str | None = None
) -> Figure:
    """Singular values of one table over their index, relative to the largest, on a log scale.

    Parameters
    ----------
    spectra : pandas.DataFrame
        From `embviz.spectrum` (one line) or `embviz.spectrum_history` (one line per step,
        coloured from the first step, dark, to the last, yellow).
    ax : Axes, optional
        Cleared first.
    table : str, optional
        Default: the first table in ``spectra``.
    """
    import matplotlib as mpl

    name, part = _one_table(spectra, table)
    fig, ax = _axes(ax)
    steps = sorted(part["step"].unique()) if "step" in part else [None]
    cmap = mpl.colormaps["viridis"]
    for i, step in enumerate(steps):
        line = part if step is None else part[part["step"] == step]
        values = line["singular_value"].to_numpy()
        top = values.max() if len(values) else 0.0
        relative = values / top if top > 0 else values
        shown = np.where(relative > 0, relative, np.nan)
        color = cmap(i / max(1, len(steps) - 1)) if step is not None else _ERANK
        label = "table" if step is None else f"step {step}"
        ax.plot(line["k"], shown, marker="o", markersize=3, color=color, label=label)
    from matplotlib.ticker import FormatStrFormatter, MaxNLocator

    ax.set_yscale("log")
    for axis_formatter in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
        axis_formatter(FormatStrFormatter("%.2g"))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("singular value index k (largest first)")
    ax.set_ylabel("singular value / largest")
    ax.set_title(f"{name}: singular-value spectrum", fontsize=10)
    if 1 < len(steps) <= 12:  # beside the Axes: spectra fill the lower left
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return fig


def plot_health_history(
    history: pd.DataFrame, ax: Axes | None = None, table: str | None = None
) -> Figure:
    """Effective rank and information abundance of one table over training steps, with its dim.

    Parameters
    ----------
    history : pandas.DataFrame
        From `embviz.health_history` (``step``, ``table``, ``effective_rank``,
        ``information_abundance``, ``dim``).
    ax : Axes, optional
        Cleared first.
    table : str, optional
        Default: the first table in ``history``.
    """
    name, part = _one_table(history, table)
    part = part.sort_values("step")
    fig, ax = _axes(ax)
    ax.plot(part["step"], part["effective_rank"], color=_ERANK, marker="o", label="effective rank")
    ax.plot(
        part["step"],
        part["information_abundance"],
        color=_ABUNDANCE,
        marker="s",
        linestyle="--",
        label="information abundance",
    )
    dim = int(part["dim"].iloc[0])
    ax.axhline(dim, color=_DIM, linestyle=":", linewidth=1, label=f"dim = {dim}")
    ax.set_ylim(0, dim * 1.08)
    ax.set_xlabel("training step")
    ax.set_ylabel("dimensions used")
    ax.set_title(f"{name}: how many dimensions the table uses", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    return fig


def plot_row_drift(frame: pd.DataFrame, ax: Axes | None = None) -> Figure:
    """Per-row aligned cosine between two checkpoints: against lookup count, or a histogram.

    Parameters
    ----------
    frame : pandas.DataFrame
        From `embviz.row_drift`; with a ``count`` column the rows are drawn against their count
        (log scale, count + 1), else the histogram of ``aligned_cosine`` is drawn.
    ax : Axes, optional
        Cleared first.
    """
    fig, ax = _axes(ax)
    table = frame.attrs.get("table", "table")
    cosine = frame["aligned_cosine"]
    if "count" in frame:
        ax.scatter(frame["count"] + 1, cosine, s=4, alpha=0.4, color=_POINTS, linewidths=0)
        ax.set_xscale("log")
        ax.set_xlabel("lookups + 1")
        ax.set_ylabel("cosine with the same row after (aligned)")
    else:
        ax.hist(cosine.dropna(), bins=50, range=(-1, 1), color=_POINTS)
        ax.set_xlabel("cosine with the same row after (aligned)")
        ax.set_ylabel("rows")
    ax.set_title(f"{table}: how much each row changed beyond a rotation", fontsize=10)
    return fig
