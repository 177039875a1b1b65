"""embviz.plan (embviz.placement): torchrec's planner on a meta collection, results as data."""

from __future__ import annotations

import json

import numpy as np
import pytest

import embviz
from embviz import LargeEmbeddingsConfig
from embviz.errors import ArgumentError, UnknownTableError
from embviz.memory import PLANNER_RESERVED_FRACTION, memory_table
from embviz.placement import (
    AUTO_FULL_LIMIT,
    SHARDING_TYPES,
    Placement,
    PlanError,
    plan,
)

GIB = 1024**3


@pytest.fixture(scope="module")
def ranker():
    return embviz.load_config(embviz.example("ranker"))


@pytest.fixture(scope="module")
def ranker_on_4(ranker):
    return plan(ranker, 4, 80, progress=False)


def _single(name, rows, dim, dtype, optimizer):
    return LargeEmbeddingsConfig.model_validate(
        {
            "tables": [
                {
                    "name": name,
                    "num_embeddings": rows,
                    "embedding_dim": dim,
                    "data_type": dtype,
                    "optimizer": {optimizer: {"lr": 0.1}},
                }
            ]
        }
    )


def test_every_table_placed_and_frames_agree(ranker, ranker_on_4):
    placement = ranker_on_4
    assert isinstance(placement, Placement)
    assert placement.gpus == 4 and placement.hbm_bytes == 80 * GIB
    assert placement.batch_size == 512 and placement.estimate == "exact"
    tables, ranks, shards = placement.tables, placement.ranks, placement.shards
    assert list(tables["table"]) == ranker.table_names
    assert list(ranks["rank"]) == [0, 1, 2, 3]
    for row in tables.itertuples():
        assert row.sharding_type in SHARDING_TYPES
        assert row.compute_kernel in ("fused", "dense")
        assert row.ranks and set(row.ranks) <= {0, 1, 2, 3}
        assert row.ranks == sorted(set(shards.loc[shards["table"] == row.table, "rank"]))
    # Per-rank sums, per-table sums and shard rows are the same bytes.
    assert ranks["hbm_bytes"].sum() == shards["hbm_bytes"].sum() == tables["hbm_bytes"].sum()
    assert ranks["table_bytes"].sum() == shards["table_bytes"].sum()
    for row in ranks.itertuples():
        on_rank = shards[shards["rank"] == row.rank]
        assert row.hbm_bytes == on_rank["hbm_bytes"].sum()
        assert row.num_shards == len(on_rank) == len(row.shards)
        assert set(row.tables) == set(on_rank["table"])
        # The planner fills at most what it keeps after its reservation for the dense model.
        assert row.hbm_bytes <= 80 * GIB * (1 - PLANNER_RESERVED_FRACTION)
    # Shards cover each table exactly once (no data-parallel replicas here): rows x cols add
    # up, and the exact bytes per table equal memory_table's.
    memory = memory_table(ranker)
    for name in ranker.table_names:
        mine = shards[shards["table"] == name]
        assert (mine["rows"] * mine["cols"]).sum() == ranker.table(name).num_embeddings * (
            ranker.table(name).embedding_dim
        )
        assert mine["table_bytes"].sum() == memory.loc[name, "total_bytes"], name
    assert placement.warnings == ()


def test_sharding_plan_is_torchrecs_and_matches_the_frames(ranker_on_4):
    from torchrec.distributed.types import ShardingPlan

    placement = ranker_on_4
    assert isinstance(placement.sharding_plan, ShardingPlan)
    module_plan = placement.sharding_plan.plan[""]
    assert set(module_plan) == set(placement.tables["table"])
    for row in placement.tables.itertuples():
        parameter = module_plan[row.table]
        assert parameter.sharding_type == row.sharding_type
        assert parameter.compute_kernel == row.compute_kernel
        assert sorted(set(parameter.ranks)) == row.ranks


