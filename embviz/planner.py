"""torchrec glue for `embviz.placement`: the planner embviz runs, built from public parts.

- `meta_collection`: the config's collection on ``meta`` with each table's optimizer applied in
  backward, as TwHIN does, so the planner sees the optimizer classes.
- `make_planner`: torchrec's ``EmbeddingShardingPlanner`` for a topology, with an
  ``EmbeddingEnumerator`` given its estimators through the public ``estimator=[...]`` argument:
  torchrec's own ``EmbeddingPerfEstimator`` and ``EmbeddingStorageEstimator`` (its defaults),
  the storage one wrapped by `ExactStateStorageEstimator` for ``estimate="exact"``; and a
  `KeepBestPlan` stats object, through the public ``stats=[...]`` argument, that keeps the best
  plan's sharding options instead of printing them.
- `parameter_constraints`: torchrec ``ParameterConstraints`` per table.

This module imports torchrec: import it only where a plan is made.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torchrec
from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
from torchrec.distributed.planner.enumerators import EmbeddingEnumerator
from torchrec.distributed.planner.proposers import UniformProposer
from torchrec.distributed.planner.shard_estimators import (
    EmbeddingPerfEstimator,
    EmbeddingStorageEstimator,
)
from torchrec.distributed.planner.types import ParameterConstraints, ShardEstimator, Stats

from embviz.config import LargeEmbeddingsConfig, Mode
from embviz.errors import ArgumentError
from embviz.memory import block_bytes
from embviz.optimizers import apply_optimizer, planner_multiplier

__all__ = [
    "ExactStateStorageEstimator",
    "KeepBestPlan",
    "TableFacts",
    "make_planner",
    "meta_collection",
    "parameter_constraints",
    "quiet_planner",
]

_FUSED_HBM_KERNEL = "fused"


@contextlib.contextmanager
def quiet_planner() -> Iterator[None]:
    """Hide torchrec's planner chatter (stats tables, dry-run notices) for one call."""
    logger = logging.getLogger("torchrec.distributed.planner")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            # Dry-run notices about HeuristicalStorageReservation: the meta collection has no
            # dense part, so its dense estimate (0) is right.
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"torchrec\.")
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"fbgemm_gpu")
            yield
    finally:
        logger.setLevel(level)


def meta_collection(cfg: LargeEmbeddingsConfig, train: bool, adagrad: str) -> torch.nn.Module:
    """The collection on ``meta``, each table's optimizer applied in backward when ``train``."""
    collection = torchrec.EmbeddingBagCollection(
        tables=cfg.to_torchrec(), device=torch.device("meta")
    )
    if train:
        for table in cfg.tables:
            apply_optimizer(collection.embedding_bags[table.name].weight, table, adagrad=adagrad)
    return collection


class TableFacts:
    """Per-table values the exact correction and the frames need, looked up by name."""

    def __init__(self, cfg: LargeEmbeddingsConfig, adagrad: str, train: bool):
        self.adagrad = adagrad
        self.train = train
        self.itemsize = {t.name: t.data_type.itemsize for t in cfg.tables}
        self.optimizer = {t.name: t.optimizer.name for t in cfg.tables}
        self.momentum = {
            t.name: float(getattr(t.optimizer.settings, "momentum", 0.0)) for t in cfg.tables
        }

    def multiplier(self, name: str, cols: int) -> float:
        """torchrec's optimizer-state multiplier for table ``name`` of width ``cols``."""
        return planner_multiplier(self.optimizer[name], cols, self.adagrad)

    def shard_bytes(
        self, names: Sequence[str], rows: Sequence[int], cols: Sequence[int], kinds: Sequence[str]
    ) -> np.ndarray:
        """Exact bytes per shard.

        Fused rules, or torch.optim rules for data-parallel replicas (torchrec keeps their
        optimizer out of FBGEMM).
        """
        if not names:
            return np.zeros(0, dtype=np.int64)
        itemsize = [self.itemsize[n] for n in names]
        optimizer = [self.optimizer[n] for n in names]
        momentum = [self.momentum[n] for n in names]
        mode = Mode.TRAIN if self.train else Mode.INFERENCE
        out = np.zeros(len(names), dtype=np.int64)
        for state in ("fused", "torch"):
            pick = np.array([(k == "data_parallel") == (state == "torch") for k in kinds])
            if not pick.any():
                continue
            weights, opt = block_bytes(
                np.asarray(rows)[pick],
                np.asarray(cols)[pick],
                np.asarray(itemsize)[pick],
                np.asarray(optimizer, dtype=object)[pick],
                np.asarray(momentum)[pick],
                optimizer_state=state,  # type: ignore[arg-type]
                mode=mode,
                adagrad=self.adagrad if state == "fused" else "exact",  # type: ignore[arg-type]
            )
            out[pick] = weights + opt
        return out


