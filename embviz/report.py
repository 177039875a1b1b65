"""A static HTML report of a config: for reviewing a change without Jupyter.

``write_report`` calls the same pure functions and draw functions as the widgets and the CLI, so
the report shows the numbers they show.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from embviz.config import LargeEmbeddingsConfig, Mode
from embviz.errors import EmbvizError
from embviz.memory import OptimizerState, gpu_fit, human_bytes, memory_table, totals

__all__ = ["Report", "ReportError", "write_report"]


class ReportError(EmbvizError, ValueError):
    """The report cannot be written as asked (arguments or output folder)."""


@dataclass(frozen=True)
class Report:
    """Where a report was written."""

    index: Path
    figures: tuple[Path, ...]


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { padding: 0.25em 0.6em; border-bottom: 1px solid #ddd; text-align: right; }
td { white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
tr.total td { font-weight: bold; border-top: 2px solid #444; }
.added { color: #009E73; } .removed { color: #D55E00; } .changed { color: #0072B2; }
.note { color: #555; font-size: 0.9em; } .bad { color: #D55E00; font-weight: bold; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""


def write_report(
    cfg: LargeEmbeddingsConfig,
    out_dir: str | os.PathLike[str],
    *,
    compare: LargeEmbeddingsConfig | None = None,
    gpus: int | None = None,
    hbm_gib: float | None = None,
    batch_size: int = 512,
    gpus_per_host: int = 8,
    optimizer_state: OptimizerState = "fused",
    mode: Mode | str = Mode.TRAIN,
    title: str = "embviz report",
    source: str | None = None,
    compare_source: str | None = None,
    snapshot: str | os.PathLike[str] | None = None,
) -> Report:
    """Write ``out_dir/index.html`` and its figures (PNG files beside it).

    Parameters
    ----------
    cfg : LargeEmbeddingsConfig
        The config to report on.
    out_dir : path
        Folder to write into (created if missing).
    compare : LargeEmbeddingsConfig, optional
        An earlier config: the report then shows tables added, removed and changed, and the
        bytes each change moves.
    gpus, hbm_gib : optional
        Given together: the fit on that many GPUs and torchrec's placement (`embviz.plan`).
    batch_size : int
        Batch size per rank for the planner.
    gpus_per_host : int
        GPUs per host for the planner (`embviz.plan`).
    optimizer_state, mode
        As for `embviz.memory_table`.
    title, source, compare_source : str
        Shown in the heading (``source``: where the config came from).
    snapshot : path, optional
        A torchsnapshot of these tables, or a checkpoint folder (its latest step; the first
        step gives the unchanged share): the report then shows `embviz.health` of the logged
        tables (every table when none is logged) with their singular-value spectra.

    Returns
    -------
    Report
        Paths of ``index.html`` and of the figures.

    Raises
    ------
    ReportError
        When only one of ``gpus`` and ``hbm_gib`` is given, or the folder cannot be written.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from embviz.plots import plot_dtype_savings, plot_memory, plot_placement

    if (gpus is None) != (hbm_gib is None):
        raise ReportError("gpus and hbm_gib go together: give both or neither")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"{out}: cannot create the output folder ({exc.strerror})") from None

    frame = memory_table(cfg, optimizer_state, mode)
    sums = totals(frame)
    figures: list[Path] = []
    sections: list[str] = []

    def save(figure: object, name: str) -> str:
        path = out / name
        figure.savefig(path, dpi=110, bbox_inches="tight")  # type: ignore[attr-defined]
        plt.close(figure)  # type: ignore[arg-type]
        figures.append(path)
        return f'<img src="{html.escape(name)}" alt="{html.escape(name)}">'

    fit = gpu_fit(frame, gpus, hbm_gib) if gpus is not None and hbm_gib is not None else None
    budget = fit.available_bytes if fit else None
    summary = (
        f"<p>{len(frame)} tables, {human_bytes(int(sums['total_bytes']))} in all "
        f"({int(sums['total_bytes']):,} bytes: weights {human_bytes(int(sums['weight_bytes']))}, "
        f"optimizer state {human_bytes(int(sums['optimizer_bytes']))}); "
        f"optimizer state counted as <code>{html.escape(str(optimizer_state))}</code>, mode "
        f"<code>{html.escape(str(frame['mode'].iloc[0]))}</code>.</p>"
    )
    sections.append("<h2>Memory per table</h2>" + summary + _memory_html(frame))
    sections.append(save(plot_memory(frame, budget_bytes=budget), "memory.png"))
    saved = int(sums["fp32_total_bytes"] - sums["fp16_total_bytes"])
    sections.append(
        "<h2>What fp16 saves</h2>"
        f"<p>All tables in fp16: {human_bytes(int(sums['fp16_total_bytes']))}; all in fp32: "
        f"{human_bytes(int(sums['fp32_total_bytes']))} ({human_bytes(saved)} saved).</p>"
        + save(plot_dtype_savings(frame), "dtype_savings.png")
    )
    if fit is not None:
        sections.append(
            _placement_html(
                cfg, fit, gpus, hbm_gib, batch_size, gpus_per_host, save, plot_placement
            )
        )
    if compare is not None:
        sections.append(_compare_html(compare, cfg, optimizer_state, mode, compare_source))
    if snapshot is not None:
        sections.append(_health_section(cfg, snapshot, save))

    heading = html.escape(title)
    origin = f"<p class='note'>{html.escape(source)}</p>" if source else ""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{heading}</title><style>{_CSS}</style></head><body>"
        f"<h1>{heading}</h1>{origin}" + "\n".join(sections) + "<p class='note'>Written by embviz "
        f"on {stamp}. Byte columns are exact; human units are binary (KiB = 1024 B).</p>"
        "</body></html>"
    )
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return Report(index=index, figures=tuple(figures))


