"""What changed in a table between two checkpoints, beyond its norms: alignment and neighbours.

Two checkpoints of the same table can differ by a rotation that changes no similarity at all
(training is free to turn the whole space), or by a real change of which rows are close. `drift`
tells them apart:

- ``aligned_cosine``: rotate ``before`` by the orthogonal Procrustes map ``R`` (the rotation or
  reflection that best aligns it to ``after`` in the least-squares sense, from the SVD of
  ``before^T after``), then the mean cosine between each row and the same row of ``after``;
- ``knn_overlap``: the mean share of the ``k`` nearest neighbours (cosine) of query rows that are
  the same in both: rotation-invariant by construction;
- ``centroid_shift``: how far the mean row moved, after alignment, over the mean row norm.

Everything is computed on a uniform sample of rows (`DEFAULT_SAMPLE` = 100,000 by default, the
same rows in both checkpoints) in float64. Neighbours are searched exactly (brute force) within
the sample, from ``queries`` query rows (1,000 by default) drawn uniformly among the sampled rows
with a non-zero norm in both; rows of norm 0 have no cosine and are left out. `row_drift` gives
the per-row values for plots; `neighbour_purity` measures whether neighbours share a label.

Snapshot paths (and `embviz.SnapshotTable` handles) are never read whole: only the sampled rows
are gathered, block by block, straight into float64: the same rows and values as in memory.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from embviz.arguments import seed as _seed
from embviz.errors import ArgumentError
from embviz.tablerows import (
    BLOCK_BYTES,
    BUCKETS,
    DEFAULT_SAMPLE,
    HealthError,
    Tables,
    bucket_labels,
    choose_tables,
    counts_for,
    float_rows,
    sampled_rows,
    whole_table,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DEFAULT_QUERIES",
    "DEFAULT_SAMPLE",
    "DRIFT_COLUMNS",
    "drift",
    "drift_history",
    "neighbour_purity",
    "row_drift",
]

#: Query rows whose neighbours are compared, by default.
DEFAULT_QUERIES = 1_000

#: Columns of `drift` (after the index), in order.
DRIFT_COLUMNS = [
    "rows",
    "dim",
    "sampled",
    "queries",
    "k",
    "aligned_cosine",
    "knn_overlap",
    "centroid_shift",
    "relative_change",
]


def _positive(argument: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ArgumentError(argument, f"must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _norms(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(x, dim=1)


def _unit(x: torch.Tensor) -> torch.Tensor:
    norms = _norms(x)
    return x / torch.where(norms > 0, norms, 1.0)[:, None]


def _neighbours(unit: torch.Tensor, queries: torch.Tensor, k: int) -> torch.Tensor:
    """Positions in ``unit`` of the ``k`` rows most cosine-similar to each row ``queries``.

    ``unit`` holds float64 unit rows; a query is not its own neighbour. The search runs in
    float32 (twice as fast) for ``2 k + 8`` candidates per query, which are then scored again in
    float64 and the best ``k`` kept: the result is the float64 brute-force answer unless a row
    outside the candidates scores within float32's rounding (about 1e-6) of the k-th.
    """
    n = unit.shape[0]
    wide = min(n - 1, 2 * k + 8)
    single = unit.to(torch.float32)
    out = torch.empty((len(queries), k), dtype=torch.int64)
    step = max(1, BLOCK_BYTES // max(1, n * 4))
    for start in range(0, len(queries), step):
        q = queries[start : start + step]
        rows = torch.arange(len(q))
        sims = single[q] @ single.T
        sims[rows, q] = -math.inf
        candidates = torch.topk(sims, wide, dim=1, sorted=False).indices
        del sims
        exact = (unit[candidates] * unit[q][:, None, :]).sum(dim=2)
        exact[candidates == q[:, None]] = -math.inf
        best = torch.topk(exact, k, dim=1, sorted=False).indices
        out[start : start + len(q)] = torch.gather(candidates, 1, best)
    return out


def _overlap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per row, the share of the entries of ``a`` that are in the same row of ``b``."""
    return (a[:, :, None] == b[:, None, :]).any(dim=2).sum(dim=1).double() / a.shape[1]