class ExactStateStorageEstimator(ShardEstimator):
    """torchrec's storage estimate, with FBGEMM's real (fp32) state for fused HBM shards.

    torchrec adds ``ceil(ceil(W * shard/table) * m)`` optimizer bytes per shard (W the table's
    weight bytes, m its multiplier); this swaps them for the exact state of the shard's rows and
    columns. Other kernels (UVM, dense) and data-parallel replicas keep torchrec's figures.
    """

    def __init__(self, inner: ShardEstimator, facts: TableFacts) -> None:
        # The wrapped estimator holds the topology and constraints.
        self._inner = inner
        self._facts = facts

    def estimate(self, sharding_options: list[Any], *args: Any, **kwargs: Any) -> None:
        """Run torchrec's estimate, then correct the fused shards' optimizer bytes."""
        self._inner.estimate(sharding_options, *args, **kwargs)
        facts = self._facts
        if not facts.train:
            return
        for option in sharding_options:
            if option.compute_kernel != _FUSED_HBM_KERNEL or option.name not in facts.itemsize:
                continue
            if option.sharding_type == "data_parallel":
                continue
            table_rows, table_cols = (int(x) for x in option.tensor.shape)
            itemsize = facts.itemsize[option.name]
            weight_bytes = table_rows * table_cols * itemsize
            multiplier = facts.multiplier(option.name, table_cols)
            shards = [s for s in option.shards if s.storage is not None]
            exact = facts.shard_bytes(
                [option.name] * len(shards),
                [int(s.size[0]) for s in shards],
                [int(s.size[1]) for s in shards],
                [option.sharding_type] * len(shards),
            )
            for shard, exact_bytes in zip(shards, exact, strict=True):
                rows, cols = int(shard.size[0]), int(shard.size[1])
                tensor_size = math.ceil(weight_bytes * rows * cols / (table_rows * table_cols))
                planner_state = math.ceil(tensor_size * multiplier)
                exact_state = int(exact_bytes) - rows * cols * itemsize
                shard.storage = dataclasses.replace(
                    shard.storage, hbm=shard.storage.hbm - planner_state + exact_state
                )


class KeepBestPlan(Stats):
    """A torchrec `Stats` that keeps the planner's best plan instead of printing it."""

    def __init__(self) -> None:
        self.best_plan: list[Any] | None = None

    def log(self, *args: Any, **kwargs: Any) -> None:
        """Keep ``best_plan`` (a keyword in torchrec 1.6-1.8; the 8th positional otherwise)."""
        self.best_plan = kwargs.get("best_plan", args[7] if len(args) > 7 else None)


def make_planner(
    gpus: int,
    hbm_bytes: int,
    ddr_bytes: int,
    gpus_per_host: int,
    batch_size: int,
    constraints: dict[str, ParameterConstraints],
    search: str,
    estimate: str,
    facts: TableFacts,
    timeout_s: float | None,
) -> tuple[EmbeddingShardingPlanner, KeepBestPlan]:
    """torchrec's planner for ``gpus`` GPUs, and the stats object that will hold its best plan.

    ``gpus_per_host`` is torchrec's ``local_world_size``: ranks are placed on
    ``cuda:<rank % gpus_per_host>`` (torchrec's default, all ranks on one host, gives device
    indices past 127 for big plans, which torch refuses).
    """
    topology = Topology(
        world_size=gpus,
        compute_device="cuda",
        hbm_cap=hbm_bytes,
        ddr_cap=ddr_bytes,
        local_world_size=min(gpus, gpus_per_host),
    )
    constraints_or_none = constraints or None
    storage: ShardEstimator = EmbeddingStorageEstimator(
        topology=topology, constraints=constraints_or_none
    )
    if estimate == "exact":
        storage = ExactStateStorageEstimator(storage, facts)
    enumerator = EmbeddingEnumerator(
        topology=topology,
        batch_size=batch_size,
        constraints=constraints_or_none,
        estimator=[
            EmbeddingPerfEstimator(topology=topology, constraints=constraints_or_none),
            storage,
        ],
    )
    stats = KeepBestPlan()
    kwargs: dict[str, Any] = {}
    if search == "fast":
        # One proposal per sharding type, each balanced by the greedy partitioner.
        kwargs["proposer"] = UniformProposer()
    if timeout_s is not None:
        if "timeout_seconds" not in inspect.signature(EmbeddingShardingPlanner).parameters:
            raise ArgumentError("timeout_s", "this torchrec's planner takes no timeout")
        kwargs["timeout_seconds"] = max(1, math.ceil(timeout_s))
    planner = EmbeddingShardingPlanner(
        topology=topology,
        batch_size=batch_size,
        enumerator=enumerator,
        constraints=constraints_or_none,
        stats=[stats],
        **kwargs,
    )
    return planner, stats


def parameter_constraints(
    cfg: LargeEmbeddingsConfig,
    sharding_types: dict[str, list[str]],
    compute_kernels: dict[str, list[str]],
    search: str,
    ddr_bytes: int,
    usable_hbm: int,
    exact_bytes: pd.Series,
) -> dict[str, ParameterConstraints]:
    """torchrec ``ParameterConstraints`` per table: what was asked for, plus the search's own.

    The fast search keeps one-GPU tables whole or split by columns and bigger ones split by
    rows/columns (row-wise options on many GPUs are what makes torchrec's enumeration slow);
    without host memory, UVM kernels are never enumerated.
    """
    constraints = {}
    for name in cfg.table_names:
        types = sharding_types.get(name)
        if types is None and search == "fast":
            if exact_bytes[name] <= usable_hbm:
                types = ["table_wise", "column_wise"]
            else:
                types = ["row_wise", "column_wise", "table_row_wise"]
        kernels = compute_kernels.get(name)
        if kernels is None and ddr_bytes == 0:
            kernels = ["fused", "dense"]
        if types is not None or kernels is not None:
            constraints[name] = ParameterConstraints(
                **({"sharding_types": types} if types is not None else {}),
                **({"compute_kernels": kernels} if kernels is not None else {}),
            )
    return constraints
