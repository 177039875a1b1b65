"""The dtype figure: what fp16 saves against the current config, and what serving dtypes take.

`plot_dtype_savings` draws up to three panels that share the tables (rows, largest on top, the
total first):

1. **fp16 against the current config** (from `embviz.memory_table`): each table's bytes as
   configured beside its bytes in fp16, same optimizer and mode. Tables already in fp16 save
   nothing and are marked so; the title gives the saving of the whole config as it is.
2. **serving dtypes** (from `embviz.serving_bytes`, optional): the bytes each table takes in
   torchrec's quantized ``EmbeddingBagCollection`` in fp32, fp16, int8, int4 and int2 (rows
   padded to 16 bytes, int rows with their fp16 scale and bias). Bytes only: any config.
3. **measured quality** (from `embviz.quantization_error_table`, optional): for tables whose
   trained weights were given, the share of each sampled row's nearest neighbours kept once the
   table is served in that dtype (1 is no change).

Nothing is computed here: every length is a value of those DataFrames divided by the axis unit.
Legends sit outside the Axes, so they never cover a bar.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from embviz.memory import (
    TOTAL_LABEL,
    dtype_savings,
    human_bytes,
    largest_tables,
)
from embviz.plots.memory import MAX_TABLES, OKABE_ITO, _label_size, _mode_text, _unit

if TYPE_CHECKING:
    from collections.abc import Sequence

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["DTYPE_COLOURS", "plot_dtype_savings"]

#: One colour per serving dtype (Okabe-Ito), widest first.
DTYPE_COLOURS: dict[str, str] = {
    "fp32": OKABE_ITO["sky_blue"],
    "fp16": OKABE_ITO["bluish_green"],
    "int8": OKABE_ITO["orange"],
    "int4": OKABE_ITO["vermillion"],
    "int2": OKABE_ITO["reddish_purple"],
}
_CURRENT = OKABE_ITO["blue"]
_QUALITY_MEASURE = "knn_kept_mean"


def _serving_dtypes(serving: pd.DataFrame) -> list[str]:
    return [d for d in DTYPE_COLOURS if f"{d}_bytes" in serving.columns]


def _quality_rows(quality: pd.DataFrame, table: str, dtype: str) -> float:
    try:
        return float(quality.loc[(table, dtype), _QUALITY_MEASURE])
    except KeyError:
        return float("nan")


def _panel_axes(
    ax: Axes | Sequence[Axes] | None, panels: int, bars: int
) -> tuple[Figure, list[Axes]]:
    if ax is None:
        import matplotlib.pyplot as plt

        height = max(2.8, 0.32 * bars + 1.6)
        width = 8.0 if panels == 1 else 5.8 * panels
        fig, grid = plt.subplots(
            1, panels, figsize=(width, height), layout="constrained", sharey=True, squeeze=False
        )
        # Made through pyplot so Jupyter shows the returned Figure, closed so it is shown once.
        plt.close(fig)
        return fig, list(grid.ravel())
    listed = [ax] if hasattr(ax, "barh") else list(ax)
    if len(listed) != panels:
        raise ValueError(
            f"need {panels} Axes (fp16{', serving' if panels > 1 else ''}"
            f"{', quality' if panels > 2 else ''}), got {len(listed)}"
        )
    for each in listed:
        each.clear()
    return listed[0].get_figure(), listed


def plot_dtype_savings(
    frame: pd.DataFrame,
    ax: Axes | Sequence[Axes] | None = None,
    *,
    serving: pd.DataFrame | None = None,
    quality: pd.DataFrame | None = None,
    max_tables: int = MAX_TABLES,
) -> Figure:
    """What fp16 saves against the current config; with ``serving``, the serving dtypes too.

    Parameters
    ----------
    frame : pandas.DataFrame
        From `embviz.memory_table` (any mode; its ``total_bytes`` and ``fp16_total_bytes``).
    ax : matplotlib Axes or sequence of Axes, optional
        One Axes per panel (1, 2 with ``serving``, 3 with ``quality`` too), cleared first; a
        new Figure when None.
    serving : pandas.DataFrame, optional
        From `embviz.serving_bytes` for the same config: adds the serving panel.
    quality : pandas.DataFrame, optional
        From `embviz.quantization_error_table` (index ``(table, dtype)``) on trained weights of
        the same tables: adds the quality panel (needs ``serving``). Tables or dtypes it does
        not hold are marked "not measured".
    max_tables : int
        Beyond this many tables, the largest are drawn and the rest summed into one bar.

    Returns
    -------
    matplotlib.figure.Figure
        Panel 1: two bar containers, ``"current config"`` then ``"fp16"``, total first (on
        top) then tables by current bytes; each fp16 bar is labelled with what it saves, or
        ``"already fp16"``. Panel 2: one container per serving dtype (fp32 ... int2), bars of
        ``serving[f"{dtype}_bytes"]`` (none where the width is refused). Panel 3: one container
        per measured dtype, bars of ``knn_kept_mean``.
    """
    if quality is not None and serving is None:
        raise ValueError("quality needs serving (the serving panel it measures)")
    savings = dtype_savings(largest_tables(frame, max_tables, by="total_bytes"))
    tables = savings.iloc[:-1].sort_values("current_bytes", ascending=False, kind="stable")
    shown = pd.concat([savings.iloc[[-1]], tables])  # total first (on top)
    panels = 1 + (serving is not None) + (quality is not None)
    fig, axes = _panel_axes(ax, panels, int(len(shown) * (1.4 if panels == 1 else 2.2)))
    n = len(shown)
    centre = np.arange(n)[::-1].astype(np.float64)
    centre[1:] -= 0.6  # a gap between the total (on top) and the tables
    size = _label_size(n)

    # Panel 1: the config as it is against every table in fp16.
    first = axes[0]
    unit, scale = _unit(shown["current_bytes"].max())
    height = 0.38
    current = shown["current_bytes"].to_numpy(dtype=np.float64) / scale
    fp16 = shown["fp16_bytes"].to_numpy(dtype=np.float64) / scale
    first.barh(centre + height / 2, current, height=height, color=_CURRENT, label="current config")
    first.barh(centre - height / 2, fp16, height=height, color=DTYPE_COLOURS["fp16"], label="fp16")
    labels = []
    for name, dtype in zip(shown.index, shown["data_type"], strict=True):
        labels.append(f"{name} [{dtype}]" if isinstance(dtype, str) else str(name))
    first.set_yticks(centre, labels, fontsize=size)
    already_fp16 = shown["already_fp16"].fillna(False).astype(bool).to_numpy()
    for position, value, saved, already in zip(
        centre, fp16, shown["saved_bytes"], already_fp16, strict=True
    ):
        text = " already fp16" if already else f" saves {human_bytes(int(saved))}"
        first.text(value, position - height / 2, text, va="center", ha="left", fontsize=size - 1)
    first.set_xlim(0, float(current.max(initial=0)) * 1.45 or 1)
    first.set_xlabel(f"bytes ({unit})")
    first.set_ylabel("table [dtype in the config]")
    total = savings.loc[TOTAL_LABEL]
    first.set_title(
        f"fp16 against the current config{_mode_text(frame)}:\nsaves "
        f"{human_bytes(int(total['saved_bytes']))} of {human_bytes(int(total['current_bytes']))}",
        fontsize=10,
    )
    panel_list = [first]

    if serving is not None:
        second = axes[1]
        keep = [t for t in shown.index[1:] if t in serving.index]
        grouped = largest_tables(serving, max(max_tables, 2), keep=keep)
        missing = [t for t in shown.index[1:] if t not in grouped.index]
        if missing:
            raise ValueError(f"serving has no table {missing[0]!r}")
        grouped = grouped.reindex(shown.index[1:])
        dtypes = _serving_dtypes(serving)
        # A dtype some table cannot take has no total (the config cannot be served in it).
        refused_count = {d: int(serving[f"{d}_bytes"].isna().sum()) for d in dtypes}
        sums = {d: int(serving[f"{d}_bytes"].sum()) for d in dtypes}
        values = {
            d: np.concatenate(
                [
                    [np.nan if refused_count[d] else sums[d]],
                    grouped[f"{d}_bytes"].to_numpy(dtype=np.float64, na_value=np.nan),
                ]
            )
            for d in dtypes
        }
        finite = np.concatenate([v[np.isfinite(v)] for v in values.values()])
        largest = float(finite.max()) if finite.size else 0.0
        s_unit, s_scale = _unit(largest)
        bar = 0.8 / max(len(dtypes), 1)
        for i, dtype in enumerate(dtypes):
            offset = 0.4 - bar * (i + 0.5)
            widths = values[dtype] / s_scale
            drawn = np.isfinite(widths)
            second.barh(
                centre[drawn] + offset,
                widths[drawn],
                height=bar,
                color=DTYPE_COLOURS[dtype],
                label=dtype,
            )
            for position in centre[~drawn]:
                second.text(
                    0, position + offset, f" {dtype}: width refused", va="center", fontsize=6
                )
        second.set_xlim(0, largest / s_scale * 1.05 or 1)
        second.set_xlabel(f"bytes served ({s_unit})")
        quantized = [d for d in ("int8", "int4", "int2") if d in dtypes]
        parts = ", ".join(
            f"{d} {human_bytes(sums[d])}"
            if not refused_count[d]
            else f"{d} refused for {refused_count[d]} tables"
            for d in quantized
        )
        second.set_title(
            f"served from torchrec's quantized collection:\n{parts} "
            f"(fp32 {human_bytes(sums.get('fp32', 0))})",
            fontsize=10,
        )
        second.tick_params(axis="y", labelleft=False)
        panel_list.append(second)

    if quality is not None:
        third = axes[2]
        measured = [d for d in DTYPE_COLOURS if d in set(quality.index.get_level_values(1))]
        bar = 0.8 / max(len(measured), 1)
        for i, dtype in enumerate(measured):
            offset = 0.4 - bar * (i + 0.5)
            kept = np.array(
                [np.nan] + [_quality_rows(quality, str(t), dtype) for t in shown.index[1:]]
            )
            drawn = np.isfinite(kept)
            third.barh(
                centre[drawn] + offset,
                kept[drawn],
                height=bar,
                color=DTYPE_COLOURS[dtype],
                label=dtype,
            )
        for position, table in zip(centre[1:], shown.index[1:], strict=True):
            if not any(np.isfinite(_quality_rows(quality, str(table), d)) for d in measured):
                third.text(0.02, position, "not measured", va="center", fontsize=size - 1)
        k = quality["k"].dropna()
        k_text = f"k={int(k.iloc[0])}" if len(k) and (k == k.iloc[0]).all() else "k"
        third.set_xlim(0, 1.0)
        third.set_xlabel(f"nearest neighbours kept (mean share, {k_text})")
        third.set_title(
            "quality measured on the rows given:\n1 = every neighbour kept", fontsize=10
        )
        third.tick_params(axis="y", labelleft=False)
        panel_list.append(third)

    # One legend for all panels (fp16 has one colour everywhere), outside the last panel.
    from matplotlib.patches import Patch

    # Patches of the bars' own colours (a dtype with no bar drawn would lend a default colour).
    colours = {"current config": _CURRENT, "fp16": DTYPE_COLOURS["fp16"]}
    if serving is not None:
        colours.update({d: DTYPE_COLOURS[d] for d in _serving_dtypes(serving)})
    handles = [Patch(color=colour, label=label) for label, colour in colours.items()]
    panel_list[-1].legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=8,
        frameon=False,
        title="stored as",
        title_fontsize=8,
    )
    for each in panel_list:
        each.grid(axis="x", alpha=0.3)
        each.set_axisbelow(True)
    return fig
