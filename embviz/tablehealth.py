"""Does a table use its dimensions? Spectra, effective rank and isotropy of embedding tables.

Row norms say whether rows moved; they do not say whether a table spreads its rows over its
``dim`` dimensions or squeezes them into a few (*dimensional collapse*: Guo et al., "On the
Embedding Collapse When Scaling Up Recommendation Models", ICML 2024). `health` answers that per
table from the singular values of the table as it is (not centred: a common offset of every row
is part of what the table spends its dimensions on).

How the spectrum is computed: the ``dim x dim`` Gram matrix ``X^T X`` is summed in float64 over
blocks of rows of at most 64 MiB, and its eigenvalues (``numpy.linalg.eigvalsh``) are the squared
singular values: exact up to float64 rounding (the tests compare with ``numpy.linalg.svd``;
singular values below 1e-6 of the largest are not resolved this way and are reported as 0).
A table of at most ``sample`` rows (`DEFAULT_SAMPLE` = 100,000 by default) is used whole. A
larger one is sampled (`embviz.tablerows.health_rows`): the quarter of the sample with the
largest row norms exactly, and the rest uniformly from the other rows, weighted so that the
weighted Gram matrix is an unbiased estimate of the whole table's. A uniform sample alone misses
the few popular rows that carry most of a power-law table's energy (on a 1,000,000-row table
with Zipf-distributed norms it put the effective rank 8% of ``dim`` off); with them taken
exactly, the default sample was within 0.05% of ``dim`` for the effective rank, 0.1% of ``dim``
for the information abundance and 0.5% of the largest singular value for every singular value,
against the full table's float64 SVD, over 5 seeds on: the demo's 424,241 x 4 ``user`` table,
and 1,000,000 x 64 tables with a decaying spectrum, rank 8 plus noise, and Zipf row norms
(``benchmarks/bench_health.py --accuracy`` reruns this). The row statistics (``dim_spread``,
``unchanged_share``) use the same weighted rows.

A snapshot path is never read whole (`embviz.SnapshotTable`): the row norms the sample needs are
streamed (4 bytes a row), then the sampled rows (and the same rows of ``initial``) are gathered
block by block, giving the same sample and the same sums as the table in memory.
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
    DEFAULT_SAMPLE,
    HealthError,
    Tables,
    blocks,
    choose_tables,
    counts_for,
    health_rows,
    take_rows,
)

if TYPE_CHECKING:
    import pandas as pd

    from embviz.config import LargeEmbeddingsConfig

__all__ = [
    "DEFAULT_SAMPLE",
    "HEALTH_COLUMNS",
    "HealthError",
    "effective_rank",
    "health",
    "health_history",
    "information_abundance",
    "spectrum",
    "spectrum_history",
]

#: Columns of `health` (after the ``table`` index), in order.
HEALTH_COLUMNS = [
    "rows",
    "dim",
    "dtype",
    "sampled",
    "effective_rank",
    "information_abundance",
    "dim_spread",
    "top_energy_share",
    "energy_rank_99",
    "unchanged_share",
    "norm_frequency_spearman",
    "smaller_dim",
    "smaller_dim_saves_bytes",
]


def effective_rank(singular_values: np.ndarray) -> float:
    """``exp`` of the entropy of the singular values normalised to sum 1 (Roy & Vetterli 2007).

    From 1 (one non-zero singular value) to their number (all equal); NaN when all are 0.
    """
    s = np.asarray(singular_values, dtype=np.float64)
    total = s.sum()
    if total <= 0:
        return math.nan
    p = s[s > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def information_abundance(singular_values: np.ndarray) -> float:
    """The sum of the singular values over the largest one (Guo et al. 2024); NaN when all are 0."""
    s = np.asarray(singular_values, dtype=np.float64)
    top = s.max() if s.size else 0.0
    return float(s.sum() / top) if top > 0 else math.nan


class _Summary:
    """Weighted sums over the sampled rows of a table (float64 tensors)."""

    def __init__(self, cols: int):
        self.gram = torch.zeros((cols, cols), dtype=torch.float64)
        self.unit_sum = torch.zeros(cols, dtype=torch.float64)
        self.unit_sumsq = torch.zeros(cols, dtype=torch.float64)
        self.nonzero = 0.0
        self.unchanged = 0.0
        self.norms: list[torch.Tensor] = []
        self.small: torch.Tensor | None = None  # sqrt(weight) * rows when fewer rows than dim


def _summarise(weight: Any, index: torch.Tensor, weights: torch.Tensor, initial: Any) -> _Summary:
    """Weighted sums over rows ``index`` of a tensor or a `SnapshotTable` (gathered in blocks)."""
    cols = int(weight.shape[1])
    out = _Summary(cols)
    keep_rows = int(index.numel()) < cols
    parts = []
    with torch.no_grad():
        for start, end in blocks(index, cols):
            ids, w = index[start:end], weights[start:end]
            raw = take_rows(weight, ids)
            x = raw.to(device="cpu", dtype=torch.float64)
            if initial is not None:
                ini = take_rows(initial, ids).to(raw.device, raw.dtype)
                out.unchanged += float((torch.eq(raw, ini).all(dim=1).cpu() * w).sum())
            norms = torch.linalg.vector_norm(x, dim=1)
            out.norms.append(norms)
            live = norms > 0
            unit = x[live] / norms[live, None]
            wl = w[live]
            out.unit_sum += wl @ unit
            out.unit_sumsq += wl @ unit.mul_(unit)
            out.nonzero += float(wl.sum())
            scaled = x.mul_(w.sqrt()[:, None])  # x is a copy: scale it in place
            out.gram += scaled.T @ scaled
            if keep_rows:
                parts.append(scaled)
    if keep_rows:
        out.small = torch.cat(parts)
    return out


#: Squared singular values below this share of the largest are reported as 0: the Gram matrix
#: holds them only to about float64's epsilon times the largest (singular values below 1e-6 of
#: the largest are not resolved).
RESOLVED_ENERGY = 1e-12


def _singular_values(summary: _Summary, sampled: int, cols: int) -> np.ndarray:
    """The singular values, largest first (``min(sampled, cols)`` of them)."""
    if summary.small is not None:  # fewer rows than columns: the smaller Gram matrix
        x = summary.small
        gram = x @ x.T
    else:
        gram = summary.gram
    eig = np.linalg.eigvalsh(gram.numpy())[::-1][: min(sampled, cols)]
    top = eig[0] if len(eig) else 0.0
    eig = np.where(eig > RESOLVED_ENERGY * top, eig, 0.0)
    return np.sqrt(eig)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    import pandas as pd

    if len(a) < 2:
        return math.nan
    ra = pd.Series(a).rank(method="average").to_numpy()
    rb = pd.Series(b).rank(method="average").to_numpy()
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def _smaller_dim(
    config: LargeEmbeddingsConfig | None, name: str, dim: int, erank: float, rank99: int
) -> tuple[float, float]:
    """(dim holding 99% of the energy rounded up to a multiple of 4, total bytes it saves)."""
    if config is None or name not in config.table_names or not erank <= dim / 2:
        return math.nan, math.nan
    smaller = max(4, 4 * math.ceil(rank99 / 4))
    if smaller >= dim:
        return math.nan, math.nan
    from embviz.memory import memory_table

    table = config.table(name)
    if table.embedding_dim != dim:
        raise HealthError(
            f"table {name!r} is {dim} wide in the source but {table.embedding_dim} in the config"
        )
    shrunk = config.model_copy(
        update={
            "tables": [
                t.model_copy(update={"embedding_dim": smaller}) if t.name == name else t
                for t in config.tables
            ]
        }
    )
    now = int(memory_table(config).loc[name, "total_bytes"])
    then = int(memory_table(shrunk).loc[name, "total_bytes"])
    return float(smaller), float(now - then)


def _describe(
    weight: Any,
    name: str,
    sample: int | None,
    seed: int,
    initial: Any,
    counts: pd.Series | None,
    config: LargeEmbeddingsConfig | None,
) -> tuple[dict[str, Any], np.ndarray]:
    rows, cols = int(weight.shape[0]), int(weight.shape[1])
    if initial is not None and tuple(initial.shape) != (rows, cols):
        raise HealthError(
            f"table {name!r} is {rows:,} x {cols} but its initial values are "
            f"{int(initial.shape[0]):,} x {int(initial.shape[1])}; they must match"
        )
    index, weights, all_norms = health_rows(weight, sample, seed)
    n = int(index.numel())
    summary = _summarise(weight, index, weights, initial)
    sigma = _singular_values(summary, n, cols)
    energy = sigma**2
    total_energy = energy.sum()
    erank = effective_rank(sigma)
    if summary.nonzero:
        mean = summary.unit_sum.numpy() / summary.nonzero
        var = np.clip(summary.unit_sumsq.numpy() / summary.nonzero - mean**2, 0.0, None)
        spread = float(np.sqrt(var).mean() * math.sqrt(cols))
    else:
        spread = math.nan
    if total_energy > 0:
        top_share = float(energy[0] / total_energy)
        rank99 = int(np.searchsorted(np.cumsum(energy) / total_energy, 0.99 - 1e-12) + 1)
    else:
        top_share, rank99 = math.nan, 0
    spearman = math.nan
    if counts is not None:
        # Over every row: all norms are at hand (computed for the sample, or every row sampled).
        norms = (all_norms if all_norms is not None else torch.cat(summary.norms)).numpy()
        spearman = _spearman(norms, counts.to_numpy())
    smaller, saves = _smaller_dim(config, name, cols, erank, rank99)
    record = {
        "rows": rows,
        "dim": cols,
        "dtype": str(weight.dtype).removeprefix("torch."),
        "sampled": n,
        "effective_rank": erank,
        "information_abundance": information_abundance(sigma),
        "dim_spread": spread,
        "top_energy_share": top_share,
        "energy_rank_99": rank99,
        "unchanged_share": math.nan if initial is None else summary.unchanged / rows,
        "norm_frequency_spearman": spearman,
        "smaller_dim": smaller,
        "smaller_dim_saves_bytes": saves,
    }
    return record, sigma


def health(
    source: Any,
    tables: str | Iterable[str] | None = None,
    sample: int | None = None,
    seed: int = 0,
    initial: Any = None,
    counts: Any = None,
    config: LargeEmbeddingsConfig | None = None,
    *,
    progress: bool = True,
) -> pd.DataFrame:
    """How well each table uses its dimensions: effective rank, information abundance, spread.

    Parameters
    ----------
    source : nn.Module, state dict, or path
        As for `embviz.norm_stats`: a module holding an ``EmbeddingBagCollection``, a state dict,
        or a torchsnapshot folder. Sharded tables are described whole: one held entirely by this
        process is put together from its shards; otherwise `HealthError` says to pass the path
        of a snapshot (which holds whole tables).
    tables : str or list of str, optional
        Default: ``config.tables_to_log`` when ``config`` sets it, else every table.
    sample : int, optional
        Rows read per table: every row of a table that has no more; else the quarter with the
        largest norms plus a uniform draw (`embviz.sample_rows`) of the others, weighted. Default
        `DEFAULT_SAMPLE` (100,000). See the module docstring for the accuracy.
    seed : int
        Seeds the sample.
    initial : same kinds as ``source``, optional
        The initial values (e.g. the step-0 snapshot): ``unchanged_share`` is the share of
        rows still exactly equal to them (estimated from the weighted sample on large tables).
    counts : mapping of table name to pandas.Series, optional
        Lookup counts indexed by row (rows left out count 0), e.g. ``DemoRun.counts``:
        ``norm_frequency_spearman`` is the rank correlation (Spearman, average ranks for ties)
        of row norm and count over every row.
    config : LargeEmbeddingsConfig, optional
        Default ``tables``; and where the effective rank is at most half of ``dim``, what the
        smaller dim would save (`embviz.memory_table`, with its defaults).
    progress : bool
        A progress bar over the tables.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``table``, with `HEALTH_COLUMNS`:

        - ``rows``, ``dim``, ``dtype``, ``sampled`` (rows read);
        - ``effective_rank``: exp of the entropy of the singular values normalised to sum 1,
          from 1 to ``min(rows, dim)``;
        - ``information_abundance``: sum of the singular values over the largest, from 1 to
          ``min(rows, dim)``;
        - ``dim_spread``: mean over dimensions of the std (population) of the L2-normalised
          non-zero rows, times ``sqrt(dim)``: near 1 isotropic, near 0 collapsed;
        - ``top_energy_share``: share of the squared singular values in the largest (the share of
          the rows' squared length along one direction);
        - ``energy_rank_99``: fewest singular values holding 99% of the squared ones;
        - ``unchanged_share`` (with ``initial``), ``norm_frequency_spearman`` (with ``counts``);
        - ``smaller_dim``: ``energy_rank_99`` rounded up to a multiple of 4 (FBGEMM's alignment)
          when ``config`` is given and ``effective_rank <= dim / 2``, and
          ``smaller_dim_saves_bytes``: the total bytes (`embviz.memory_table`) that saves.
          NaN otherwise.

    Raises
    ------
    UnknownTableError
        A table the source (or ``initial``) does not hold; the message lists those it holds.
    HealthError
        A table that is empty, not 2-D floating point, sharded across processes, or whose
        initial values have another shape.
    ArgumentError
        A bad ``sample``, ``seed``, ``counts`` or ``tables``.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    seed = _seed(seed)
    src = Tables(source)
    if tables is None and config is not None and config.logged_tables:
        tables = config.logged_tables
    chosen = choose_tables(src.names, tables)
    init = None
    if initial is not None:
        init = Tables(initial, "initial")
        choose_tables(init.names, chosen)
    records = []
    for name in tqdm(chosen, desc="health", unit="table", disable=not progress):
        weight = src.load(name)
        ini = init.load(name) if init is not None else None
        table_counts = counts_for(counts, name, int(weight.shape[0]))
        record, _ = _describe(weight, name, sample, seed, ini, table_counts, config)
        records.append({"table": name, **record})
        del weight, ini
    return pd.DataFrame.from_records(records, columns=["table", *HEALTH_COLUMNS]).set_index("table")


def _spectrum_frame(name: str, sigma: np.ndarray) -> pd.DataFrame:
    import pandas as pd

    energy = sigma**2
    total, total_energy = sigma.sum(), energy.sum()
    return pd.DataFrame(
        {
            "table": name,
            "k": np.arange(1, len(sigma) + 1),
            "singular_value": sigma,
            "share": sigma / total if total > 0 else np.nan,
            "energy_share": energy / total_energy if total_energy > 0 else np.nan,
            "cumulative_energy": np.cumsum(energy) / total_energy if total_energy > 0 else np.nan,
        }
    )


def spectrum(
    source: Any,
    tables: str | Iterable[str] | None = None,
    sample: int | None = None,
    seed: int = 0,
    *,
    progress: bool = True,
) -> pd.DataFrame:
    """The singular values of each table (largest first), from the same sample as `health`.

    Returns
    -------
    pandas.DataFrame
        One row per table and singular value: ``table``, ``k`` (1 = largest),
        ``singular_value`` (of the whole table: exact when every row is used, else estimated
        from the weighted sample, see the module docstring), ``share`` (of their sum),
        ``energy_share`` (of the sum of squares) and ``cumulative_energy``.

    Raises
    ------
    As `health`.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    seed = _seed(seed)
    src = Tables(source)
    chosen = choose_tables(src.names, tables)
    parts = []
    for name in tqdm(chosen, desc="spectrum", unit="table", disable=not progress):
        weight = src.load(name)
        _, sigma = _describe(weight, name, sample, seed, None, None, None)
        parts.append(_spectrum_frame(name, sigma))
    return pd.concat(parts, ignore_index=True)


def _history(
    save_dir: str | os.PathLike[str],
    tables: str | Iterable[str] | None,
    sample: int | None,
    seed: int,
    initial: Literal["first"] | None,
    counts: Any,
    steps: Iterable[int] | None,
    progress: bool,
    what: str,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    import pandas as pd
    from tqdm.auto import tqdm

    from embviz.snapshots import checkpoints, checkpoints_at

    seed = _seed(seed)
    frame = checkpoints_at(save_dir, steps)
    if initial not in (None, "first"):
        raise ArgumentError("initial", f"must be 'first' or None, got {initial!r}")
    first = Tables(str(checkpoints(save_dir)["path"].iloc[0]))
    chosen = choose_tables(first.names, tables)
    records, spectra = [], []
    bar = tqdm(total=len(frame) * len(chosen), desc=what, unit="table", disable=not progress)
    try:
        for step, path in zip(frame["step"], frame["path"], strict=True):
            src = Tables(str(path))
            choose_tables(src.names, chosen)
            for name in chosen:
                bar.set_postfix(step=int(step), table=name)
                weight = src.load(name)
                ini = first.load(name) if initial == "first" else None
                table_counts = counts_for(counts, name, int(weight.shape[0]))
                record, sigma = _describe(weight, name, sample, seed, ini, table_counts, None)
                records.append({"step": int(step), "table": name, **record})
                spectra.append(_spectrum_frame(name, sigma).assign(step=int(step)))
                del weight, ini
                bar.update(1)
    finally:
        bar.close()
    health_frame = pd.DataFrame.from_records(records, columns=["step", "table", *HEALTH_COLUMNS])
    spectra_frame = pd.concat(spectra, ignore_index=True)
    spectra_frame = spectra_frame[["step", *[c for c in spectra_frame if c != "step"]]]
    return health_frame, spectra_frame


def health_history(
    save_dir: str | os.PathLike[str],
    tables: str | Iterable[str] | None = None,
    sample: int | None = None,
    seed: int = 0,
    initial: Literal["first"] | None = "first",
    counts: Any = None,
    *,
    steps: Iterable[int] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """`health` of every finished checkpoint of a run (``save_dir/<step>/``), one tidy frame.

    ``initial="first"`` compares each step with the first checkpoint (``unchanged_share``); the
    same rows are sampled at every step. Columns ``step``, ``table`` and `HEALTH_COLUMNS`.
    Raises `SnapshotError` for a folder without finished checkpoints or an unknown step.
    """
    return _history(save_dir, tables, sample, seed, initial, counts, steps, progress, "health")[0]


def spectrum_history(
    save_dir: str | os.PathLike[str],
    tables: str | Iterable[str] | None = None,
    sample: int | None = None,
    seed: int = 0,
    *,
    steps: Iterable[int] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """`spectrum` of every finished checkpoint of a run: columns ``step`` then `spectrum`'s."""
    return _history(save_dir, tables, sample, seed, None, None, steps, progress, "spectrum")[1]


def health_and_spectra(
    save_dir: str | os.PathLike[str],
    tables: str | Iterable[str] | None = None,
    sample: int | None = None,
    seed: int = 0,
    *,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(`health_history`, `spectrum_history`) from one read of each checkpoint (for widgets)."""
    return _history(save_dir, tables, sample, seed, "first", None, None, progress, "health")