def _check_k(k: Any, usable: int, name: str) -> int:
    k = _positive("k", k)
    if k >= usable:
        raise ArgumentError(
            "k",
            f"must be less than the rows searched: table {name!r} has {usable:,} sampled rows "
            f"with a non-zero norm in both, so k <= {usable - 1:,}; got {k}",
        )
    return k


def _compare(
    x: torch.Tensor,
    y: torch.Tensor,
    k: int,
    queries: int,
    seed: int,
    name: str,
    labels: np.ndarray | None = None,
) -> dict[str, Any]:
    """Per-row drift of two float64 samples of the same rows (numpy arrays out).

    Query rows: the first ``queries`` of a seeded permutation of the usable rows (``uniform``);
    with ``labels`` (a frequency bucket per row), also the first ``queries`` of each bucket in
    the same permutation, so that rare buckets of frequent rows get queries of their own.
    """
    nx, ny = _norms(x), _norms(y)
    u, _, vt = torch.linalg.svd(x.T @ y)
    rotation = u @ vt  # orthogonal Procrustes: argmin ||x R - y|| over orthogonal R
    aligned = x @ rotation
    live = (nx > 0) & (ny > 0)
    cosine = torch.full((len(x),), math.nan, dtype=torch.float64)
    cosine[live] = (aligned[live] * y[live]).sum(dim=1) / (nx[live] * ny[live])
    distance = _norms(aligned - y)
    usable = torch.nonzero(live).flatten()
    k = _check_k(k, len(usable), name)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(usable), generator=generator)
    uniform = np.zeros(len(x), dtype=bool)
    uniform[usable[order[:queries]].numpy()] = True
    chosen = [order[:queries]]
    if labels is not None:
        ordered = labels[usable[order].numpy()]
        for label in np.unique(ordered):
            chosen.append(order[torch.from_numpy(np.flatnonzero(ordered == label)[:queries])])
    picked = torch.unique(torch.cat(chosen))  # sorted positions in usable
    ua, ub = _unit(x[usable]), _unit(y[usable])
    overlap = _overlap(_neighbours(ua, picked, k), _neighbours(ub, picked, k))
    knn = torch.full((len(x),), math.nan, dtype=torch.float64)
    knn[usable[picked]] = overlap
    return {
        "aligned": aligned.numpy(),
        "cosine": cosine.numpy(),
        "knn": knn.numpy(),
        "distance": distance.numpy(),
        "norm_before": nx.numpy(),
        "norm_after": ny.numpy(),
        "uniform": uniform,
        "k": k,
    }


def _summary(
    part: dict[str, Any], mask: np.ndarray, y: np.ndarray, bucket: bool = False
) -> dict[str, Any]:
    """`DRIFT_COLUMNS` measures over the rows ``mask`` of a `_compare` result.

    ``knn_overlap`` is over the uniform query rows in ``mask``; for a ``bucket``, over every
    query row in it (the bucket's own queries include the uniform ones that fall in it).
    """
    n = int(mask.sum())
    if n == 0:
        nan = math.nan
        return {"sampled": 0, "queries": 0, "aligned_cosine": nan, "knn_overlap": nan,
                "centroid_shift": nan, "relative_change": nan}  # fmt: skip
    cos = part["cosine"][mask]
    knn = part["knn"][mask] if bucket else part["knn"][mask & part["uniform"]]
    mean_norm = part["norm_after"][mask].mean()
    shift = np.linalg.norm(part["aligned"][mask].mean(axis=0) - y[mask].mean(axis=0))
    size = math.sqrt(float((part["norm_after"][mask] ** 2).sum()))
    change = math.sqrt(float((part["distance"][mask] ** 2).sum()))
    return {
        "sampled": n,
        "queries": int(np.isfinite(knn).sum()),
        "aligned_cosine": float(np.nanmean(cos)) if np.isfinite(cos).any() else math.nan,
        "knn_overlap": float(np.nanmean(knn)) if np.isfinite(knn).any() else math.nan,
        "centroid_shift": float(shift / mean_norm) if mean_norm > 0 else math.nan,
        "relative_change": change / size if size > 0 else math.nan,
    }


