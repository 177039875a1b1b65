"""A static HTML report of a config: for reviewing a change without Jupyter.

``write_report`` calls the same pure functions and draw functions as the widgets and the CLI, so
the report shows the numbers they show.
"""

from __future__ import annotations

import html
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

import pandas as pd

from embviz.config import LargeEmbeddingsConfig, Mode
from embviz.errors import EmbvizError
from embviz.htmltable import count as _count
from embviz.htmltable import html_table as _html_table
from embviz.htmltable import human as _bytes
from embviz.htmltable import row_classes as _row_classes
from embviz.memory import (
    PLANNER_RESERVED_FRACTION,
    TOTAL_LABEL,
    OptimizerState,
    dtype_savings,
    gpu_fit,
    human_bytes,
    memory_table,
    totals,
)
from embviz.serving import SERVING_DTYPES, serving_bytes

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
tr.total td, td.total { font-weight: bold; border-top: 2px solid #444; }
.added { color: #009E73; } .removed { color: #D55E00; } .changed { color: #0072B2; }
.note { color: #555; font-size: 0.9em; } .bad { color: #D55E00; font-weight: bold; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
code { background: #f4f4f4; padding: 0 0.2em; }
td.why, th.why, table.reasons th:last-child {
  white-space: normal; text-align: left; min-width: 24em;
}
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
    serving_dtype: str | Mapping[str, str] | None = "int8",
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
    serving_dtype : str or mapping, optional
        The serving section's choice (as ``memory_table(cfg, mode="inference",
        serving_dtype=...)`` and ``embviz memory --mode inference --serving-dtype``): its bytes
        per table and total. Every table in every serving dtype is shown beside it regardless.
    snapshot : path, optional
        A snapshot (or checkpoint folder: its latest step) of the model: the serving section
        then measures what int8, int4 and int2 cost each of the config's tables it holds
        (`embviz.quantization_error_table` on up to `QUALITY_ROWS` sampled rows), and the report
        shows each logged table's rows in 2-D (`embviz.Projector`, drawn by
        `embviz.plots.projection.plot_projection_sample` from a stratified sample of its frame)
        and their health (`embviz.health`, against the first checkpoint of a folder for the
        unchanged share; the logged tables, every table when none is logged) with their
        singular-value spectra.

    Returns
    -------
    Report
        Paths of ``index.html`` and of the figures.

    Raises
    ------
    ReportError
        When only one of ``gpus`` and ``hbm_gib`` is given, the folder cannot be created or
        written, or one of the report's file names is taken by a folder. The report's files
        (``index.html`` and the PNG figures) are written fresh, each to a temporary file
        renamed into place: a symlink of that name is replaced, never written through; other
        files in the folder are left alone.
    embviz.ArgumentError, embviz.ServingWidthError, UnknownTableError
        A ``serving_dtype`` that is unknown, names unknown tables or does not fit a width.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from embviz.plots import plot_dtype_savings, plot_memory, plot_placement

    if (gpus is None) != (hbm_gib is None):
        raise ReportError("gpus and hbm_gib go together: give both or neither")
    latest = None
    if snapshot is not None:  # a wrong path fails before anything is written
        from embviz.snapshots import resolve_snapshot

        latest = resolve_snapshot(snapshot)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"{out}: cannot create the output folder ({exc.strerror})") from None
    # Refuse before the work where the files cannot be written.
    owned = ["index.html", "memory.png", "dtype_savings.png"]
    if gpus is not None:
        owned.append("placement.png")
    for name in owned:
        _check_replaceable(out / name)
    _replace(out / ".embviz-write-check", lambda handle: None, keep=False)

    frame = memory_table(cfg, optimizer_state, mode)
    sums = totals(frame)
    figures: list[Path] = []
    sections: list[str] = []

    def save(figure: object, name: str) -> str:
        path = out / name
        try:
            _replace(
                path,
                lambda handle: figure.savefig(  # type: ignore[attr-defined]
                    handle, format="png", dpi=110, bbox_inches="tight"
                ),
            )
        finally:
            plt.close(figure)  # type: ignore[arg-type]
        figures.append(path)
        return f'<img src="{html.escape(name)}" alt="{html.escape(name)}">'

    fit = gpu_fit(frame, gpus, hbm_gib) if gpus is not None and hbm_gib is not None else None
    summary = (
        f"<p>{len(frame)} tables, {human_bytes(int(sums['total_bytes']))} in all "
        f"({int(sums['total_bytes']):,} bytes: weights {human_bytes(int(sums['weight_bytes']))}, "
        f"optimizer state {human_bytes(int(sums['optimizer_bytes']))}); "
        f"optimizer state counted as <code>{html.escape(str(optimizer_state))}</code>, mode "
        f"<code>{html.escape(str(frame['mode'].iloc[0]))}</code>.</p>"
    )
    sections.append("<h2>Memory per table</h2>" + summary + _memory_html(frame))
    sections.append(
        save(plot_memory(frame, hbm_bytes=fit.hbm_bytes if fit else None), "memory.png")
    )
    sections.append(_fp16_html(frame))
    serving = serving_bytes(cfg)
    quality = _serving_quality(cfg, snapshot) if snapshot is not None else None
    sections.append(
        _serving_html(cfg, serving, serving_dtype)
        + (_quality_html(quality) if quality is not None else "")
        + save(plot_dtype_savings(frame, serving=serving, quality=quality), "dtype_savings.png")
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
        sections.append(_projection_html(cfg, latest, save))
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
    _replace(index, lambda handle: handle.write(page.encode("utf-8")))
    return Report(index=index, figures=tuple(figures))


def _check_replaceable(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        raise ReportError(
            f"{path}: is a folder; the report writes a file of that name (move the folder away "
            "or choose another --out)"
        )


def _replace(path: Path, write: Callable[[IO[bytes]], object], *, keep: bool = True) -> None:
    """Write one of the report's files fresh: a temporary file beside it, then a rename.

    The rename replaces whatever ``path`` was (a file, or a symlink: never the file a link
    points to), and a reader never sees a half-written file. ``keep=False`` removes the file
    (a check that the folder can be written).
    """
    _check_replaceable(path)
    try:
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise ReportError(
            f"{path.parent}: cannot write the report there ({exc.strerror})"
        ) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        if keep:
            os.chmod(temporary, 0o644)  # mkstemp's files are 0o600; a report is for sharing
            os.replace(temporary, path)
    except OSError as exc:
        raise ReportError(f"{path}: cannot write ({exc.strerror})") from None
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)


#: Rows per table the report's quality measurement compares (a sample of larger tables).
QUALITY_ROWS = 100_000


def _serving_quality(cfg: LargeEmbeddingsConfig, snapshot: str | os.PathLike[str]) -> pd.DataFrame:
    """`quantization_error_table` of the config's tables the snapshot holds, int8/int4/int2."""
    from embviz.norms import table_names
    from embviz.quantization import quantization_error_table
    from embviz.snapshots import resolve_snapshot

    path = resolve_snapshot(snapshot)
    held = set(table_names(path))
    tables = [t for t in cfg.table_names if t in held]
    return quantization_error_table(
        path, ("int8", "int4", "int2"), tables=tables, rows=QUALITY_ROWS, progress=False
    )


def _quality_html(quality: pd.DataFrame) -> str:
    """Measured quality per table and serving dtype (`quantization_error_table`)."""
    measured_k = quality["k"].dropna()
    k = int(measured_k.iloc[0]) if len(measured_k) else "k"
    numbers = {
        "neighbours kept (mean)": ("knn_kept_mean", ".3f"),
        "worst cosine": ("cos_min", ".4f"),
        "row norm error (max)": ("norm_rel_err_max", ".2e"),
        "bag error (mean)": ("bag_rel_err_mean", ".2e"),
    }
    refused = quality["refused"].fillna("").astype(str)
    measured = {
        "rows compared": quality["rows"],
        **{label: quality[c] for label, (c, _) in numbers.items()},
    }
    shown = pd.DataFrame(
        {
            "table": [str(t) for t, _ in quality.index],
            "dtype": [str(d) for _, d in quality.index],
            **{
                label: [None if why else v for why, v in zip(refused, values, strict=True)]
                for label, values in measured.items()
            },
        },
        dtype=object,
    )
    # A refused dtype reads "refused" (the reason as its tooltip and in a note under the table).
    shown.loc[list(refused.to_numpy() != ""), "rows compared"] = "refused"
    titles = pd.DataFrame({"rows compared": refused.to_list()}, index=shown.index)
    classes = _row_classes(shown, {i: "quality" for i in range(len(shown))})

    def spec(text: str) -> Callable[[object], str]:
        return lambda v: format(float(v), text)  # type: ignore[arg-type]

    formats: dict[str, Callable[[object], str]] = {
        label: spec(text) for label, (_, text) in numbers.items()
    }
    formats["rows compared"] = lambda v: v if isinstance(v, str) else _count(v)
    table = _html_table(shown, formats, name="quality", classes=classes, titles=titles)
    reasons = [r for r in refused if r]  # each names its table and dtype
    if reasons:
        table += "<ul class='note'>" + "".join(f"<li>{html.escape(r)}</li>" for r in reasons)
        table += "</ul>"
    return (
        "<p>What serving costs the trained rows of the snapshot, measured with FBGEMM's own "
        "row-wise quantization (<code>embviz.quantization_error_table</code>): the share of each "
        f"sampled row's {k} nearest neighbours kept, the worst cosine between a row and its served "
        "copy, the largest relative error of a row norm and the mean relative error of pooled "
        "bags of two rows.</p>" + table
    )


def _projection_html(cfg: LargeEmbeddingsConfig, snapshot: str | os.PathLike[str], save) -> str:
    """Each logged table of the snapshot (all its tables when none is logged) in 2-D."""
    from embviz.norms import table_names
    from embviz.plots.projection import plot_projection_sample
    from embviz.projector import Projector

    path = str(snapshot)
    held = table_names(path)
    wanted = [t for t in cfg.logged_tables if t in held] or held
    parts = [
        "<h2>Rows of the logged tables</h2>"
        f"<p class='note'>From <code>{html.escape(str(path))}</code>. Each table's rows placed by "
        "the PCA of all its rows (<code>embviz.Projector</code>); each figure draws at most "
        "20,000 of them, beyond that a sample stratified by norm (its title says which). "
        "<code>embviz.Projector</code> in a notebook shows every row, interactively.</p>"
    ]
    for name in wanted:
        vocab = cfg.table(name).vocab if name in cfg.table_names else None
        if vocab is not None and not Path(vocab).exists():
            vocab = None
        projector = Projector(path, name, vocab=vocab, progress=False)
        parts.append(f"<h3>{html.escape(name)}</h3><p>{html.escape(projector.description)}</p>")
        figure = plot_projection_sample(projector, title=None)
        figure.axes[0].set_title(f"{name}: " + figure.axes[0].get_title(), fontsize=9)
        parts.append(save(figure, f"projection_{name}.png"))
    return "\n".join(parts)


def _memory_html(frame: pd.DataFrame) -> str:
    sums = totals(frame)
    byte_columns = {
        "weights": "weight_bytes",
        "optimizer state": "optimizer_bytes",
        "total": "total_bytes",
        "total (bytes)": "total_bytes",
        "if fp16": "fp16_total_bytes",
        "planner estimate": "planner_bytes",
    }
    shown = pd.DataFrame(
        {
            "table": [str(n) for n in frame.index],
            "rows": frame["num_embeddings"],
            "dim": frame["embedding_dim"],
            "dtype": frame["data_type"].astype(str),
            "optimizer": frame["optimizer"].astype(str),
            **{label: frame[column] for label, column in byte_columns.items()},
            "logged": ["yes" if logged else "" for logged in frame["logged"]],
        },
        dtype=object,
    ).reset_index(drop=True)
    total = {"table": "total", **{k: int(sums[c]) for k, c in byte_columns.items()}}
    shown.loc[len(shown)] = {c: total.get(c) for c in shown.columns}
    notes_per_row = [str(n) if n else "" for n in frame.get("planner_note", [""] * len(frame))]
    titles = pd.DataFrame({"planner estimate": [*notes_per_row, ""]}, index=shown.index)
    formats = {c: _bytes for c in byte_columns} | {"rows": _count, "total (bytes)": _count}
    table = _html_table(
        shown,
        formats,
        name="memory",
        classes=_row_classes(shown, {len(shown) - 1: "total"}),
        titles=titles,
    )
    notes = sorted({n for n in notes_per_row if n})
    note_html = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    planner = f"<p class='note'>Planner estimate differs:</p><ul class='note'>{note_html}</ul>"
    return table + (planner if notes else "")


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
    parts.append(_reasons_html(placement))
    return "".join(parts)


def _reasons_html(placement) -> str:
    """Bytes of each table on each rank, its sharding and why (`placement_reasons`)."""
    from embviz.placement_reasons import placement_reasons, usable_bytes

    reasons = placement_reasons(placement)
    rank_columns = [c for c in reasons.columns if c.startswith("rank ")]
    shown = pd.DataFrame(
        {
            "table": [str(n) for n in reasons.index],
            "sharding": reasons["sharding_type"].astype(str),
            "shards": reasons["num_shards"],
            "bytes": reasons["table_bytes"],
            # a rank holding nothing of a table is left blank
            **{c: [int(v) or None for v in reasons[c]] for c in rank_columns},
            "why": reasons["reason"].astype(str),
        },
        dtype=object,
    ).reset_index(drop=True)
    total = {"table": "total", "bytes": int(reasons["table_bytes"].sum())}
    total |= {c: int(reasons[c].sum()) for c in rank_columns}
    shown.loc[len(shown)] = {c: total.get(c) for c in shown.columns}
    classes = _row_classes(shown, {len(shown) - 1: "total"})
    classes.loc[: len(shown) - 2, "why"] = "why"
    table = _html_table(
        shown,
        {c: _bytes for c in ["bytes", *rank_columns]},
        name="reasons",
        classes=classes,
        table_class="reasons",
    )
    return (
        "<p>Bytes of each table on each rank (exact weights and optimizer state of its shards), "
        "and why it sits there. torchrec's planner keeps, among the proposals that fit each "
        f"GPU's usable {human_bytes(usable_bytes(placement))} (its memory less "
        f"{PLANNER_RESERVED_FRACTION:.0%} kept for the dense model), the one its performance "
        "model rates cheapest: a split is forced only where a table is larger than that.</p>"
        + table
    )


def _fp16_html(frame: pd.DataFrame) -> str:
    """fp16 against the config as it is: tables already fp16 save nothing and are named."""
    savings = dtype_savings(frame)
    total = savings.loc[TOTAL_LABEL]
    tables = savings.drop(index=TOTAL_LABEL)
    already = [str(n) for n in tables.index[tables["already_fp16"].fillna(False).astype(bool)]]
    saving = [
        f"{html.escape(str(n))} {human_bytes(int(b))}"
        for n, b in tables["saved_bytes"].sort_values(ascending=False).items()
        if b > 0
    ]
    return (
        "<h2>What fp16 saves against this config</h2>"
        f"<p>Switching every table to fp16 takes {human_bytes(int(total['current_bytes']))} "
        f"to {human_bytes(int(total['fp16_bytes']))}: "
        f"<b>{human_bytes(int(total['saved_bytes']))} saved</b> "
        f"({int(total['saved_bytes']):,} bytes). "
        + (
            f"Already fp16, saving nothing more: {html.escape(', '.join(already))}. "
            if already
            else ""
        )
        + (f"Saving most: {'; '.join(saving[:5])}. " if saving else "")
        + "Fused optimizer state stays fp32 by default, so only the weights halve.</p>"
    )


def _serving_html(cfg: LargeEmbeddingsConfig, serving: pd.DataFrame, serving_dtype: object) -> str:
    """Bytes served from torchrec's quantized collection: the chosen dtype, and every dtype."""
    parts = [
        "<h2>Serving (inference from torchrec's quantized collection)</h2>",
        "<p>Rows padded to 16 bytes; int8/int4/int2 rows carry a 4-byte fp16 scale and bias; "
        "each table rounded up to 128 bytes; no optimizer state. Unquantized: the inference "
        "collection in each table's own dtype.</p>",
    ]
    if serving_dtype is not None:
        chosen = memory_table(cfg, mode="inference", serving_dtype=serving_dtype)
        sums = totals(chosen)
        if isinstance(serving_dtype, str):
            label, flags = serving_dtype, f"--serving-dtype {serving_dtype}"
        else:
            pairs = [f"{k}={v}" for k, v in serving_dtype.items()]  # type: ignore[attr-defined]
            label, flags = ", ".join(pairs), " ".join(f"--serving-dtype {p}" for p in pairs)
        saved = int(sums["unquantized_bytes"]) - int(sums["total_bytes"])
        parts.append(
            f"<p class='serving-choice'>Served as <code>{html.escape(str(label))}</code>: "
            f"<b>{human_bytes(int(sums['total_bytes']))}</b> ({int(sums['total_bytes']):,} "
            f"bytes) against {human_bytes(int(sums['unquantized_bytes']))} unquantized "
            f"({'-' if saved < 0 else ''}{human_bytes(abs(saved))} saved); torchrec's planner "
            f"would estimate {human_bytes(int(sums['planner_bytes']))}. The same numbers as "
            f"<code>embviz memory CONFIG --mode inference {html.escape(flags)}</code>.</p>"
        )
    dtypes = [d for d in SERVING_DTYPES if f"{d}_bytes" in serving.columns]
    shown = pd.DataFrame(
        {
            "table": [str(n) for n in serving.index],
            "rows": serving["num_embeddings"],
            "dim": serving["embedding_dim"],
            "dtype": serving["data_type"].astype(str),
            "unquantized": serving["unquantized_bytes"],
            **{d: serving[f"{d}_bytes"] for d in dtypes},
        },
        dtype=object,
    ).reset_index(drop=True)
    total = {"table": "total", "unquantized": int(serving["unquantized_bytes"].sum())}
    total |= {  # a dtype refused for any table has no total
        d: None if serving[f"{d}_bytes"].isna().any() else int(serving[f"{d}_bytes"].sum())
        for d in dtypes
    }
    shown.loc[len(shown)] = {c: total.get(c) for c in shown.columns}
    table = _html_table(
        shown,
        {c: _bytes for c in ["unquantized", *dtypes]} | {"rows": _count},
        name="serving",
        classes=_row_classes(shown, {len(shown) - 1: "total"}),
        refused=dtypes,
    )
    refused = [f"{n}: {r}" for n, r in serving["refused"].items() if r]
    note = (
        "<ul class='note'>" + "".join(f"<li>{html.escape(r)}</li>" for r in refused) + "</ul>"
        if refused
        else ""
    )
    return "".join(parts) + table + note


def _compare_html(old, new, optimizer_state, mode, compare_source) -> str:
    from embviz.compare import compare_configs

    diff = compare_configs(old, new, optimizer_state, mode)
    moved = int(diff["delta_bytes"].sum())
    sign = "+" if moved >= 0 else "-"
    against = f" against {html.escape(compare_source)}" if compare_source else ""
    changed = diff[diff["change"] != "unchanged"]
    shown = pd.DataFrame(
        {
            "table": [str(n) for n in changed.index],
            "change": changed["change"].astype(str),
            "details": changed["details"].astype(str),
            "before": changed["old_total_bytes"],
            "after": changed["new_total_bytes"],
            "moved": changed["delta_bytes"],
            "moved (bytes)": changed["delta_bytes"],
        },
        dtype=object,
    ).reset_index(drop=True)

    def signed(value: object) -> str:
        delta = int(value)  # type: ignore[call-overload]
        return f"{'+' if delta >= 0 else '-'}{human_bytes(abs(delta))}"

    table = _html_table(
        shown,
        {"before": _bytes, "after": _bytes, "moved": signed, "moved (bytes)": "{:+,}".format},
        name="compare",
        classes=_row_classes(shown, dict(enumerate(shown["change"]))),
    )
    unchanged = int((diff["change"] == "unchanged").sum())
    return (
        f"<h2>Changes{against}</h2>"
        f"<p>{sign}{human_bytes(abs(moved))} in all ({moved:+,} bytes); "
        f"{unchanged} tables unchanged.</p>" + table
    )


def _health_section(cfg, snapshot, save) -> str:
    """`embviz.health` of a snapshot's tables, with a spectrum figure per table."""
    from embviz.plots.health import plot_spectrum
    from embviz.snapshots import SnapshotError, checkpoints, resolve_snapshot
    from embviz.tablehealth import health, spectrum

    path = resolve_snapshot(snapshot)
    try:
        first = str(checkpoints(snapshot)["path"].iloc[0])
    except SnapshotError:  # a single snapshot
        first = None
    initial = first if first is not None and first != path else None
    frame = health(path, initial=initial, config=cfg, progress=False)
    spectra = spectrum(path, tables=list(frame.index), progress=False)
    shown = pd.DataFrame(
        {
            "table": [str(n) for n in frame.index],
            "rows": frame["rows"],
            "dim": frame["dim"],
            "rows read": frame["sampled"],
            "effective rank": frame["effective_rank"],
            "information abundance": frame["information_abundance"],
            "dim spread": frame["dim_spread"],
            "top direction": frame["top_energy_share"],
            "dims for 99%": frame["energy_rank_99"],
            "unchanged": frame["unchanged_share"],
            "smaller dim": frame["smaller_dim"],
            "it saves": frame["smaller_dim_saves_bytes"],
        },
        dtype=object,
    ).reset_index(drop=True)

    def share(value: object) -> str:
        return f"{100 * float(value):.2f}%"  # type: ignore[arg-type]

    def integer(value: object) -> str:
        return f"{int(value)}"  # type: ignore[call-overload]

    three = "{:.3g}".format
    table = _html_table(
        shown,
        {"rows": _count, "dim": integer, "rows read": _count, "effective rank": three}
        | {"information abundance": three, "dim spread": three, "top direction": share}
        | {"dims for 99%": integer, "unchanged": share, "smaller dim": integer}
        | {"it saves": _bytes},
        name="health",
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
        f"{table}{figures}"
    )
