"""`embviz.log_norms`: whole-table norm statistics on every rank of a training job.

Accuracy is checked against the tables' row norms computed in float64 (brute force): every
statistic within `RTOL` of it (float32 norms carry about 1e-7 relative error); ``std`` within
`RTOL` of the mean norm. The order statistics themselves come from an exact selection, so the
quantiles equal `embviz.exact_quantiles` of the same float32 norms.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig
from torchrec.modules.embedding_configs import DataType

from embviz import (
    ArgumentError,
    EmptyTableError,
    NormError,
    UnknownTableError,
    exact_quantiles,
    log_norms,
    row_norms,
)
from embviz.lognorms import LOG_STATS

from conftest import ROOT

RTOL = 1e-6
QUANTILES = {"p1": 0.01, "p5": 0.05, "p50": 0.5, "p95": 0.95, "p99": 0.99}


def reference(weight: torch.Tensor) -> dict[str, float]:
    """Statistics of the row norms in float64, brute force."""
    norms = weight.detach().double().norm(dim=1)
    q = torch.tensor(list(QUANTILES.values()), dtype=torch.float64)
    return {
        "rows": norms.numel(),
        "sampled": norms.numel(),
        "mean": float(norms.mean()),
        "std": float(norms.std()),
        "min": float(norms.min()),
        **dict(zip(QUANTILES, torch.quantile(norms, q).tolist(), strict=True)),
        "max": float(norms.max()),
    }


def assert_close(got: dict, prefix: str, table: str, expected: dict) -> None:
    head = f"{prefix}/" if prefix else ""
    for stat in LOG_STATS:
        value, want = got[f"{head}{table}/{stat}"], expected[stat]
        if stat in ("rows", "sampled"):
            assert value == want, (table, stat)
        elif stat == "std":
            assert abs(value - want) <= RTOL * expected["mean"], (table, stat, value, want)
        else:
            assert value == pytest.approx(want, rel=RTOL), (table, stat)


def collection() -> EmbeddingBagCollection:
    torch.manual_seed(0)
    return EmbeddingBagCollection(
        tables=[
            EmbeddingBagConfig(
                name="user", embedding_dim=16, num_embeddings=20_000, feature_names=["user"]
            ),
            EmbeddingBagConfig(
                name="item",
                embedding_dim=12,
                num_embeddings=3_001,
                feature_names=["item"],
                data_type=DataType.FP16,
            ),
        ],
        device=torch.device("cpu"),
    )


# --------------------------------------------------------------------------- one process


def test_single_process_collection_and_a_module_holding_one_match_float64():
    ebc = collection()
    stats = log_norms(ebc)
    assert list(stats) == [f"embedding_norm/{t}/{s}" for t in ("user", "item") for s in LOG_STATS]
    for name in ("user", "item"):
        assert_close(stats, "embedding_norm", name, reference(ebc.embedding_bags[name].weight))
    assert isinstance(stats["embedding_norm/user/rows"], int)

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.sparse = ebc
            self.dense = torch.nn.Linear(4, 2)

    wrapped = log_norms(Model(), tables="item", prefix="train/norms")
    assert list(wrapped) == [f"train/norms/item/{s}" for s in LOG_STATS]
    assert wrapped == {
        k.replace("embedding_norm", "train/norms"): v for k, v in stats.items() if "/item/" in k
    }
    # A state dict works the same.
    assert log_norms(ebc.state_dict(), tables=["user"]) == {
        k: v for k, v in stats.items() if "/user/" in k
    }


def test_quantiles_are_exact_order_statistics_with_ties_and_past_2_24_rows():
    torch.manual_seed(1)
    # One column: the row norm is |value|. Many equal values (ties), and a table with more
    # than 2**24 rows, where torch.quantile's ranks switch to float64.
    ties = (torch.randint(0, 50, (100_003, 1)) / 7).float()
    ties[:10] = 0.0
    big = torch.rand(2**24 + 5, 1)
    stats = log_norms({"ties": ties, "big": big}, prefix="")
    for name, weight in (("ties", ties), ("big", big)):
        norms = row_norms(weight)
        exact = exact_quantiles(norms, list(QUANTILES.values())).tolist()
        assert [stats[f"{name}/{q}"] for q in QUANTILES] == exact, name
        assert stats[f"{name}/min"] == float(norms.min())
        assert stats[f"{name}/max"] == float(norms.max())
        assert stats[f"{name}/rows"] == weight.shape[0]
    assert_close(stats, "", "ties", reference(ties))
    assert stats["ties/min"] == 0.0


def test_sample_limits_the_rows_described():
    ebc = collection()
    full = reference(ebc.embedding_bags["user"].weight)
    stats = log_norms(ebc, tables="user", sample=5_000, seed=7)
    assert stats["embedding_norm/user/rows"] == 20_000
    assert stats["embedding_norm/user/sampled"] == 5_000
    # The sample's extremes lie within the table's (float64 reference), up to the float32
    # rounding of one norm: which way it rounds depends on the CPU's summation order.
    ulp = 2**-23
    low, high = stats["embedding_norm/user/min"], stats["embedding_norm/user/max"]
    assert full["min"] * (1 - ulp) <= low <= high <= full["max"] * (1 + ulp)
    assert stats["embedding_norm/user/mean"] == pytest.approx(full["mean"], rel=0.01)
    assert log_norms(ebc, tables="user", sample=5_000, seed=7) == stats
    assert log_norms(ebc, tables="user", sample=5_000, seed=8) != stats
    # A sample at least as large as the table describes every row.
    assert log_norms(ebc, tables="item", sample=10**9)["embedding_norm/item/sampled"] == 3_001


def test_nan_rows_make_the_statistics_nan_but_keep_the_counts():
    weight = torch.ones(10, 4)
    weight[3, 1] = math.nan
    stats = log_norms({"t": weight})
    assert stats["embedding_norm/t/rows"] == stats["embedding_norm/t/sampled"] == 10
    assert all(math.isnan(stats[f"embedding_norm/t/{s}"]) for s in LOG_STATS[2:])


def test_bad_input_raises_typed_errors():
    ebc = collection()
    with pytest.raises(UnknownTableError, match=r"'nope'.*user, item"):
        log_norms(ebc, tables=["user", "nope"])
    with pytest.raises(ArgumentError, match=r"^sample"):
        log_norms(ebc, sample=0)
    with pytest.raises(ArgumentError, match=r"^prefix"):
        log_norms(ebc, prefix=3)
    with pytest.raises(NormError, match="holds no embedding tables"):
        log_norms(torch.nn.Linear(2, 2))
    with pytest.raises(NormError, match="tables: the list is empty"):
        log_norms(ebc, tables=[])
    with pytest.raises(EmptyTableError, match="'e'"):
        log_norms({"e": torch.empty(0, 4)})
    with pytest.raises(NormError, match="meta device"):
        log_norms({"m": torch.empty(5, 4, device="meta")})
    with pytest.raises(NormError, match="not a floating-point"):
        log_norms({"i": torch.ones(5, 4, dtype=torch.int64)})


# --------------------------------------------------------------------------- torchrun


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Run tests/log_norms_worker.py under torchrun with 2 gloo processes; their reports."""
    out = tmp_path_factory.mktemp("log_norms")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # rendezvous on a free port of localhost
        "--nnodes=1",
        "--nproc-per-node=2",
        str(ROOT / "tests" / "log_norms_worker.py"),
        str(out),
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    errors = "\n".join(p.read_text() for p in sorted(out.glob("rank*.error")))
    assert result.returncode == 0, errors or result.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.slow
