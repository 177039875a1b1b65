"""One rank of tests/test_log_norms.py's torchrun job: ``log_norms`` on a sharded collection.

Run as ``python -m torch.distributed.run --nproc-per-node 2 tests/log_norms_worker.py OUT``.
Rank 0 plans four tables with torchrec's planner, one sharding type each (ParameterConstraints),
every rank shards them with DistributedModelParallel on gloo/CPU (FBGEMM's CPU kernels), and
each writes ``OUT/rank<r>.json``: what ``log_norms`` returned for several calls, the sharding
of each table, and (rank 0) the statistics of the gathered tables' norms in float64.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from pathlib import Path

import torch
import torch.distributed as dist

TABLES = {
    # name: (rows, dim, sharding type). Odd row counts: uneven shares per rank.
    "rw": (1001, 16, "row_wise"),
    "tw": (300, 8, "table_wise"),
    # torchrec cuts column-wise shards 128 columns wide: two shards, one per rank.
    "cw": (501, 256, "column_wise"),
    "dp": (51, 4, "data_parallel"),
}
SAMPLE = 300


def _config():
    import embviz

    return embviz.LargeEmbeddingsConfig.model_validate(
        {
            "tables": [
                {
                    "name": name,
                    "num_embeddings": rows,
                    "embedding_dim": dim,
                    "data_type": "fp32",
                    "optimizer": {"sgd": {"lr": 0.1}},
                }
                for name, (rows, dim, _) in TABLES.items()
            ]
        }
    )


def _stats64(full: torch.Tensor) -> dict[str, float]:
    """float64 statistics of the row norms of a whole table."""
    norms = full.double().norm(dim=1)
    q = torch.tensor([0.01, 0.05, 0.5, 0.95, 0.99], dtype=torch.float64)
    quantiles = torch.quantile(norms, q).tolist()
    return {
        "rows": norms.numel(),
        "sampled": norms.numel(),
        "mean": float(norms.mean()),
        "std": float(norms.std()),
        "min": float(norms.min()),
        **dict(zip(["p1", "p5", "p50", "p95", "p99"], quantiles, strict=True)),
        "max": float(norms.max()),
    }


def _irregular(rank: int):
    """A 100 x 16 ShardedTensor whose two column halves are cut at different rows.

    Columns 0:8 are rows 0:60 on rank 0 and 60:100 on rank 1; columns 8:16 are rows 0:30 on
    rank 1 and 30:100 on rank 0. So rows 0:30 and 60:100 are split over the ranks, and rows
    30:60 are whole on rank 0, in two pieces. Returns (sharded tensor, the whole table).
    """
    from torch.distributed._shard.metadata import ShardMetadata
    from torch.distributed._shard.sharded_tensor import Shard, init_from_local_shards

    full = torch.randn(100, 16, generator=torch.Generator().manual_seed(5)) * 3
    layout = [  # (row0, rows, col0, cols, rank)
        (0, 60, 0, 8, 0),
        (60, 40, 0, 8, 1),
        (0, 30, 8, 8, 1),
        (30, 70, 8, 8, 0),
    ]
    local = [
        Shard(
            full[r0 : r0 + n, c0 : c0 + w].clone(),
            ShardMetadata([r0, c0], [n, w], f"rank:{owner}/cpu"),
        )
        for r0, n, c0, w, owner in layout
        if owner == rank
    ]
    return init_from_local_shards(local, 100, 16), full


def _reference(model, name: str, rank: int) -> dict[str, float] | None:
    """float64 statistics of the whole table's row norms, on rank 0 (None elsewhere)."""
    weight = model.state_dict()[f"embedding_bags.{name}.weight"]
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    if isinstance(weight, ShardedTensor):
        rows, dim = weight.size()
        full = torch.empty((rows, dim), dtype=weight.dtype) if rank == 0 else None
        weight.gather(dst=0, out=full)
    else:
        full = weight.detach().clone()
    return None if rank != 0 else _stats64(full)


def main(out: Path) -> None:
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    try:
        from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
        from torchrec.distributed.model_parallel import DistributedModelParallel

        import embviz
        import embviz.lognorms
        from embviz.build import build_collection
        from embviz.distributed import cpu_sharding_plan
        from embviz.placement import plan

        cfg = _config()
        shared = [None]
        if rank == 0:
            placement = plan(
                cfg,
                gpus=2,
                hbm_gib=1,
                mode="evaluate",
                gpus_per_host=2,
                sharding_types={name: [kind] for name, (_, _, kind) in TABLES.items()},
                progress=False,
            )
            shared = [cpu_sharding_plan(placement.sharding_plan)]
        dist.broadcast_object_list(shared, src=0)
        sharding_plan = shared[0]
        torch.manual_seed(rank)
        ebc = build_collection(cfg, "meta", apply_optimizers=False, progress=False)
        model = DistributedModelParallel(
            ebc,
            device=torch.device("cpu"),
            plan=sharding_plan,
            sharders=[EmbeddingBagCollectionSharder()],
        )
        shards = {}
        for module_plan in sharding_plan.plan.values():
            for name, param_sharding in module_plan.items():
                spec = param_sharding.sharding_spec
                ranks = [] if spec is None else [s.placement.rank() for s in spec.shards]
                shards[name] = {"type": param_sharding.sharding_type, "ranks": ranks}

        report = {"rank": rank, "shards": shards}
        report["all"] = embviz.log_norms(model)
        report["sampled"] = embviz.log_norms(model, tables=["cw", "rw"], sample=SAMPLE, seed=3)
        report["sampled_again"] = embviz.log_norms(
            model, tables=["cw", "rw"], sample=SAMPLE, seed=3
        )
        # Column-split rows reduced in blocks of 128 rows, onto both ranks in turn.
        default_block = embviz.lognorms.SPLIT_BLOCK_ROWS
        embviz.lognorms.SPLIT_BLOCK_ROWS = 128
        report["small_blocks"] = embviz.log_norms(model, tables="cw", prefix="blocks")
        embviz.lognorms.SPLIT_BLOCK_ROWS = default_block
        # Ranks asking for different tables: every rank raises instead of waiting forever.
        try:
            embviz.log_norms(model, tables="rw" if rank == 0 else "tw")
            report["disagree"] = None
        except embviz.NormError as exc:
            report["disagree"] = str(exc)
        irregular, whole = _irregular(rank)
        report["irregular"] = embviz.log_norms({"grid": irregular})
        embviz.lognorms.SPLIT_BLOCK_ROWS = 16  # rows in two pieces: blocks, local and split
        report["irregular_blocks"] = embviz.log_norms({"grid": irregular})
        embviz.lognorms.SPLIT_BLOCK_ROWS = default_block
        report["irregular_reference"] = _stats64(whole)
        report["reference"] = {name: _reference(model, name, rank) for name in TABLES}
        (out / f"rank{rank}.json").write_text(json.dumps(report))
        dist.barrier()
    except Exception as exc:
        (out / f"rank{rank}.error").write_text(f"rank {rank}: {type(exc).__name__}: {exc}")
        raise
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main(Path(sys.argv[1]))
