"""Row norms are as accurate as torch's own (against float64), and their statistics are right.

Live sources here (tensors, collections, state dicts, local shards); snapshots and the demo's
checkpoints are in test_norms_snapshots.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchrec

import embviz
from embviz.memory import UnknownTableError
from embviz.norms import (
    MEMORY_BUDGET_BYTES,
    QUANTILES,
    STAT_COLUMNS,
    EmptyTableError,
    NormError,
    RowIndexError,
    UnknownEntityError,
    exact_quantiles,
    fp16_error,
    fp16_error_table,
    local_row_ids,
    nearest,
    norm_histogram,
    norm_stats,
    project,
    row_norm_backend,
    row_norms,
    sample_rows,
)
from embviz.norms.kernel import native_available

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
Q = list(QUANTILES.values())

CONFIG = embviz.parse_config(
    """
tables:
  - {name: user, num_embeddings: 6_000, embedding_dim: 8, data_type: fp32,
     optimizer: {sgd: {lr: 0.1}}}
  - {name: tweet, num_embeddings: 4_000, embedding_dim: 16, data_type: fp16,
     optimizer: {sgd: {lr: 0.1}}}
  - {name: topic, num_embeddings: 500, embedding_dim: 4, data_type: fp32,
     optimizer: {sgd: {lr: 0.1}}}
tables_to_log: [tweet, user]
"""
)


def _table(rows: int, dim: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    # Norms spread over orders of magnitude, plus a few zero rows.
    scale = torch.logspace(-3, 1, rows)[torch.randperm(rows, generator=generator)]
    weight = torch.randn(rows, dim, generator=generator) * scale[:, None]
    weight[:: max(1, rows // 7)] = 0
    return weight.to(dtype)


def _collection(seed: int = 0) -> torchrec.EmbeddingBagCollection:
    torch.manual_seed(seed)
    return torchrec.EmbeddingBagCollection(tables=CONFIG.to_torchrec(), device=torch.device("cpu"))


def _reference_stats(weight: torch.Tensor) -> dict[str, float]:
    """The statistics of the table's row norms computed the plain torch way, on the whole table.

    The norms are `row_norms`' own (their accuracy is tested against float64 below), so the
    statistics must equal these to the bit.
    """
    norms = row_norms(weight)
    quantiles = torch.quantile(norms, torch.tensor(Q)).tolist()
    return {
        "rows": weight.shape[0],
        "sampled": weight.shape[0],
        "mean": float(norms.mean()),
        "std": float(norms.std()),
        "min": float(norms.min()),
        **dict(zip(QUANTILES, quantiles, strict=True)),
        "max": float(norms.max()),
        "zero_share": int((norms == 0).sum()) / norms.numel(),
    }


# --------------------------------------------------------------------------- row_norms


@pytest.fixture(params=["native", "torch"])
def backend(request, monkeypatch):
    """Run a test with the numba kernel (where numba is installed) and with torch ops only."""
    if request.param == "torch":
        monkeypatch.setenv("EMBVIZ_NATIVE", "0")
    elif not native_available():
        pytest.skip("numba is not installed: the native kernel is not available here")
    else:
        monkeypatch.setenv("EMBVIZ_NATIVE", "1")
    return request.param


def relative_errors(got: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """``|got - exact| / exact`` per row; 0 where both are 0, inf where only ``exact`` is."""
    got, exact = got.double().cpu(), exact.double().cpu()
    err = (got - exact).abs() / exact
    err[(exact == 0) & (got == 0)] = 0.0
    return err


def accuracy(got: torch.Tensor, weight: torch.Tensor) -> tuple[float, float]:
    """(worst relative error of ``got``, the bound it must meet) over the rows of ``weight``.

    The reference is ``vector_norm(weight.double())``; the bound is twice the worst error of
    torch's own ``vector_norm(weight.float())`` on the same rows, or 2**-23, whichever is larger.
    """
    exact = torch.linalg.vector_norm(weight.double(), dim=1)
    torch_err = float(relative_errors(torch.linalg.vector_norm(weight.float(), dim=1), exact).max())
    return float(relative_errors(got, exact).max()), max(2 * torch_err, 2.0**-23)


def assert_accurate(got: torch.Tensor, weight: torch.Tensor) -> None:
    assert got.dtype == torch.float32
    assert got.shape == (weight.shape[0],)
    worst, bound = accuracy(got, weight)
    assert worst <= bound, f"worst relative error {worst:.3g} > {bound:.3g}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "shape", [(1, 4), (37, 3), (5_000, 64), (300_000, 16), (40_000, 1), (9_000, 45)]
)
def test_row_norms_are_as_accurate_as_torch(backend, dtype, shape):
    weight = _table(*shape, dtype)
    norms = row_norms(weight)
    assert norms.device == weight.device
    assert row_norm_backend(dtype) == (
        "native" if backend == "native" and dtype != torch.float64 else "torch"
    )
    assert_accurate(norms, weight)
    assert bool((norms[:: max(1, shape[0] // 7)] == 0).all())  # zero rows are exactly 0


def _width_sweep(dtype: torch.dtype, rows_per_width: int = 3, seed: int = 0):
    """A few rows at every width from 1 to 1,000: random magnitudes, and one constant row."""
    generator = torch.Generator().manual_seed(seed)
    for cols in range(1, 1_001):
        scale = torch.logspace(-2, 2, rows_per_width)[:, None].double()
        weight = torch.randn(rows_per_width, cols, generator=generator, dtype=torch.float64)
        weight = weight * scale
        weight[-1] = float(weight[-1, 0]) or 1.0  # the same value in every column
        yield cols, weight.to(dtype)


CAPABILITY = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "unknown")()


@pytest.mark.capability
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_row_norms_at_every_width_within_twice_torchs_error(backend, dtype):
    """Every width 1..1,000 (multiples of 8 and 16 or not), under this ATEN_CPU_CAPABILITY.

    torch's own float32 error sets the bound, so the test holds torch's summation order on this
    capability (8 or 16 lanes, or none) to the same standard as ours: never bit equality.
    """
    worst: list[tuple[float, float, int]] = []
    for cols, weight in _width_sweep(dtype, seed=DTYPES.index(dtype)):
        got = row_norms(weight)
        error, bound = accuracy(got, weight)
        assert error <= bound, (
            f"{dtype}, width {cols}, capability {CAPABILITY}: relative error {error:.3g} > "
            f"{bound:.3g}"
        )
        worst.append((error, bound, cols))
    error, bound, cols = max(worst)
    print(f"\n{backend} {dtype} capability {CAPABILITY}: worst {error:.3g} (width {cols})")


@pytest.mark.capability
def test_torchs_own_float32_error_is_what_the_bound_assumes():
    """The reference bound is meaningful: torch's float32 norms do err, by a few ulps at most."""
    errors = []
    for _, weight in _width_sweep(torch.float32, rows_per_width=2, seed=1):
        exact = torch.linalg.vector_norm(weight.double(), dim=1)
        ours = torch.linalg.vector_norm(weight.float(), dim=1)
        errors.append(float(relative_errors(ours, exact).max()))
    assert 0 < max(errors) < 2e-6, CAPABILITY


