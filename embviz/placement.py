"""Where the tables go on N GPUs: `plan` runs torchrec's EmbeddingShardingPlanner (no GPU needed).

No GPU is needed: the collection is built on the ``meta`` device with each table's optimizer
applied in backward (as TwHIN does, so the planner sees the optimizer classes), and the planner
runs against ``Topology(world_size=N, compute_device="cuda", hbm_cap=...)``. Results come from
the planner's own objects (its best plan's sharding options and shards), never from printed
text: per rank (HBM bytes, tables and shards held), per table (sharding type, compute kernel,
ranks), per shard, and torchrec's `ShardingPlan` for `DistributedModelParallel`.

Two differences from a bare planner, both on by default and both switchable:

- ``estimate="exact"`` corrects the planner's optimizer-state estimate for fused (HBM) shards to
  the bytes FBGEMM really allocates (fp32 state, see `embviz.memory`): torchrec sizes it from
  the weight bytes, so fp16 tables with Adagrad or Adam come out too small (torchrec PR #4142)
  and a plan could over-fill a GPU. ``estimate="torchrec"`` keeps the planner's own figures.
- ``ddr_gib=0``: tables must fit in HBM (the planner would otherwise offload to host memory
  through UVM, with a 128 GiB host default). Pass ``ddr_gib`` to allow UVM kernels.

The torchrec objects themselves (collection, estimators, planner) are built in
`embviz.planner`; this module checks the arguments, runs the planner, turns its best plan into
frames and explains a failure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from embviz.arguments import as_config, as_mode, choice, integer, number
from embviz.config import LargeEmbeddingsConfig, Mode
from embviz.errors import ArgumentError, EmbvizError, UnknownTableError
from embviz.memory import PLANNER_RESERVED_FRACTION, compact_bytes, memory_table
from embviz.optimizers import ADAGRAD_STATES

if TYPE_CHECKING:
    from torchrec.distributed.types import ShardingPlan

    from embviz.planner import TableFacts

__all__ = [
    "SEARCHES",
    "SHARDING_TYPES",
    "Placement",
    "PlanError",
    "plan",
]

GIB = 1024**3

# torchrec's ShardingType values (torchrec.distributed.types.ShardingType), kept here so that
# arguments can be checked without importing torchrec; tests/test_plan.py compares them.
SHARDING_TYPES: tuple[str, ...] = (
    "data_parallel",
    "table_wise",
    "column_wise",
    "row_wise",
    "table_row_wise",
    "table_column_wise",
    "grid_shard",
)
SEARCHES: tuple[str, ...] = ("auto", "full", "fast")
ESTIMATES: tuple[str, ...] = ("exact", "torchrec")

# "auto" runs torchrec's full search (all proposers, all sharding types) up to this many
# (tables x GPUs); above it the fast search. The full search for 100 tables on 16 GPUs takes
# minutes (benchmarks/bench_memory.py), the ranker's 12 tables on 4 GPUs under a second.
AUTO_FULL_LIMIT = 256
# The smallest-GPU-count search stops after this many planner runs.
MAX_SEARCH_RUNS = 12
#: The most GPUs `plan` places on: torchrec's planner builds per-device state, seconds per
#: thousand GPUs (a 1e8-GPU topology held 6 GB and never finished).
MAX_GPUS = 65_536
#: The smallest-GPU-count search tries no count above this (each try is a planner run).
MAX_SEARCH_GPUS = 4_096
# GPUs per host when not given: torchrec's ranks go on cuda:<rank % gpus_per_host>.
GPUS_PER_HOST = 8


class PlanError(EmbvizError, RuntimeError):
    """torchrec's planner found no placement.

    Attributes
    ----------
    needed_bytes : int
        Exact bytes of the tables (weights and optimizer state, `embviz.memory_table`).
    available_bytes : int
        ``gpus * hbm_bytes``.
    usable_bytes : int
        What the planner may fill: it keeps `PLANNER_RESERVED_FRACTION` of each GPU for the
        dense model.
    gpus, hbm_bytes : int
        The topology that failed.
    min_gpus : int or None
        Smallest number of GPUs of ``hbm_bytes`` for which the planner finds a placement, or
        None when the search gave up (see ``message``).
    reason : str
        ``"insufficient_storage"`` or ``"constraints"`` (the sharding types or kernels asked
        for cannot place some table, however many GPUs).
    """

    def __init__(
        self,
        message: str,
        *,
        needed_bytes: int,
        available_bytes: int,
        usable_bytes: int,
        gpus: int,
        hbm_bytes: int,
        min_gpus: int | None,
        reason: str,
    ):
        self.needed_bytes = needed_bytes
        self.available_bytes = available_bytes
        self.usable_bytes = usable_bytes
        self.gpus = gpus
        self.hbm_bytes = hbm_bytes
        self.min_gpus = min_gpus
        self.reason = reason
        super().__init__(message)


@dataclass(frozen=True, eq=False)
class Placement:
    """A plan from torchrec's planner, as data.

    Attributes
    ----------
    ranks : pandas.DataFrame
        One row per rank: ``rank``, ``hbm_bytes`` (the planner's HBM estimate for the rank:
        shards plus their input/output buffers), ``table_bytes`` (exact weights and optimizer
        state of the shards held, `embviz.memory` rules), ``tables`` (names, config order),
        ``shards`` (``"name[r0:r1, c0:c1]"``), ``num_shards``.
    tables : pandas.DataFrame
        One row per table, config order: ``table``, ``sharding_type``, ``compute_kernel``,
        ``ranks`` (sorted), ``num_shards``, ``table_bytes`` (exact, all replicas),
        ``hbm_bytes`` (planner, all shards).
    shards : pandas.DataFrame
        One row per shard: ``table``, ``rank``, ``sharding_type``, ``compute_kernel``,
        ``row_offset``, ``col_offset``, ``rows``, ``cols``, ``hbm_bytes``, ``ddr_bytes``,
        ``table_bytes``.
    sharding_plan : torchrec.distributed.types.ShardingPlan
        torchrec's plan, for ``DistributedModelParallel(plan=...)``; the module path of the
        collection is ``""`` (the collection itself is the sharded module).
    gpus, hbm_bytes, batch_size : int
        The topology and batch size planned for.
    estimate, search : str
        How it was planned (see `plan`).
    warnings : tuple of str
        Ranks whose exact table bytes exceed the GPU (possible with ``estimate="torchrec"``).
    gpus_per_host : int
        GPUs per host planned for (torchrec's ``local_world_size``).
    """

    ranks: pd.DataFrame
    tables: pd.DataFrame
    shards: pd.DataFrame
    sharding_plan: ShardingPlan
    gpus: int
    hbm_bytes: int
    batch_size: int
    estimate: str
    search: str
    warnings: tuple[str, ...] = ()
    gpus_per_host: int = GPUS_PER_HOST

    def bytes_by_rank(self, top: int = 7) -> pd.DataFrame:
        """Exact table bytes per rank, one column per table for the ``top`` largest tables.

        Returns
        -------
        pandas.DataFrame
            Indexed by rank (all ranks); columns: the ``top`` tables with the most bytes over
            all ranks (largest first), then ``"other tables"`` when there are more; int64.
            Rows sum to ``ranks["table_bytes"]``.
        """
        top = integer("top", top)
        pivot = self.shards.pivot_table(
            index="rank", columns="table", values="table_bytes", aggfunc="sum", fill_value=0
        ).reindex(range(self.gpus), fill_value=0)
        order = pivot.sum().sort_values(ascending=False, kind="stable").index
        shown = pivot[order[:top]]
        if len(order) > top:
            shown = shown.assign(**{"other tables": pivot[order[top:]].sum(axis=1)})
        shown = shown.astype(np.int64)
        shown.index.name = "rank"
        shown.columns.name = None
        return shown

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON: ``ranks``, ``tables``, the topology and warnings.

        ``ranks``: ``rank``, ``hbm_bytes``, ``table_bytes``, ``tables``, ``shards``;
        ``tables``: ``table``, ``sharding_type``, ``compute_kernel``, ``ranks``,
        ``table_bytes``. Every number is an exact int.
        """
        shards_by_rank: dict[int, list[dict[str, Any]]] = {r: [] for r in range(self.gpus)}
        for row in self.shards.itertuples(index=False):
            shards_by_rank[int(row.rank)].append(
                {
                    "table": row.table,
                    "offsets": [int(row.row_offset), int(row.col_offset)],
                    "sizes": [int(row.rows), int(row.cols)],
                    "hbm_bytes": int(row.hbm_bytes),
                    "table_bytes": int(row.table_bytes),
                }
            )
        return {
            "gpus": self.gpus,
            "gpus_per_host": self.gpus_per_host,
            "hbm_bytes": self.hbm_bytes,
            "batch_size": self.batch_size,
            "estimate": self.estimate,
            "ranks": [
                {
                    "rank": int(row.rank),
                    "hbm_bytes": int(row.hbm_bytes),
                    "table_bytes": int(row.table_bytes),
                    "tables": list(row.tables),
                    "shards": shards_by_rank[int(row.rank)],
                }
                for row in self.ranks.itertuples(index=False)
            ],
            "tables": [
                {
                    "table": row.table,
                    "sharding_type": row.sharding_type,
                    "compute_kernel": row.compute_kernel,
                    "ranks": [int(r) for r in row.ranks],
                    "table_bytes": int(row.table_bytes),
                }
                for row in self.tables.itertuples(index=False)
            ],
            "warnings": list(self.warnings),
        }


# --------------------------------------------------------------------------- arguments


def _per_table(
    argument: str,
    value: Sequence[str] | Mapping[str, Sequence[str]] | None,
    cfg: LargeEmbeddingsConfig,
    allowed: Sequence[str] | None,
) -> dict[str, list[str]]:
    """``["table_wise"]`` for every table or ``{"name": [...]}``; checked against ``allowed``."""
    if value is None:
        return {}
    if isinstance(value, str):
        value = [value]
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(cfg.table_names))
        if unknown:
            raise UnknownTableError(unknown, cfg.table_names)
        per_table = {name: list(v) if not isinstance(v, str) else [v] for name, v in value.items()}
    else:
        per_table = {name: list(value) for name in cfg.table_names}
    for name, values in per_table.items():
        if not values:
            raise ArgumentError(argument, f"empty list for table {name!r}")
        for item in values:
            if allowed is not None and item not in allowed:
                raise ArgumentError(
                    argument,
                    f"unknown value {item!r} for table {name!r} (known: {', '.join(allowed)})",
                )
    return per_table


