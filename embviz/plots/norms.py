"""Norm figures: histograms, quantile bands over steps, the projection, and fp16's price.

Histograms of row norms per table, quantile bands over training steps, the 2-D projection
coloured by norm, and what fp16 costs beside what it saves.

Every function takes the DataFrames of `embviz.norms` (and `embviz.memory` for bytes), draws on
the Axes it is given (cleared first) or on a new Figure, and returns the Figure; nothing is
computed here. Colours come from the Okabe-Ito palette and a perceptually uniform colormap
(viridis), both colour-blind safe; quantile lines also differ in line style.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from embviz.memory import binary_unit
from embviz.plots.memory import OKABE_ITO

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "plot_fp16_tradeoff",
    "plot_norm_bands",
    "plot_norm_histograms",
    "plot_projection",
]

_BARS = OKABE_ITO["blue"]
_MEDIAN = OKABE_ITO["black"]
_MEAN = OKABE_ITO["vermillion"]
# Quantile column -> (colour, line style): symmetric quantiles share a look.
_QUANTILE_STYLE: dict[str, tuple[str, str]] = {
    "p1": (OKABE_ITO["reddish_purple"], ":"),
    "p5": (OKABE_ITO["orange"], "--"),
    "p50": (OKABE_ITO["black"], "-"),
    "p95": (OKABE_ITO["orange"], "--"),
    "p99": (OKABE_ITO["reddish_purple"], ":"),
}
_OUTER_BAND = OKABE_ITO["sky_blue"]
_INNER_BAND = OKABE_ITO["blue"]
_NORM_ERROR = OKABE_ITO["vermillion"]
_COS_ERROR = OKABE_ITO["bluish_green"]
_SAVED = OKABE_ITO["blue"]

# Colourbar Axes made by plot_projection for a given Axes, reused when it draws there again.
_COLORBARS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def _new_figure(panels: int, width: float = 4.2, height: float = 3.2) -> tuple[Figure, list]:
    import matplotlib.pyplot as plt

    cols = min(3, max(1, panels))
    rows = -(-panels // cols)
    fig, grid = plt.subplots(
        rows, cols, figsize=(width * cols, height * rows), layout="constrained", squeeze=False
    )
    # Made through pyplot so Jupyter shows the returned Figure, closed so it is shown once.
    plt.close(fig)
    axes = list(grid.ravel())
    for extra in axes[panels:]:
        extra.set_visible(False)
    return fig, axes[:panels]


def _panels(axes: Axes | Sequence[Axes] | None, panels: int) -> tuple[Figure, list]:
    """One Axes per panel: the ones given (cleared), or a new grid."""
    if axes is None:
        return _new_figure(panels)
    listed = [axes] if hasattr(axes, "plot") else list(axes)  # one Axes or a sequence
    if len(listed) != panels:
        raise ValueError(f"need {panels} Axes (one per table), got {len(listed)}")
    for ax in listed:
        ax.clear()
    return listed[0].get_figure(), listed


def _tables(frame: pd.DataFrame, tables: Sequence[str] | str | None) -> list[str]:
    present = list(dict.fromkeys(frame["table"]))
    if tables is None:
        return present
    chosen = [tables] if isinstance(tables, str) else list(tables)
    unknown = [t for t in chosen if t not in present]
    if unknown:
        raise ValueError(f"no table {unknown[0]!r} in the data (tables: {', '.join(present)})")
    return chosen


def plot_norm_histograms(
    hist: pd.DataFrame,
    stats: pd.DataFrame | None = None,
    axes: Axes | Sequence[Axes] | None = None,
    tables: Sequence[str] | str | None = None,
) -> Figure:
    """One histogram of row norms per table: log-scaled counts, quantiles marked.

    Parameters
    ----------
    hist : pandas.DataFrame
        From `embviz.norm_histogram` (``table``, ``left``, ``right``, ``count``).
    stats : pandas.DataFrame, optional
        From `embviz.norm_stats` on the same source: its ``p1``, ``p5``, ``p50``, ``p95``,
        ``p99`` are drawn as vertical lines (and the mean, dash-dotted).
    axes : Axes or sequence of Axes, optional
        One per table, cleared first; by default a new grid (3 per row).
    tables : str or list of str, optional
        Tables to draw (default: all in ``hist``, in its order).

    Returns
    -------
    matplotlib.figure.Figure
        Bar heights equal the counts and bar edges the bin edges; empty bins draw no bar.
    """
    chosen = _tables(hist, tables)
    fig, panels = _panels(axes, len(chosen))
    for ax, name in zip(panels, chosen, strict=True):
        part = hist[hist["table"] == name]
        left = part["left"].to_numpy(dtype=float)
        width = part["right"].to_numpy(dtype=float) - left
        ax.bar(
            left,
            part["count"].to_numpy(),
            width=width,
            align="edge",
            color=_BARS,
            edgecolor="white",
            linewidth=0.3,
            label="rows",
        )
        ax.set_yscale("log", nonpositive="clip")
        log_bins = hist.attrs.get("scale") == "log"
        if log_bins:
            ax.set_xscale("log")
        zeros = int(hist.attrs.get("zero_rows", {}).get(name, 0))
        if stats is not None and name in stats.index:
            row = stats.loc[name]
            for column, (colour, style) in _QUANTILE_STYLE.items():
                ax.axvline(
                    float(row[column]), color=colour, linestyle=style, linewidth=1.2, label=column
                )
            ax.axvline(float(row["mean"]), color=_MEAN, linestyle="-.", linewidth=1.2, label="mean")
            sampled = int(row["sampled"])
            rows = int(row["rows"])
            what = f"{rows:,} rows" if sampled == rows else f"{sampled:,} of {rows:,} rows"
            ax.set_title(f"{name} ({what})")
        else:
            ax.set_title(name)
        if zeros:
            ax.text(
                0.02,
                0.97,
                f"{zeros:,} rows of norm 0 not shown",
                transform=ax.transAxes,
                fontsize=7,
                va="top",
            )
        ax.set_xlabel("row L2 norm" + (" (log scale)" if log_bins else ""))
        ax.set_ylabel("rows (log scale)")
        ax.legend(fontsize=7, loc="upper right")
    return fig


def _change_text(part: pd.DataFrame) -> str:
    """``"max 0.00728 -> 0.287, rows unchanged 100% -> 67%"``: first and last step of a table."""
    first, last = part.iloc[0], part.iloc[-1]
    top = "max" if "max" in part.columns else "p99"
    text = f"{top} {float(first[top]):.3g} \u2192 {float(last[top]):.3g}"
    if "unchanged_share" in part.columns and part["unchanged_share"].notna().all():
        text += (
            f", rows unchanged {float(first['unchanged_share']):.0%} \u2192 "
            f"{float(last['unchanged_share']):.0%}"
        )
    return text


def plot_norm_bands(
    history: pd.DataFrame,
    axes: Axes | Sequence[Axes] | None = None,
    tables: Sequence[str] | str | None = None,
) -> Figure:
    """Row-norm quantile bands and the largest norm over training steps, one panel per table.

    The light band spans ``p1`` to ``p99``, the dark one ``p5`` to ``p95``; the median is the
    solid line, the mean (what the-algorithm-ml logs) the dashed one and the max the dotted one.
    The norm axis is logarithmic: a few rows that training moves far (the max) and the bulk
    still at its initial scale show together. Each title gives the max and, where
    ``history`` has it (``initial=`` in `embviz.norm_history`), the share of rows still at
    their initial values, at the first and the last step: when only a minority of rows moves,
    the quantiles stay flat and these two numbers carry the change.

    Parameters
    ----------
    history : pandas.DataFrame
        From `embviz.norm_history` (``step``, ``table``, quantile columns, ``mean``, ``max``,
        optionally ``unchanged_share``).
    axes, tables :
        As in `plot_norm_histograms`. The legend sits outside the last panel, right of it.
    """
    chosen = _tables(history, tables)
    fig, panels = _panels(axes, len(chosen))
    for ax, name in zip(panels, chosen, strict=True):
        part = history[history["table"] == name].sort_values("step")
        steps = part["step"].to_numpy()
        ax.fill_between(
            steps,
            part["p1"],
            part["p99"],
            color=_OUTER_BAND,
            alpha=0.35,
            linewidth=0,
            label="p1-p99",
        )
        ax.fill_between(
            steps,
            part["p5"],
            part["p95"],
            color=_INNER_BAND,
            alpha=0.45,
            linewidth=0,
            label="p5-p95",
        )
        ax.plot(steps, part["p50"], color=_MEDIAN, linewidth=1.5, label="median")
        ax.plot(steps, part["mean"], color=_MEAN, linestyle="--", linewidth=1.2, label="mean")
        top = "max" if "max" in part.columns else "p99"
        if top == "max":
            ax.plot(
                steps,
                part["max"],
                color=_QUANTILE_STYLE["p99"][0],
                linestyle=":",
                marker=".",
                linewidth=1.4,
                label="max",
            )
        positive = part[["p1", top]].to_numpy(dtype=float)
        if np.isfinite(positive).all() and (positive > 0).all():
            ax.set_yscale("log")
        ax.set_title(f"{name}\n{_change_text(part)}", fontsize=9)
        ax.set_xlabel("training step")
        ax.set_ylabel("row L2 norm" + (" (log scale)" if ax.get_yscale() == "log" else ""))
    panels[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return fig


def plot_projection(
    projection: Any,
    ax: Axes | None = None,
    cmap: str = "viridis",
    title: str | None = None,
) -> Figure:
    """A projection's rows, coloured by their norm, with a colourbar.

    Parameters
    ----------
    projection : embviz.Projection or pandas.DataFrame
        From `embviz.project` (its ``frame``: ``x``, ``y``, ``norm``; its explained variance), or
        such a frame. Every row of the frame is drawn: for a large one use
        `embviz.plots.projection.plot_projection_sample`, which draws a stratified sample.
    ax : Axes, optional
        Cleared first; its colourbar is made once and reused when drawing there again.
    cmap : str
        A matplotlib colormap; viridis (default) is perceptually uniform and colour-blind safe.
    title : str, optional
        Default: the rows drawn and the variance the two axes explain.
    """
    frame = getattr(projection, "frame", projection)
    ratio = getattr(projection, "explained_variance", None)
    if ratio is None:
        ratio = frame.attrs.get("explained_variance_ratio")
    rows = getattr(projection, "rows", None) or frame.attrs.get("rows")
    if ax is None:
        fig, (ax,) = _new_figure(1, width=5.6, height=4.6)
    else:
        ax.clear()
        fig = ax.get_figure()
    points = ax.scatter(frame["x"], frame["y"], c=frame["norm"], cmap=cmap, s=6, linewidths=0)
    cax = _COLORBARS.get(ax)
    if cax is not None and cax.figure is fig:
        cax.clear()
        colorbar = fig.colorbar(points, cax=cax)
    else:
        colorbar = fig.colorbar(points, ax=ax)
        _COLORBARS[ax] = colorbar.ax
    colorbar.set_label("row L2 norm")
    if title is None:
        title = f"{len(frame):,} rows" + (f" of {rows:,}" if rows else "")
        if ratio:
            title += f" (PCA: {100 * ratio[0]:.1f}% + {100 * ratio[1]:.1f}% of the variance)"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    return fig


def _saved_bytes(savings: pd.DataFrame | pd.Series | Mapping[str, float]) -> pd.Series:
    if isinstance(savings, pd.DataFrame):
        if "saved_bytes" not in savings.columns:
            from embviz.memory import dtype_savings

            savings = dtype_savings(savings)  # a memory_table frame
        return savings["saved_bytes"].astype(float)
    return pd.Series(savings, dtype=float)


def plot_fp16_tradeoff(
    errors: pd.DataFrame,
    savings: pd.DataFrame | pd.Series | Mapping[str, float],
    axes: Sequence[Axes] | None = None,
) -> Figure:
    """What fp16 saves (bytes) beside what it costs (error of norms and cosines), per table.

    Parameters
    ----------
    errors : pandas.DataFrame
        From `embviz.fp16_error_table` (indexed by table).
    savings : DataFrame, Series or mapping
        Bytes saved per table: `embviz.memory.dtype_savings` output (``saved_bytes``), a
        `embviz.memory_table` frame (its ``fp32_total_bytes``/``fp16_total_bytes``, through
        ``dtype_savings``), or a mapping table -> bytes.
    axes : two Axes, optional
        Left: bytes saved; right: errors. Cleared first; by default a new Figure.

    Returns
    -------
    matplotlib.figure.Figure
        Left bars: saved bytes in one binary unit (named on the axis). Right bars: the largest
        relative error of a row norm and the largest absolute error of a pair's cosine, from 0
        (a table already in fp16 loses nothing more and draws no bar; an infinite error, from
        values beyond fp16's range, is written out instead).
    """
    saved = _saved_bytes(savings)
    tables = list(errors.index)
    missing = [t for t in tables if t not in saved.index]
    if missing:
        raise ValueError(f"no saved bytes for table {missing[0]!r}")
    saved = saved.reindex(tables)
    if axes is None:
        import matplotlib.pyplot as plt

        fig, pair = plt.subplots(
            1,
            2,
            figsize=(10.0, max(2.6, 0.45 * len(tables) + 1.4)),
            layout="constrained",
            sharey=True,
        )
        plt.close(fig)
        left, right = pair
    else:
        left, right = axes
        left.clear()
        right.clear()
        fig = left.get_figure()
    positions = np.arange(len(tables))
    unit, scale = binary_unit(float(saved.abs().max()) if len(saved) else 0.0)
    left.barh(positions, saved.to_numpy() / scale, color=_SAVED, height=0.6)
    left.set_yticks(positions, labels=tables)
    left.invert_yaxis()
    left.set_xlabel(f"saved by fp16 ({unit})")
    left.set_ylabel("table")
    left.set_title("bytes saved against the current dtype")
    height = 0.38
    # Linear lengths from 0 so bars compare; an infinite error (a value beyond fp16's range)
    # draws no bar and is written out instead.
    norm_err = errors["norm_rel_err_max"].to_numpy(dtype=float)
    cos_err = errors["cos_abs_err_max"].to_numpy(dtype=float)
    for i, table in enumerate(tables):
        if not np.isfinite(norm_err[i]):
            overflow = int(errors.loc[table, "overflow_rows"]) if "overflow_rows" in errors else 0
            right.text(
                0,
                i - height / 2,
                f" inf: {overflow:,} rows overflow fp16",
                va="center",
                fontsize=7,
                color=_NORM_ERROR,
            )
    right.barh(
        positions - height / 2,
        np.where(np.isfinite(norm_err), norm_err, 0.0),
        height=height,
        color=_NORM_ERROR,
        label="row norm, relative (max)",
    )
    right.barh(
        positions + height / 2,
        np.where(np.isfinite(cos_err), cos_err, 0.0),
        height=height,
        color=_COS_ERROR,
        label="cosine of a pair, absolute (max)",
    )
    right.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
    right.set_yticks(positions, labels=tables)
    right.set_xlabel("error after casting to fp16")
    right.set_title("what it costs")
    # Outside the Axes, right of it: inside, it would cover the last table's bars.
    right.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return fig