def test_native_kernel_is_more_accurate_than_float32_summation():
    if not native_available():
        pytest.skip("numba is not installed")
    # A long row of equal values: float32 accumulation drifts, float64 does not.
    weight = torch.full((4, 100_000), 0.1)
    exact = torch.linalg.vector_norm(weight.double(), dim=1)
    native = relative_errors(row_norms(weight, backend="native"), exact)
    assert float(native.max()) <= 2.0**-24 * (1 + 1e-6)  # rounding the root once: half an ulp
    # Beyond float32's range in the sum, still the exact norm.
    huge = torch.full((1, 8), 3e19)
    assert torch.isinf(torch.linalg.vector_norm(huge, dim=1)).all()
    assert float(row_norms(huge, backend="native")) == pytest.approx(3e19 * 8**0.5, rel=2**-23)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_inf_and_nan_propagate_as_in_torch(backend, dtype):
    weight = torch.tensor([[float("inf"), 1.0], [float("nan"), 1.0], [-2.0, 0.0]]).to(dtype)
    norms = row_norms(weight)
    assert torch.isinf(norms[0]) and torch.isnan(norms[1]) and norms[2] == 2.0


def test_backend_argument_and_its_errors():
    weight = _table(1_000, 24, torch.float16)
    exact = torch.linalg.vector_norm(weight.double(), dim=1)
    for name in ("auto", "torch") + (("native",) if native_available() else ()):
        assert float(relative_errors(row_norms(weight, backend=name), exact).max()) <= 2.0**-23
    assert row_norm_backend(torch.float16, "torch") == "torch"
    assert row_norm_backend(torch.float64, "auto") == "torch"
    with pytest.raises(NormError, match="backend must be one of 'auto', 'native', 'torch'"):
        row_norms(weight, backend="c")


def test_native_kernel_checks_its_arguments():
    if not native_available():
        pytest.skip("numba is not installed")
    from embviz.norms.kernel import native_row_norms

    weight = _table(100, 8, torch.float16)
    out = torch.empty(100)
    native_row_norms(weight, out)
    assert_accurate(out, weight)
    bad = [
        (weight.float().double(), out, "dtype torch.float64"),
        (weight[:, ::2], torch.empty(100), "unit column stride"),
        (weight[0], out, "dense 2-D CPU tensor"),
        (weight, torch.empty(99), "100 entries"),
        (weight, torch.empty(100, dtype=torch.float64), "float32"),
        (weight, torch.empty(200)[::2], "contiguous"),
        ("w", out, "two tensors"),
    ]
    for x, result, message in bad:
        with pytest.raises(NormError, match=message):
            native_row_norms(x, result)