def _frames(
    cfg: LargeEmbeddingsConfig, best_plan: list[Any], gpus: int, facts: TableFacts
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    order = {name: i for i, name in enumerate(cfg.table_names)}
    records = []
    for option in best_plan:
        for shard in option.shards:
            records.append(
                (
                    option.name,
                    int(shard.rank),
                    option.sharding_type,
                    option.compute_kernel,
                    int(shard.offset[0]),
                    int(shard.offset[1]),
                    int(shard.size[0]),
                    int(shard.size[1]),
                    int(shard.storage.hbm),
                    int(shard.storage.ddr),
                )
            )
    shards = pd.DataFrame.from_records(
        records,
        columns=[
            "table",
            "rank",
            "sharding_type",
            "compute_kernel",
            "row_offset",
            "col_offset",
            "rows",
            "cols",
            "hbm_bytes",
            "ddr_bytes",
        ],
    )
    shards["table_bytes"] = facts.shard_bytes(
        list(shards["table"]),
        list(shards["rows"]),
        list(shards["cols"]),
        list(shards["sharding_type"]),
    )
    for column in ("rank", "row_offset", "col_offset", "rows", "cols", "hbm_bytes", "ddr_bytes"):
        shards[column] = shards[column].astype(np.int64)
    shards["_order"] = shards["table"].map(order)
    shards = (
        shards.sort_values(["_order", "row_offset", "col_offset", "rank"], kind="stable")
        .drop(columns="_order")
        .reset_index(drop=True)
    )

    labels = [
        f"{t}[{r0}:{r0 + r}, {c0}:{c0 + c}]"
        for t, r0, r, c0, c in zip(
            shards["table"],
            shards["row_offset"],
            shards["rows"],
            shards["col_offset"],
            shards["cols"],
            strict=True,
        )
    ]
    shards_by_rank: dict[int, list[str]] = {r: [] for r in range(gpus)}
    tables_by_rank: dict[int, list[str]] = {r: [] for r in range(gpus)}
    for label, table, rank in zip(labels, shards["table"], shards["rank"], strict=True):
        shards_by_rank[int(rank)].append(label)
        if table not in tables_by_rank[int(rank)]:
            tables_by_rank[int(rank)].append(table)
    per_rank = shards.groupby("rank")[["hbm_bytes", "table_bytes"]].sum()
    ranks = pd.DataFrame(
        {
            "rank": np.arange(gpus, dtype=np.int64),
            "hbm_bytes": per_rank["hbm_bytes"].reindex(range(gpus), fill_value=0).to_numpy(),
            "table_bytes": per_rank["table_bytes"].reindex(range(gpus), fill_value=0).to_numpy(),
            "tables": [tables_by_rank[r] for r in range(gpus)],
            "shards": [shards_by_rank[r] for r in range(gpus)],
            "num_shards": [len(shards_by_rank[r]) for r in range(gpus)],
        }
    )

    grouped = shards.groupby("table", sort=False)
    tables = pd.DataFrame(
        {
            "table": list(grouped.groups),
            "sharding_type": grouped["sharding_type"].first().to_numpy(),
            "compute_kernel": grouped["compute_kernel"].first().to_numpy(),
            "ranks": [sorted(set(g.tolist())) for _, g in grouped["rank"]],
            "num_shards": grouped.size().to_numpy(),
            "table_bytes": grouped["table_bytes"].sum().to_numpy(),
            "hbm_bytes": grouped["hbm_bytes"].sum().to_numpy(),
        }
    )
    tables["_order"] = tables["table"].map(order)
    tables = tables.sort_values("_order").drop(columns="_order").reset_index(drop=True)
    for frame in (shards, tables):
        for column in ("table", "sharding_type", "compute_kernel"):
            frame[column] = frame[column].astype(str)
    return ranks, tables, shards


# --------------------------------------------------------------------------- plan


def plan(
    cfg: LargeEmbeddingsConfig,
    gpus: int,
    hbm_gib: float,
    batch_size: int = 512,
    *,
    ddr_gib: float = 0.0,
    gpus_per_host: int = GPUS_PER_HOST,
    sharding_types: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
    compute_kernels: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
    mode: Mode | str = Mode.TRAIN,
    adagrad: Literal["exact", "rowwise"] = "exact",
    estimate: Literal["exact", "torchrec"] = "exact",
    search: Literal["auto", "full", "fast"] = "auto",
    timeout_s: float | None = None,
    find_min_gpus: bool = True,
    progress: bool = True,
) -> Placement:
    """Place the tables on ``gpus`` GPUs of ``hbm_gib`` GiB with torchrec's planner.

    Parameters
    ----------
    cfg : LargeEmbeddingsConfig
        The tables.
    gpus : int
        World size, 1 to `MAX_GPUS` (65,536).
    hbm_gib : float
        Memory per GPU in GiB (binary).
    batch_size : int
        Per-rank batch size; the planner sizes input/output buffers from it.
    ddr_gib : float
        Host memory per rank the planner may use for UVM offload; 0 (default) keeps every
        table in HBM.
    gpus_per_host : int
        GPUs per host (torchrec's ``local_world_size``, default 8): torchrec puts rank ``r``
        on ``cuda:<r % gpus_per_host>`` of its host. Fewer ``gpus`` than that are one host.
    sharding_types, compute_kernels : list of str or {table: list of str}, optional
        torchrec ParameterConstraints for every table (a list) or per table (a mapping), e.g.
        ``sharding_types=["table_wise"]``.
    mode : Mode or str
        TRAIN plans weights and optimizer state; EVALUATE/INFERENCE weights only.
    adagrad : {"exact", "rowwise"}
        ``"rowwise"`` plans Adagrad tables as EXACT_ROWWISE_ADAGRAD (torchrec's RowWiseAdagrad).
    estimate : {"exact", "torchrec"}
        ``"exact"`` corrects the planner's optimizer-state bytes of fused HBM shards to FBGEMM's
        real fp32 state (see the module docstring); ``"torchrec"`` leaves them as torchrec has.
    search : {"auto", "full", "fast"}
        ``"full"``: torchrec's default proposers over every sharding type. ``"fast"``: torchrec's
        UniformProposer (one proposal per sharding type, balanced by the greedy partitioner)
        over table_wise/column_wise for tables that fit one GPU and row_wise/column_wise/
        table_row_wise for bigger ones (unless ``sharding_types`` is given). ``"auto"``: full up
        to `AUTO_FULL_LIMIT` tables x GPUs, fast above.
    timeout_s : float, optional
        Passed to torchrec's planner (``timeout_seconds``): stop proposing after that long.
    find_min_gpus : bool
        When nothing fits, run the planner on more GPUs to report the smallest count that works
        (up to `MAX_SEARCH_GPUS`; past that the message gives the byte lower bound only).
    progress : bool
        Show a progress bar while searching for that count.

    Returns
    -------
    Placement

    Raises
    ------
    PlanError
        When the planner finds no placement: needed against available bytes and the smallest
        number of GPUs of that size that plans (``min_gpus``).
    ArgumentError, UnknownTableError
        For bad arguments (named in the message).
    """
    cfg = as_config(cfg)
    gpus = integer("gpus", gpus)
    if gpus > MAX_GPUS:
        raise ArgumentError(
            "gpus",
            f"must be at most {MAX_GPUS:,} (torchrec's planner keeps state per GPU), got {gpus:,}",
        )
    hbm_gib = number("hbm_gib", hbm_gib, strict=True)
    batch_size = integer("batch_size", batch_size)
    ddr_gib = number("ddr_gib", ddr_gib)
    gpus_per_host = integer("gpus_per_host", gpus_per_host)
    if timeout_s is not None:
        timeout_s = number("timeout_s", timeout_s, strict=True)
    adagrad = choice("adagrad", adagrad, ADAGRAD_STATES)  # type: ignore[assignment]
    estimate = choice("estimate", estimate, ESTIMATES)  # type: ignore[assignment]
    search = choice("search", search, SEARCHES)  # type: ignore[assignment]
    mode = as_mode(mode)
    train = mode is Mode.TRAIN
    types = _per_table("sharding_types", sharding_types, cfg, SHARDING_TYPES)
    from torchrec.distributed.embedding_types import EmbeddingComputeKernel

    kernels = _per_table(
        "compute_kernels", compute_kernels, cfg, [k.value for k in EmbeddingComputeKernel]
    )
    if search == "auto":
        search = "full" if len(cfg.tables) * gpus <= AUTO_FULL_LIMIT else "fast"  # type: ignore[assignment]

    hbm_bytes = round(hbm_gib * GIB)
    ddr_bytes = round(ddr_gib * GIB)
    memory = memory_table(cfg, "fused", mode, adagrad=adagrad)
    # Imported here: torchrec takes seconds to import, and nothing above needs it.
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.planner.types import PlannerError

    from embviz.planner import (
        TableFacts,
        make_planner,
        meta_collection,
        parameter_constraints,
        quiet_planner,
    )

    facts = TableFacts(cfg, adagrad, train)
    usable_hbm = int(hbm_bytes * (1 - PLANNER_RESERVED_FRACTION))
    constraints = parameter_constraints(
        cfg, types, kernels, search, ddr_bytes, usable_hbm, memory["total_bytes"]
    )

    with quiet_planner():
        collection = meta_collection(cfg, train, adagrad)
        sharders = [EmbeddingBagCollectionSharder()]

        def attempt(n: int) -> tuple[Any, list[Any] | None, PlannerError | None]:
            planner, stats = make_planner(
                n,
                hbm_bytes,
                ddr_bytes,
                gpus_per_host,
                batch_size,
                constraints,
                search,
                estimate,
                facts,
                timeout_s,
            )
            try:
                sharding_plan = planner.plan(collection, sharders)
            except PlannerError as exc:
                return None, None, exc
            return sharding_plan, stats.best_plan, None

        sharding_plan, best_plan, error = attempt(gpus)
        if error is not None:
            raise _plan_error(
                error,
                memory,
                estimate,
                gpus,
                hbm_bytes,
                ddr_bytes,
                usable_hbm,
                attempt,
                find_min_gpus,
                progress,
            ) from None

    assert best_plan is not None  # set by the planner's stats call on success
    ranks, tables, shards = _frames(cfg, best_plan, gpus, facts)
    over = ranks[ranks["table_bytes"] > hbm_bytes]
    notes = tuple(
        f"rank {int(r.rank)} holds {compact_bytes(int(r.table_bytes))} of tables (exact) on a "
        f"{compact_bytes(hbm_bytes)} GPU: torchrec's estimate is low for fp16 tables with "
        "Adagrad/Adam (torchrec PR #4142); plan with estimate='exact'"
        for r in over.itertuples(index=False)
    )
    return Placement(
        ranks=ranks,
        tables=tables,
        shards=shards,
        sharding_plan=sharding_plan,
        gpus=gpus,
        hbm_bytes=hbm_bytes,
        batch_size=batch_size,
        estimate=estimate,
        search=search,
        warnings=notes,
        gpus_per_host=gpus_per_host,
    )


def _plan_error(
    error: Exception,
    memory: pd.DataFrame,
    estimate: str,
    gpus: int,
    hbm_bytes: int,
    ddr_bytes: int,
    usable_hbm: int,
    attempt: Any,
    find_min_gpus: bool,
    progress: bool,
) -> PlanError:
    """Explain a failed plan; search for the smallest GPU count that plans."""
    needed = int(memory["total_bytes"].sum())
    # The planner needs at least its own per-table storage (the exact bytes once corrected,
    # torchrec's multiplier estimate otherwise) within what it may fill per GPU, unless host
    # memory can take tables.
    planned = needed if estimate == "exact" else int(memory["planner_bytes"].sum())
    lower = gpus + 1
    if ddr_bytes == 0 and usable_hbm > 0:
        lower = max(lower, math.ceil(planned / usable_hbm))
    searchable = lower <= MAX_SEARCH_GPUS
    search = find_min_gpus and searchable
    min_gpus = _search_min_gpus(attempt, gpus, lower, progress) if search else None
    device = compact_bytes(hbm_bytes)
    head = (
        f"no placement on {gpus} x {device}: the tables need {compact_bytes(needed)} "
        f"(weights and optimizer state) against {compact_bytes(gpus * hbm_bytes)} "
        f"({compact_bytes(gpus * usable_hbm)} after torchrec's "
        f"{PLANNER_RESERVED_FRACTION:.0%} reservation for the dense model)"
    )
    if ddr_bytes:
        head += f" and {compact_bytes(gpus * ddr_bytes)} of host memory"
    if min_gpus is not None:
        reason = "insufficient_storage"
        tail = f"; the smallest number of {device} GPUs that plans is {min_gpus}"
    elif find_min_gpus and not searchable:
        reason = "insufficient_storage"
        tail = (
            f"; by bytes alone it needs at least {lower:,} GPUs of {device}, more than the "
            f"{MAX_SEARCH_GPUS:,} the search for the smallest count tries"
        )
    elif find_min_gpus:
        reason = "constraints"
        tail = (
            f"; no plan up to {_last_tried(gpus, lower)} GPUs either: the sharding types or "
            f"kernels asked for cannot place some table (planner: {_first_line(error)})"
        )
    else:
        reason = "insufficient_storage" if needed > gpus * usable_hbm else "constraints"
        tail = ""
    return PlanError(
        head + tail,
        needed_bytes=needed,
        available_bytes=gpus * hbm_bytes,
        usable_bytes=gpus * usable_hbm,
        gpus=gpus,
        hbm_bytes=hbm_bytes,
        min_gpus=min_gpus,
        reason=reason,
    )


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


def _candidates(gpus: int, lower: int) -> list[int]:
    """Galloping counts from the byte lower bound: lower, lower+1, lower+3, lower+7, ...

    Up to `MAX_SEARCH_GPUS`.
    """
    counts, step = [], 1
    n = max(lower, gpus + 1)
    while len(counts) < MAX_SEARCH_RUNS // 2 and n <= MAX_SEARCH_GPUS:
        counts.append(n)
        n += step
        step *= 2
    return counts


def _last_tried(gpus: int, lower: int) -> int:
    return _candidates(gpus, lower)[-1]


def _search_min_gpus(attempt: Any, gpus: int, lower: int, progress: bool) -> int | None:
    """Smallest n > gpus for which the planner succeeds, or None.

    Gallops upward from the byte lower bound until a count plans, then bisects between the last
    failure and that success, so ``min_gpus - 1`` has failed (or is below the byte bound).
    """
    from tqdm.auto import tqdm

    bar = tqdm(total=MAX_SEARCH_RUNS, desc="smallest GPU count", disable=not progress, leave=False)
    try:
        failed = max(gpus, lower - 1)  # below the byte bound nothing fits
        success = None
        for n in _candidates(gpus, lower):
            bar.update(1)
            bar.set_postfix(gpus=n)
            if attempt(n)[2] is None:
                success = n
                break
            failed = n
        if success is None:
            return None
        while success - failed > 1:
            middle = (success + failed) // 2
            bar.update(1)
            bar.set_postfix(gpus=middle)
            if attempt(middle)[2] is None:
                success = middle
            else:
                failed = middle
        return success
    finally:
        bar.close()