def _memory_html(frame: pd.DataFrame) -> str:
    sums = totals(frame)
    head = (
        "<tr><th>table</th><th>rows</th><th>dim</th><th>dtype</th><th>optimizer</th>"
        "<th>weights</th><th>optimizer state</th><th>total</th><th>total (bytes)</th>"
        "<th>if fp16</th><th>planner estimate</th><th>logged</th></tr>"
    )
    body = []
    for name, row in frame.iterrows():
        body.append(
            f"<tr><td>{html.escape(str(name))}</td><td>{int(row['num_embeddings']):,}</td>"
            f"<td>{int(row['embedding_dim'])}</td><td>{row['data_type']}</td>"
            f"<td>{row['optimizer']}</td><td>{human_bytes(int(row['weight_bytes']))}</td>"
            f"<td>{human_bytes(int(row['optimizer_bytes']))}</td>"
            f"<td>{human_bytes(int(row['total_bytes']))}</td><td>{int(row['total_bytes']):,}</td>"
            f"<td>{human_bytes(int(row['fp16_total_bytes']))}</td>"
            f"<td title='{html.escape(str(row.get('planner_note', '')))}'>"
            f"{human_bytes(int(row['planner_bytes']))}</td>"
            f"<td>{'yes' if row['logged'] else ''}</td></tr>"
        )
    body.append(
        f"<tr class='total'><td>total</td><td></td><td></td><td></td><td></td>"
        f"<td>{human_bytes(int(sums['weight_bytes']))}</td>"
        f"<td>{human_bytes(int(sums['optimizer_bytes']))}</td>"
        f"<td>{human_bytes(int(sums['total_bytes']))}</td><td>{int(sums['total_bytes']):,}</td>"
        f"<td>{human_bytes(int(sums['fp16_total_bytes']))}</td>"
        f"<td>{human_bytes(int(sums['planner_bytes']))}</td><td></td></tr>"
    )
    notes = sorted({str(n) for n in frame.get("planner_note", pd.Series(dtype=str)) if n})
    note_html = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    planner = f"<p class='note'>Planner estimate differs:</p><ul class='note'>{note_html}</ul>"
    return f"<table>{head}{''.join(body)}</table>" + (planner if notes else "")


def _placement_html(
    cfg, fit, gpus, hbm_gib, batch_size, gpus_per_host, save, plot_placement
) -> str:
    from embviz.placement import PlanError, plan

    fit_class = "" if fit.fits else " class='bad'"
    parts = [f"<h2>Placement on {gpus} GPUs of {hbm_gib:g} GiB</h2>", f"<p{fit_class}>"]
    parts.append(html.escape(fit.message) + "</p>")
    try:
        placement = plan(
            cfg, gpus=gpus, hbm_gib=hbm_gib, batch_size=batch_size, gpus_per_host=gpus_per_host
        )
    except PlanError as exc:
        parts.append(f"<p class='bad'>torchrec's planner: {html.escape(str(exc))}</p>")
        return "".join(parts)
    parts.append(save(plot_placement(placement, hbm_bytes=fit.hbm_bytes), "placement.png"))
    rows = "".join(
        f"<tr><td>{html.escape(str(r['table']))}</td><td>{html.escape(str(r['sharding_type']))}"
        f"</td><td>{html.escape(str(r['compute_kernel']))}</td>"
        f"<td>{html.escape(', '.join(map(str, r['ranks'])))}</td></tr>"
        for _, r in placement.tables.iterrows()
    )
    parts.append(
        "<table><tr><th>table</th><th>sharding</th><th>kernel</th><th>ranks</th></tr>"
        f"{rows}</table>"
    )
    return "".join(parts)


