"""Shard a config across processes with torchrec's DistributedModelParallel, and measure each rank.

embviz does not shard anything itself: `embviz.plan` runs torchrec's planner, this module starts
``nproc`` processes with torchrun (``python -m torch.distributed.run``), and in each of them
torchrec's `DistributedModelParallel` places the collection following the plan's
`ShardingPlan`, exactly as the-algorithm-ml's ``maybe_shard_model`` does for TwHIN: the
collection is built on ``meta`` with each table's optimizer applied in backward, and sharding
turns those into FBGEMM's fused optimizers (tables the plan puts on fused kernels get FBGEMM's
optimizer arguments, the others torch's: `embviz.optimizers`). One training step later every
rank reports the bytes it holds per table (weight shards and optimizer state, from the tensors
themselves), and the parent puts them next to the plan's prediction.

On GPUs the processes use NCCL, one GPU each. On CPUs they use gloo, and the plan's placements
(``rank:r/cuda:r``: torchrec's planner always plans for GPUs here) are moved to ``rank:r/cpu``:
the same shards on the same ranks, run by FBGEMM's CPU kernels, which have EXACT_SGD,
EXACT_ADAGRAD and EXACT_ROWWISE_ADAGRAD but no fused Adam.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embviz.arguments import as_mode, choice, integer
from embviz.config import LargeEmbeddingsConfig, Mode, dump_config, load_config
from embviz.errors import EmbvizError

if TYPE_CHECKING:
    import pandas as pd

    from embviz.placement import Placement

__all__ = [
    "ShardError",
    "ShardedBuild",
    "build_sharded",
    "build_sharded_from_config",
    "cpu_sharding_plan",
]

# A worker that has not finished after this long is stopped (seconds).
DEFAULT_TIMEOUT_S = 600.0

_CONFIG_FILE = "config.yaml"
_PLAN_FILE = "plan.pkl"
_SETTINGS_FILE = "settings.json"


class ShardError(EmbvizError, RuntimeError):
    """A sharded build that cannot start or whose processes failed (their output is included)."""


@dataclass(frozen=True)
class ShardedBuild:
    """What the ranks of a sharded build measured, next to the plan's prediction.

    Attributes
    ----------
    ranks : pandas.DataFrame
        Indexed by ``rank``: ``predicted_bytes`` (the plan's exact table bytes for the rank,
        `Placement.ranks` ``table_bytes``), ``planner_hbm_bytes`` (torchrec's estimate,
        input/output buffers included), ``measured_weight_bytes``,
        ``measured_optimizer_bytes``, ``measured_bytes`` (their sum), ``difference_bytes``
        (measured - predicted), ``relative_difference``, ``allocated_bytes`` (CUDA
        ``memory_allocated`` growth over sharding and the step; NA on CPU), ``tables``.
    tables : pandas.DataFrame
        One row per (rank, table) held: ``rank``, ``table``, ``sharding_type``,
        ``compute_kernel``, ``weight_bytes``, ``optimizer_bytes``, ``total_bytes``,
        ``optimizer_state`` (names of the state tensors, e.g. ``momentum1``), ``weight_sum``
        (sum of the rank's weight values after the step, float64: a checksum of the shards).
    placement : Placement
        The plan that was followed.
    device : str
        ``"cpu"`` or ``"cuda"``.
    nproc : int
    seconds : float
        Wall time of the whole run (start of the processes to their reports).
    snapshot : pathlib.Path or None
        The torchsnapshot the ranks took together, when asked for.
    """

    ranks: pd.DataFrame
    tables: pd.DataFrame
    placement: Placement
    device: str
    nproc: int
    seconds: float
    snapshot: Path | None = None

    def summary(self) -> str:
        """One line: processes, device, time, predicted and measured totals and difference."""
        from embviz.memory import human_bytes

        predicted = int(self.ranks["predicted_bytes"].sum())
        measured = int(self.ranks["measured_bytes"].sum())
        difference = measured - predicted
        share = difference / predicted if predicted else 0.0
        backend = "nccl" if self.device == "cuda" else "gloo"
        return (
            f"{self.nproc} processes ({self.device}, {backend}): sharded "
            f"{len(self.placement.tables)} tables in {self.seconds:.1f} s; predicted "
            f"{human_bytes(predicted)} ({predicted:,} bytes), measured {human_bytes(measured)} "
            f"({measured:,} bytes), difference {difference:+,} bytes ({share:+.2%})"
        )


# --------------------------------------------------------------------------- parent


def _resolve_device(device: str, nproc: int) -> str:
    import torch

    device = choice("device", device, ("auto", "cpu", "cuda"))
    if device == "auto":
        return "cuda" if torch.cuda.is_available() and torch.cuda.device_count() >= nproc else "cpu"
    if device == "cpu":
        return "cpu"
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if available < nproc:
        raise ShardError(
            f"{nproc} processes need {nproc} CUDA devices (one each), this machine has "
            f"{available}; use device='cpu' (gloo) or fewer processes"
        )
    return "cuda"


def cpu_sharding_plan(sharding_plan: Any) -> Any:
    """A copy of a torchrec `ShardingPlan` whose shards are placed on ``rank:r/cpu``.

    torchrec's planner runs here for GPUs and writes ``rank:r/cuda:r`` into every shard's
    placement; gloo processes hold their shards in host memory. Shards, ranks, sharding types
    and kernels are unchanged.
    """
    import copy

    from torch.distributed._shard.sharding_spec import EnumerableShardingSpec, ShardMetadata

    plan = copy.deepcopy(sharding_plan)
    for module_plan in plan.plan.values():
        for sharding in module_plan.values():
            spec = sharding.sharding_spec
            if not isinstance(spec, EnumerableShardingSpec):
                continue  # data_parallel: replicated, no placements
            sharding.sharding_spec = EnumerableShardingSpec(
                [
                    ShardMetadata(
                        shard_offsets=list(shard.shard_offsets),
                        shard_sizes=list(shard.shard_sizes),
                        placement=f"rank:{shard.placement.rank()}/cpu",
                    )
                    for shard in spec.shards
                ]
            )
    return plan


def _check_cpu_kernels(cfg: LargeEmbeddingsConfig, placement: Placement) -> None:
    fused = placement.tables[placement.tables["compute_kernel"].astype(str).str.startswith("fused")]
    adam = [str(t) for t in fused["table"] if cfg.table(str(t)).optimizer.name == "adam"]
    if adam:
        raise ShardError(
            f"tables {', '.join(adam)} use Adam with FBGEMM's fused kernel, which exists on GPUs "
            "only (the CPU kernels are EXACT_SGD, EXACT_ADAGRAD and EXACT_ROWWISE_ADAGRAD); "
            "shard on GPUs, or measure them unsharded with embviz build"
        )


def build_sharded(
    cfg: LargeEmbeddingsConfig,
    placement: Placement,
    nproc: int | None = None,
    *,
    device: str = "auto",
    mode: Mode | str = Mode.TRAIN,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    snapshot: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> ShardedBuild:
    """Shard ``cfg`` across ``nproc`` processes following ``placement`` and measure every rank.

    Parameters
    ----------
    cfg : LargeEmbeddingsConfig
        The tables the placement was planned for.
    placement : Placement
        From `embviz.plan` for the same config and ``gpus == nproc``.
    nproc : int, optional
        Processes to start (default: ``placement.gpus``).
    device : {"auto", "cpu", "cuda"}
        ``"cuda"``: one GPU per process, NCCL. ``"cpu"``: gloo. ``"auto"``: CUDA when there are
        ``nproc`` GPUs, else CPU.
    mode : Mode or str
        TRAIN applies each table's optimizer (fused once sharded) and takes a step; EVALUATE or
        INFERENCE shards the weights only.
    timeout_s : float
        Stop the processes after this long.
    snapshot : str or path-like, optional
        New folder: after the step the ranks take a torchsnapshot of the sharded model there
        together (``app_state={"model": model}``, as the-algorithm-ml checkpoints it), which
        `embviz.snapshot_tables` and `embviz.read_table` read back whole.
    progress : bool
        Print a line when the processes start and when they report (stderr).

    Returns
    -------
    ShardedBuild

    Raises
    ------
    ShardError
        A placement for another world size or other tables, too few GPUs, Adam tables on the
        CPU's fused kernels, or processes that failed or timed out (with their output).
    ArgumentError
        A bad ``nproc``, ``device`` or ``mode``.
    """
    mode = as_mode(mode)
    nproc = integer("nproc", placement.gpus if nproc is None else nproc)
    if placement.gpus != nproc:
        raise ShardError(
            f"the placement was planned for {placement.gpus} GPUs but {nproc} processes were "
            f"asked for: plan with gpus={nproc} (torchrec shards by the plan's ranks)"
        )
    planned = [str(t) for t in placement.tables["table"]]
    if planned != cfg.table_names:
        raise ShardError(
            f"the placement is for tables {', '.join(planned)}, the config has "
            f"{', '.join(cfg.table_names)}: plan this config"
        )
    resolved = _resolve_device(device, nproc)
    snapshot_path = None
    if snapshot is not None:
        snapshot_path = Path(snapshot).absolute()
        if snapshot_path.exists() and (not snapshot_path.is_dir() or any(snapshot_path.iterdir())):
            raise ShardError(f"{snapshot_path}: the snapshot folder must be new or empty")
    sharding_plan = placement.sharding_plan
    if resolved == "cpu":
        if mode is Mode.TRAIN:
            _check_cpu_kernels(cfg, placement)
        sharding_plan = cpu_sharding_plan(sharding_plan)

    with tempfile.TemporaryDirectory(prefix="embviz-sharded-") as tmp:
        folder = Path(tmp)
        (folder / _CONFIG_FILE).write_text(dump_config(cfg))
        with open(folder / _PLAN_FILE, "wb") as handle:
            pickle.dump(sharding_plan, handle)
        (folder / _SETTINGS_FILE).write_text(
            json.dumps(
                {
                    "device": resolved,
                    "train": mode is Mode.TRAIN,
                    "snapshot": None if snapshot_path is None else str(snapshot_path),
                }
            )
        )
        started = time.perf_counter()
        if progress:
            print(f"starting {nproc} processes (torchrun, {resolved})", file=sys.stderr)
        _launch(folder, nproc, timeout_s)
        seconds = time.perf_counter() - started
        reports = []
        for rank in range(nproc):
            path = folder / f"rank{rank}.json"
            if not path.is_file():
                raise ShardError(f"rank {rank} finished without writing its report")
            reports.append(json.loads(path.read_text()))
    if progress:
        print(f"{nproc} ranks reported after {seconds:.1f} s", file=sys.stderr)
    ranks, tables = _frames(reports, placement)
    return ShardedBuild(ranks, tables, placement, resolved, nproc, seconds, snapshot_path)


def _launch(folder: Path, nproc: int, timeout_s: float) -> None:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes=1",
        f"--nproc-per-node={nproc}",
        "-m",
        "embviz.distributed",
        "worker",
        str(folder),
    ]
    env = dict(os.environ)
    # One thread per process: the ranks share the machine's cores.
    env.setdefault("OMP_NUM_THREADS", "1")
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, env=env, check=False
        )
    except subprocess.TimeoutExpired as exc:
        tail = _tail((exc.stderr or b"").decode() if isinstance(exc.stderr, bytes) else exc.stderr)
        raise ShardError(f"the sharded build did not finish in {timeout_s:g} s\n{tail}") from None
    if result.returncode != 0:
        errors = sorted(folder.glob("rank*.error"))
        detail = "\n".join(p.read_text() for p in errors) if errors else _tail(result.stderr)
        raise ShardError(
            f"the sharded build failed (torchrun exit code {result.returncode}):\n{detail}"
        )


def _tail(text: str | None, lines: int = 30) -> str:
    return "\n".join((text or "").strip().splitlines()[-lines:])


def _frames(reports: list[dict[str, Any]], placement: Placement) -> tuple[Any, Any]:
    import pandas as pd

    rows = [dict(item, rank=report["rank"]) for report in reports for item in report["tables"]]
    tables = pd.DataFrame(
        rows,
        columns=[
            "rank",
            "table",
            "sharding_type",
            "compute_kernel",
            "weight_bytes",
            "optimizer_bytes",
            "total_bytes",
            "optimizer_state",
            "weight_sum",
        ],
    )
    for column in ("rank", "weight_bytes", "optimizer_bytes", "total_bytes"):
        tables[column] = tables[column].astype("int64")
    planned = placement.ranks.set_index("rank")
    records = []
    for report in sorted(reports, key=lambda r: r["rank"]):
        rank = report["rank"]
        held = tables[tables["rank"] == rank]
        weight = int(held["weight_bytes"].sum())
        state = int(held["optimizer_bytes"].sum())
        predicted = int(planned.loc[rank, "table_bytes"])
        measured = weight + state
        records.append(
            {
                "rank": rank,
                "predicted_bytes": predicted,
                "planner_hbm_bytes": int(planned.loc[rank, "hbm_bytes"]),
                "measured_weight_bytes": weight,
                "measured_optimizer_bytes": state,
                "measured_bytes": measured,
                "difference_bytes": measured - predicted,
                "relative_difference": (measured - predicted) / predicted if predicted else 0.0,
                "allocated_bytes": report.get("allocated_bytes"),
                "tables": list(held["table"]),
            }
        )
    ranks = pd.DataFrame(records).set_index("rank")
    ranks["allocated_bytes"] = ranks["allocated_bytes"].astype("Int64")
    return ranks, tables


def build_sharded_from_config(
    cfg: LargeEmbeddingsConfig,
    nproc: int,
    *,
    device: str = "auto",
    scale: float | None = None,
    hbm_gib: float | None = None,
    batch_size: int = 512,
    snapshot: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> ShardedBuild:
    """Plan ``cfg`` for ``nproc`` devices with `embviz.plan`, then `build_sharded` (the CLI's path).

    On the CPU, tables the planner makes ``data_parallel`` (replicated, with a torch optimizer
    rather than a fused one) are planned again as ``table_wise``, so every table runs FBGEMM's
    fused kernels as it would on GPUs.

    Parameters
    ----------
    cfg : LargeEmbeddingsConfig
        The tables.
    nproc : int
        Processes (and devices) to shard across.
    device : {"auto", "cpu", "cuda"}
        As `build_sharded` takes.
    scale : float, optional
        Shrink every table first (`embviz.build.scale_config`).
    hbm_gib : float, optional
        Memory per device for the plan; default: the free memory of the first GPU, or the
        available RAM divided by ``nproc`` on the CPU.
    batch_size : int
        Per-rank batch size for the planner.
    snapshot : str or path-like, optional
        As `build_sharded` takes.
    progress : bool
        Passed on.

    Returns
    -------
    ShardedBuild
    """
    from embviz.build import scale_config
    from embviz.placement import plan

    nproc = integer("nproc", nproc)
    cfg = scale_config(cfg, scale)
    resolved = _resolve_device(device, nproc)
    if hbm_gib is None:
        hbm_gib = _free_gib(resolved, nproc)
    # torchrun --standalone: every process on this one host.
    host = {"gpus_per_host": nproc}
    placement = plan(
        cfg, gpus=nproc, hbm_gib=hbm_gib, batch_size=batch_size, progress=progress, **host
    )
    if resolved == "cpu":
        replicated = placement.tables.loc[
            placement.tables["sharding_type"] == "data_parallel", "table"
        ].tolist()
        if replicated:
            placement = plan(
                cfg,
                gpus=nproc,
                hbm_gib=hbm_gib,
                batch_size=batch_size,
                sharding_types={str(t): ["table_wise"] for t in replicated},
                progress=progress,
                **host,
            )
    return build_sharded(
        cfg, placement, nproc, device=resolved, snapshot=snapshot, progress=progress
    )


def _free_gib(device: str, nproc: int) -> float:
    import torch

    if device == "cuda":
        free, _ = torch.cuda.mem_get_info(0)
        return free / 1024**3
    import psutil

    return psutil.virtual_memory().available / nproc / 1024**3


# --------------------------------------------------------------------------- worker


def _nbytes(value: Any) -> int:
    """Bytes of a tensor, or of the local shards of a ShardedTensor."""
    if hasattr(value, "local_shards"):
        return sum(s.tensor.numel() * s.tensor.element_size() for s in value.local_shards())
    return int(value.numel() * value.element_size())


def _table_of(key: str) -> str | None:
    parts = key.split(".")
    if len(parts) >= 3 and parts[-3] == "embedding_bags":
        return parts[-2]
    return None


def _local_sum(value: Any) -> float:
    if hasattr(value, "local_shards"):
        return float(sum(s.tensor.double().sum() for s in value.local_shards()))
    return float(value.double().sum())


def _measure_rank(
    model: Any, names: list[str]
) -> tuple[dict[str, int], dict[str, int], dict[str, list[str]], dict[str, float]]:
    """Weight and optimizer-state bytes of each table on this rank, from the tensors."""
    import torch

    weights: dict[str, int] = {}
    sums: dict[str, float] = {}
    for key, value in model.state_dict().items():
        name = _table_of(key)
        if name in names:
            weights[name] = weights.get(name, 0) + _nbytes(value)
            sums[name] = sums.get(name, 0.0) + _local_sum(value)
    state_bytes: dict[str, int] = {}
    state_names: dict[str, set[str]] = {}
    # Fused (FBGEMM) state: momentum1, momentum2, ... per table, as local shards.
    for key, state in model.fused_optimizer.state_dict()["state"].items():
        name = _table_of(str(key))
        if name not in names:
            continue
        for state_name, value in state.items():
            if hasattr(value, "local_shards") or torch.is_tensor(value):
                state_bytes[name] = state_bytes.get(name, 0) + _nbytes(value)
                # FBGEMM names them "<table>.momentum1"
                state_names.setdefault(name, set()).add(str(state_name).split(".")[-1])
    # Replicated (data_parallel) tables keep torch.optim applied in backward. Sharded ones list
    # their fused optimizer there too, whose state was counted above.
    fused = set(state_bytes)
    for key, param in model.named_parameters():
        name = _table_of(key)
        if name not in names or name in fused:
            continue
        for optimizer in getattr(param, "_in_backward_optimizers", []):
            for state_name, value in optimizer.state.get(param, {}).items():
                if torch.is_tensor(value):
                    state_bytes[name] = state_bytes.get(name, 0) + _nbytes(value)
                    state_names.setdefault(name, set()).add(state_name)
    return weights, state_bytes, {k: sorted(v) for k, v in state_names.items()}, sums


def _worker(folder: Path) -> None:
    import logging
    import warnings

    import torch
    import torch.distributed as dist

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.model_parallel import DistributedModelParallel
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    from embviz.build import build_collection
    from embviz.optimizers import apply_optimizer

    settings = json.loads((folder / _SETTINGS_FILE).read_text())
    cfg = load_config(folder / _CONFIG_FILE)
    with open(folder / _PLAN_FILE, "rb") as handle:
        sharding_plan = pickle.load(handle)  # noqa: S301 - written by our parent a moment ago
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    on_cuda = settings["device"] == "cuda"
    if on_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    dist.init_process_group("nccl" if on_cuda else "gloo")
    try:
        torch.manual_seed(0)
        start_allocated = torch.cuda.memory_allocated(device) if on_cuda else None
        # As the-algorithm-ml: a meta collection with the optimizers applied, then DMP. Tables
        # on FBGEMM's fused kernels get FBGEMM's optimizer arguments (it has no `betas`).
        ebc = build_collection(cfg, "meta", apply_optimizers=False, progress=False)
        if settings["train"]:
            kernels = {
                name: ps.compute_kernel
                for module_plan in sharding_plan.plan.values()
                for name, ps in module_plan.items()
            }
            for table in cfg.tables:
                fused = str(kernels.get(table.name, "")).startswith("fused")
                apply_optimizer(ebc.embedding_bags[table.name].weight, table, fused=fused)
        sharder = EmbeddingBagCollectionSharder()
        model = DistributedModelParallel(ebc, device=device, plan=sharding_plan, sharders=[sharder])
        if settings["train"]:
            # One id (row 0) per table for this rank's one-sample batch, then a step.
            names = cfg.table_names
            kjt = KeyedJaggedTensor(
                keys=names,
                values=torch.zeros(len(names), dtype=torch.int64, device=device),
                lengths=torch.ones(len(names), dtype=torch.int32, device=device),
            )
            model(kjt).values().float().sum().backward()
        if on_cuda:
            torch.cuda.synchronize(device)
        allocated = torch.cuda.memory_allocated(device) - start_allocated if on_cuda else None
        weights, states, state_names, sums = _measure_rank(model, cfg.table_names)
        shardings = {
            name: (ps.sharding_type, ps.compute_kernel)
            for module_plan in sharding_plan.plan.values()
            for name, ps in module_plan.items()
        }
        tables = []
        for name in cfg.table_names:
            if name not in weights or weights[name] == 0:
                continue  # no shard of this table on this rank
            sharding_type, kernel = shardings.get(name, ("", ""))
            tables.append(
                {
                    "table": name,
                    "sharding_type": sharding_type,
                    "compute_kernel": kernel,
                    "weight_bytes": weights[name],
                    "optimizer_bytes": states.get(name, 0),
                    "total_bytes": weights[name] + states.get(name, 0),
                    "optimizer_state": state_names.get(name, []),
                    "weight_sum": sums.get(name, 0.0),
                }
            )
        if settings["snapshot"] is not None:
            from torchsnapshot import Snapshot

            Snapshot.take(path=settings["snapshot"], app_state={"model": model})
        report = {"rank": rank, "tables": tables, "allocated_bytes": allocated}
        (folder / f"rank{rank}.json").write_text(json.dumps(report))
        dist.barrier()
    except Exception as exc:
        (folder / f"rank{rank}.error").write_text(f"rank {rank}: {type(exc).__name__}: {exc}")
        raise
    finally:
        dist.destroy_process_group()


def _main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "worker":
        print("usage: torchrun ... -m embviz.distributed worker FOLDER", file=sys.stderr)
        return 2
    _worker(Path(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
