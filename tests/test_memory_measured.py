"""memory_table against what torch and FBGEMM really allocate, table by table.

- ``"torch"``: an unsharded torchrec EmbeddingBagCollection on the CPU with each table's optimizer
  applied in backward (sgd/adagrad/adam -> torch.optim.SGD/Adagrad/Adam, as TwHIN does), one
  training step, then the parameter bytes and the nbytes of every tensor in the optimizer state
  (``step`` included).
- ``"fused"``: the same collection sharded table-wise by DistributedModelParallel on the CPU
  (gloo, world size 1, in a subprocess so no process group leaks into other tests), one training
  step, then the weight shards' bytes and FBGEMM's fused optimizer state (``momentum1``...) read
  from ``fused_optimizer.state_dict()``, and, as a cross-check, every parameter the FBGEMM
  kernels hold. FBGEMM's CPU kernels run EXACT_SGD, EXACT_ADAGRAD and EXACT_ROWWISE_ADAGRAD;
  fused ADAM is GPU only, so its rule (2 x R x D x 4 bytes, fp32 like the others) is checked
  here only through the arithmetic in tests/test_memory.py.

Run ``python tests/test_memory_measured.py fused CONFIG.yaml OUT.json [rowwise]`` to see the
measured figures by hand.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import embviz
from embviz import LargeEmbeddingsConfig, Mode
from embviz.memory import memory_table, totals
from embviz.optimizers import apply_optimizer

# Every optimizer in fp32 and fp16, SGD with and without momentum, dims multiple of 4 (fused
# kernels need it), row counts all different so a mix-up between tables shows.
_OPTIMIZERS = {
    "sgd": {"sgd": {"lr": 0.1}},
    "sgdm": {"sgd": {"lr": 0.1, "momentum": 0.9}},
    "adagrad": {"adagrad": {"lr": 0.1}},
    # Same settings as "adagrad": FBGEMM groups such tables into one kernel.
    "adagrad2": {"adagrad": {"lr": 0.1}},
    "adam": {"adam": {"lr": 0.01}},
}


def _config(optimizers: list[str]) -> LargeEmbeddingsConfig:
    tables = []
    for i, (opt, dtype) in enumerate(
        (opt, dtype) for opt in optimizers for dtype in ("fp32", "fp16")
    ):
        tables.append(
            {
                "name": f"{opt}_{dtype}",
                "num_embeddings": 97 + 13 * i,
                "embedding_dim": 4 * (2 + i % 3),
                "data_type": dtype,
                "optimizer": _OPTIMIZERS[opt],
            }
        )
    return LargeEmbeddingsConfig.model_validate({"tables": tables})


def _batch(cfg: LargeEmbeddingsConfig):
    """Two ids per table (rows 0 and 5), one bag each."""
    import torch
    import torchrec

    names = cfg.table_names
    return torchrec.KeyedJaggedTensor.from_lengths_sync(
        keys=names,
        values=torch.tensor([0, 5] * len(names), dtype=torch.int64),
        lengths=torch.full((len(names),), 2, dtype=torch.int32),
    )


def _nbytes(value) -> int:
    """Bytes held by a tensor, or by the local shards of a ShardedTensor."""
    if hasattr(value, "local_shards"):
        return sum(
            shard.tensor.numel() * shard.tensor.element_size() for shard in value.local_shards()
        )
    return value.numel() * value.element_size()


# --------------------------------------------------------------------------- torch.optim


def _measure_unsharded(cfg: LargeEmbeddingsConfig, train: bool) -> dict[str, tuple[int, int]]:
    import torch
    import torchrec

    torch.manual_seed(0)
    ebc = torchrec.EmbeddingBagCollection(tables=cfg.to_torchrec(), device=torch.device("cpu"))
    weights = {t.name: ebc.embedding_bags[t.name].weight for t in cfg.tables}
    if train:
        for table in cfg.tables:
            apply_optimizer(weights[table.name], table)
        before = {name: w.detach().clone() for name, w in weights.items()}
        ebc(_batch(cfg)).values().float().sum().backward()
        for name, w in weights.items():  # the step really ran: looked-up rows moved
            assert not torch.equal(before[name][0], w.detach()[0]), name
    measured = {}
    for name, weight in weights.items():
        state_bytes = 0
        for optimizer in getattr(weight, "_in_backward_optimizers", []):
            state = optimizer.state[weight]
            state_bytes += sum(_nbytes(v) for v in state.values() if torch.is_tensor(v))
        measured[name] = (_nbytes(weight), state_bytes)
    # Nothing else holds bytes: the collection's parameters are exactly the table weights.
    assert sum(_nbytes(p) for p in ebc.parameters()) == sum(w for w, _ in measured.values())
    return measured


def test_torch_optim_state_matches_memory_table_table_by_table():
    cfg = _config(["sgd", "sgdm", "adagrad", "adam"])
    measured = _measure_unsharded(cfg, train=True)
    frame = memory_table(cfg, "torch", Mode.TRAIN)
    for name, (weight_bytes, state_bytes) in measured.items():
        assert frame.loc[name, "weight_bytes"] == weight_bytes, name
        assert frame.loc[name, "optimizer_bytes"] == state_bytes, name
    # fp16 tables really are half, and their torch state is fp16 (+ a 4-byte fp32 step).
    assert measured["adam_fp16"][1] == 2 * measured["adam_fp16"][0] + 4
    assert measured["adagrad_fp16"][1] == measured["adagrad_fp16"][0] + 4
    assert measured["sgdm_fp16"][1] == measured["sgdm_fp16"][0]
    assert measured["sgd_fp32"][1] == 0


@pytest.mark.parametrize("mode", [Mode.EVALUATE, Mode.INFERENCE])
def test_no_optimizer_weights_only(mode):
    cfg = _config(["sgd", "adagrad", "adam"])
    measured = _measure_unsharded(cfg, train=False)
    for state in ("torch", "fused"):
        frame = memory_table(cfg, state, mode)
        for name, (weight_bytes, state_bytes) in measured.items():
            assert state_bytes == 0
            assert frame.loc[name, "total_bytes"] == weight_bytes, name


# --------------------------------------------------------------------------- FBGEMM fused


def _measure_sharded(cfg_path: str, rowwise: bool, store_path: str) -> dict:
    """Shard table-wise on the CPU, take one step, report bytes per table (runs in a child)."""
    import logging
    import warnings

    import torch
    import torch.distributed as dist

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
        SplitTableBatchedEmbeddingBagsCodegen,
    )
    from torchrec import EmbeddingBagCollection
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.model_parallel import DistributedModelParallel
    from torchrec.distributed.planner import (
        EmbeddingShardingPlanner,
        ParameterConstraints,
        Topology,
    )

    cfg = embviz.load_config(cfg_path)
    dist.init_process_group("gloo", store=dist.FileStore(store_path, 1), rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        ebc = EmbeddingBagCollection(tables=cfg.to_torchrec(), device=torch.device("meta"))
        adagrad = "rowwise" if rowwise else "exact"
        for table in cfg.tables:
            weight = ebc.embedding_bags[table.name].weight
            apply_optimizer(weight, table, fused=True, adagrad=adagrad)
        sharder = EmbeddingBagCollectionSharder()
        # Tiny tables would be data_parallel (torch optimizer, not fused): force table_wise.
        constraints = {
            name: ParameterConstraints(sharding_types=["table_wise"]) for name in cfg.table_names
        }
        plan = EmbeddingShardingPlanner(
            topology=Topology(world_size=1, compute_device="cpu"), constraints=constraints
        ).plan(ebc, [sharder])
        model = DistributedModelParallel(
            ebc, device=torch.device("cpu"), plan=plan, sharders=[sharder]
        )
        model(_batch(cfg)).values().float().sum().backward()

        weights = {
            key.split(".")[-2]: _nbytes(value)
            for key, value in model.state_dict().items()
            if key.endswith(".weight")
        }
        fused_state = model.fused_optimizer.state_dict()["state"]
        state_bytes: dict[str, int] = {}
        state_dtypes: dict[str, list[str]] = {}
        state_sums: dict[str, float] = {}
        for key, state in fused_state.items():
            name = key.split(".")[-2]
            tensors = {
                k: v for k, v in state.items() if hasattr(v, "local_shards") or torch.is_tensor(v)
            }
            state_bytes[name] = sum(_nbytes(v) for v in tensors.values())
            state_dtypes[name] = sorted({str(v.dtype) for v in tensors.values()})
            state_sums[name] = float(
                sum(
                    s.tensor.float().sum()
                    for v in tensors.values()
                    for s in (v.local_shards() if hasattr(v, "local_shards") else [])
                )
            )
        # Everything FBGEMM's kernels hold as parameters (weights_host, momentum1_host, ...).
        # torchrec keeps its lookups in a plain list (`_lookups`), outside named_modules().
        kernel_bytes = 0
        kernels = 0
        for lookup in model.module._lookups:
            for module in lookup.modules():
                if isinstance(module, SplitTableBatchedEmbeddingBagsCodegen):
                    kernels += 1
                    kernel_bytes += sum(
                        _nbytes(p)
                        for n, p in module.named_parameters()
                        if n != "placeholder_autograd_tensor"
                    )
        sharding = {
            name: (ps.sharding_type, ps.compute_kernel)
            for module_plan in plan.plan.values()
            for name, ps in module_plan.items()
        }
        return {
            "weights": weights,
            "state_bytes": state_bytes,
            "state_dtypes": state_dtypes,
            "state_sums": state_sums,
            "kernel_bytes": kernel_bytes,
            "kernels": kernels,
            "sharding": sharding,
        }
    finally:
        dist.destroy_process_group()


def _run_child(cfg: LargeEmbeddingsConfig, tmp_path: Path, rowwise: bool) -> dict:
    cfg_path = tmp_path / "tables.yaml"
    cfg_path.write_text(embviz.dump_config(cfg))
    out = tmp_path / "measured.json"
    args = [sys.executable, __file__, "fused", str(cfg_path), str(out)]
    if rowwise:
        args.append("rowwise")
    result = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(out.read_text())


FUSED_OPTIMIZERS = ["sgd", "sgdm", "adagrad", "adagrad2"]  # fused ADAM is GPU only


@pytest.mark.slow
@pytest.mark.parametrize("adagrad", ["exact", "rowwise"])
def test_fused_state_matches_memory_table_table_by_table(tmp_path, adagrad):
    cfg = _config(FUSED_OPTIMIZERS)
    measured = _run_child(cfg, tmp_path, rowwise=adagrad == "rowwise")
    frame = memory_table(cfg, "fused", Mode.TRAIN, adagrad=adagrad)
    # Table-wise and fused, or the state would not be FBGEMM's.
    assert {tuple(v) for v in measured["sharding"].values()} == {("table_wise", "fused")}
    assert set(measured["weights"]) == set(cfg.table_names)
    for name in cfg.table_names:
        assert measured["weights"][name] == frame.loc[name, "weight_bytes"], name
        assert measured["state_bytes"].get(name, 0) == frame.loc[name, "optimizer_bytes"], name
    # FBGEMM keeps optimizer state in fp32 for fp16 weights too.
    assert measured["state_dtypes"]["adagrad_fp16"] == ["torch.float32"]
    # The step ran: Adagrad accumulated squared gradients.
    assert measured["state_sums"]["adagrad_fp16"] > 0
    assert measured["state_sums"]["adagrad_fp32"] > 0
    # SGD (with or without momentum) keeps nothing once fused.
    assert measured["state_bytes"].get("sgdm_fp32", 0) == 0
    # Tables sharing dtype and settings share a kernel; per-table figures still hold.
    assert measured["kernels"] < len(cfg.table_names)
    # Cross-check: all the kernels' parameters together are exactly the predicted total.
    assert measured["kernel_bytes"] == totals(frame)["total_bytes"]


def _main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[0] != "fused":
        print(__doc__, file=sys.stderr)
        return 2
    cfg_path, out_path = argv[1], argv[2]
    rowwise = argv[3:] == ["rowwise"]
    store = Path(out_path).with_suffix(".store")
    result = _measure_sharded(cfg_path, rowwise, str(store))
    Path(out_path).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
