from __future__ import annotations

import time

import pytest
import torch

import embviz
from embviz import Mode
from embviz.cli import main
from embviz.distributed import (
    ShardError,
    build_sharded,
    build_sharded_from_config,
    cpu_sharding_plan,
)
from embviz.memory import memory_table
from embviz.placement import plan


def config():
    def table(name, rows, dim, dtype, optimizer):
        return {
            "name": name,
            "num_embeddings": rows,
            "embedding_dim": dim,
            "data_type": dtype,
            "optimizer": optimizer,
        }

    return embviz.LargeEmbeddingsConfig.model_validate(
        {
            "tables": [
                table("user", 4_000, 16, "fp32", {"sgd": {"lr": 0.1}}),
                table("item", 3_000, 32, "fp16", {"adagrad": {"lr": 0.1}}),
                table("topic", 500, 8, "fp32", {"adagrad": {"lr": 0.1}}),
                table("country", 20, 4, "fp32", {"sgd": {"lr": 0.1}}),
            ]
        }
    )


@pytest.fixture(scope="module")
def placement():
    return plan(config(), gpus=2, hbm_gib=1, progress=False)


@pytest.mark.slow
def test_two_gloo_processes_measure_what_the_plan_predicts(tmp_path):
    cfg = config()
    started = time.perf_counter()
    # The planner replicates the tiny table; on the CPU it is planned again as table_wise, so
    # every table runs FBGEMM's fused kernels.
    unconstrained = plan(cfg, gpus=2, hbm_gib=1, progress=False)
    assert "data_parallel" in set(unconstrained.tables["sharding_type"])
    result = build_sharded_from_config(
        cfg, 2, device="cpu", hbm_gib=1, snapshot=tmp_path / "sharded", progress=False
    )
    placement = result.placement
    assert time.perf_counter() - started < 90
    assert result.device == "cpu" and result.nproc == 2
    assert set(placement.tables["sharding_type"]) <= {"table_wise", "row_wise", "column_wise"}

    ranks = result.ranks
    assert list(ranks.index) == [0, 1]
    # Every rank holds exactly the bytes the plan predicted for it (fused FBGEMM rules).
    assert ranks["measured_bytes"].tolist() == placement.ranks["table_bytes"].tolist()
    assert (ranks["difference_bytes"] == 0).all()
    assert ranks["predicted_bytes"].sum() == memory_table(cfg, "fused")["total_bytes"].sum()
    assert ranks["allocated_bytes"].isna().all()  # CUDA only

    tables = result.tables
    fused = memory_table(cfg, "fused", Mode.TRAIN)
    for name in cfg.table_names:
        held = tables[tables["table"] == name]
        assert held["weight_bytes"].sum() == fused.loc[name, "weight_bytes"], name
        assert held["optimizer_bytes"].sum() == fused.loc[name, "optimizer_bytes"], name
    item = tables[tables["table"] == "item"]
    # FBGEMM keeps Adagrad state in fp32 for an fp16 table: as many bytes as twice the weights.
    assert item["optimizer_bytes"].sum() == 2 * item["weight_bytes"].sum()
    assert all("momentum1" in names for names in item["optimizer_state"])
    assert tables.loc[tables["table"] == "user", "optimizer_bytes"].sum() == 0

    # The ranks' snapshot reads back whole, as the-algorithm-ml would load it.
    listed = embviz.snapshot_tables(result.snapshot)
    assert set(listed.index) == set(cfg.table_names)
    for t in cfg.tables:
        assert listed.loc[t.name, "shape"] == (t.num_embeddings, t.embedding_dim)
        assert listed.loc[t.name, "dtype"] == (
            "float32" if t.data_type.value == "fp32" else "float16"
        )
        whole = embviz.read_table(result.snapshot, t.name)
        checksum = tables.loc[tables["table"] == t.name, "weight_sum"].sum()
        assert float(whole.double().sum()) == pytest.approx(checksum, rel=1e-9, abs=1e-9)