def test_to_dict_json_shape(ranker_on_4):
    data = json.loads(json.dumps(ranker_on_4.to_dict()))
    assert data["gpus"] == 4 and data["hbm_bytes"] == 80 * GIB
    assert [r["rank"] for r in data["ranks"]] == [0, 1, 2, 3]
    for rank in data["ranks"]:
        assert {"rank", "hbm_bytes", "tables"} <= set(rank)
        assert isinstance(rank["hbm_bytes"], int)
        assert all(isinstance(t, str) for t in rank["tables"])
        assert all({"table", "offsets", "sizes"} <= set(s) for s in rank["shards"])
    assert [t["table"] for t in data["tables"]] == list(ranker_on_4.tables["table"])
    for table in data["tables"]:
        assert {"table", "sharding_type", "ranks"} <= set(table)
        assert all(isinstance(r, int) for r in table["ranks"])
    assert sum(r["hbm_bytes"] for r in data["ranks"]) == int(ranker_on_4.ranks["hbm_bytes"].sum())


def test_too_small_reports_needed_available_and_min_gpus(ranker):
    with pytest.raises(PlanError) as info:
        plan(ranker, 1, 16, progress=False)
    error = info.value
    assert isinstance(error, embviz.EmbvizError)
    assert error.needed_bytes == 36_343_745_536
    assert error.available_bytes == 16 * GIB
    assert error.gpus == 1 and error.hbm_bytes == 16 * GIB
    assert error.reason == "insufficient_storage"
    assert error.min_gpus == 3
    message = str(error)
    assert "33.8 GiB" in message and "16 GiB" in message
    assert "smallest number of 16 GiB GPUs that plans is 3" in message
    assert "Traceback" not in message and "Possible solutions" not in message
    # min_gpus really plans, one fewer really does not.
    assert plan(ranker, error.min_gpus, 16, progress=False).gpus == 3
    with pytest.raises(PlanError):
        plan(ranker, error.min_gpus - 1, 16, find_min_gpus=False, progress=False)


def test_min_gpus_search_above_the_byte_bound():
    # One 20 GiB fp32 SGD table on 8 GiB GPUs: the byte bound is ceil(20 / 6.8) = 3, but it
    # must be split by rows or columns; the search reports what the planner really needs.
    cfg = _single("big", 80 * 1024**2, 64, "fp32", "sgd")
    with pytest.raises(PlanError) as info:
        plan(cfg, 1, 8, progress=False)
    n = info.value.min_gpus
    assert n is not None and n >= 3
    assert plan(cfg, n, 8, progress=False).tables.loc[0, "num_shards"] > 1
    with pytest.raises(PlanError):
        plan(cfg, n - 1, 8, find_min_gpus=False, progress=False)


def test_impossible_constraints_say_so():
    cfg = _single("big", 80 * 1024**2, 64, "fp32", "sgd")
    with pytest.raises(PlanError) as info:
        plan(cfg, 2, 8, sharding_types=["table_wise"], progress=False)
    assert info.value.min_gpus is None and info.value.reason == "constraints"
    assert "sharding types or kernels" in str(info.value)


def test_exact_estimate_corrects_fp16_optimizer_state():
    # fp16 Adagrad, 20M x 128: torchrec counts state as 1 x the fp16 weights (5.12 GB), FBGEMM
    # allocates fp32 state (10.24 GB).
    cfg = _single("item", 20_000_000, 128, "fp16", "adagrad")
    exact = plan(cfg, 1, 80, sharding_types=["table_wise"], progress=False)
    raw = plan(cfg, 1, 80, sharding_types=["table_wise"], estimate="torchrec", progress=False)
    assert exact.shards.loc[0, "hbm_bytes"] - raw.shards.loc[0, "hbm_bytes"] == 20_000_000 * 128 * 2
    assert exact.shards.loc[0, "table_bytes"] == raw.shards.loc[0, "table_bytes"] == 15_360_000_000
    # Apart from the state, the planner's figure holds the table plus its I/O buffers.
    assert exact.shards.loc[0, "hbm_bytes"] > 15_360_000_000