def _pair(before: Tables, after: Tables, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = before.load(name), after.load(name)
    if tuple(a.shape) != tuple(b.shape):
        raise HealthError(
            f"table {name!r} is {a.shape[0]:,} x {a.shape[1]} in before but "
            f"{b.shape[0]:,} x {b.shape[1]} in after; drift compares tables of the same shape"
        )
    return a, b


def _table_drift(
    a: torch.Tensor,
    b: torch.Tensor,
    name: str,
    k: int,
    sample: int | None,
    seed: int,
    queries: int,
    counts: pd.Series | None = None,
) -> tuple[torch.Tensor, np.ndarray, dict[str, Any], np.ndarray | None]:
    index = sampled_rows(int(a.shape[0]), sample, seed)
    labels = None if counts is None else bucket_labels(counts.to_numpy()[index.numpy()])
    x, y = float_rows(a, index), float_rows(b, index)
    part = _compare(x, y, k, queries, seed, name, labels)
    return index, y.numpy(), part, labels


def drift(
    before: Any,
    after: Any,
    tables: str | Iterable[str] | None = None,
    k: int = 10,
    sample: int | None = None,
    seed: int = 0,
    counts: Any = None,
    *,
    queries: int = DEFAULT_QUERIES,
    progress: bool = True,
) -> pd.DataFrame:
    """How each table changed between two states, beyond a rotation of the whole space.

    Parameters
    ----------
    before, after : nn.Module, state dict, or path
        Two states of the same tables, as `embviz.health` takes them (e.g. two checkpoints).
    tables : str or list of str, optional
        Default: every table of ``before`` (``after`` must hold them too).
    k : int
        Neighbours per query row; less than the sampled rows.
    sample : int, optional
        Rows per table (the same rows in both). Default `DEFAULT_SAMPLE` (100,000); all rows
        of a smaller table.
    seed : int
        Seeds the sample and the query rows.
    counts : mapping of table name to pandas.Series, optional
        Lookup counts indexed by row (e.g. ``DemoRun.counts``): the measures are also given per
        frequency bucket (counts 0, 1-9, 10-99, 100-999, 1000+). Each bucket gets up to
        ``queries`` query rows of its own among its sampled rows, so the few frequent rows are
        queried too; the ``all`` row keeps the uniform queries.
    queries : int
        Query rows whose neighbours are compared (all usable rows when fewer).
    progress : bool
        A progress bar over the tables.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``table`` (with ``counts``: by ``table`` and ``bucket``, ``"all"`` first, then
        the buckets that hold sampled rows), with `DRIFT_COLUMNS`: ``rows``, ``dim``,
        ``sampled`` (rows compared), ``queries`` (query rows), ``k``, ``aligned_cosine`` (mean
        over rows with a non-zero norm in both: 1 means ``after`` is a rotation of ``before``),
        ``knn_overlap`` (mean share of shared neighbours: 1 the same, about ``k / sampled`` for
        unrelated tables), ``centroid_shift`` (distance between the aligned mean rows over the
        mean row norm of ``after``), ``relative_change`` (``||before R - after|| / ||after||``,
        Frobenius: what no rotation explains).

    Raises
    ------
    UnknownTableError
        A table ``before`` or ``after`` does not hold; the message lists those it holds.
    HealthError
        Tables of different shapes (both named), or a table `embviz.health` refuses.
    ArgumentError
        ``k`` not less than the rows searched, bad ``queries``, ``sample``, ``seed``, ``counts``.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    seed = _seed(seed)
    queries = _positive("queries", queries)
    _positive("k", k)
    old, new = Tables(before, "before"), Tables(after, "after")
    chosen = choose_tables(old.names, tables)
    choose_tables(new.names, chosen)
    records = []
    for name in tqdm(chosen, desc="drift", unit="table", disable=not progress):
        a, b = _pair(old, new, name)
        rows, dim = int(a.shape[0]), int(a.shape[1])
        table_counts = counts_for(counts, name, rows)
        index, y, part, labels = _table_drift(a, b, name, k, sample, seed, queries, table_counts)
        del a, b
        base = {"table": name, "rows": rows, "dim": dim, "k": part["k"]}
        everything = np.ones(len(index), dtype=bool)
        if labels is None:
            records.append({**base, **_summary(part, everything, y)})
            continue
        records.append({**base, "bucket": "all", **_summary(part, everything, y)})
        for label, _, _ in BUCKETS:
            mask = labels == label
            if mask.any():
                records.append({**base, "bucket": label, **_summary(part, mask, y, bucket=True)})
    frame = pd.DataFrame.from_records(records)
    if "bucket" in frame:
        frame["bucket"] = frame["bucket"].fillna("all")
        return frame.set_index(["table", "bucket"])[DRIFT_COLUMNS]
    return frame.set_index("table")[DRIFT_COLUMNS]


def row_drift(
    before: Any,
    after: Any,
    table: str,
    k: int = 10,
    sample: int | None = None,
    seed: int = 0,
    counts: Any = None,
    *,
    queries: int = DEFAULT_QUERIES,
) -> pd.DataFrame:
    """The per-row values behind `drift` for one table (same arguments and sample).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``row`` (the sampled rows, sorted): ``norm_before``, ``norm_after``,
        ``aligned_cosine`` (NaN for a row of norm 0), ``aligned_distance``
        (``||before_row R - after_row||``), ``knn_overlap`` (query rows only, NaN for the
        others), and with ``counts``: ``count`` and ``bucket``.
    """
    import pandas as pd

    seed = _seed(seed)
    queries = _positive("queries", queries)
    old, new = Tables(before, "before"), Tables(after, "after")
    choose_tables(old.names, [table])
    choose_tables(new.names, [table])
    a, b = _pair(old, new, table)
    table_counts = counts_for(counts, table, int(a.shape[0]))
    index, _, part, labels = _table_drift(a, b, table, k, sample, seed, queries, table_counts)
    frame = pd.DataFrame(
        {
            "norm_before": part["norm_before"],
            "norm_after": part["norm_after"],
            "aligned_cosine": part["cosine"],
            "aligned_distance": part["distance"],
            "knn_overlap": part["knn"],
        },
        index=pd.Index(index.numpy(), name="row"),
    )
    if table_counts is not None:
        frame["count"] = table_counts.to_numpy()[index.numpy()]
        frame["bucket"] = labels
    frame.attrs.update({"table": table, "k": part["k"], "rows": int(a.shape[0])})
    return frame


def drift_history(
    save_dir: str | os.PathLike[str],
    tables: str | Iterable[str] | None = None,
    k: int = 10,
    sample: int | None = None,
    seed: int = 0,
    reference: Literal["first", "previous"] = "first",
    *,
    queries: int = DEFAULT_QUERIES,
    steps: Iterable[int] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """`drift` of every finished checkpoint after the first, against the first or the previous.

    Returns
    -------
    pandas.DataFrame
        Columns ``step``, ``reference_step``, ``table`` and `DRIFT_COLUMNS`, by step.

    Raises
    ------
    SnapshotError
        No finished checkpoint, fewer than two, or an unknown step.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from embviz.snapshots import SnapshotError, checkpoints_at

    if reference not in ("first", "previous"):
        raise ArgumentError("reference", f"must be 'first' or 'previous', got {reference!r}")
    seed = _seed(seed)
    queries = _positive("queries", queries)
    frame = checkpoints_at(save_dir, steps)
    if len(frame) < 2:
        raise SnapshotError(f"{save_dir}: drift needs at least two finished checkpoints")
    pairs = list(zip(frame["step"], frame["path"], strict=True))
    first = Tables(str(pairs[0][1]))
    chosen = choose_tables(first.names, tables)
    records = []
    bar = tqdm(total=(len(pairs) - 1) * len(chosen), desc="drift", disable=not progress)
    try:
        for i in range(1, len(pairs)):
            ref_step, ref_path = pairs[0] if reference == "first" else pairs[i - 1]
            step, path = pairs[i]
            old, new = Tables(str(ref_path)), Tables(str(path))
            choose_tables(new.names, chosen)
            for name in chosen:
                a, b = _pair(old, new, name)
                _, y, part, _ = _table_drift(a, b, name, k, sample, seed, queries)
                summary = _summary(part, np.ones(len(y), dtype=bool), y)
                records.append(
                    {"step": int(step), "reference_step": int(ref_step), "table": name,
                     "rows": int(a.shape[0]), "dim": int(a.shape[1]), "k": part["k"], **summary}
                )  # fmt: skip
                del a, b
                bar.update(1)
    finally:
        bar.close()
    return pd.DataFrame.from_records(records)[["step", "reference_step", "table", *DRIFT_COLUMNS]]


def neighbour_purity(
    table: Any,
    labels: Any,
    k: int = 10,
    rows: Any = None,
    sample: int | None = None,
    seed: int = 0,
    *,
    queries: int = DEFAULT_QUERIES,
) -> pd.Series:
    """Do a table's nearest neighbours share a label (a community, a category)? Against chance.

    Parameters
    ----------
    table : torch.Tensor or module with ``.weight``
        The table (rows x dim).
    labels : array-like or pandas.Series
        One label per row of the table (a Series indexed by row is reindexed to the rows).
    k : int
        Neighbours (cosine, exact within the candidates) per query row.
    rows : array-like of int, optional
        The rows to search among and query from (e.g. rows looked up at least a few times:
        rows training never saw keep their random initial values). Default: every row.
    sample : int, optional
        At most this many candidate rows, drawn uniformly. Default `DEFAULT_SAMPLE`.
    seed : int
        Seeds the sample and the queries.
    queries : int
        Query rows, drawn uniformly among the candidates with a non-zero norm.

    Returns
    -------
    pandas.Series
        ``purity`` (mean share of a query's ``k`` neighbours with its label), ``chance`` (the
        same for ``k`` candidates drawn at random: mean over queries of the share of the other
        candidates with the query's label), ``lift`` (``purity / chance``), ``candidates``,
        ``queries``, ``k``.
    """
    import pandas as pd

    weight = whole_table(getattr(table, "weight", table), "table")
    n = int(weight.shape[0])
    if isinstance(labels, pd.Series):
        values = labels.reindex(pd.RangeIndex(n)).to_numpy()
    else:
        values = np.asarray(labels)
    if len(values) != n:
        raise ArgumentError("labels", f"must hold one label per row ({n:,}), got {len(values):,}")
    queries = _positive("queries", queries)
    seed = _seed(seed)
    if rows is None:
        pool = torch.arange(n, dtype=torch.int64)
    else:
        pool = torch.as_tensor(np.unique(np.asarray(rows, dtype=np.int64)))
        if pool.numel() and (int(pool.min()) < 0 or int(pool.max()) >= n):
            raise ArgumentError("rows", f"must lie in [0, {n:,})")
    if pool.numel() < 2:
        raise ArgumentError("rows", f"needs at least 2 rows to search, got {pool.numel()}")
    picked = pool[sampled_rows(int(pool.numel()), sample, seed)]
    x = float_rows(weight, picked)
    live = torch.nonzero(_norms(x) > 0).flatten()
    k = _check_k(k, len(live), "table")
    unit = _unit(x[live])
    lab = values[picked.numpy()[live.numpy()]]
    generator = torch.Generator().manual_seed(seed)
    q_t = torch.randperm(len(live), generator=generator)[: min(queries, len(live))].sort().values
    found = _neighbours(unit, q_t, k).numpy()
    q = q_t.numpy()
    purity = float((lab[found] == lab[q][:, None]).mean())
    _, inverse, sizes = np.unique(lab, return_inverse=True, return_counts=True)
    chance = float(((sizes[inverse[q]] - 1) / (len(live) - 1)).mean())
    return pd.Series(
        {
            "purity": purity,
            "chance": chance,
            "lift": purity / chance if chance > 0 else math.nan,
            "candidates": len(live),
            "queries": len(q),
            "k": k,
        },
        dtype=object,
    )