@pytest.mark.slow
def test_cli_build_nproc(capsys):
    config_path = embviz.example("twhin")
    code = main(
        [
            "build",
            str(config_path),
            "--nproc",
            "2",
            "--device",
            "cpu",
            "--scale",
            "0.01",
            "--hbm-gib",
            "1",
            "--no-progress",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["predicted_bytes", "planner_hbm_bytes", "measured_weight_bytes"]
    assert [line.split()[0] for line in lines[2:4]] == ["0", "1"]
    assert "2 processes (cpu, gloo): sharded 2 tables" in lines[-1]
    assert "difference +0 bytes (+0.00%)" in lines[-1]


def test_cpu_plan_moves_placements_only(placement):
    cpu = cpu_sharding_plan(placement.sharding_plan)
    for module, module_plan in placement.sharding_plan.plan.items():
        for name, sharding in module_plan.items():
            moved = cpu.plan[module][name]
            assert (moved.sharding_type, moved.compute_kernel, moved.ranks) == (
                sharding.sharding_type,
                sharding.compute_kernel,
                sharding.ranks,
            )
            if sharding.sharding_spec is None:
                continue
            for before, after in zip(
                sharding.sharding_spec.shards, moved.sharding_spec.shards, strict=True
            ):
                assert before.shard_offsets == after.shard_offsets
                assert before.shard_sizes == after.shard_sizes
                assert (
                    str(before.placement)
                    == f"rank:{before.placement.rank()}/cuda:{before.placement.rank()}"
                )
                assert str(after.placement) == f"rank:{before.placement.rank()}/cpu"
    # The original plan is left as it was.
    spec = next(
        s.sharding_spec
        for p in placement.sharding_plan.plan.values()
        for s in p.values()
        if s.sharding_spec is not None
    )
    assert "cuda" in str(spec.shards[0].placement)


def test_plan_for_another_world_size(placement):
    with pytest.raises(ShardError, match=r"planned for 2 GPUs but 3 processes.*gpus=3"):
        build_sharded(config(), placement, 3, device="cpu", progress=False)


def test_plan_for_other_tables(placement):
    other = embviz.load_config(embviz.example("twhin"), key="model.embeddings")
    with pytest.raises(ShardError, match="placement is for tables user, item, topic, country"):
        build_sharded(other, placement, device="cpu", progress=False)


def test_fused_adam_is_gpu_only():
    cfg = embviz.LargeEmbeddingsConfig.model_validate(
        {
            "tables": [
                {
                    "name": "q",
                    "num_embeddings": 1000,
                    "embedding_dim": 8,
                    "data_type": "fp32",
                    "optimizer": {"adam": {"lr": 0.01}},
                }
            ]
        }
    )
    placement = plan(cfg, gpus=2, hbm_gib=1, sharding_types=["table_wise"], progress=False)
    with pytest.raises(
        ShardError, match=r"tables q use Adam with FBGEMM's fused kernel.*GPUs only"
    ):
        build_sharded(cfg, placement, device="cpu", progress=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without GPUs")
def test_cuda_needs_one_gpu_per_process(placement):
    with pytest.raises(ShardError, match="2 processes need 2 CUDA devices"):
        build_sharded(config(), placement, device="cuda", progress=False)


def test_snapshot_folder_must_be_new(tmp_path, placement):
    (tmp_path / "snap").mkdir()
    (tmp_path / "snap" / "x").write_text("x")
    with pytest.raises(ShardError, match="must be new or empty"):
        build_sharded(config(), placement, device="cpu", snapshot=tmp_path / "snap")


def test_cli_nproc_errors_exit_2(capsys):
    code = main(["build", str(embviz.example("twhin")), "--nproc", "0", "--device", "cpu"])
    _, err = capsys.readouterr()
    assert code == 2
    assert "nproc: must be an integer >= 1" in err