def test_torchrec_estimate_can_overfill_and_is_flagged():
    # 31.25M x 64 fp16 Adagrad: torchrec thinks 8.0 GB (fits a 10 GiB GPU after reservation),
    # FBGEMM needs 12.0 GB. With estimate="torchrec" the plan over-fills and says so; the exact
    # estimate refuses one GPU.
    # Fused kernels only: a data-parallel replica keeps torch.optim state in fp16, which
    # torchrec does estimate right (8.0 GB), so the exact planner may rightly pick it.
    cfg = _single("item", 31_250_000, 64, "fp16", "adagrad")
    fused = ["table_wise", "row_wise", "column_wise"]
    raw = plan(cfg, 1, 10, sharding_types=fused, estimate="torchrec", progress=False)
    assert raw.ranks.loc[0, "table_bytes"] == 12_000_000_000 > 10 * GIB
    assert len(raw.warnings) == 1 and "PR #4142" in raw.warnings[0]
    with pytest.raises(PlanError) as info:
        plan(cfg, 1, 10, sharding_types=fused, progress=False)
    assert info.value.min_gpus == 2
    assert plan(cfg, 2, 10, sharding_types=fused, progress=False).warnings == ()
    dense = plan(cfg, 1, 10, progress=False)
    assert dense.tables.loc[0, "sharding_type"] == "data_parallel"
    assert dense.ranks.loc[0, "table_bytes"] == 8_000_000_004  # fp16 weights, fp16 sum, step


def test_sharding_types_constraint(ranker):
    placement = plan(ranker, 2, 80, sharding_types=["table_wise"], progress=False)
    assert set(placement.tables["sharding_type"]) == {"table_wise"}
    assert (placement.tables["num_shards"] == 1).all()
    one = plan(ranker, 2, 80, sharding_types={"topic": ["row_wise"]}, progress=False)
    assert one.tables.set_index("table").loc["topic", "sharding_type"] == "row_wise"


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"gpus": 0}, "gpus"),
        ({"gpus": 1.5}, "gpus"),
        ({"hbm_gib": 0}, "hbm_gib"),
        ({"hbm_gib": float("nan")}, "hbm_gib"),
        ({"batch_size": 0}, "batch_size"),
        ({"ddr_gib": -1}, "ddr_gib"),
        ({"sharding_types": ["diagonal"]}, "sharding_types"),
        ({"compute_kernels": ["warp_drive"]}, "compute_kernels"),
        ({"estimate": "guess"}, "estimate"),
        ({"search": "deep"}, "search"),
        ({"adagrad": "sparse"}, "adagrad"),
        ({"gpus_per_host": 0}, "gpus_per_host"),
        ({"mode": "training"}, "mode"),
    ],
)
def test_bad_arguments_are_named(ranker, kwargs, argument):
    arguments = {"gpus": 4, "hbm_gib": 80, **kwargs}
    with pytest.raises(ArgumentError) as info:
        plan(ranker, progress=False, **arguments)
    assert info.value.argument == argument
    assert isinstance(info.value, ValueError)


def test_unknown_table_in_constraints(ranker):
    with pytest.raises(UnknownTableError, match="'nope'"):
        plan(ranker, 4, 80, sharding_types={"nope": ["table_wise"]}, progress=False)


def test_inference_and_rowwise_change_table_bytes(ranker):
    weights_only = plan(ranker, 4, 80, mode="inference", progress=False)
    memory = memory_table(ranker, mode="inference")
    assert weights_only.ranks["table_bytes"].sum() == memory["weight_bytes"].sum()
    rowwise = plan(ranker, 4, 80, adagrad="rowwise", progress=False)
    rowwise_memory = memory_table(ranker, adagrad="rowwise")
    by_table = rowwise.shards.groupby("table")["table_bytes"].sum()
    assert by_table["item_id"] == rowwise_memory.loc["item_id", "total_bytes"]


def test_data_parallel_replicas_count_on_every_rank():
    cfg = _single("tiny", 1_000, 16, "fp32", "adam")
    placement = plan(cfg, 4, 80, sharding_types=["data_parallel"], progress=False)
    assert placement.tables.loc[0, "ranks"] == [0, 1, 2, 3]
    # Each replica holds weights and torch.optim Adam state: 64,000 + 2 x 64,000 + 4 bytes.
    assert (placement.ranks["table_bytes"] == 192_004).all()


def test_fast_search_for_many_tables():
    tables = [
        {
            "name": f"t{i}",
            "num_embeddings": 10_000 * (1 + i % 7),
            "embedding_dim": 16 * (1 + i % 4),
            "data_type": "fp16" if i % 2 else "fp32",
            "optimizer": {"adagrad": {"lr": 0.1}},
        }
        for i in range(80)
    ]
    cfg = LargeEmbeddingsConfig.model_validate({"tables": tables})
    assert len(tables) * 8 > AUTO_FULL_LIMIT
    placement = plan(cfg, 8, 16, progress=False)
    assert placement.search == "fast"
    assert set(placement.tables["table"]) == set(cfg.table_names)
    assert placement.ranks["table_bytes"].sum() == memory_table(cfg)["total_bytes"].sum()


