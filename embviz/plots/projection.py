"""Projection figures: a stratified sample of a projector's rows, and the linked norm histogram.

`plot_projection_sample` is the static picture (the report's PNG): a few thousand markers
chosen from `embviz.Projector.frame` by `embviz.norms.projection.stratified_sample`, never a
million.
`plot_norm_selection` is the histogram the projector links to its scatter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from embviz.plots.memory import OKABE_ITO

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_norm_selection", "plot_projection_sample"]

_ALL = "0.65"
_SELECTED = OKABE_ITO["vermillion"]
_HIST_BINS = 60


def _axes(ax: Axes | None, size: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=size, layout="constrained")
        return fig, fig.add_subplot()
    ax.clear()
    return ax.get_figure(), ax


def plot_projection_sample(
    projection: Any,
    ax: Axes | None = None,
    points: int = 20_000,
    color: str = "norm",
    seed: int = 0,
    cmap: str = "viridis",
    title: str | None = None,
) -> Figure:
    """A stratified sample of a projection's rows, coloured as the projector colours them.

    Parameters
    ----------
    projection : embviz.Projection, embviz.Projector or pandas.DataFrame
        The rows (``x``, ``y``, ``norm``, and the ``color`` column).
    ax : Axes, optional
        Cleared first; by default a new Figure (not registered with pyplot).
    points : int
        Markers drawn: the frame's rows when it has at most this many, else this many chosen by
        `embviz.norms.projection.stratified_sample`, by ``count`` when the frame has one and by
        ``norm`` otherwise (so rare rows and outlying norms are drawn, not only the bulk).
    color : str
        The column coloured by, through `embviz.norms.projection.color_values` (``norm`` on a log
        scale, clipped at its 1st and 99th percentiles).
    seed : int
        Seeds the sample drawn.
    cmap : str
        A matplotlib colormap; viridis is perceptually uniform and colour-blind safe.
    title : str, optional
        Default: how many rows are drawn, of how many shown and in the table.
    """
    from matplotlib.colors import Normalize

    from embviz.norms.projection import color_values, stratified_sample

    frame: pd.DataFrame = getattr(projection, "frame", projection)
    table_rows = getattr(getattr(projection, "projection", projection), "rows", len(frame))
    method = getattr(getattr(projection, "projection", projection), "method", "pca")
    fig, ax = _axes(ax, (6.0, 4.8))
    values, label, _ = color_values(frame, color)
    if len(frame) > points:
        by = "count" if "count" in frame.columns else "norm"
        picked, _ = stratified_sample(frame[by].to_numpy(), points, by, seed)
        note = f"{points:,} drawn of {len(frame):,} rows shown"
        how = f"\nstratified by {by}: rare {by} ranges drawn whole, common ones sampled"
    else:
        picked = np.arange(len(frame))
        note = f"all {len(frame):,} rows shown"
        how = ""
    if len(frame) < table_rows:
        note += f" (the table has {table_rows:,})"
    note += how
    x = frame["x"].to_numpy()[picked]
    y = frame["y"].to_numpy()[picked]
    c = np.asarray(values)[picked]
    # In random order: sorted by colour, the rare (over-represented) strata would cover the bulk.
    order = np.random.default_rng(seed).permutation(len(picked))
    scatter = ax.scatter(
        x[order],
        y[order],
        c=c[order],
        cmap=cmap,
        norm=Normalize(float(np.min(c)), float(np.max(c))),
        s=3,
        alpha=0.7,
        linewidths=0,
        rasterized=True,
    )
    colorbar = fig.colorbar(scatter, ax=ax)
    colorbar.set_label(label, fontsize=8)
    explained = getattr(getattr(projection, "projection", projection), "explained_variance", None)
    if method == "pca":
        xlabel, ylabel = "PC 1", "PC 2"
        if explained:
            xlabel += f" ({100 * explained[0]:.1f}% of the variance)"
            ylabel += f" ({100 * explained[1]:.1f}%)"
    else:
        xlabel, ylabel = "UMAP 1", "UMAP 2"
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title if title is not None else note, fontsize=9)
    return fig


def plot_norm_selection(
    norms: np.ndarray,
    selected: np.ndarray | None = None,
    ax: Axes | None = None,
    bins: int = _HIST_BINS,
) -> Figure:
    """Histogram of row norms (grey) with the selected rows' norms over it (vermillion).

    Bins are log-spaced from the smallest non-zero norm to the largest (rows of norm 0 are
    counted in the title); the count axis is logarithmic so a small selection stays visible.
    """
    fig, ax = _axes(ax, (6.0, 2.4))
    norms = np.asarray(norms, dtype=np.float64)
    positive = norms[norms > 0]
    zero = int(norms.size - positive.size)
    if positive.size == 0:
        ax.set_title(f"all {norms.size:,} rows have norm 0", fontsize=9)
        return fig
    lo, hi = float(positive.min()), float(positive.max())
    edges = np.geomspace(lo, hi, bins + 1) if hi > lo else np.array([lo * 0.99, hi * 1.01])
    ax.hist(positive, bins=edges, color=_ALL, label=f"all {norms.size:,} shown rows")
    chosen = 0
    if selected is not None and len(selected):
        picked = np.asarray(selected, dtype=np.float64)
        chosen = picked.size
        ax.hist(picked[picked > 0], bins=edges, color=_SELECTED, label=f"{chosen:,} selected")
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    ax.set_xscale("log")
    ax.set_yscale("log")
    # Five plain-number ticks across the range (log axes label only whole decades otherwise).
    ticks = np.unique([float(f"{v:.2g}") for v in np.geomspace(lo, hi, 5)])
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("row L2 norm")
    ax.set_ylabel("rows")
    title = f"norms of the shown rows, {chosen:,} selected"
    if zero:
        title += f" ({zero:,} rows of norm 0 not drawn)"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    return fig