def test_two_ranks_row_table_column_wise_and_data_parallel_match_the_gathered_tables(two_ranks):
    first, second = two_ranks
    shards = first["shards"]
    # The planner did what it was constrained to, across both ranks where it can.
    assert {n: s["type"] for n, s in shards.items()} == {
        "rw": "row_wise",
        "tw": "table_wise",
        "cw": "column_wise",
        "dp": "data_parallel",
    }
    assert sorted(shards["rw"]["ranks"]) == [0, 1]
    assert sorted(shards["cw"]["ranks"]) == [0, 1]  # a row's columns live on both ranks
    assert len(shards["tw"]["ranks"]) == 1

    calls = ("all", "sampled", "sampled_again", "small_blocks", "irregular", "irregular_blocks")
    for call in calls:
        assert first[call] == second[call], call  # the same dict on every rank
    stats, expected = first["all"], first["reference"]
    assert len(stats) == 4 * len(LOG_STATS)
    for name in ("rw", "tw", "cw", "dp"):
        assert_close(stats, "embedding_norm", name, expected[name])
    # Column-split rows reduced in 128-row blocks onto both ranks in turn: the same numbers.
    assert_close(first["small_blocks"], "blocks", "cw", expected["cw"])

    # Column halves cut at different rows: split rows, and whole rows in two pieces on rank 0.
    for call in ("irregular", "irregular_blocks"):
        assert_close(first[call], "embedding_norm", "grid", first["irregular_reference"])

    sampled = first["sampled"]
    assert sampled == first["sampled_again"]
    for name in ("cw", "rw"):
        assert sampled[f"embedding_norm/{name}/rows"] == expected[name]["rows"]
        assert sampled[f"embedding_norm/{name}/sampled"] == 300
        low, high = expected[name]["min"], expected[name]["max"]
        assert low * (1 - RTOL) <= sampled[f"embedding_norm/{name}/min"]
        assert sampled[f"embedding_norm/{name}/max"] <= high * (1 + RTOL)
    # Ranks that ask for different tables all raise, instead of waiting for each other.
    assert "ranks disagree" in first["disagree"]
    assert "ranks disagree" in second["disagree"]