def test_constants_follow_torchrec():
    from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
    from torchrec.distributed.types import ShardingType

    assert set(SHARDING_TYPES) == {t.value for t in ShardingType}
    planner = EmbeddingShardingPlanner(topology=Topology(world_size=2, compute_device="cuda"))
    # torchrec keeps this share of HBM for the dense model by default.
    assert np.isclose(planner._storage_reservation._percentage, PLANNER_RESERVED_FRACTION)


def test_timeout_is_passed_to_torchrec(ranker):
    placement = plan(ranker, 4, 80, timeout_s=30, progress=False)
    assert list(placement.tables["table"]) == ranker.table_names
    with pytest.raises(ArgumentError, match="timeout_s"):
        plan(ranker, 4, 80, timeout_s=0, progress=False)


def test_embviz_plan_is_the_function_and_placement_the_module(ranker):
    import importlib
    import types

    module = importlib.import_module("embviz.placement")
    assert isinstance(module, types.ModuleType) and type(module) is types.ModuleType
    assert embviz.plan is module.plan and embviz.Placement is module.Placement
    assert isinstance(embviz.plan(ranker, 4, 80, progress=False), Placement)


def _shard_devices(placement):
    return [
        str(shard.placement)
        for module_plan in placement.sharding_plan.plan.values()
        for parameter in module_plan.values()
        for shard in parameter.sharding_spec.shards
    ]


def test_more_than_128_ranks_go_on_hosts_of_gpus_per_host():
    # torchrec's default puts every rank on one host: rank 128 would be cuda:128, an invalid
    # device index ("cuda:-128"). Ranks go on cuda:<rank % gpus_per_host> instead.
    cfg = _single("big", 1_000_000, 64, "fp32", "sgd")
    placement = plan(cfg, 256, 80, sharding_types=["row_wise"], progress=False)
    assert placement.gpus_per_host == 8
    devices = _shard_devices(placement)
    assert len(devices) == 256
    assert devices == [f"rank:{r}/cuda:{r % 8}" for r in range(256)]
    assert placement.tables.loc[0, "ranks"] == list(range(256))
    assert placement.ranks["table_bytes"].sum() == memory_table(cfg)["total_bytes"].sum()
    assert placement.to_dict()["gpus_per_host"] == 8
    sixteen = plan(cfg, 256, 80, gpus_per_host=16, sharding_types=["row_wise"], progress=False)
    assert _shard_devices(sixteen)[-1] == "rank:255/cuda:15"
    # Fewer GPUs than a host holds: one host.
    assert _shard_devices(plan(cfg, 4, 80, sharding_types=["row_wise"], progress=False)) == [
        f"rank:{r}/cuda:{r}" for r in range(4)
    ]


def test_torchrec_estimate_is_the_bare_planner():
    # estimate="torchrec" builds torchrec's default estimators through the public constructor
    # (EmbeddingEnumerator(estimator=[...])): the plan equals a bare planner's.
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology

    from embviz.planner import KeepBestPlan, meta_collection

    cfg = embviz.load_config(embviz.example("twhin"))
    ours = plan(cfg, 2, 1, estimate="torchrec", ddr_gib=1, progress=False)
    topology = Topology(
        world_size=2, compute_device="cuda", hbm_cap=GIB, ddr_cap=GIB, local_world_size=2
    )
    stats = KeepBestPlan()
    bare = EmbeddingShardingPlanner(topology=topology, batch_size=512, stats=[stats]).plan(
        meta_collection(cfg, train=True, adagrad="exact"), [EmbeddingBagCollectionSharder()]
    )
    assert str(ours.sharding_plan) == str(bare)
    # The same estimates shard by shard: storage (HBM, host) and the planner's perf figures.
    bare_shards = sorted(
        (o.name, s.rank, s.storage.hbm, s.storage.ddr, s.perf.total)
        for o in stats.best_plan
        for s in o.shards
    )
    assert sorted(
        zip(
            ours.shards["table"],
            ours.shards["rank"],
            ours.shards["hbm_bytes"],
            ours.shards["ddr_bytes"],
            strict=True,
        )
    ) == [t[:4] for t in bare_shards]
    assert all(t[4] > 0 for t in bare_shards)
