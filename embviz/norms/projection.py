"""`project`: whole embedding tables in 2-D -- PCA over every row, stratified samples, UMAP.

Pure functions (torch, numpy, pandas; no widget library). `project` returns a `Projection`
whose ``frame`` `embviz.Projector` shows, tests read, and the report draws.

PCA is fitted on every row of the table: the dim x dim covariance is accumulated in float64 over
blocks of rows (each block widened from the table's dtype on its own, so an fp16 table is never
copied whole to float32), and its two leading eigenvectors place the rows. That equals the first
two right singular vectors of the centred table (an exact SVD), up to their signs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from embviz.norms.errors import EmptyTableError, NormError
from embviz.norms.labels import as_vocab, entity_labels

if TYPE_CHECKING:
    import pandas as pd
    import torch

__all__ = [
    "COLOR_CLIP",
    "UMAP_DEFAULTS",
    "Projection",
    "ProjectorError",
    "color_values",
    "project",
    "stratified_sample",
]

# float64 bytes a block of rows may take while the table is read.
_BLOCK_BYTES = 32 * 2**20
# Norm strata of a sample: log-spaced bins between the smallest non-zero norm and the largest.
NORM_STRATA = 16
# Quantiles the colour scale is clipped at: a few outliers do not set it.
COLOR_CLIP = (0.01, 0.99)
# UMAP's parameters unless the caller gives others; ``sample`` rows are fitted.
UMAP_DEFAULTS: dict[str, Any] = {
    "sample": 20_000,
    "n_neighbors": 15,
    "min_dist": 0.1,
    "metric": "euclidean",
}


class ProjectorError(NormError):
    """A projection or projector argument it cannot use; the message names it."""


@dataclass(frozen=True)
class Projection:
    """What `project` returns.

    Attributes
    ----------
    frame : pandas.DataFrame
        One row per shown table row, in row order: ``row`` (int64), ``x``, ``y`` (float32),
        ``norm`` (float32, as `embviz.row_norms`), and ``entity`` (nullable Int64: the first
        vocabulary id mapped to the row) when a vocabulary is given.
    rows : int
        Rows of the table.
    method : str
        ``"pca"`` or ``"umap"``.
    explained_variance : (float, float) or None
        PCA: the share of the table's total variance along x and along y. None for UMAP.
    params : dict
        What was run: for PCA the rows fitted; for UMAP its parameters, the seed included.
    strata : pandas.DataFrame or None
        When a sample is shown: one row per stratum (``low``, ``high``, ``rows``, ``shown``,
        ``share``); None when every row is shown.
    stratified_by : str or None
        ``"count"`` or ``"norm"`` when sampled.
    seed : int
    components : numpy.ndarray or None
        PCA: dim x 2 loadings (unit columns); the largest loading of each is positive.
    mean : numpy.ndarray or None
        PCA: the table's mean row (float64), subtracted before projecting.
    """

    frame: pd.DataFrame
    rows: int
    method: str
    explained_variance: tuple[float, float] | None
    params: dict[str, Any] = field(default_factory=dict)
    strata: pd.DataFrame | None = None
    stratified_by: str | None = None
    seed: int = 0
    components: np.ndarray | None = None
    mean: np.ndarray | None = None

    @property
    def sampled(self) -> bool:
        """Whether fewer rows are shown than the table has."""
        return len(self.frame) < self.rows

    @property
    def description(self) -> str:
        """The rows shown and how they were placed, in one or two sentences."""
        shown = len(self.frame)
        if not self.sampled:
            text = f"All {self.rows:,} rows."
        else:
            text = (
                f"{shown:,} of {self.rows:,} rows, a sample stratified by {self.stratified_by} "
                f"({len(self.strata)} strata, each kept whole up to "
                f"{int(self.strata['shown'].max()):,} rows, sampled uniformly beyond; "
                f"seed {self.seed})."
            )
        if self.method == "pca":
            a, b = self.explained_variance or (math.nan, math.nan)
            text += (
                f" PCA fitted on all {self.rows:,} rows: x and y explain "
                f"{100 * a:.1f}% and {100 * b:.1f}% of the variance."
            )
        else:
            shown_params = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
            text += f" UMAP ({shown_params})."
        return text


# --------------------------------------------------------------------------- inputs


def as_counts(counts: Any, rows: int) -> np.ndarray | None:
    """Lookup counts, one per row (float64): from a Series indexed by row, or an array."""
    import pandas as pd

    if counts is None:
        return None
    if isinstance(counts, pd.Series):
        index = counts.index.to_numpy()
        if len(index) and (
            not np.issubdtype(index.dtype, np.integer) or index.min() < 0 or index.max() >= rows
        ):
            raise ProjectorError(f"counts: a Series must be indexed by table row, in [0, {rows:,})")
        values = np.zeros(rows, dtype=np.float64)
        values[index] = counts.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        values = np.asarray(counts, dtype=np.float64).ravel()
        if values.size != rows:
            raise ProjectorError(
                f"counts: {values.size:,} values for a table of {rows:,} rows (give one count "
                "per row, or a Series indexed by row)"
            )
    if not np.isfinite(values).all() or (values < 0).any():
        raise ProjectorError("counts: lookup counts must be finite and >= 0")
    return values


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ProjectorError(f"{name}: must be a positive integer, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------- colour


def color_values(
    frame: pd.DataFrame, column: str
) -> tuple[np.ndarray | pd.Series, str, tuple[float, float] | None]:
    """What the scatter colours by: values, a legend title, and the clipping range.

    ``norm`` and ``count`` are shown on a log10 scale (``count`` as ``log10(count + 1)``),
    other numeric columns (``drift``, a user Series) linearly; numeric values are clipped at
    their 1st and 99th percentiles (`COLOR_CLIP`) so that a few outliers do not set the scale.
    Non-numeric columns are categories, returned as they are.

    Returns
    -------
    values : numpy.ndarray (float32) or pandas.Series (categorical)
    title : str
    clip : (low, high) in the column's own units, or None for categories
    """
    import pandas as pd

    series = frame[column]
    if not pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series):
        return series.astype("category"), column, None
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    finite = values[np.isfinite(values)]
    if column == "norm":
        finite = finite[finite > 0]
    if finite.size == 0:
        return np.zeros(len(values), np.float32), f"{column} (no finite values)", None
    lo, hi = (float(v) for v in np.quantile(finite, COLOR_CLIP))
    clipped = np.clip(values, lo, hi)
    if column == "norm":
        shown = np.log10(np.where(clipped > 0, clipped, lo))
        title = f"log10 norm (clipped to {lo:.3g}..{hi:.3g})"
    elif column == "count":
        shown = np.log10(clipped + 1.0)
        title = f"log10(count + 1) (clipped to {lo:.3g}..{hi:.3g})"
    else:
        shown = clipped
        title = f"{column} (clipped to {lo:.3g}..{hi:.3g})"
    shown = np.where(np.isfinite(shown), shown, np.nanmin(shown) if np.isfinite(shown).any() else 0)
    return shown.astype(np.float32), title, (lo, hi)


# --------------------------------------------------------------------------- sampling


def _water_level(sizes: np.ndarray, k: int) -> np.ndarray:
    """Rows to take per stratum: ``min(size, level)``, totalling ``k`` exactly."""
    lo, hi = 0, int(sizes.max())
    while lo < hi:  # smallest level whose total reaches k
        mid = (lo + hi) // 2
        if int(np.minimum(sizes, mid).sum()) >= k:
            hi = mid
        else:
            lo = mid + 1
    take = np.minimum(sizes, max(lo - 1, 0))
    extra = k - int(take.sum())
    # Strata larger than the level below take one more row each, in order, until k.
    for s in np.flatnonzero(sizes > take):
        if extra == 0:
            break
        take[s] += 1
        extra -= 1
    return take


def stratified_sample(
    values: np.ndarray, k: int, by: Literal["count", "norm"], seed: int = 0
) -> tuple[np.ndarray, pd.DataFrame]:
    """``k`` rows stratified by lookup count or by norm, and the strata.

    Strata: by count, zero and then decades (1-9, 10-99, ...); by norm, zero norms and then
    `NORM_STRATA` log-spaced bins from the smallest non-zero norm to the largest. Each stratum
    keeps ``min(its rows, L)`` rows, with the level ``L`` set so the total is ``k``: small strata
    (rare counts, outlying norms) are shown whole and large ones are sampled uniformly at random
    (seeded) -- a uniform sample would show the head and drop the tail.

    Returns
    -------
    rows : numpy.ndarray
        int64, sorted.
    strata : pandas.DataFrame
        ``low``, ``high`` (the stratum's bounds), ``rows``, ``shown``, ``share``.
    """
    import pandas as pd

    values = np.asarray(values, dtype=np.float64)
    n = values.size
    k = _positive_int("max_points", k)
    if by == "count":
        positive = values > 0
        top = int(np.floor(np.log10(values.max()))) + 1 if positive.any() else 0
        strata = np.zeros(n, dtype=np.int64)
        strata[positive] = 1 + np.floor(np.log10(values[positive])).astype(np.int64)
        decades = np.arange(1, top + 1)
        lows = np.concatenate([[0.0], 10.0 ** (decades - 1)])
        highs = np.concatenate([[0.0], 10.0**decades])
    elif by == "norm":
        positive = values > 0
        strata = np.zeros(n, dtype=np.int64)
        if positive.any():
            lo, hi = float(values[positive].min()), float(values[positive].max())
            edges = np.geomspace(lo, hi, NORM_STRATA + 1) if hi > lo else np.array([lo, hi])
            bins = np.searchsorted(edges, values[positive], side="right") - 1
            strata[positive] = 1 + np.clip(bins, 0, len(edges) - 2)
            lows = np.concatenate([[0.0], edges[:-1]])
            highs = np.concatenate([[0.0], edges[1:]])
        else:
            lows = highs = np.zeros(1)
    else:
        raise ProjectorError(f"by: must be 'count' or 'norm', got {by!r}")
    sizes = np.bincount(strata, minlength=len(lows))
    take = _water_level(sizes, min(k, n))
    rng = np.random.default_rng(seed)
    order = np.argsort(strata, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    chosen = []
    for s in range(len(sizes)):
        members = order[starts[s] : starts[s + 1]]
        if take[s] == sizes[s]:
            chosen.append(members)
        elif take[s] > 0:
            chosen.append(rng.choice(members, int(take[s]), replace=False))
    rows = np.sort(np.concatenate(chosen)) if chosen else np.empty(0, np.int64)
    frame = pd.DataFrame(
        {"low": lows, "high": highs, "rows": sizes, "shown": take},
        index=pd.RangeIndex(len(sizes), name="stratum"),
    )
    frame = frame[frame["rows"] > 0]
    frame["share"] = frame["shown"] / frame["rows"]
    return rows.astype(np.int64), frame


# --------------------------------------------------------------------------- PCA


def _step(cols: int) -> int:
    return max(1, _BLOCK_BYTES // max(1, 8 * cols))


def _all_norms(weight: Any) -> torch.Tensor:
    """Every row's norm: `row_norms`, or streamed for a `SnapshotTable` (the same values)."""
    from embviz.norms.rownorms import row_norms
    from embviz.snapshot_rows import SnapshotTable

    return weight.norms() if isinstance(weight, SnapshotTable) else row_norms(weight)


def pca_fit(weight: Any, progress: bool = False) -> tuple[np.ndarray, np.ndarray, Any]:
    """Mean row, and eigenvalues/eigenvectors (descending) of the covariance of every row.

    One pass over blocks of rows, each widened to float64: the sum of the rows and of their outer
    products, both shifted by the first block's mean (so the subtraction of the mean's outer
    product cancels little), accumulated in float64.
    """
    import torch

    n, d = int(weight.shape[0]), int(weight.shape[1])
    step = _step(d)
    with torch.no_grad():
        shift = weight[: min(n, step)].to(torch.float64).mean(dim=0)
        total = torch.zeros(d, dtype=torch.float64, device=weight.device)
        gram = torch.zeros(d, d, dtype=torch.float64, device=weight.device)
        blocks = range(0, n, step)
        if progress:
            from tqdm.auto import tqdm

            blocks = tqdm(blocks, desc="PCA", unit="block", leave=False)
        # One float64 buffer reused for every block: copying into it is several times faster
        # than a fresh conversion per block (which page-faults a new allocation each time).
        buffer = torch.empty(min(n, step), d, dtype=torch.float64, device=weight.device)
        for a in blocks:
            x = buffer[: min(step, n - a)]
            x.copy_(weight[a : a + step])
            x -= shift
            total += x.sum(dim=0)
            gram.addmm_(x.T, x)
        centre = (total / n).cpu().numpy()
        cov = gram.cpu().numpy() / n - np.outer(centre, centre)
        mean = shift.cpu().numpy() + centre
    values, vectors = np.linalg.eigh((cov + cov.T) / 2)
    return mean, values[::-1].clip(min=0), vectors[:, ::-1]


def _coordinates(
    weight: torch.Tensor, rows: np.ndarray | None, mean: np.ndarray, components: np.ndarray
) -> np.ndarray:
    """``(weight[rows] - mean) @ components`` in float64 over blocks, as float32."""
    import torch

    n = int(weight.shape[0]) if rows is None else len(rows)
    step = _step(int(weight.shape[1]))
    out = np.empty((n, components.shape[1]), dtype=np.float32)
    centre = torch.from_numpy(mean).to(weight.device)
    basis = torch.from_numpy(np.ascontiguousarray(components)).to(weight.device)
    index = None if rows is None else torch.from_numpy(rows).to(weight.device)
    buffer = torch.empty(min(n, step), weight.shape[1], dtype=torch.float64, device=weight.device)
    with torch.no_grad():
        for a in range(0, n, step):
            block = weight[a : a + step] if index is None else weight[index[a : a + step]]
            x = buffer[: len(block)]
            x.copy_(block)
            x -= centre
            out[a : a + len(block)] = (x @ basis).cpu().numpy()
    return out


def _umap(weight: torch.Tensor, rows: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    try:
        import umap
    except ImportError:
        raise ProjectorError(
            "method='umap' needs umap-learn (pip install umap-learn==0.5.12); "
            "method='pca' needs nothing more"
        ) from None
    import torch

    fit = {k: v for k, v in params.items() if k != "sample"}
    data = weight[torch.from_numpy(rows).to(weight.device)].to(torch.float32).cpu().numpy()
    reducer = umap.UMAP(n_components=2, **fit)
    return np.asarray(reducer.fit_transform(data), dtype=np.float32)


def project(
    table: Any,
    n: int = 2_000_000,
    method: Literal["pca", "umap"] = "pca",
    seed: int = 0,
    vocab: Any = None,
    counts: Any = None,
    umap: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> Projection:
    """Place the rows of a table in 2-D: every row up to ``n``, a stratified sample beyond.

    Parameters
    ----------
    table : torch.Tensor, module with ``.weight``, or `embviz.SnapshotTable`
        The table (rows x dim, dim >= 2), any float dtype, any device. A `SnapshotTable` is
        never held whole: the PCA pass and the norms read it block by block, and only the shown
        rows are gathered.
    n : int
        Rows shown (``max_points``): all of them when the table has at most ``n``; else ``n``
        rows by `stratified_sample`, by lookup count when ``counts`` is given and by norm
        otherwise.
    method : {"pca", "umap"}
        ``"pca"``: x and y are the first two principal components of the centred table, fitted
        on every row (see the module's notes); signs are fixed so the largest loading of each
        component is positive. ``"umap"``: ``umap-learn``'s UMAP of ``umap["sample"]`` rows
        (stratified as above), with ``random_state=seed``.
    seed : int
        Seeds the sample and UMAP.
    vocab : path, Series, DataFrame or mapping, optional
        Entity id -> row: adds ``entity``.
    counts : Series indexed by row, or array of one count per row, optional
        Lookup counts: the sample is stratified by them.
    umap : mapping, optional
        UMAP parameters replacing `UMAP_DEFAULTS` (``sample``, ``n_neighbors``, ``min_dist``,
        ``metric``, or any other ``umap.UMAP`` argument).
    progress : bool
        A tqdm bar over the PCA pass.

    Returns
    -------
    Projection

    Raises
    ------
    ProjectorError
        An argument it cannot use (named), fewer than 2 columns or 3 rows, UMAP without
        ``umap-learn``.
    EmptyTableError
        A table with no rows.
    """
    import pandas as pd
    import torch

    from embviz.norms.rownorms import row_norms
    from embviz.snapshot_rows import SnapshotTable

    weight = getattr(table, "weight", table)
    if not isinstance(weight, torch.Tensor | SnapshotTable) or weight.dim() != 2:
        raise ProjectorError(
            f"table: must be a 2-D tensor or a module with a .weight, got {type(table).__name__}"
        )
    if not weight.dtype.is_floating_point:
        raise ProjectorError(f"table: must hold floats, got {weight.dtype}")
    weight = weight.detach()
    rows, cols = int(weight.shape[0]), int(weight.shape[1])
    if method not in ("pca", "umap"):
        raise ProjectorError(f"method: must be 'pca' or 'umap', got {method!r}")
    n = _positive_int("n", n)
    if cols < 2:
        raise ProjectorError(f"table: a 2-D projection needs at least 2 columns, it has {cols}")
    if rows == 0:
        raise EmptyTableError("table: the table has no rows")
    if rows < 3:
        raise ProjectorError(f"table: a projection needs at least 3 rows, it has {rows}")
    series = as_vocab(vocab, rows)
    count_values = as_counts(counts, rows)
    params: dict[str, Any] = {}
    limit = n
    if method == "umap":
        unknown = set(umap or {}) - {"sample"}
        params = {**UMAP_DEFAULTS, **dict(umap or {}), "random_state": int(seed)}
        if "n_components" in unknown:
            raise ProjectorError("umap: n_components is 2 (a 2-D projection)")
        limit = min(n, _positive_int("umap['sample']", params["sample"]))
    norms = None
    strata = stratified_by = None
    if rows > limit:
        stratified_by = "count" if count_values is not None else "norm"
        if count_values is not None:
            key = count_values
        else:
            norms = _all_norms(weight).cpu().numpy()
            key = norms
        shown, strata = stratified_sample(key, limit, stratified_by, seed)
    else:
        shown = None
    index = np.arange(rows, dtype=np.int64) if shown is None else shown
    if norms is None:
        if isinstance(weight, SnapshotTable):
            norms = _all_norms(weight) if shown is None else row_norms(weight.gather(shown))
        else:
            norms = row_norms(weight, None if shown is None else torch.from_numpy(shown))
        norms = norms.cpu().numpy()
    else:
        norms = norms[index]
    explained = components = mean = None
    if method == "pca":
        mean, values, vectors = pca_fit(weight, progress=progress)
        components = vectors[:, :2].copy()
        pivot = np.abs(components).argmax(axis=0)
        signs = np.sign(components[pivot, np.arange(2)])
        components *= np.where(signs == 0, 1.0, signs)
        total = float(values.sum())
        explained = (
            (float(values[0] / total), float(values[1] / total))
            if total > 0
            else (math.nan, math.nan)
        )
        coords = _coordinates(weight, shown, mean, components)
        params = {"fitted_rows": rows}
    else:
        coords = _umap(weight, index, params)
    data: dict[str, Any] = {
        "row": index,
        "x": coords[:, 0],
        "y": coords[:, 1],
        "norm": norms.astype(np.float32, copy=False),
    }
    if series is not None:
        data["entity"] = entity_labels(series, index)
    frame = pd.DataFrame(data)
    return Projection(
        frame=frame,
        rows=rows,
        method=method,
        explained_variance=explained,
        params=params,
        strata=strata,
        stratified_by=stratified_by,
        seed=int(seed),
        components=components,
        mean=mean,
    )
