from __future__ import annotations

import math

import pytest
import torch
import torchrec
import torchsnapshot

import embviz
from embviz import Mode
from embviz.build import (
    BuildError,
    BuildRefused,
    BuildWarning,
    build_collection,
    preflight,
    scale_config,
)
from embviz.errors import ArgumentError, EmbvizError
from embviz.measure import measure_collection, predicted_vs_measured
from embviz.memory import memory_table
from embviz.snapshots import SnapshotError

RANKER_SCALE = 1e-4  # user_id 10,000 x 64 ... country 1 row


@pytest.fixture(scope="module")
def ranker():
    return embviz.load_config(embviz.example("ranker"))


def tables_config(*tables, **extra):
    return embviz.LargeEmbeddingsConfig.model_validate({"tables": list(tables), **extra})


def table(name, rows=50, dim=4, optimizer=None, data_type="fp32", **extra):
    return {
        "name": name,
        "num_embeddings": rows,
        "embedding_dim": dim,
        "data_type": data_type,
        "optimizer": optimizer or {"sgd": {"lr": 0.5}},
        **extra,
    }


def batch(names, ids):
    """One bag per table holding ``ids``."""
    return torchrec.KeyedJaggedTensor(
        keys=names,
        values=torch.tensor(ids * len(names), dtype=torch.int64),
        lengths=torch.full((len(names),), len(ids), dtype=torch.int32),
    )


@pytest.fixture(scope="module")
def ranker_build(ranker):
    with pytest.warns(BuildWarning, match="'item_id', 'author_id', 'ad_campaign', 'language'"):
        ebc = build_collection(ranker, "cpu", scale=RANKER_SCALE, progress=False)
    return ebc


def test_collection_as_large_embeddings_builds_it(ranker, ranker_build):
    ebc = ranker_build
    scaled = scale_config(ranker, RANKER_SCALE)
    assert isinstance(ebc, torchrec.EmbeddingBagCollection)
    assert ebc.device == torch.device("cpu")
    configs = ebc.embedding_bag_configs()
    assert [c.name for c in configs] == ranker.table_names
    for config, table_cfg in zip(configs, scaled.tables, strict=True):
        assert config.feature_names == [table_cfg.name]
        assert config.pooling == torchrec.PoolingType.SUM
        weight = ebc.embedding_bags[table_cfg.name].weight
        assert tuple(weight.shape) == (table_cfg.num_embeddings, table_cfg.embedding_dim)
        expected = torch.float32 if table_cfg.data_type.value == "fp32" else torch.float16
        assert weight.dtype == expected
        # torchrec's initialisation: uniform in +-sqrt(1 / rows)
        bound = math.sqrt(1 / table_cfg.num_embeddings)
        assert weight.abs().max() <= bound * (1 + 1e-3)
        if weight.numel() > 100:
            assert weight.float().std() > bound / 4
    assert scaled.table("user_id").num_embeddings == 10_000
    assert scaled.table("country").num_embeddings == 1  # at least one row


def test_measured_equals_memory_table_and_weights_do_not_change(ranker, ranker_build):
    ebc = ranker_build
    before = {n: ebc.embedding_bags[n].weight.detach().clone() for n in ranker.table_names}
    measured = measure_collection(ebc)
    predicted = memory_table(scale_config(ranker, RANKER_SCALE), "torch", Mode.TRAIN)
    assert list(measured.index) == list(predicted.index)
    for column in ("weight_bytes", "optimizer_bytes", "total_bytes"):
        assert measured[column].tolist() == predicted[column].tolist(), column
        assert measured[column].dtype == "int64"
    assert (measured["build_seconds"] >= 0).all()
    assert "weight_allocated_bytes" not in measured  # CUDA only
    # The default step has empty bags: zero gradients, no change, and the eps-0 / fp16 tables
    # (NaN in torch's Adam/Adagrad) are put back.
    for name, weight in before.items():
        assert torch.equal(weight, ebc.embedding_bags[name].weight), name
    compared = predicted_vs_measured(ranker, measured, scale=RANKER_SCALE)
    assert (compared["difference_bytes"] == 0).all()
    assert (compared["relative_difference"] == 0).all()
    assert compared.loc["item_id", "predicted_optimizer_bytes"] > 0