def test_without_numba_torch_ops_take_over():
    code = (
        "import sys\n"
        "sys.modules['numba'] = None  # as if numba were not installed\n"
        "import torch\n"
        "from embviz.norms import NormError, row_norm_backend, row_norms\n"
        "w = torch.randn(50_000, 64).half()\n"
        "exact = torch.linalg.vector_norm(w.double(), dim=1)\n"
        "err = ((row_norms(w).double() - exact).abs() / exact).max()\n"
        "assert err < 2**-22, err\n"
        "try:\n"
        "    row_norms(w, backend='native')\n"
        "except NormError as e:\n"
        "    assert 'needs numba' in str(e)\n"
        "else:\n"
        "    raise AssertionError('native without numba')\n"
        "print(row_norm_backend(torch.float16))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "torch"


def test_native_kernel_caches_nothing_on_disk(tmp_path):
    if not native_available():
        pytest.skip("numba is not installed")
    from numba.core.caching import NullCache

    from embviz.norms.jit import KERNELS

    for serial, parallel in KERNELS.values():
        assert isinstance(serial._cache, NullCache) and isinstance(parallel._cache, NullCache)
    # Compiled in a fresh process, with every cache location numba would use pointed here.
    code = (
        "import torch\n"
        "from embviz.norms import row_norms\n"
        "for dt in (torch.float32, torch.float16, torch.bfloat16):\n"
        "    row_norms(torch.randn(3_000_000, 1).to(dt))\n"
        "    row_norms(torch.randn(30, 7).to(dt))\n"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba"), "HOME": str(tmp_path)}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
    package = Path(embviz.norms.__file__).parent
    assert not list(package.rglob("*.nbi")) and not list(package.rglob("*.nbc"))


def test_row_norms_threaded_path_leaves_torch_threads_alone(backend):
    # 2**21 elements is where numba's worker threads start; this table is well above it.
    weight = _table(70_000, 64, torch.float16, seed=3)
    threads = torch.get_num_threads()
    assert_accurate(row_norms(weight), weight)
    assert torch.get_num_threads() == threads


def test_row_norms_from_two_threads_at_once(backend):
    weights = [_table(100_000, 48, dtype, seed=4) for dtype in (torch.float32, torch.bfloat16)]
    results: dict[int, torch.Tensor] = {}

    def work(i: int) -> None:
        for _ in range(3):
            results[i] = row_norms(weights[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, weight in enumerate(weights):
        assert_accurate(results[i], weight)


def test_row_norms_of_views_parameters_and_empty_tables(backend):
    base = _table(2_000, 32, torch.float32)
    view = base[::3, 5:20]  # rows not contiguous
    assert_accurate(row_norms(view), view)
    columns = base[:, ::2]  # columns not contiguous: copied a chunk at a time
    assert_accurate(row_norms(columns), columns)
    half_columns = base.half()[:, 1::3]
    assert_accurate(row_norms(half_columns), half_columns)
    param = torch.nn.Parameter(base.clone())
    assert_accurate(row_norms(param), base)
    assert row_norms(torch.empty(0, 8)).shape == (0,)
    assert torch.equal(row_norms(torch.ones(3, 0)), torch.zeros(3))


def test_row_norms_of_chosen_rows(backend):
    weight = _table(10_000, 24, torch.float16)
    rows = torch.tensor([9_999, 0, 17, 17, 4_242])
    assert_accurate(row_norms(weight, rows), weight[rows])
    assert torch.equal(row_norms(weight, rows.tolist()), row_norms(weight, rows))
    with pytest.raises(RowIndexError, match="row 10000 is out of range: the table has 10,000"):
        row_norms(weight, [10_000])
    with pytest.raises(RowIndexError, match="row -1"):
        row_norms(weight, [-1])
    with pytest.raises(NormError, match="integer row positions"):
        row_norms(weight, [0.5])


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (torch.ones(3), "expected a 2-D table"),
        (torch.ones(2, 3, 4), "expected a 2-D table"),
        (torch.ones(3, 4, dtype=torch.int64), "not a floating-point type"),
        (torch.empty(3, 4, device="meta"), "meta device"),
        (torch.eye(3).to_sparse(), "pass a dense"),
        ("weights.pt", "expected a 2-D tensor, a ShardedTensor"),
        ([("0", torch.ones(2, 2))], "Shards or \\(row_offset, tensor\\) pairs"),
    ],
)
def test_row_norms_refuses_what_it_cannot_norm(value, message):
    with pytest.raises(NormError, match=message):
        row_norms(value)


def test_row_norms_of_local_row_shards_in_row_order():
    weight = _table(1_000, 8, torch.float32)
    # Two row-wise shards held here, given out of order, with a gap (rows 300:500 elsewhere).
    pieces = [(500, weight[500:]), (0, weight[:300])]
    expected_rows = torch.cat([torch.arange(0, 300), torch.arange(500, 1_000)])
    assert torch.equal(local_row_ids(pieces), expected_rows)
    assert_accurate(row_norms(pieces), weight[expected_rows])
    # Chosen rows are positions among the local rows.
    assert_accurate(row_norms(pieces, [0, 299, 300, 799]), weight[[0, 299, 500, 999]])
    with pytest.raises(NormError, match="overlap"):
        row_norms([(0, weight[:300]), (200, weight[200:400])])


def test_row_norms_of_torch_shards_combines_column_pieces():
    from torch.distributed._shard.metadata import ShardMetadata
    from torch.distributed._shard.sharded_tensor import Shard

    weight = _table(600, 12, torch.float32)

    def shard(r0, r1, c0, c1):
        meta = ShardMetadata([r0, c0], [r1 - r0, c1 - c0], "rank:0/cpu")
        return Shard(weight[r0:r1, c0:c1].clone(), meta)

    # Rows 0:300 split by columns (column-wise sharding), rows 300:600 whole.
    shards = [shard(0, 300, 0, 5), shard(0, 300, 5, 12), shard(300, 600, 0, 12)]
    # Each piece's norm is rounded to float32 before the pieces are combined in float64.
    exact = torch.linalg.vector_norm(weight.double(), dim=1)
    assert float(relative_errors(row_norms(shards), exact).max()) <= 2.0**-22
    assert_accurate(row_norms(shards)[300:], weight[300:])
    # A row whose other columns live on another rank has no local norm.
    with pytest.raises(NormError, match=r"columns 5:12 on another rank"):
        row_norms([shard(0, 300, 0, 5), shard(300, 600, 0, 12)])


def test_column_pieces_of_many_rows_are_combined_in_bounded_chunks():
    from torch.distributed._shard.metadata import ShardMetadata
    from torch.distributed._shard.sharded_tensor import Shard

    # More rows than one chunk of the column combination (16 MiB of 20-byte rows: 838,860).
    weight = torch.randn(1_000_000, 8, generator=torch.Generator().manual_seed(5))
    shards = [
        Shard(weight[:, :3].clone(), ShardMetadata([0, 0], [1_000_000, 3], "rank:0/cpu")),
        Shard(weight[:, 3:].clone(), ShardMetadata([0, 3], [1_000_000, 5], "rank:0/cpu")),
    ]
    exact = torch.linalg.vector_norm(weight.double(), dim=1)
    assert float(relative_errors(row_norms(shards), exact).max()) <= 2.0**-22
    rows = torch.tensor([999_999, 0, 838_860, 838_859])
    assert float(relative_errors(row_norms(shards, rows), exact[rows]).max()) <= 2.0**-22


_SHARDED_CHILD = textwrap.dedent(
    """
    import json, sys, warnings, logging
    warnings.filterwarnings("ignore"); logging.disable(logging.WARNING)
    import torch, torch.distributed as dist, torchrec
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.model_parallel import DistributedModelParallel
    from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints
    from torchrec.distributed.planner import Topology
    import embviz
    from embviz.norms import norm_stats, row_norms

    sharding, store = sys.argv[1], sys.argv[2]
    dist.init_process_group("gloo", store=dist.FileStore(store, 1), rank=0, world_size=1)
    try:
        cfg = embviz.parse_config(
            "tables:\\n"
            "  - {name: a, num_embeddings: 3000, embedding_dim: 16, data_type: fp32,"
            " optimizer: {sgd: {lr: 0.1}}}\\n"
            "  - {name: b, num_embeddings: 2000, embedding_dim: 128, data_type: fp16,"
            " optimizer: {sgd: {lr: 0.1}}}\\n"
        )
        torch.manual_seed(0)
        ebc = torchrec.EmbeddingBagCollection(tables=cfg.to_torchrec(), device=torch.device("meta"))
        sharder = EmbeddingBagCollectionSharder()
        # Column-wise pieces of at least 32 columns: table b (128 wide) splits in 4.
        constraints = {
            n: ParameterConstraints(sharding_types=[sharding], min_partition=32)
            for n in ("a", "b")
        }
        plan = EmbeddingShardingPlanner(
            topology=Topology(world_size=1, compute_device="cpu"), constraints=constraints
        ).plan(ebc, [sharder])
        model = DistributedModelParallel(ebc, device=torch.device("cpu"), plan=plan,
                                         sharders=[sharder])
        state = model.state_dict()
        out = {"types": {}, "stats": {}, "dense_stats": {}, "equal": {}, "shards": {}}
        dense = {}
        for key, value in state.items():
            name = key.split(".")[-2]
            out["types"][name] = type(value).__name__
            out["shards"][name] = len(value.local_shards())
            full = torch.empty(value.size(), dtype=value.dtype)
            for s in value.local_shards():
                (r0, c0), (nr, nc) = s.metadata.shard_offsets, s.metadata.shard_sizes
                full[r0:r0 + nr, c0:c0 + nc] = s.tensor
            dense[name] = full
            ref = torch.linalg.vector_norm(full.double(), dim=1)
            out["equal"][name] = float(((row_norms(value).double() - ref).abs() / ref).max())
        out["stats"] = norm_stats(state, progress=False).to_dict(orient="index")
        out["dense_stats"] = norm_stats(dense, progress=False).to_dict(orient="index")
        print(json.dumps(out))
    finally:
        dist.destroy_process_group()
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("sharding", ["table_wise", "column_wise"])
def test_sharded_collection_state_dict(tmp_path, sharding):
    """A DistributedModelParallel's state dict (ShardedTensors, gloo, world size 1).

    torchrec shards row-wise on GPUs only; table- and column-wise are what a CPU run can check.
    """
    script = tmp_path / "child.py"
    script.write_text(_SHARDED_CHILD)
    result = subprocess.run(
        [sys.executable, str(script), sharding, str(tmp_path / "store")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["types"] == {"a": "ShardedTensor", "b": "ShardedTensor"}
    # Column-wise: several pieces of the same rows, combined into whole-row norms.
    assert out["shards"]["b"] == (4 if sharding == "column_wise" else 1)
    for name in ("a", "b"):
        assert out["equal"][name] <= 2.0**-22
        for column in ("rows", "sampled"):
            assert out["stats"][name][column] == out["dense_stats"][name][column]
        for column in ("mean", "p50", "max"):
            assert out["stats"][name][column] == pytest.approx(
                out["dense_stats"][name][column], rel=1e-6
            )


def _peak_extra_child(rows: int, dim: int, dtype: str) -> int:
    code = textwrap.dedent(
        f"""
        import torch
        from embviz.norms import row_norms
        def status(key):
            for line in open("/proc/self/status"):
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        table = torch.empty({rows}, {dim}, dtype=torch.{dtype})
        table.normal_()
        row_norms(torch.randn(300_000, {dim}).to(torch.{dtype}))  # warm up threads and pages
        before = status("VmRSS")
        open("/proc/self/clear_refs", "w").write("5")
        result = row_norms(table)
        print(status("VmHWM") - before - result.numel() * 4)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_row_norms_peak_extra_memory_stays_within_the_budget(backend, dtype):
    # A table of 4x the budget: a norm that materialised an fp32 copy would need 256 MiB extra.
    rows, dim = 1_048_576, 64
    extra = _peak_extra_child(rows, dim, dtype)
    assert extra <= MEMORY_BUDGET_BYTES, f"{extra / 2**20:.1f} MiB"


# --------------------------------------------------------------------------- sampling


def test_sample_rows_distinct_sorted_exact_and_seeded(monkeypatch):
    calls = []
    real = torch.randperm

    def spy(n, *args, **kwargs):
        calls.append(n)
        return real(n, *args, **kwargs)

    monkeypatch.setattr(torch, "randperm", spy)
    for num_rows, k in [(10, 3), (1_000, 999), (10**9, 50_000), (5_000_000, 2_500_001)]:
        rows = sample_rows(num_rows, k, seed=4)
        assert rows.dtype == torch.int64
        assert rows.numel() == k
        assert torch.unique(rows).numel() == k
        assert bool((rows[1:] > rows[:-1]).all())
        assert 0 <= int(rows.min()) and int(rows.max()) < num_rows
        assert torch.equal(rows, sample_rows(num_rows, k, seed=4))
    # Never a permutation of all the rows: only of the few surplus draws.
    assert all(n < 10**6 for n in calls), calls
    assert not torch.equal(sample_rows(10**6, 100, seed=1), sample_rows(10**6, 100, seed=2))
    assert torch.equal(sample_rows(5, 10), torch.arange(5))
    assert sample_rows(5, 0).numel() == 0


def test_sample_rows_is_uniform():
    # Each of 20 rows should be picked 5/20 of the time; chi-square over 4,000 samples.
    counts = torch.zeros(20)
    for seed in range(4_000):
        counts[sample_rows(20, 5, seed=seed)] += 1
    expected = 4_000 * 5 / 20
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 45.0  # 19 degrees of freedom: p < 0.001 above 43.8


@pytest.mark.parametrize("bad", [-1, 2.5, True, "10"])
def test_sample_rows_refuses_bad_sizes(bad):
    with pytest.raises(NormError, match="sample must be a positive integer"):
        sample_rows(100, bad)


# --------------------------------------------------------------------------- quantiles


@pytest.mark.parametrize("n", [1, 2, 3, 10, 101, 1_000, 65_537, 1_000_003])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exact_quantiles_equal_torch_quantile(n, dtype):
    generator = torch.Generator().manual_seed(n)
    values = torch.rand(n, generator=generator, dtype=dtype) ** 3
    q = [0.0, *Q, 0.333, 1.0]
    assert torch.equal(
        exact_quantiles(values, q), torch.quantile(values, torch.tensor(q, dtype=dtype))
    )


def test_exact_quantiles_with_ties_and_nan():
    values = torch.tensor([1.0, 1.0, 1.0, 2.0, 2.0, 7.0])
    assert torch.equal(exact_quantiles(values, Q), torch.quantile(values, torch.tensor(Q)))
    values[2] = float("nan")
    assert torch.isnan(exact_quantiles(values, Q)).all()
    assert torch.isnan(torch.quantile(values, torch.tensor(Q))).all()
    with pytest.raises(EmptyTableError):
        exact_quantiles(torch.empty(0), Q)
    with pytest.raises(NormError, match=r"\[0, 1\]"):
        exact_quantiles(values, [1.5])


@pytest.mark.slow
def test_exact_quantiles_beyond_torch_quantile_limit():
    n = 2**24 + 3
    values = torch.rand(n, generator=torch.Generator().manual_seed(0))
    with pytest.raises(RuntimeError, match="too large"):
        torch.quantile(values, torch.tensor(Q))
    got = exact_quantiles(values, Q)
    # numpy's 'linear' rule on the same values, in float64, agrees to float32 rounding.
    expected = np.quantile(values.numpy().astype(np.float64), Q)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)


# --------------------------------------------------------------------------- norm_stats


def test_norm_stats_of_a_collection_equal_torch(monkeypatch):
    ebc = _collection()
    stats = norm_stats(ebc, progress=False)
    assert list(stats.columns) == STAT_COLUMNS
    assert list(stats.index) == ["user", "tweet", "topic"]
    assert stats.index.name == "table"
    for name in stats.index:
        weight = ebc.embedding_bags[name].weight.detach()
        expected = _reference_stats(weight)
        for column, value in expected.items():
            assert stats.loc[name, column] == value, (name, column)
        assert np.isnan(stats.loc[name, "unchanged_share"])
    assert ebc.embedding_bags["tweet"].weight.dtype == torch.float16


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_norm_stats_of_a_state_dict_equal_torch(dtype):
    weight = _table(50_000, 32, dtype)
    state = {
        "model.large_embeddings.ebc.embedding_bags.big.weight": weight,
        "model.dense.weight": torch.ones(3, 3),
    }
    stats = norm_stats(state, progress=False)
    assert list(stats.index) == ["big"]
    expected = _reference_stats(weight)
    for column, value in expected.items():
        assert stats.loc["big", column] == value, column
    assert stats.loc["big", "zero_share"] > 0
    exact = torch.linalg.vector_norm(weight.double(), dim=1)
    assert stats.loc["big", "mean"] == pytest.approx(float(exact.mean()), rel=2**-22)
    assert stats.loc["big", "max"] == pytest.approx(float(exact.max()), rel=2**-23)
    # A plain {name: tensor} mapping works too.
    assert norm_stats({"big": weight}, progress=False).equals(stats)


def test_same_table_name_in_two_modules_goes_by_full_keys():
    state = {
        "towers.a.embedding_bags.t.weight": torch.ones(3, 2),
        "towers.b.embedding_bags.t.weight": torch.ones(4, 2),
        "x.embedding_bags.u.weight": torch.zeros(2, 2),
    }
    stats = norm_stats(state, progress=False)
    assert list(stats.index) == [
        "towers.a.embedding_bags.t.weight",
        "towers.b.embedding_bags.t.weight",
        "u",
    ]
    assert stats["rows"].tolist() == [3, 4, 2]


def test_norm_stats_tables_default_to_tables_to_log():
    ebc = _collection()
    assert list(norm_stats(ebc, config=CONFIG, progress=False).index) == ["tweet", "user"]
    unlogged = CONFIG.model_copy(update={"tables_to_log": None})
    assert list(norm_stats(ebc, config=unlogged, progress=False).index) == [
        "user",
        "tweet",
        "topic",
    ]
    assert list(norm_stats(ebc, tables="topic", progress=False).index) == ["topic"]
    assert list(norm_stats(ebc, tables=["topic", "user"], progress=False).index) == [
        "topic",
        "user",
    ]


def test_norm_stats_sampled_rows_are_described_exactly():
    weight = _table(30_000, 16, torch.float32)
    stats = norm_stats({"t": weight}, sample=1_000, seed=7, progress=False)
    assert stats.loc["t", "rows"] == 30_000
    assert stats.loc["t", "sampled"] == 1_000
    rows = sample_rows(30_000, 1_000, seed=7)
    expected = _reference_stats(weight[rows])
    for column in ["mean", "std", "min", *QUANTILES, "max", "zero_share"]:
        assert stats.loc["t", column] == expected[column], column
    # The same seed, the same rows; a sample larger than the table is the whole table.
    assert norm_stats({"t": weight}, sample=1_000, seed=7, progress=False).equals(stats)
    whole = norm_stats({"t": weight}, sample=10**9, progress=False)
    assert whole.loc["t", "sampled"] == 30_000


def test_norm_stats_unchanged_share_against_initial_values():
    initial = _table(2_000, 8, torch.float32)
    trained = initial.clone()
    trained[:500] += 0.5  # 500 rows moved
    trained[600, 3] = -trained[600, 3] - 1  # one value of one more row
    stats = norm_stats({"t": trained}, initial={"t": initial}, progress=False)
    assert stats.loc["t", "unchanged_share"] == (2_000 - 501) / 2_000
    sampled = norm_stats({"t": trained}, sample=400, initial={"t": initial}, progress=False)
    rows = sample_rows(2_000, 400)
    unchanged = ((trained[rows] == initial[rows]).all(dim=1)).float().mean()
    assert sampled.loc["t", "unchanged_share"] == pytest.approx(float(unchanged))
    with pytest.raises(NormError, match="must match"):
        norm_stats({"t": trained}, initial={"t": initial[:10]}, progress=False)
    with pytest.raises(UnknownTableError, match="no table named 't'"):
        norm_stats({"t": trained}, initial={"u": initial}, progress=False)


def test_norm_stats_errors_name_the_table():
    ebc = _collection()
    with pytest.raises(UnknownTableError) as info:
        norm_stats(ebc, tables=["usr"], progress=False)
    assert str(info.value) == "no table named 'usr' (tables: user, tweet, topic)"
    with pytest.raises(EmptyTableError, match="table 'e' has no rows"):
        norm_stats({"e": torch.empty(0, 4)}, progress=False)
    with pytest.raises(NormError, match="holds no embedding tables"):
        norm_stats(torch.nn.Linear(2, 2), progress=False)
    with pytest.raises(NormError, match="source must be"):
        norm_stats(42, progress=False)
    with pytest.raises(NormError, match="the list is empty"):
        norm_stats(ebc, tables=[], progress=False)
    with pytest.raises(NormError, match="sample must be"):
        norm_stats(ebc, sample=0.5, progress=False)


def test_norm_stats_single_row_and_constant_tables():
    stats = norm_stats(
        {"one": torch.tensor([[3.0, 4.0]]), "zeros": torch.zeros(10, 3)}, progress=False
    )
    assert stats.loc["one", "mean"] == 5.0
    assert np.isnan(stats.loc["one", "std"])
    assert stats.loc["one", "p99"] == 5.0
    assert stats.loc["zeros", "zero_share"] == 1.0
    assert stats.loc["zeros", "max"] == 0.0


def test_norm_histogram_counts_add_up():
    ebc = _collection()
    hist = norm_histogram(ebc, bins=20, progress=False)
    assert isinstance(hist, embviz.NormHistogram)
    assert list(hist.frame.columns) == ["table", "left", "right", "count"]
    for name in ["user", "tweet", "topic"]:
        part = hist.frame[hist.frame.table == name]
        weight = ebc.embedding_bags[name].weight.detach()
        norms = row_norms(weight).double()
        counts, edges = torch.histogram(
            norms, bins=20, range=(float(norms.min()), float(norms.max()))
        )
        assert part["count"].tolist() == counts.long().tolist()
        assert part["left"].tolist() == edges[:-1].tolist()
        assert int(part["count"].sum()) == weight.shape[0]
    assert hist.scale == "linear"
    assert hist.zero_rows == {"user": 0, "tweet": 0, "topic": 0}
    assert hist.frame.attrs == {}  # nothing a caller needs travels in attrs
    # Log-spaced bins: equal widths in log10(norm), every positive norm counted.
    weight = _table(5_000, 8, torch.float32)
    logged = norm_histogram({"w": weight}, bins=12, scale="log", progress=False)
    norms = row_norms(weight).double()
    zeros = int((norms == 0).sum())
    assert logged.scale == "log"
    assert logged.zero_rows == {"w": zeros} and zeros > 0
    assert int(logged.frame["count"].sum()) + zeros == 5_000
    ratios = (logged.frame["right"] / logged.frame["left"]).to_numpy()
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-9)
    assert logged.frame["left"].iloc[0] == float(norms[norms > 0].min())
    assert logged.frame["right"].iloc[-1] == float(norms.max())
    with pytest.raises(NormError, match="every norm is 0"):
        norm_histogram({"z": torch.zeros(3, 2)}, scale="log", progress=False)
    with pytest.raises(NormError, match="scale must be"):
        norm_histogram({"z": torch.ones(3, 2)}, scale="sqrt", progress=False)
    constant = norm_histogram({"c": torch.ones(5, 4)}, bins=3, progress=False)
    assert constant.frame["count"].tolist() == [0, 5, 0]
    with pytest.raises(NormError, match="bins"):
        norm_histogram(ebc, bins=0, progress=False)


# --------------------------------------------------------------------------- rows themselves


def _brute_nearest(weight, row, k, metric):
    x = weight.float()
    if metric == "cosine":
        scores = torch.nn.functional.cosine_similarity(x, x[row][None], dim=1)
        scores[row] = -2
        order = torch.argsort(scores, descending=True, stable=True)
    else:
        scores = torch.linalg.vector_norm(x - x[row], dim=1)
        scores[row] = float("inf")
        order = torch.argsort(scores, stable=True)
    return order[:k], scores[order[:k]]


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_nearest_matches_a_brute_force_scan(metric, dtype):
    weight = torch.randn(3_000, 16, generator=torch.Generator().manual_seed(1)).to(dtype)
    found = nearest(weight, 42, k=7, metric=metric)
    assert (found.query_row, found.metric, found.query_entity_id) == (42, metric, None)
    assert found.frame.attrs == {}
    result = found.frame
    rows, scores = _brute_nearest(weight, 42, 7, metric)
    assert result["rank"].tolist() == list(range(1, 8))
    assert result["row"].tolist() == rows.tolist()
    np.testing.assert_allclose(result["score"], scores.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        result["norm"], torch.linalg.vector_norm(weight[rows].double(), dim=1), rtol=2**-23
    )
    assert f"7 nearest to row 42 by {metric}" in found._repr_html_()


def test_nearest_with_a_vocabulary_and_an_embedding_module():
    module = torch.nn.EmbeddingBag(500, 8)
    vocab = pd.Series(np.arange(500)[::-1], index=10**15 + np.arange(500), name="row")
    found = nearest(module, 10**15 + 3, k=4, vocab=vocab)  # entity 10**15+3 is row 496
    result = found.frame
    rows, _ = _brute_nearest(module.weight.detach(), 496, 4, "cosine")
    assert result["row"].tolist() == rows.tolist()
    assert result["entity_id"].tolist() == [10**15 + 499 - r for r in rows.tolist()]
    assert found.query_entity_id == 10**15 + 3
    assert found.query_row == 496
    assert found.query == f"entity {10**15 + 3} (row 496)"


def test_nearest_errors():
    weight = torch.randn(100, 4)
    with pytest.raises(RowIndexError, match="row 100 is out of range: the table has 100 rows"):
        nearest(weight, 100)
    with pytest.raises(RowIndexError):
        nearest(weight, -1)
    vocab = pd.Series([0, 1], index=[7, 8])
    with pytest.raises(UnknownEntityError) as info:
        nearest(weight, 9, vocab=vocab)
    assert str(info.value) == "entity id 9 is not in the vocabulary (2 ids)"
    with pytest.raises(NormError, match="k=100 is too large: the table has 100 rows"):
        nearest(weight, 0, k=100)
    with pytest.raises(NormError, match="k must be a positive integer"):
        nearest(weight, 0, k=0)
    with pytest.raises(NormError, match="metric must be"):
        nearest(weight, 0, metric="dot")
    weight[5] = 0
    with pytest.raises(NormError, match="row 5 has norm 0"):
        nearest(weight, 5)
    with pytest.raises(NormError, match="outside"):
        nearest(weight, 7, vocab=pd.Series([100], index=[7]))


def test_project_is_the_pca_of_the_whole_table_shown_on_a_sample():
    generator = torch.Generator().manual_seed(0)
    # Two strong directions and noise.
    basis = torch.linalg.qr(torch.randn(12, 12, generator=generator)).Q
    coords = torch.randn(4_000, 12, generator=generator) * torch.tensor([5.0, 3.0] + [0.1] * 10)
    weight = coords @ basis.T + 1.0
    projection = project(weight, n=2_000, seed=3)
    frame = projection.frame
    rows = frame["row"].to_numpy()
    assert len(rows) == 2_000 and (np.diff(rows) > 0).all()
    assert projection.sampled and projection.stratified_by == "norm"
    assert list(frame.columns) == ["row", "x", "y", "norm"]
    exact_norms = torch.linalg.vector_norm(weight.double()[rows], dim=1).numpy()
    np.testing.assert_allclose(frame["norm"], exact_norms, rtol=1e-6)
    # Against an exact eigendecomposition of the whole table's covariance, up to sign.
    x = weight.double()
    centred = x - x.mean(0)
    values, vectors = torch.linalg.eigh(centred.T @ centred)
    exact = centred[rows] @ vectors[:, [-1, -2]]
    for column, i in (("x", 0), ("y", 1)):
        got = torch.tensor(frame[column].to_numpy(), dtype=torch.float64)
        sign = torch.sign((got * exact[:, i]).sum())
        torch.testing.assert_close(got * sign, exact[:, i], rtol=0, atol=1e-5)
    ratio = projection.explained_variance
    expected = (values[[-1, -2]] / values.sum()).tolist()
    np.testing.assert_allclose(ratio, expected, rtol=1e-9)
    assert ratio[0] > ratio[1] > 0.2
    assert frame.equals(project(weight, n=2_000, seed=3).frame)


def test_project_labels_and_errors():
    weight = torch.randn(50, 3)
    vocab = {100 + r: r for r in range(50)}
    frame = project(weight, n=10, vocab=vocab).frame
    assert (frame["entity"] - frame["row"] == 100).all()
    assert len(project(weight, n=10**6).frame) == 50
    with pytest.raises(NormError, match="at least 2 columns"):
        project(torch.randn(10, 1))
    with pytest.raises(NormError, match="method: must be 'pca' or 'umap'"):
        project(weight, method="tsne")
    with pytest.raises(EmptyTableError):
        project(torch.empty(0, 3))


def test_fp16_error_against_a_direct_computation():
    weight = _table(5_000, 16, torch.float32, seed=2)
    weight[7, 0] = 70_000.0  # beyond fp16's range
    err = fp16_error(weight, pairs=3_000, seed=1)
    x = weight.double()
    h = weight.half().double()
    n, nh = torch.linalg.vector_norm(x, dim=1), torch.linalg.vector_norm(h, dim=1)
    rel = (nh - n).abs() / n
    rel[(n == 0) & (nh == 0)] = 0
    assert err["rows"] == 5_000
    assert err["overflow_rows"] == 1
    assert err["norm_rel_err_max"] == float("inf")
    finite = torch.isfinite(rel)
    assert float(rel[finite].max()) <= 2**-11  # fp16 rounding: at most half an ulp per value
    assert 0 < float(rel[finite].mean()) < 2**-11
    assert err["pairs"] <= 3_000
    assert 0 < err["cos_abs_err_mean"] <= err["cos_abs_err_max"] < 1e-2
    assert err["cos_rel_err_mean"] > 0
    # An fp16 table loses nothing more.
    zero = fp16_error(weight[8:].half(), pairs=100)
    assert zero["norm_rel_err_max"] == 0 and zero["cos_abs_err_max"] == 0


def test_fp16_error_table_by_table():
    ebc = _collection()
    table = fp16_error_table(ebc, tables=["user", "tweet"], pairs=500, progress=False)
    assert list(table.index) == ["user", "tweet"]
    assert table.loc["user", "norm_rel_err_max"] > 0
    assert table.loc["tweet", "norm_rel_err_max"] == 0  # already fp16
    expected = fp16_error(ebc.embedding_bags["user"].weight, pairs=500)
    assert table.loc["user", "cos_abs_err_mean"] == expected["cos_abs_err_mean"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_row_norms_on_cuda_stay_on_the_device_within_the_budget(dtype):
    weight = torch.randn(300_000, 48, device="cuda").to(dtype)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    norms = row_norms(weight)
    torch.cuda.synchronize()
    assert norms.device == weight.device and norms.dtype == torch.float32
    assert torch.cuda.max_memory_allocated() - before - norms.numel() * 4 <= MEMORY_BUDGET_BYTES
    assert_accurate(norms, weight)
    rows = sample_rows(300_000, 1_000, seed=2)
    assert_accurate(row_norms(weight, rows), weight[rows.cuda()])


def test_cpu_capabilities_follow_torchs_rules(tmp_path):
    """scripts/cpu_capabilities.py: what `make test` reruns the accuracy tests under."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    try:
        import cpu_capabilities
    finally:
        sys.path.pop(0)
    cases = {
        "fpu sse sse2": "default",
        "sse4_2 avx avx2": "default",  # torch's avx2 kernels need FMA too
        "sse4_2 avx avx2 fma": "avx2",
        "avx2 fma avx512f avx512cd": "avx2",  # no BW/DQ/VL (e.g. Xeon Phi)
        "avx2 fma avx512f avx512bw avx512dq avx512vl": "avx512",
    }
    for flags, expected in cases.items():
        info = tmp_path / "cpuinfo"
        info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        assert cpu_capabilities.from_cpuinfo(str(info)) == expected, flags
    assert cpu_capabilities.from_cpuinfo(str(tmp_path / "missing")) == "default"
    out = subprocess.run(
        [sys.executable, "scripts/cpu_capabilities.py"],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout.split()
    assert out[0] == "default"
    assert out[-1] == str(torch.backends.cpu.get_cpu_capability()).lower() or (
        "ATEN_CPU_CAPABILITY" in os.environ
    )
