"""What a built collection really holds, next to `embviz.memory_table`'s prediction.

`measure_collection` takes one training step on a collection (from `embviz.build` or not) and
reads the bytes of every weight and optimizer-state tensor; `predicted_vs_measured` puts them
next to the prediction; `build_and_measure` does build, measure and compare in one go (what
``embviz build`` prints and ``scripts/gpu_check.py`` checks on a GPU).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from embviz.build import (
    BuildError,
    allocated,
    build_collection,
    build_records,
    resolve_device,
    scale_config,
)
from embviz.config import LargeEmbeddingsConfig, Mode
from embviz.optimizers import eps_vanishes

if TYPE_CHECKING:
    import pandas as pd
    import torch
    import torchrec

__all__ = [
    "BuildCheck",
    "build_and_measure",
    "measure_collection",
    "predicted_vs_measured",
]


def _table_names(ebc: torchrec.EmbeddingBagCollection) -> list[str]:
    return [c.name for c in ebc.embedding_bag_configs()]


def _empty_batch(ebc: torchrec.EmbeddingBagCollection, device: torch.device) -> Any:
    """A KJT with every feature of the collection and one empty bag each: zero gradients."""
    import torch
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    keys = [f for c in ebc.embedding_bag_configs() for f in c.feature_names]
    return KeyedJaggedTensor(
        keys=keys,
        values=torch.empty(0, dtype=torch.int64, device=device),
        lengths=torch.zeros(len(keys), dtype=torch.int32, device=device),
    )


def _state_bytes(weight: torch.Tensor) -> int:
    import torch

    total = 0
    for optimizer in getattr(weight, "_in_backward_optimizers", []):
        for value in optimizer.state.get(weight, {}).values():
            if isinstance(value, torch.Tensor):
                total += value.numel() * value.element_size()
    return total


def measure_collection(ebc: torchrec.EmbeddingBagCollection, batch: Any = None) -> pd.DataFrame:
    """Bytes each table really holds: weights, and optimizer state after one training step.

    One step is taken on ``batch`` (forward through the collection, then one backward per table,
    so each table's in-backward optimizer runs and allocates its state). By default the batch has
    one empty bag per feature: every gradient is zero and the weights do not change (tables whose
    Adam/Adagrad has ``eps=0`` would turn to NaN, see `BuildWarning`, so their weights are put
    back). Pass a real `KeyedJaggedTensor` to take a real training step instead.

    Parameters
    ----------
    ebc : torchrec.EmbeddingBagCollection
        A collection on CPU or CUDA (from `build_collection` or not).
    batch : KeyedJaggedTensor, optional
        Input of the step.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``table`` like `embviz.memory.memory_table`, with int64 ``weight_bytes``,
        ``optimizer_bytes`` (every tensor in the optimizers' state, torch's ``step`` included)
        and ``total_bytes``; on CUDA also ``weight_allocated_bytes`` (the
        ``torch.cuda.memory_allocated`` delta of building the table, when `build_collection`
        built it), ``optimizer_allocated_bytes`` (the delta of creating the table's optimizer,
        where torch's Adagrad allocates its state, plus that of this step, where Adam and SGD
        momentum do; 0 for a step once the state exists) and ``total_allocated_bytes``
        (nullable Int64); and ``build_seconds`` (NaN when unknown). The CUDA deltas include
        the caching allocator's rounding (to 512 bytes, and up to 2 MiB for large tensors).

    Raises
    ------
    BuildError
        For a collection on ``meta``, which holds no memory to measure.
    """
    import pandas as pd
    import torch

    names = _table_names(ebc)
    weights = {n: ebc.embedding_bags[n].weight for n in names}
    device = next(iter(weights.values())).device
    if device.type == "meta":
        raise BuildError(
            "the collection is on 'meta' and holds no memory; build it on 'cpu' or 'cuda' to "
            "measure it (embviz.memory.memory_table predicts the bytes without building)"
        )
    kjt = _empty_batch(ebc, device) if batch is None else batch
    with_optimizer = [n for n in names if getattr(weights[n], "_in_backward_optimizers", None)]
    restore: dict[str, torch.Tensor] = {}
    if batch is None:
        for n in with_optimizer:
            vanishes = any(
                eps_vanishes(type(o).__name__, group.get("eps", 1.0), weights[n].dtype)
                for o in weights[n]._in_backward_optimizers
                for group in o.param_groups
            )
            if vanishes:
                restore[n] = weights[n].detach().clone()
    optimizer_deltas: dict[str, int | None] = {}
    if with_optimizer:
        output = ebc(kjt).values().sum()
        for n in with_optimizer:
            before = allocated(device)
            # The graph is kept through every backward and freed after the loop, so that its
            # buffers are not counted against the last table's optimizer state.
            output.backward(inputs=[weights[n]], retain_graph=True)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            after = allocated(device)
            optimizer_deltas[n] = None if before is None else after - before
        del output
    with torch.no_grad():
        for n, saved in restore.items():
            weights[n].copy_(saved)
    restore.clear()

    records = build_records(ebc)
    rows = []
    for n in names:
        weight = weights[n]
        weight_bytes = weight.numel() * weight.element_size()
        optimizer_bytes = _state_bytes(weight)
        row: dict[str, Any] = {
            "table": n,
            "weight_bytes": weight_bytes,
            "optimizer_bytes": optimizer_bytes,
            "total_bytes": weight_bytes + optimizer_bytes,
        }
        if device.type == "cuda":
            record = records.get(n)
            weight_delta = None if record is None else record.allocated_bytes
            # Created with the optimizer (Adagrad) plus allocated by this step (Adam, momentum).
            created = 0 if record is None else record.optimizer_allocated_bytes or 0
            step = optimizer_deltas.get(n, 0)
            optimizer_delta = None if step is None else created + step
            row["weight_allocated_bytes"] = weight_delta
            row["optimizer_allocated_bytes"] = optimizer_delta
            row["total_allocated_bytes"] = (
                None
                if weight_delta is None or optimizer_delta is None
                else weight_delta + optimizer_delta
            )
        row["build_seconds"] = records[n].seconds if n in records else math.nan
        rows.append(row)
    frame = pd.DataFrame(rows).set_index("table")
    for column in ("weight_bytes", "optimizer_bytes", "total_bytes"):
        frame[column] = frame[column].astype("int64")
    for column in ("weight_allocated_bytes", "optimizer_allocated_bytes", "total_allocated_bytes"):
        if column in frame:
            frame[column] = frame[column].astype("Int64")
    return frame


def predicted_vs_measured(
    cfg: LargeEmbeddingsConfig,
    measured: pd.DataFrame,
    *,
    optimizer_state: str = "torch",
    scale: float | None = None,
    mode: Mode | str = Mode.TRAIN,
) -> pd.DataFrame:
    """`memory_table`'s prediction next to `measure_collection`'s measurement, per table.

    Parameters
    ----------
    cfg : LargeEmbeddingsConfig
        The config the collection was built from.
    measured : pandas.DataFrame
        From `measure_collection`.
    optimizer_state : {"torch", "fused"}
        ``"torch"`` for an unsharded collection.
    scale : float, optional
        The ``scale`` of the build.
    mode : Mode or str
        TRAIN when the optimizers were applied (the default), INFERENCE when not.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``table``: ``predicted_weight_bytes``, ``measured_weight_bytes``,
        ``predicted_optimizer_bytes``, ``measured_optimizer_bytes``, ``predicted_total_bytes``,
        ``measured_total_bytes``, ``difference_bytes`` (measured - predicted total) and
        ``relative_difference`` (that over the prediction; 0 when both are 0); on CUDA also
        ``allocated_total_bytes`` and ``allocated_relative_difference``.
    """
    import pandas as pd

    from embviz.memory import memory_table

    predicted = memory_table(scale_config(cfg, scale), optimizer_state, mode)  # type: ignore[arg-type]
    frame = pd.DataFrame(index=predicted.index)
    for part in ("weight", "optimizer", "total"):
        frame[f"predicted_{part}_bytes"] = predicted[f"{part}_bytes"].astype("int64")
        frame[f"measured_{part}_bytes"] = measured[f"{part}_bytes"].reindex(frame.index)
    frame["difference_bytes"] = frame["measured_total_bytes"] - frame["predicted_total_bytes"]
    frame["relative_difference"] = _relative(
        frame["difference_bytes"], frame["predicted_total_bytes"]
    )
    if "total_allocated_bytes" in measured:
        held = measured["total_allocated_bytes"].reindex(frame.index)
        frame["allocated_total_bytes"] = held
        frame["allocated_relative_difference"] = _relative(
            (held - frame["predicted_total_bytes"]).astype("Float64"),
            frame["predicted_total_bytes"],
        )
    return frame


def _relative(difference: pd.Series, base: pd.Series) -> pd.Series:
    ratio = difference.astype("float64") / base.astype("float64").where(base != 0)
    return ratio.where(~((difference == 0) & (base == 0)), 0.0)


# --------------------------------------------------------------------------- build and measure


@dataclass(frozen=True)
class BuildCheck:
    """A build of a config next to its prediction (see `build_and_measure`).

    Attributes
    ----------
    device : str
        Where the collection was built.
    seconds : float
        Wall time of the build (materialising and initialising or loading the tables).
    comparison : pandas.DataFrame
        `predicted_vs_measured`; on ``meta`` the measured columns are missing (nothing is held).
    collection : torchrec.EmbeddingBagCollection
    scale : float or None
    measured : pandas.DataFrame or None
        `measure_collection` (with ``build_seconds`` per table); None on ``meta``.
    """

    device: str
    seconds: float
    comparison: pd.DataFrame
    collection: torchrec.EmbeddingBagCollection
    scale: float | None
    measured: pd.DataFrame | None = None

    @property
    def predicted_bytes(self) -> int:
        """Total predicted bytes (weights and optimizer state)."""
        return int(self.comparison["predicted_total_bytes"].sum())

    @property
    def measured_bytes(self) -> int | None:
        """Total measured bytes; None on ``meta``."""
        if "measured_total_bytes" not in self.comparison:
            return None
        return int(self.comparison["measured_total_bytes"].sum())

    def summary(self) -> str:
        """One line: device, tables, time, predicted and measured totals and their difference."""
        from embviz.memory import human_bytes

        tables = len(self.comparison)
        head = f"{self.device}: built {tables} tables in {self.seconds:.2f} s"
        if self.scale is not None:
            head += f" (scale {self.scale:g})"
        predicted = self.predicted_bytes
        measured = self.measured_bytes
        if measured is None:
            return (
                f"{head}; predicted {human_bytes(predicted)} ({predicted:,} bytes); on meta "
                "nothing is allocated, so there is nothing to measure"
            )
        difference = measured - predicted
        share = difference / predicted if predicted else 0.0
        return (
            f"{head}; predicted {human_bytes(predicted)} ({predicted:,} bytes), measured "
            f"{human_bytes(measured)} ({measured:,} bytes), difference {difference:+,} bytes "
            f"({share:+.2%})"
        )


def build_and_measure(
    cfg: LargeEmbeddingsConfig,
    device: str | torch.device = "auto",
    *,
    scale: float | None = None,
    apply_optimizers: bool = True,
    progress: bool = True,
) -> BuildCheck:
    """`build_collection`, `measure_collection` and `predicted_vs_measured` in one go.

    Parameters
    ----------
    cfg : LargeEmbeddingsConfig
        The tables.
    device, scale, apply_optimizers, progress
        As `build_collection` takes them.

    Returns
    -------
    BuildCheck
        What ``embviz build`` prints and ``scripts/gpu_check.py`` checks.
    """
    import pandas as pd
    import torchrec  # noqa: F401 - imported here so its seconds of import are not build time

    from embviz.memory import memory_table

    resolved = resolve_device(device)
    start = time.perf_counter()
    ebc = build_collection(
        cfg, resolved, apply_optimizers=apply_optimizers, scale=scale, progress=progress
    )
    seconds = time.perf_counter() - start
    mode = Mode.TRAIN if apply_optimizers else Mode.INFERENCE
    if resolved.type == "meta":
        predicted = memory_table(scale_config(cfg, scale), "torch", mode)
        comparison = pd.DataFrame(index=predicted.index)
        for part in ("weight", "optimizer", "total"):
            comparison[f"predicted_{part}_bytes"] = predicted[f"{part}_bytes"].astype("int64")
        measured = None
    else:
        measured = measure_collection(ebc)
        comparison = predicted_vs_measured(cfg, measured, scale=scale, mode=mode)
    return BuildCheck(str(resolved), seconds, comparison, ebc, scale, measured)