def test_optimizers_follow_the_config_a_real_step():
    cfg = tables_config(
        table("sgd", optimizer={"sgd": {"lr": 0.5}}),
        table("momentum", optimizer={"sgd": {"lr": 0.5, "momentum": 0.9}}),
        table("adagrad", optimizer={"adagrad": {"lr": 0.1, "eps": 1e-8}}),
        table("adam", optimizer={"adam": {"lr": 0.01}}),
    )
    ebc = build_collection(cfg, "cpu", progress=False)
    before = {n: ebc.embedding_bags[n].weight.detach().clone() for n in cfg.table_names}
    measured = measure_collection(ebc, batch(cfg.table_names, [3]))
    after = {n: ebc.embedding_bags[n].weight.detach() for n in cfg.table_names}
    # d(sum of pooled)/d(row 3) is 1 everywhere: SGD moves it by -lr, Adagrad and Adam by -lr
    # (their first step is grad / sqrt(grad^2)), other rows stay.
    ones = torch.ones(4)
    torch.testing.assert_close(after["sgd"][3], before["sgd"][3] - 0.5 * ones)
    torch.testing.assert_close(after["momentum"][3], before["momentum"][3] - 0.5 * ones)
    torch.testing.assert_close(after["adagrad"][3], before["adagrad"][3] - 0.1 * ones)
    torch.testing.assert_close(after["adam"][3], before["adam"][3] - 0.01 * ones)
    for name in cfg.table_names:
        assert torch.equal(after[name][4:], before[name][4:]), name
    predicted = memory_table(cfg, "torch", Mode.TRAIN)
    assert measured["optimizer_bytes"].tolist() == predicted["optimizer_bytes"].tolist()
    assert measured.loc["momentum", "optimizer_bytes"] == 50 * 4 * 4
    assert measured.loc["adam", "optimizer_bytes"] == 2 * 50 * 4 * 4 + 4


def test_without_optimizers_weights_only():
    cfg = tables_config(table("a", optimizer={"adam": {"lr": 0.1}}), table("b"))
    ebc = build_collection(cfg, "cpu", apply_optimizers=False, progress=False)
    measured = measure_collection(ebc)
    assert measured["optimizer_bytes"].tolist() == [0, 0]
    inference = memory_table(cfg, "torch", Mode.INFERENCE)
    assert measured["total_bytes"].tolist() == inference["total_bytes"].tolist()
    compared = predicted_vs_measured(cfg, measured, mode=Mode.INFERENCE)
    assert (compared["difference_bytes"] == 0).all()
    # Against the TRAIN prediction the missing Adam state shows.
    trained = predicted_vs_measured(cfg, measured)
    assert trained.loc["a", "difference_bytes"] == -(2 * 50 * 4 * 4 + 4)


def test_meta_is_never_refused_and_cannot_be_measured(ranker):
    ebc = build_collection(ranker, "meta", progress=False)
    assert all(p.device.type == "meta" for p in ebc.parameters())
    assert ebc.embedding_bags["user_id"].weight.shape == (100_000_000, 64)
    check = preflight(ranker, "meta")
    assert check.fits and check.free_bytes is None
    assert check.needed_bytes == int(memory_table(ranker, "torch")["total_bytes"].sum())
    with pytest.raises(BuildError, match="'meta' and holds no memory"):
        measure_collection(ebc)


def test_preflight_refuses_with_needed_free_largest_tables_and_advice(ranker):
    with pytest.raises(BuildRefused) as info:
        preflight(ranker, "cpu", usable_fraction=1e-9)
    error = info.value
    assert isinstance(error, MemoryError) and isinstance(error, EmbvizError)
    needed = int(memory_table(ranker, "torch")["total_bytes"].sum())
    assert error.needed_bytes == needed
    assert error.free_bytes > 0
    assert error.usable_bytes == int(error.free_bytes * 1e-9)
    assert list(error.tables.index[:2]) == ["user_id", "item_id"]
    message = str(error)
    assert f"{needed:,} bytes" in message
    assert "RAM available" in message
    assert "user_id: 11.92 GiB" in message
    for advice in ("device='meta'", "scale=", "fp16", "embviz.plan", "--nproc"):
        assert advice in message, advice
    # A prediction that fits passes and says so.
    ok = preflight(ranker, "cpu", scale=RANKER_SCALE)
    assert ok.fits and ok.needed_bytes < ok.usable_bytes <= ok.free_bytes


def test_build_refuses_before_allocating():
    huge = tables_config(table("huge", rows=10**12, dim=64))
    with pytest.raises(BuildRefused, match="refusing to build on cpu"):
        build_collection(huge, "cpu", progress=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "auto_cuda"])
def test_cuda_without_cuda(device):
    if device == "auto_cuda":
        assert embviz.build.resolve_device("auto") == torch.device("cpu")
        return
    with pytest.raises(BuildError, match="CUDA is not available"):
        build_collection(tables_config(table("a")), device, progress=False)


@pytest.mark.parametrize("device", ["tpu", "gpu", "cuda:x"])
def test_unknown_device(device):
    with pytest.raises(
        ArgumentError, match=r"^device: must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'meta'"
    ):
        build_collection(tables_config(table("a")), device, progress=False)