def _compare_html(old, new, optimizer_state, mode, compare_source) -> str:
    from embviz.compare import compare_configs

    diff = compare_configs(old, new, optimizer_state, mode)
    moved = int(diff["delta_bytes"].sum())
    sign = "+" if moved >= 0 else "-"
    against = f" against {html.escape(compare_source)}" if compare_source else ""
    rows = "".join(
        f"<tr class='{row['change']}'><td>{html.escape(str(name))}</td><td>{row['change']}</td>"
        f"<td>{html.escape(row['details'])}</td>"
        f"<td>{human_bytes(int(row['old_total_bytes']))}</td>"
        f"<td>{human_bytes(int(row['new_total_bytes']))}</td>"
        f"<td>{'+' if row['delta_bytes'] >= 0 else '-'}{human_bytes(abs(int(row['delta_bytes'])))}"
        f"</td><td>{int(row['delta_bytes']):+,}</td></tr>"
        for name, row in diff.iterrows()
        if row["change"] != "unchanged"
    )
    unchanged = int((diff["change"] == "unchanged").sum())
    return (
        f"<h2>Changes{against}</h2>"
        f"<p>{sign}{human_bytes(abs(moved))} in all ({moved:+,} bytes); "
        f"{unchanged} tables unchanged.</p>"
        "<table><tr><th>table</th><th>change</th><th>details</th><th>before</th><th>after</th>"
        f"<th>moved</th><th>moved (bytes)</th></tr>{rows}</table>"
    )


def _health_section(cfg, snapshot, save) -> str:
    """`embviz.health` of a snapshot's tables, with a spectrum figure per table."""
    from embviz.norms import resolve_snapshot
    from embviz.plots.health import plot_spectrum
    from embviz.snapshots import SnapshotError, checkpoints
    from embviz.tablehealth import health, spectrum

    path = resolve_snapshot(snapshot)
    try:
        first = str(checkpoints(snapshot)["path"].iloc[0])
    except SnapshotError:  # a single snapshot
        first = None
    initial = first if first is not None and first != path else None
    frame = health(path, initial=initial, config=cfg, progress=False)
    spectra = spectrum(path, tables=list(frame.index), progress=False)
    head = (
        "<tr><th>table</th><th>rows</th><th>dim</th><th>rows read</th><th>effective rank</th>"
        "<th>information abundance</th><th>dim spread</th><th>top direction</th>"
        "<th>dims for 99%</th><th>unchanged</th><th>smaller dim</th><th>it saves</th></tr>"
    )
    rows = []
    for name, r in frame.iterrows():
        unchanged = "" if pd.isna(r["unchanged_share"]) else f"{100 * r['unchanged_share']:.2f}%"
        smaller = "" if pd.isna(r["smaller_dim"]) else f"{int(r['smaller_dim'])}"
        saves = (
            "" if pd.isna(r["smaller_dim_saves_bytes"])
            else human_bytes(int(r["smaller_dim_saves_bytes"]))
        )  # fmt: skip
        rows.append(
            f"<tr><td>{html.escape(str(name))}</td><td>{int(r['rows']):,}</td>"
            f"<td>{int(r['dim'])}</td><td>{int(r['sampled']):,}</td>"
            f"<td>{r['effective_rank']:.3g}</td><td>{r['information_abundance']:.3g}</td>"
            f"<td>{r['dim_spread']:.3g}</td><td>{100 * r['top_energy_share']:.2f}%</td>"
            f"<td>{int(r['energy_rank_99'])}</td><td>{unchanged}</td><td>{smaller}</td>"
            f"<td>{saves}</td></tr>"
        )
    figures = "".join(
        save(plot_spectrum(spectra, table=str(name)), f"spectrum_{i}.png")
        for i, name in enumerate(frame.index)
    )
    against = f" (unchanged: against {html.escape(initial)})" if initial else ""
    return (
        f"<h2>Embedding health</h2><p class='note'>{html.escape(path)}{against}. Effective rank "
        "and information abundance run from 1 (every row along one direction) to dim (every "
        "direction used alike); dim spread is near 1 for isotropic rows and near 0 for collapsed "
        "ones; top direction is the share of the rows' squared length along the largest "
        "singular direction. Where the effective rank is at most half of dim, the smaller dim "
        "holds 99% of it (a multiple of 4) and what it saves is from the memory table.</p>"
        f"<table>{head}{''.join(rows)}</table>{figures}"
    )
