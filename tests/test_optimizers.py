"""embviz.optimizers against the optimizers torch, torchrec and FBGEMM really build.

- torch: the instances ``apply_optimizer_in_backward`` creates on an unsharded collection built
  by `embviz.build_collection` (their class and param-group settings).
- FBGEMM: the keyword arguments go through torchrec's own conversion into FBGEMM's kernel
  signature, and a gloo DistributedModelParallel build on the CPU (in a subprocess, so no
  process group leaks) shows the ``EmbOptimType`` and settings of every fused kernel; fused
  Adam exists on GPUs only, so Adam joins that build where CUDA is present.
- torchrec's planner: the multiplier rule kept in embviz equals torchrec's private function
  for every class embviz applies, so a torchrec upgrade that changes it fails here.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import embviz
from embviz import LargeEmbeddingsConfig
from embviz.errors import ArgumentError
from embviz.optimizers import (
    apply_optimizer,
    fused_optimizer,
    fused_type,
    optimizer_spec,
    planner_multiplier,
    torch_optimizer,
)

SETTINGS = {
    "sgd": {"sgd": {"lr": 0.1, "momentum": 0.9}},
    "adagrad": {"adagrad": {"lr": 0.2, "eps": 1e-5}},
    "adam": {"adam": {"lr": 0.3, "betas": [0.8, 0.95], "eps": 1e-6}},
}
CASES = [("sgd", "exact"), ("adagrad", "exact"), ("adagrad", "rowwise"), ("adam", "exact")]
EXPECTED_TYPE = {
    ("sgd", "exact"): "EXACT_SGD",
    ("adagrad", "exact"): "EXACT_ADAGRAD",
    ("adagrad", "rowwise"): "EXACT_ROWWISE_ADAGRAD",
    ("adam", "exact"): "ADAM",
}


def _config(names=("sgd", "adagrad", "adam"), dim=8) -> LargeEmbeddingsConfig:
    return LargeEmbeddingsConfig.model_validate(
        {
            "tables": [
                {
                    "name": name,
                    "num_embeddings": 50 + 10 * i,
                    "embedding_dim": dim,
                    "data_type": "fp32",
                    "optimizer": SETTINGS[name],
                }
                for i, name in enumerate(names)
            ]
        }
    )


CFG = _config()


@pytest.mark.parametrize(("name", "adagrad"), CASES)
def test_spec_names_fbgemm_and_torch_types(name, adagrad):
    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from torchrec.distributed.utils import optimizer_type_to_emb_opt_type

    table = CFG.table(name)
    spec = optimizer_spec(table, adagrad)
    assert spec.fused_type == EXPECTED_TYPE[(name, adagrad)]
    assert fused_type(table, adagrad) is EmbOptimType[spec.fused_type]
    # torchrec maps both classes embviz may apply to the same FBGEMM optimizer.
    for cls, _ in (torch_optimizer(table, adagrad), fused_optimizer(table, adagrad)):
        assert optimizer_type_to_emb_opt_type(cls) is fused_type(table, adagrad)


@pytest.mark.parametrize(("name", "adagrad"), CASES)
def test_fused_kwargs_are_what_fbgemm_takes(name, adagrad):
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
        SplitTableBatchedEmbeddingBagsCodegen,
    )
    from torchrec.distributed.utils import merge_fused_params, optimizer_type_to_emb_opt_type

    signature = inspect.signature(SplitTableBatchedEmbeddingBagsCodegen)
    table = CFG.table(name)
    cls, kwargs = fused_optimizer(table, adagrad)
    # What torchrec's sharder does with a parameter's optimizer class and kwargs.
    fused_params = merge_fused_params(
        {}, {**kwargs, "optimizer": optimizer_type_to_emb_opt_type(cls)}
    )
    bound = signature.bind_partial(embedding_specs=[], **fused_params).arguments
    assert bound["learning_rate"] == table.optimizer.settings.lr
    if name == "adam":
        assert (bound["beta1"], bound["beta2"]) == (0.8, 0.95) and bound["eps"] == 1e-6
        # torch's names are not FBGEMM's: this is why sharded Adam needs its own kwargs.
        _, torch_kwargs = torch_optimizer(table)
        with pytest.raises(TypeError, match="betas"):
            signature.bind_partial(embedding_specs=[], **merge_fused_params({}, torch_kwargs))


def test_torch_optimizers_that_really_get_built():
    cfg = _config()
    ebc = embviz.build_collection(cfg, "cpu", progress=False)
    built = {t.name: ebc.embedding_bags[t.name].weight._in_backward_optimizers for t in cfg.tables}
    assert {name: [type(o) for o in opts] for name, opts in built.items()} == {
        "sgd": [torch.optim.SGD],
        "adagrad": [torch.optim.Adagrad],
        "adam": [torch.optim.Adam],
    }
    for name, (optimizer,) in built.items():
        group = optimizer.param_groups[0]
        cls, kwargs = torch_optimizer(cfg.table(name))
        assert type(optimizer) is cls
        for key, value in kwargs.items():
            assert group[key] == value, (name, key)
    adam = built["adam"][0].param_groups[0]
    assert adam["betas"] == (0.8, 0.95) and isinstance(adam["betas"], tuple)
    assert adam["eps"] == 1e-6 and adam["lr"] == 0.3
    assert built["sgd"][0].param_groups[0]["momentum"] == 0.9


def test_rowwise_adagrad_is_torchrecs_and_steps():
    import torchrec

    cfg = _config(["adagrad"])
    ebc = torchrec.EmbeddingBagCollection(tables=cfg.to_torchrec(), device=torch.device("cpu"))
    weight = ebc.embedding_bags["adagrad"].weight
    apply_optimizer(weight, cfg.table("adagrad"), adagrad="rowwise")
    (optimizer,) = weight._in_backward_optimizers
    assert type(optimizer) is torchrec.optim.RowWiseAdagrad
    assert optimizer.param_groups[0]["lr"] == 0.2 and optimizer.param_groups[0]["eps"] == 1e-5
    kjt = torchrec.KeyedJaggedTensor.from_lengths_sync(
        keys=["adagrad"], values=torch.tensor([3]), lengths=torch.tensor([1])
    )
    ebc(kjt).values().sum().backward()
    # One fp32 accumulator per row: the state FBGEMM's EXACT_ROWWISE_ADAGRAD keeps.
    state = [v for v in optimizer.state[weight].values() if torch.is_tensor(v) and v.dim()]
    assert [v.numel() for v in state] == [50] and state[0].dtype == torch.float32


@pytest.mark.parametrize("dim", [1, 4, 64, 100])
@pytest.mark.parametrize(("name", "adagrad"), CASES)
def test_planner_multiplier_is_torchrecs(name, adagrad, dim):
    from torchrec.distributed.planner.shard_estimators import _get_optimizer_multipler

    table = CFG.table(name)
    ours = planner_multiplier(name, dim, adagrad)
    for cls, _ in (torch_optimizer(table, adagrad), fused_optimizer(table, adagrad)):
        assert ours == _get_optimizer_multipler(cls, torch.Size([7, dim])), cls
    assert planner_multiplier(None, dim) == _get_optimizer_multipler(None, torch.Size([7, dim]))


def test_unknown_adagrad_is_an_argument_error():
    with pytest.raises(ArgumentError, match=r"^adagrad: must be one of 'exact', 'rowwise'"):
        optimizer_spec(CFG.table("adagrad"), "row_wise")


# --------------------------------------------------------------------------- DMP (subprocess)


def _fused_kernels(cfg_path: str, store: str) -> dict:
    """Shard every table table-wise with its fused optimizer; report each kernel's optimizer."""
    import logging
    import warnings

    import torch.distributed as dist

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
        SplitTableBatchedEmbeddingBagsCodegen,
    )
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.model_parallel import DistributedModelParallel
    from torchrec.distributed.planner import (
        EmbeddingShardingPlanner,
        ParameterConstraints,
        Topology,
    )

    cfg = embviz.load_config(cfg_path)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    dist.init_process_group(
        "nccl" if cuda else "gloo", store=dist.FileStore(store, 1), rank=0, world_size=1
    )
    try:
        ebc = embviz.build_collection(cfg, "meta", apply_optimizers=False, progress=False)
        for table in cfg.tables:
            adagrad = "rowwise" if table.name.endswith("rowwise") else "exact"
            apply_optimizer(
                ebc.embedding_bags[table.name].weight, table, fused=True, adagrad=adagrad
            )
        sharder = EmbeddingBagCollectionSharder()
        constraints = {
            name: ParameterConstraints(sharding_types=["table_wise"], compute_kernels=["fused"])
            for name in cfg.table_names
        }
        topology = Topology(world_size=1, compute_device=device.type)
        plan = EmbeddingShardingPlanner(topology=topology, constraints=constraints).plan(
            ebc, [sharder]
        )
        model = DistributedModelParallel(ebc, device=device, plan=plan, sharders=[sharder])
        kernels = {}
        for lookup in model.module._lookups:
            for module in lookup.modules():
                if isinstance(module, SplitTableBatchedEmbeddingBagsCodegen):
                    args = module.optimizer_args
                    for name in module.table_names:
                        kernels[name] = {
                            "optimizer": module.optimizer.name,
                            "learning_rate": module.get_learning_rate(),
                            "eps": args.eps,
                            "beta1": args.beta1,
                            "beta2": args.beta2,
                            "momentum": args.momentum,
                        }
        return kernels
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_fused_optimizers_that_really_get_built(tmp_path):
    names = ["sgd", "adagrad"] + (["adam"] if torch.cuda.is_available() else [])
    tables = [{**t, "name": t["name"]} for t in _config(names).model_dump(mode="json")["tables"]]
    rowwise = {**tables[1], "name": "adagrad_rowwise", "num_embeddings": 77}
    cfg = LargeEmbeddingsConfig.model_validate({"tables": [*tables, rowwise]})
    path = tmp_path / "tables.yaml"
    path.write_text(embviz.dump_config(cfg))
    out = tmp_path / "kernels.json"
    result = subprocess.run(
        [sys.executable, __file__, str(path), str(out)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-4000:]
    kernels = json.loads(out.read_text())
    assert set(kernels) == set(cfg.table_names)
    for table in cfg.tables:
        adagrad = "rowwise" if table.name.endswith("rowwise") else "exact"
        got = kernels[table.name]
        assert got["optimizer"] == optimizer_spec(table, adagrad).fused_type, table.name
        # FBGEMM keeps its learning rate in fp32.
        assert got["learning_rate"] == pytest.approx(table.optimizer.settings.lr, rel=1e-7)
        if table.optimizer.name != "sgd":
            assert got["eps"] == table.optimizer.settings.eps
        if table.optimizer.name == "adam":
            assert (got["beta1"], got["beta2"]) == (0.8, 0.95)
    assert kernels["sgd"]["momentum"] == 0.9


if __name__ == "__main__":
    cfg_path, out_path = sys.argv[1:3]
    found = _fused_kernels(cfg_path, str(Path(out_path).with_suffix(".store")))
    Path(out_path).write_text(json.dumps(found))