@pytest.mark.parametrize("scale", [0, -1, 1.5, True, "0.5"])
def test_bad_scale(scale):
    with pytest.raises(ArgumentError, match=r"^scale: must be a number in \(0, 1\]"):
        build_collection(tables_config(table("a")), "cpu", scale=scale, progress=False)


def test_progress_bar(capsys):
    cfg = tables_config(table("a"), table("b"))
    build_collection(cfg, "cpu", progress=True)
    assert "building" in capsys.readouterr().err
    build_collection(cfg, "cpu", progress=False)
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------- pretrained


@pytest.fixture
def source(tmp_path):
    """A snapshot laid out as the-algorithm-ml's: model.large_embeddings.ebc..."""
    torch.manual_seed(1)
    ebc = torchrec.EmbeddingBagCollection(
        tables=[
            torchrec.EmbeddingBagConfig(
                name="user", num_embeddings=40, embedding_dim=4, feature_names=["user"]
            ),
            torchrec.EmbeddingBagConfig(
                name="tweet",
                num_embeddings=20,
                embedding_dim=8,
                feature_names=["tweet"],
                data_type=torchrec.DataType.FP16,
            ),
        ]
    )
    model = torch.nn.Module()
    model.large_embeddings = torch.nn.Module()
    model.large_embeddings.ebc = ebc
    path = embviz.save_snapshot(model, tmp_path / "pretrained")
    return path, ebc


def pretrained(path, name):
    return {"pretrained": {"emb_name": name, "embedding_snapshot_uri": str(path)}}


def test_pretrained_tables_are_loaded(source):
    path, ebc = source
    cfg = tables_config(
        table("users", rows=40, dim=4, **pretrained(path, "user")),
        table("tweets", rows=20, dim=8, data_type="fp16", **pretrained(path, "tweet")),
        table("fresh", rows=10, dim=4),
    )
    built = build_collection(cfg, "cpu", progress=False)
    assert torch.equal(built.embedding_bags["users"].weight, ebc.embedding_bags["user"].weight)
    assert torch.equal(built.embedding_bags["tweets"].weight, ebc.embedding_bags["tweet"].weight)
    assert built.embedding_bags["fresh"].weight.abs().max() <= math.sqrt(1 / 10)


def test_pretrained_problems_are_all_reported_before_loading(source, tmp_path, monkeypatch):
    path, _ = source
    cfg = tables_config(
        table("ok", rows=40, dim=4, **pretrained(path, "user")),
        table("shape", rows=41, dim=4, **pretrained(path, "user")),
        table("dtype", rows=20, dim=8, **pretrained(path, "tweet")),
        table("name", rows=20, dim=8, **pretrained(path, "item")),
        table("missing", rows=20, dim=8, **pretrained(tmp_path / "nowhere", "user")),
    )
    loads = []
    monkeypatch.setattr(torchsnapshot.Snapshot, "read_object", lambda *a, **k: loads.append(a))
    with pytest.raises(SnapshotError) as info:
        build_collection(cfg, "cpu", progress=False)
    message = str(info.value)
    assert message.startswith("nothing was loaded")
    assert "table 'shape': pretrained 'user'" in message
    assert "is 40 x 4 float32, the config asks for 41 x 4 float32" in message
    assert "table 'dtype': pretrained 'tweet'" in message
    assert "20 x 8 float16, the config asks for 20 x 8 float32" in message
    assert "table 'name'" in message and "no table 'item'" in message
    assert "'user', 'tweet'" in message
    assert "table 'missing'" in message and "no such snapshot" in message
    assert "'ok'" not in message
    assert loads == []  # no tensor was read


def test_scaled_pretrained_tables_are_checked_not_loaded(source):
    path, ebc = source
    cfg = tables_config(table("users", rows=40, dim=4, **pretrained(path, "user")))
    with pytest.warns(BuildWarning, match="'users'.*checked but not loaded"):
        built = build_collection(cfg, "cpu", scale=0.5, progress=False)
    weight = built.embedding_bags["users"].weight
    assert weight.shape == (20, 4)
    assert not torch.equal(weight, ebc.embedding_bags["user"].weight[:20])
    bad = tables_config(table("users", rows=40, dim=8, **pretrained(path, "user")))
    with pytest.raises(SnapshotError, match="the config has dim 8"):
        build_collection(bad, "cpu", scale=0.5, progress=False)


# --------------------------------------------------------------------------- scripts/gpu_check.py


