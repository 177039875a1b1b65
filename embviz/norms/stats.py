"""Distributions of row norms: per table, over checkpoints, and as histograms.

`norm_stats` describes each table of a source, `norm_history` every finished checkpoint of a run,
`norm_histogram` bins the norms (linear or log scale). Snapshot tables are streamed in bounded
blocks (`embviz.norms.streaming`): only their norms are held, so quantiles stay exact.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from embviz.norms.errors import EmptyTableError, NormError, check_positive_int, unknown_tables
from embviz.norms.layout import table_layout
from embviz.norms.rownorms import MEMORY_BUDGET_BYTES, row_norms
from embviz.norms.sampling import exact_quantiles, sample_rows
from embviz.norms.sources import Source, choose_tables, open_source
from embviz.norms.streaming import snapshot_norms

if TYPE_CHECKING:
    import pandas as pd

    from embviz.config import LargeEmbeddingsConfig

__all__ = [
    "QUANTILES",
    "STAT_COLUMNS",
    "NormHistogram",
    "norm_histogram",
    "norm_history",
    "norm_stats",
]

#: Quantiles reported by `norm_stats`, by column name.
QUANTILES: dict[str, float] = {"p1": 0.01, "p5": 0.05, "p50": 0.50, "p95": 0.95, "p99": 0.99}

#: Columns of `norm_stats` (after the ``table`` index), in order.
STAT_COLUMNS = [
    "rows",
    "sampled",
    "mean",
    "std",
    "min",
    *QUANTILES,
    "max",
    "zero_share",
    "unchanged_share",
]


def _unchanged_rows(weight: Any, initial: Any, index: torch.Tensor | None, name: str) -> int:
    """Rows of ``weight`` (or its rows ``index``) exactly equal to the same rows of ``initial``."""
    cur, ini = table_layout(weight, name), table_layout(initial, f"initial {name}")
    if (
        cur.cols != ini.cols
        or cur.rows != ini.rows
        or [(r0, n) for r0, n, _ in cur.groups] != [(r0, n) for r0, n, _ in ini.groups]
    ):
        raise NormError(
            f"table {name!r}: the initial values hold {ini.rows:,} x {ini.cols} local rows, "
            f"the table {cur.rows:,} x {cur.cols}; they must match"
        )
    same = 0
    chunk_bytes = MEMORY_BUDGET_BYTES // 4
    starts = np.cumsum([0] + [n for _, n, _ in cur.groups])
    for g, ((_, n, pieces), (_, _, ipieces)) in enumerate(zip(cur.groups, ini.groups, strict=True)):
        lo = int(starts[g])
        if index is None:
            positions = None
        else:
            sel = index[(index >= lo) & (index < lo + n)] - lo
            if sel.numel() == 0:
                continue
            positions = sel
        equal = None
        for p, ip in zip(pieces, ipieces, strict=True):
            a, b = p.tensor.detach(), ip.tensor.detach()
            if a.shape != b.shape:
                raise NormError(f"table {name!r}: initial shard shapes differ from the table's")
            count = n if positions is None else positions.numel()
            rows_per = max(1, chunk_bytes // max(1, a.shape[1] * 8))
            part = torch.empty(count, dtype=torch.bool)
            for s in range(0, count, rows_per):
                e = min(s + rows_per, count)
                if positions is None:
                    x, y = a[s:e], b[s:e]
                else:
                    pos = positions[s:e]
                    x = a.index_select(0, pos.to(a.device))
                    y = b.index_select(0, pos.to(b.device))
                y = y.to(device=x.device, dtype=x.dtype)
                part[s:e] = torch.eq(x, y).all(dim=1).cpu()
            equal = part if equal is None else equal & part
        assert equal is not None
        same += int(equal.sum())
    return same


def _stats_row(norms: torch.Tensor, rows: int, unchanged: int | None) -> dict[str, float | int]:
    """The statistics of one table's norms (float32 on the CPU), computed with torch.

    Consumes ``norms``: the quantiles partition it in place (no copy of a large table's norms).
    """
    n = int(norms.numel())
    low, high = torch.aminmax(norms)
    row: dict[str, float | int] = {
        "rows": rows,
        "sampled": n,
        "mean": float(norms.mean()),
        "std": float(norms.std()) if n > 1 else math.nan,
        "min": float(low),
    }
    zeros = n - int(torch.count_nonzero(norms))
    quantiles = exact_quantiles(norms, list(QUANTILES.values()), overwrite=True).tolist()
    row.update(dict(zip(QUANTILES, quantiles, strict=True)))
    row["max"] = float(high)
    row["zero_share"] = zeros / n
    row["unchanged_share"] = math.nan if unchanged is None else unchanged / n
    return row


def _table_norms(
    weight: Any, name: str, sample: int | None, seed: int
) -> tuple[torch.Tensor, int, torch.Tensor | None]:
    """(norms on the CPU, local rows, sampled positions or None) of one table."""
    layout = table_layout(weight, f"table {name!r}")
    rows = layout.rows
    if rows == 0:
        raise EmptyTableError(f"table {name!r} has no rows: its norms have no distribution")
    index = None
    if sample is not None:
        sample = check_positive_int("sample", sample)
    if sample is not None and sample < rows:
        index = sample_rows(rows, sample, seed)
    norms = row_norms(weight, index)
    return norms.cpu(), rows, index


def norm_stats(
    source: Any,
    tables: str | Iterable[str] | None = None,
    sample: int | None = None,
    seed: int = 0,
    initial: Any = None,
    *,
    config: LargeEmbeddingsConfig | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Distribution of the row norms of each table: the one number the original logs, and more.

    Parameters
    ----------
    source : nn.Module, state dict, or path
        An ``EmbeddingBagCollection`` or a module holding one (sharded ones too: their local
        shards), a state dict, or a torchsnapshot folder (see the module docstring).
    tables : str or list of str, optional
        Tables to describe. Default: ``config.tables_to_log`` when ``config`` is given and sets
        it, else every table of the source.
    sample : int, optional
        Describe this many distinct rows per table, drawn with `sample_rows` (no permutation of
        all rows). Default: every row.
    seed : int
        Seed of the sample; the same seed gives the same rows.
    initial : same kinds as ``source``, optional
        The tables' initial values (e.g. the step-0 snapshot): ``unchanged_share`` is the share
        of (sampled) rows still exactly equal to them. NaN without it.
    config : LargeEmbeddingsConfig, optional
        Gives the default ``tables`` (its ``tables_to_log``).
    progress : bool
        Show a progress bar over the tables.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``table``, with `STAT_COLUMNS`: ``rows`` (local rows of the table),
        ``sampled`` (rows described), ``mean``, ``std`` (``torch.std``, correction 1), ``min``,
        ``p1``, ``p5``, ``p50``, ``p95``, ``p99`` (``torch.quantile``'s 'linear' rule, exact at
        any size), ``max``, ``zero_share`` (rows whose norm is 0), ``unchanged_share``.

    Raises
    ------
    UnknownTableError
        A table the source (or ``initial``) does not hold; the message lists those it holds.
    EmptyTableError
        A table with no rows.
    SnapshotError
        A snapshot path that is missing, unfinished or corrupt.
    NormError
        A source of another kind, or a table that is not 2-D floating point.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    src = open_source(source)
    chosen = choose_tables(src, tables, config)
    if sample is not None:
        sample = check_positive_int("sample", sample)
    init = None
    if initial is not None:
        init = open_source(initial)
        missing = [t for t in chosen if t not in init.names]
        if missing:
            raise unknown_tables(missing, init.names)
    records = []
    for name in tqdm(chosen, desc="row norms", unit="table", disable=not progress):
        if src.path is not None and (init is None or init.path is not None):
            # A snapshot: streamed in bounded blocks, holding only the norms.
            norms, rows, unchanged = snapshot_norms(
                src.path,
                name,
                sample,
                seed,
                None if init is None else init.path,
                progress=progress,
            )
            records.append({"table": name, **_stats_row(norms, rows, unchanged)})
            del norms
            continue
        weight = src.load(name)
        norms, rows, index = _table_norms(weight, name, sample, seed)
        unchanged = None
        if init is not None:
            unchanged = _unchanged_rows(weight, init.load(name), index, name)
        records.append({"table": name, **_stats_row(norms, rows, unchanged)})
        del weight, norms
    return pd.DataFrame.from_records(records, columns=["table", *STAT_COLUMNS]).set_index("table")


def norm_history(
    save_dir: str | os.PathLike[str],
    tables: str | Iterable[str] | None = None,
    sample: int | None = None,
    seed: int = 0,
    initial: Literal["first"] | Any = None,
    *,
    config: LargeEmbeddingsConfig | None = None,
    steps: Iterable[int] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """`norm_stats` of every finished checkpoint of a run, as one tidy DataFrame.

    Parameters
    ----------
    save_dir : str or path-like
        The run's folder of ``<step>/`` torchsnapshots (unfinished steps are skipped).
    tables : str or list of str, optional
        Default: ``config.tables_to_log`` when given, else every table of the first checkpoint.
        Only these tables are read from each checkpoint.
    sample, seed :
        As in `norm_stats`; the same rows are described at every step.
    initial : "first", source, or None
        ``"first"``: the first checkpoint (step 0 holds the initial values in the-algorithm-ml's
        layout) gives ``unchanged_share``, read beside each step in bounded blocks. Any
        `norm_stats` source works too (a module or state dict is held in memory). None:
        ``unchanged_share`` is NaN.
    config : LargeEmbeddingsConfig, optional
        Gives the default ``tables``.
    steps : iterable of int, optional
        Only these steps.
    progress : bool
        A progress bar over (step, table) reads.

    Returns
    -------
    pandas.DataFrame
        Columns ``step``, ``table`` and `STAT_COLUMNS`, one row per step and table, by step.

    Raises
    ------
    SnapshotError
        No finished checkpoint, or a step that is not there (the message lists the steps).
    UnknownTableError, EmptyTableError, NormError
        As in `norm_stats`.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from embviz.snapshots import (
        SnapshotError,
        checkpoints,
        checkpoints_at,
        read_table,
        snapshot_tables,
    )

    frame = checkpoints(save_dir)
    # The run's first finished checkpoint, whatever ``steps`` keeps (initial="first").
    run_start = str(frame["path"].iloc[0])
    frame = checkpoints_at(save_dir, steps)
    first = str(frame["path"].iloc[0])
    first_tables = snapshot_tables(first)
    names = [str(n) for n in first_tables.index]
    src = Source(first, names, None, None)
    chosen = choose_tables(src, tables, config)
    if sample is not None:
        sample = check_positive_int("sample", sample)
    init_tables: dict[str, Any] = {}
    init_path: str | None = None  # a snapshot of initial values, streamed beside each step
    if isinstance(initial, str) and initial == "first":
        init_path = run_start
    elif isinstance(initial, str | os.PathLike):
        init = open_source(initial)
        missing = [t for t in chosen if t not in init.names]
        if missing:
            raise unknown_tables(missing, init.names)
        init_path = init.path
    elif initial is not None:
        init = open_source(initial)
        missing = [t for t in chosen if t not in init.names]
        if missing:
            raise unknown_tables(missing, init.names)
        init_tables = {name: init.load(name) for name in chosen}
    records = []
    bar = tqdm(
        total=len(frame) * len(chosen), desc="norm history", unit="table", disable=not progress
    )
    try:
        for step, path in zip(frame["step"], frame["path"], strict=True):
            available = [str(n) for n in snapshot_tables(path).index]
            missing = [t for t in chosen if t not in available]
            if missing:
                raise SnapshotError(
                    f"{path}: no table {missing[0]!r} in this checkpoint (tables: "
                    f"{', '.join(available)})"
                )
            for name in chosen:
                bar.set_postfix(step=int(step), table=name)
                if name in init_tables:  # initial values held in memory: compare in memory
                    weight = read_table(path, name)
                    norms, rows, index = _table_norms(weight, name, sample, seed)
                    unchanged = _unchanged_rows(weight, init_tables[name], index, name)
                    del weight
                else:  # streamed in bounded blocks (with the initial snapshot beside it)
                    norms, rows, unchanged = snapshot_norms(path, name, sample, seed, init_path)
                records.append(
                    {"step": int(step), "table": name, **_stats_row(norms, rows, unchanged)}
                )
                del norms
                bar.update(1)
    finally:
        bar.close()
    return pd.DataFrame.from_records(records, columns=["step", "table", *STAT_COLUMNS])


@dataclass(frozen=True)
class NormHistogram:
    """Histograms of row norms (`norm_histogram`), with what the bins leave out.

    Attributes
    ----------
    frame : pandas.DataFrame
        Columns ``table``, ``left``, ``right``, ``count`` (int64), ``bins`` rows per table.
    scale : {"linear", "log"}
        How the bins are spaced.
    zero_rows : dict of str to int
        Table -> rows of norm 0, which a log-scale axis cannot show (left out of ``frame``'s
        counts); 0 for every table with ``"linear"`` bins. Counts plus zero rows add up to the
        table's ``sampled`` rows in `norm_stats`.
    """

    frame: pd.DataFrame
    scale: Literal["linear", "log"]
    zero_rows: dict[str, int]

    def _repr_html_(self) -> str:
        return self.frame._repr_html_()  # type: ignore[operator]


def norm_histogram(
    source: Any,
    tables: str | Iterable[str] | None = None,
    bins: int = 50,
    sample: int | None = None,
    seed: int = 0,
    *,
    scale: Literal["linear", "log"] = "linear",
    config: LargeEmbeddingsConfig | None = None,
    progress: bool = True,
) -> NormHistogram:
    """Histogram of each table's row norms, from the smallest to the largest norm.

    Parameters
    ----------
    source, tables, sample, seed, config, progress :
        As in `norm_stats`.
    bins : int
        Bins per table.
    scale : {"linear", "log"}
        ``"linear"``: equal-width bins. ``"log"``: bins of equal width in ``log10(norm)``, for
        norms spread over orders of magnitude (a few trained rows far from the rest); rows of
        norm 0 have no place on that axis and are counted in ``zero_rows`` instead.

    Returns
    -------
    NormHistogram
        ``frame``: columns ``table``, ``left``, ``right``, ``count`` (int64), ``bins`` rows per
        table. Bins follow numpy's rule (``torch.histogram``): half-open ``[left, right)``
        except the last, which includes ``right``; norms all equal get bins over ``[value -
        0.5, value + 0.5]`` (linear) or ``[value / 2, value * 2]`` (log). ``scale``, and
        ``zero_rows`` (table -> rows of norm 0 left out; all 0 for ``"linear"``): counts plus
        zero rows add up to the table's ``sampled`` rows in `norm_stats`.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise NormError(f"bins must be a positive integer, got {bins!r}")
    if scale not in ("linear", "log"):
        raise NormError(f"scale must be 'linear' or 'log', got {scale!r}")
    src = open_source(source)
    chosen = choose_tables(src, tables, config)
    parts = []
    zero_rows: dict[str, int] = {}
    for name in tqdm(chosen, desc="histograms", unit="table", disable=not progress):
        if src.path is not None:
            norms, _, _ = snapshot_norms(src.path, name, sample, seed, progress=progress)
        else:
            norms, _, _ = _table_norms(src.load(name), name, sample, seed)
        values = norms.double()
        zero_rows[name] = 0
        if scale == "log":
            positive = values > 0
            zero_rows[name] = int((~positive).sum())
            values = values[positive]
            if values.numel() == 0:
                raise NormError(f"table {name!r}: every norm is 0; a log-scale histogram is empty")
        lo, hi = float(values.min()), float(values.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise NormError(f"table {name!r}: norms are not finite (NaN or inf values)")
        if scale == "log":
            if lo == hi:
                lo, hi = lo / 2, hi * 2
            exponents = torch.linspace(
                math.log10(lo), math.log10(hi), bins + 1, dtype=torch.float64
            )
            edges = torch.pow(10.0, exponents)
            edges[0], edges[-1] = lo, hi  # exactly the extremes: no row falls outside
            counts, edges = torch.histogram(values, bins=edges)
        else:
            if lo == hi:
                lo, hi = lo - 0.5, hi + 0.5
            counts, edges = torch.histogram(values, bins=bins, range=(lo, hi))
        parts.append(
            pd.DataFrame(
                {
                    "table": name,
                    "left": edges[:-1].numpy(),
                    "right": edges[1:].numpy(),
                    "count": counts.numpy().astype(np.int64),
                }
            )
        )
    return NormHistogram(pd.concat(parts, ignore_index=True), scale, zero_rows)
