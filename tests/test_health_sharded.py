"""health and drift of a sharded collection describe whole tables (gloo, world size 1)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

_CHILD = textwrap.dedent(
    """
    import json, sys, warnings, logging
    warnings.filterwarnings("ignore"); logging.disable(logging.WARNING)
    import torch, torch.distributed as dist, torchrec
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.model_parallel import DistributedModelParallel
    from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints
    from torchrec.distributed.planner import Topology
    import embviz
    from embviz.errors import EmbvizError

    store = sys.argv[1]
    dist.init_process_group("gloo", store=dist.FileStore(store, 1), rank=0, world_size=1)
    try:
        cfg = embviz.parse_config(
            "tables:\\n"
            "  - {name: b, num_embeddings: 2000, embedding_dim: 128, data_type: fp32,"
            " optimizer: {sgd: {lr: 0.1}}}\\n"
        )
        torch.manual_seed(0)
        ebc = torchrec.EmbeddingBagCollection(tables=cfg.to_torchrec(), device=torch.device("meta"))
        sharder = EmbeddingBagCollectionSharder()
        constraints = {"b": ParameterConstraints(sharding_types=["column_wise"], min_partition=32)}
        plan = EmbeddingShardingPlanner(
            topology=Topology(world_size=1, compute_device="cpu"), constraints=constraints
        ).plan(ebc, [sharder])
        model = DistributedModelParallel(ebc, device=torch.device("cpu"), plan=plan,
                                         sharders=[sharder])
        state = model.state_dict()
        (key, value), = [(k, v) for k, v in state.items() if k.endswith("b.weight")]
        full = torch.empty(value.size(), dtype=value.dtype)
        for s in value.local_shards():
            (r0, c0), (nr, nc) = s.metadata.shard_offsets, s.metadata.shard_sizes
            full[r0:r0 + nr, c0:c0 + nc] = s.tensor
        out = {
            "shards": len(value.local_shards()),
            "health": embviz.health(state, progress=False).loc["b"].astype(str).to_dict(),
            "dense": embviz.health({"b": full}, progress=False).loc["b"].astype(str).to_dict(),
            "drift": float(embviz.drift(state, {"b": full}, progress=False).loc["b", "knn_overlap"]),
        }
        # A process that holds only some of the shards: refused, saying how to get the table.
        held = value.local_shards()[:1]
        value.local_shards = lambda: held
        try:
            embviz.health(state, progress=False)
            out["refused"] = ""
        except EmbvizError as exc:
            out["refused"] = str(exc)
        print(json.dumps(out))
    finally:
        dist.destroy_process_group()
    """
)


@pytest.mark.slow
def test_sharded_state_dict_is_described_whole(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "store")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["shards"] == 4  # 128 columns in pieces of 32
    assert out["health"] == out["dense"]
    assert out["drift"] == 1.0
    assert (
        "table 'b' is sharded and this process holds 64,000 of its 256,000 values"
        in (out["refused"])
    )
    assert "embviz.save_snapshot" in out["refused"]