@pytest.fixture(scope="module")
def gpu_check():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_needed_bytes_counts_the_weight_copies(gpu_check, ranker):
    predicted = memory_table(ranker, "torch", Mode.TRAIN)
    # measure_collection keeps a copy of the tables whose eps vanishes, to put them back, and
    # the largest table's dense gradient (user_id) lives during its step.
    copies = sum(
        int(predicted.loc[n, "weight_bytes"])
        for n in ("item_id", "author_id", "ad_campaign", "language")
    )
    gradient = int(predicted.loc["user_id", "weight_bytes"])
    expected = int(predicted["total_bytes"].sum()) + copies + gradient
    assert gpu_check.needed_bytes(ranker, None) == expected


def test_gpu_check_choose_scale(gpu_check, ranker):
    need = gpu_check.needed_bytes(ranker, None)
    assert gpu_check.choose_scale(ranker, free_bytes=2 * need) is None  # fits in half
    free = need // 7
    scale = gpu_check.choose_scale(ranker, free_bytes=free)
    budget = free * gpu_check.FRACTION
    assert 0 < scale < 1
    assert gpu_check.needed_bytes(ranker, scale) <= budget
    digits = f"{scale:.10f}".rstrip("0").split(".")[1].lstrip("0")
    assert len(digits) <= 2  # two significant digits
    step = 10.0 ** (math.floor(math.log10(scale)) - 1)
    assert gpu_check.needed_bytes(ranker, scale + step) > budget  # the largest such scale
    with pytest.raises(ValueError, match="not even a tiny copy"):
        gpu_check.choose_scale(ranker, free_bytes=10)


def comparison_frame(predicted, tensors, allocated=None):
    import pandas as pd

    frame = pd.DataFrame(
        {"predicted_total_bytes": predicted, "measured_total_bytes": tensors},
        index=pd.Index([f"t{i}" for i in range(len(predicted))], name="table"),
    )
    if allocated is not None:
        frame["allocated_total_bytes"] = pd.array(allocated, dtype="Int64")
    return frame


def test_gpu_check_bytes_check(gpu_check):
    g = 10**9
    frame = gpu_check.bytes_check(
        comparison_frame(
            [g, g, g, 0, g],
            [g, g, g, 0, 1_011_000_000],
            [g, 1_009_000_000, 1_021_000_000, 0, None],
        )
    )
    assert frame["ok"].tolist() == [True, True, False, True, False]
    assert frame.loc["t1", "allocated_difference"] == pytest.approx(0.009)
    assert frame.loc["t2", "allocated_difference"] == pytest.approx(0.021)
    assert frame.loc["t4", "tensor_difference"] == pytest.approx(0.011)
    # Within the caching allocator's rounding (2 MiB per device tensor) a small table passes.
    small = gpu_check.bytes_check(
        comparison_frame([4_000_000, 4_000_000], [4_000_000] * 2, [6_000_000, 9_000_000]),
        tensor_counts={"t0": 1, "t1": 2},
    )
    assert small["ok"].tolist() == [True, False]
    assert small["allocator_slack"].tolist() == [2 * 1024**2, 4 * 1024**2]
    assert gpu_check.device_tensors(
        tables_config(
            table("s"),
            table("m", optimizer={"sgd": {"lr": 0.1, "momentum": 0.9}}),
            table("g", optimizer={"adagrad": {"lr": 0.1}}),
            table("a", optimizer={"adam": {"lr": 0.1}}),
        )
    ) == {"s": 1, "m": 2, "g": 2, "a": 3}
    # Without CUDA columns only the tensors are compared.
    cpu = gpu_check.bytes_check(comparison_frame([g, 0], [g, 4]))
    assert cpu["ok"].tolist() == [True, False]
    assert "allocated_bytes" not in cpu


def test_gpu_check_bandwidth(gpu_check):
    from types import SimpleNamespace

    h200 = SimpleNamespace(memory_clock_rate=3_201_000, memory_bus_width=6144)  # kHz, bits
    assert gpu_check.nominal_bandwidth(h200) == pytest.approx(2 * 3.201e9 * 6144 / 8)
    assert gpu_check.nominal_bandwidth(SimpleNamespace()) is None
    cfg = tables_config(table("a", rows=1000, dim=16), table("b", rows=10, dim=4))
    measured = measure_collection(build_collection(cfg, "cpu", progress=False))
    frame = gpu_check.build_vs_bandwidth(measured, bandwidth=1e9)
    assert frame.loc["a", "weight_bytes"] == 64_000
    assert frame.loc["(total)", "weight_bytes"] == 64_160
    assert frame.loc["(total)", "build_seconds"] == pytest.approx(measured["build_seconds"].sum())
    assert frame.loc["a", "ideal_seconds"] == pytest.approx(64e-6)
    row = frame.loc["a"]
    assert row["share_of_bandwidth"] == pytest.approx(64_000 / row["build_seconds"] / 1e9)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_gpu_check_without_cuda(gpu_check, capsys):
    assert gpu_check.main([]) == 2
    assert "gpu_check: no CUDA device here" in capsys.readouterr().err
