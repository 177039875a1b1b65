"""Memory rules: hand-computed bytes for the bundled ranker config, modes, what-ifs, gpu_fit.

The rules themselves are checked against real torch/torchrec allocations in
tests/test_memory_measured.py; this file pins the arithmetic and the API contract.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import embviz
from embviz import DataType, Mode
from embviz.errors import ArgumentError
from embviz.memory import (
    BYTE_COLUMNS,
    PLANNER_RESERVED_FRACTION,
    GpuFit,
    UnknownTableError,
    binary_unit,
    dtype_savings,
    gpu_fit,
    human_bytes,
    largest_tables,
    memory_table,
    totals,
    with_dtype,
    with_totals,
)

GIB = 1024**3


@pytest.fixture(scope="module")
def ranker():
    return embviz.load_config(embviz.example("ranker"))


# (table, weight bytes, fused state, torch state), worked out by hand from ranker.yaml:
# weights R*D*e; fused state fp32 (adagrad R*D*4, adam 2*R*D*4, sgd 0);
# torch state in the weight dtype (+4-byte step for adagrad/adam, momentum buffer for SGD 0.9).
RANKER = [
    # 100M x 64 fp16 sgd
    ("user_id", 12_800_000_000, 0, 0),
    # 20M x 128 fp16 adagrad: fused 20M*128*4, torch 20M*128*2 + 4
    ("item_id", 5_120_000_000, 10_240_000_000, 5_120_000_004),
    # 50M x 32 fp16 sgd
    ("user_follows_hashed", 3_200_000_000, 0, 0),
    # 5M x 64 fp32 adagrad
    ("author_id", 1_280_000_000, 1_280_000_000, 1_280_000_004),
    # 2M x 64 fp32 adam
    ("query_token", 512_000_000, 1_024_000_000, 1_024_000_004),
    # 1M x 96 fp16 adagrad: fused 1M*96*4, torch 1M*96*2 + 4
    ("ad_campaign", 192_000_000, 384_000_000, 192_000_004),
    # 100k x 256 fp32 adam
    ("topic", 102_400_000, 204_800_000, 204_800_004),
    # 10k x 32 fp32 adam
    ("item_category", 1_280_000, 2_560_000, 2_560_004),
    # 5000 x 16 fp32 sgd momentum 0.9: fused EXACT_SGD keeps nothing, torch a momentum buffer
    ("app_version", 320_000, 0, 320_000),
    # 1000 x 16 fp32 adam
    ("country", 64_000, 128_000, 128_004),
    # 1000 x 16 fp32 adagrad
    ("language", 64_000, 64_000, 64_004),
    # 1024 x 16 fp32 sgd
    ("device_type", 65_536, 0, 0),
]


def test_columns_index_and_dtypes(ranker):
    frame = memory_table(ranker)
    assert frame.index.name == "table"
    assert list(frame.index) == ranker.table_names
    for column in [
        "num_embeddings",
        "embedding_dim",
        "data_type",
        "optimizer",
        "logged",
        *BYTE_COLUMNS,
    ]:
        assert column in frame.columns
    for column in BYTE_COLUMNS:
        assert frame[column].dtype == np.int64, column
    assert frame["logged"].dtype == bool
    assert set(frame["data_type"]) == {"fp32", "fp16"}
    assert set(frame["optimizer"]) == {"sgd", "adagrad", "adam"}
    assert frame.loc["user_id", "num_embeddings"] == 100_000_000
    assert frame.loc["topic", "embedding_dim"] == 256
    assert frame["logged"].to_dict() == {n: n in ranker.logged_tables for n in ranker.table_names}


@pytest.mark.parametrize("state_column", [2, 3], ids=["fused", "torch"])
def test_ranker_bytes_by_hand(ranker, state_column):
    mode = "fused" if state_column == 2 else "torch"
    frame = memory_table(ranker, mode)
    for row in RANKER:
        name, weights, state = row[0], row[1], row[state_column]
        assert frame.loc[name, "weight_bytes"] == weights, name
        assert frame.loc[name, "optimizer_bytes"] == state, name
        assert frame.loc[name, "total_bytes"] == weights + state, name
    assert totals(frame)["total_bytes"] == sum(r[1] + r[state_column] for r in RANKER)


def test_ranker_fused_total_and_kernels(ranker):
    frame = memory_table(ranker)
    # 23,208,193,536 weight bytes + 13,135,552,000 fp32 state = 36,343,745,536 (33.85 GiB)
    assert totals(frame)["weight_bytes"] == 23_208_193_536
    assert totals(frame)["optimizer_bytes"] == 13_135_552_000
    assert totals(frame)["total_bytes"] == 36_343_745_536
    assert frame.loc["item_id", "optimizer_kernel"] == "EXACT_ADAGRAD"
    assert frame.loc["query_token", "optimizer_kernel"] == "ADAM"
    assert frame.loc["user_id", "optimizer_kernel"] == "EXACT_SGD"
    assert memory_table(ranker, "torch").loc["item_id", "optimizer_kernel"] == "torch.optim.Adagrad"
    assert "momentum" in frame.loc["app_version", "note"]
    assert memory_table(ranker, "torch").loc["app_version", "note"] == ""


@pytest.mark.parametrize("mode", [Mode.EVALUATE, Mode.INFERENCE, "evaluate", "inference"])
@pytest.mark.parametrize("state", ["fused", "torch"])
def test_no_optimizer_state_outside_training(ranker, mode, state):
    frame = memory_table(ranker, state, mode)
    assert (frame["optimizer_bytes"] == 0).all()
    assert (frame["total_bytes"] == frame["weight_bytes"]).all()
    # The planner counts weights only there too.
    assert (frame["planner_bytes"] == frame["weight_bytes"]).all()
    assert (frame["fp32_total_bytes"] == frame["num_embeddings"] * frame["embedding_dim"] * 4).all()
    assert (frame["fp16_total_bytes"] == frame["num_embeddings"] * frame["embedding_dim"] * 2).all()


def test_mode_accepts_enum_and_string(ranker):
    pd.testing.assert_frame_equal(memory_table(ranker, mode="train"), memory_table(ranker))


def test_fp32_and_fp16_totals_follow_the_same_rules(ranker):
    frame = memory_table(ranker)
    as_fp32 = memory_table(with_dtype(ranker, DataType.FP32))
    as_fp16 = memory_table(with_dtype(ranker, "fp16"))
    assert (frame["fp32_total_bytes"] == as_fp32["total_bytes"]).all()
    assert (frame["fp16_total_bytes"] == as_fp16["total_bytes"]).all()
    # item_id (adagrad): fp16 halves the weights only; fused state stays fp32.
    assert frame.loc["item_id", "fp32_total_bytes"] == 20_000_000 * 128 * (4 + 4)
    assert frame.loc["item_id", "fp16_total_bytes"] == 20_000_000 * 128 * (2 + 4)
    torch_frame = memory_table(ranker, "torch")
    # torch state follows the weight dtype: fp16 Adagrad is R*D*2 + R*D*2 + 4.
    assert torch_frame.loc["item_id", "fp16_total_bytes"] == 20_000_000 * 128 * 4 + 4
    assert torch_frame.loc["item_id", "fp32_total_bytes"] == 20_000_000 * 128 * 8 + 4


def test_with_dtype_only_named_tables_and_input_untouched(ranker):
    before = memory_table(ranker)
    changed = with_dtype(ranker, DataType.FP16, tables=["author_id", "topic"])
    assert changed is not ranker
    after = memory_table(changed)
    assert after.loc["author_id", "data_type"] == "fp16"
    assert after.loc["topic", "data_type"] == "fp16"
    assert after.loc["query_token", "data_type"] == "fp32"
    assert after.loc["author_id", "weight_bytes"] == 5_000_000 * 64 * 2
    # author_id adagrad fused state stays fp32: 5M*64*4
    assert after.loc["author_id", "optimizer_bytes"] == 5_000_000 * 64 * 4
    pd.testing.assert_frame_equal(memory_table(ranker), before)
    assert ranker.table("author_id").data_type is DataType.FP32
    saved = totals(before)["total_bytes"] - totals(after)["total_bytes"]
    assert saved == 5_000_000 * 64 * 2 + 100_000 * 256 * 2


def test_with_dtype_errors(ranker):
    with pytest.raises(UnknownTableError) as info:
        with_dtype(ranker, DataType.FP16, tables=["user_id", "nope", "also_nope"])
    message = str(info.value)
    assert "'also_nope'" in message and "'nope'" in message and "user_id" in message
    assert isinstance(info.value, KeyError) and isinstance(info.value, embviz.EmbvizError)
    assert info.value.unknown == ["also_nope", "nope"]
    with pytest.raises(ArgumentError, match="data_type"):
        with_dtype(ranker, "bf16")


def test_rowwise_adagrad_what_if(ranker):
    exact = memory_table(ranker)
    rowwise = memory_table(ranker, adagrad="rowwise")
    assert rowwise.loc["item_id", "optimizer_bytes"] == 20_000_000 * 4
    assert rowwise.loc["author_id", "optimizer_bytes"] == 5_000_000 * 4
    assert rowwise.loc["language", "optimizer_bytes"] == 1_000 * 4
    assert rowwise.loc["item_id", "optimizer_kernel"] == "EXACT_ROWWISE_ADAGRAD"
    others = exact["optimizer"] != "adagrad"
    pd.testing.assert_series_equal(
        rowwise.loc[others, "total_bytes"], exact.loc[others, "total_bytes"]
    )
    saved = totals(exact)["total_bytes"] - totals(rowwise)["total_bytes"]
    assert saved == sum(
        r * d * 4 - r * 4
        for r, d in [(20_000_000, 128), (5_000_000, 64), (1_000_000, 96), (1_000, 16)]
    )


def test_planner_bytes_follow_torchrec_multipliers(ranker):
    frame = memory_table(ranker)
    w = frame["weight_bytes"]
    # sgd 0, adagrad 1, adam 2 times the weight bytes, whatever the dtype.
    assert frame.loc["user_id", "planner_bytes"] == w["user_id"]
    assert frame.loc["item_id", "planner_bytes"] == 2 * w["item_id"]
    assert frame.loc["query_token", "planner_bytes"] == 3 * w["query_token"]
    assert frame.loc["app_version", "planner_bytes"] == w["app_version"]
    # fp32 fused: the planner agrees with the exact figure; fp16 with state: 2x low on state.
    fp32 = frame["data_type"] == "fp32"
    assert (frame.loc[fp32, "planner_bytes"] == frame.loc[fp32, "total_bytes"]).all()
    assert (frame.loc[fp32, "planner_note"] == "").all()
    item = frame.loc["item_id"]
    assert item["total_bytes"] - item["planner_bytes"] == 20_000_000 * 128 * 2
    assert "#4142" in item["planner_note"]
    assert frame.loc["user_id", "planner_note"] == ""  # fp16 SGD: nothing to disagree on
    rowwise = memory_table(ranker, adagrad="rowwise")
    # torchrec's RowWiseAdagrad multiplier is 1/D: fp16 item_id comes out R*2 instead of R*4.
    assert rowwise.loc["item_id", "planner_bytes"] == 5_120_000_000 + 20_000_000 * 2
    assert rowwise.loc["author_id", "planner_bytes"] == rowwise.loc["author_id", "total_bytes"]
    torch_frame = memory_table(ranker, "torch")
    assert "step" in torch_frame.loc["topic", "planner_note"]
    assert "momentum" in torch_frame.loc["app_version", "planner_note"]


def test_accounting_travels_as_columns(ranker):
    frame = memory_table(ranker, "torch", "evaluate")
    assert (frame["optimizer_state"] == "torch").all() and (frame["mode"] == "evaluate").all()
    assert frame.attrs == {}
    fused = memory_table(ranker, adagrad="rowwise")
    assert set(fused["optimizer_state"]) == {"fused"} and set(fused["mode"]) == {"train"}
    # Selections and concatenations keep them, unlike DataFrame.attrs.
    both = pd.concat([frame.iloc[:2], fused.iloc[:2]])
    assert list(both["mode"]) == ["evaluate", "evaluate", "train", "train"]


def test_memory_table_imports_neither_torch_nor_torchrec(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys, embviz\n"
        "cfg = embviz.load_config(embviz.example('ranker'))\n"
        "for state in ('fused', 'torch'):\n"
        "    embviz.memory_table(cfg, state)\n"
        "embviz.memory_table(cfg, adagrad='rowwise')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchrec', 'fbgemm_gpu')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    ).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"optimizer_state": "fbgemm"}, "optimizer_state"),
        ({"mode": "training"}, "mode"),
        ({"adagrad": "row_wise"}, "adagrad"),
        ({"optimizer_state": "torch", "adagrad": "rowwise"}, "adagrad"),
    ],
)
def test_invalid_arguments_name_the_argument(ranker, kwargs, argument):
    with pytest.raises(ArgumentError) as info:
        memory_table(ranker, **kwargs)
    assert info.value.argument == argument
    assert str(info.value).startswith(f"{argument}:")
    assert isinstance(info.value, ValueError) and isinstance(info.value, embviz.EmbvizError)


def test_cfg_must_be_a_config():
    with pytest.raises(ArgumentError, match="cfg"):
        memory_table({"tables": []})


def test_totals_and_totals_row(ranker):
    frame = memory_table(ranker)
    sums = totals(frame)
    assert list(sums.index) == list(BYTE_COLUMNS)
    assert sums.dtype == np.int64
    for column in BYTE_COLUMNS:
        assert sums[column] == int(frame[column].sum())
    shown = with_totals(frame)
    assert list(shown.index[:-1]) == ranker.table_names
    assert shown.index[-1] == "(total)"
    assert shown.loc["(total)", "total_bytes"] == sums["total_bytes"]
    assert shown["total_bytes"].dtype == np.int64
    assert pd.isna(shown.loc["(total)", "num_embeddings"])
    with pytest.raises(ArgumentError, match="frame"):
        totals(pd.DataFrame({"x": [1]}))


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.00 KiB"),
        (1536 * 1024**2, "1.50 GiB"),
        (36_343_745_536, "33.85 GiB"),
        (5 * 1024**4, "5.00 TiB"),
        (-2 * 1024**2, "-2.00 MiB"),
    ],
)
def test_human_bytes(n, text):
    assert human_bytes(n) == text


def test_binary_unit():
    assert binary_unit(1000) == ("B", 1)
    assert binary_unit(3 * GIB) == ("GiB", GIB)
    assert binary_unit(GIB - 1) == ("MiB", 1024**2)


def test_gpu_fit_fits(ranker):
    frame = memory_table(ranker)
    fit = gpu_fit(frame, 4, 80)
    assert isinstance(fit, GpuFit)
    assert fit.needed_bytes == 36_343_745_536
    assert fit.hbm_bytes == 80 * GIB
    assert fit.available_bytes == 320 * GIB
    assert fit.fits and fit.min_gpus == 1 and fit.gpus == 4
    assert fit.largest_table == "item_id" and fit.largest_table_bytes == 15_360_000_000
    assert fit.message == "fits on 4 x 80 GiB (33.8 of 320 GiB)"
    with pytest.raises(AttributeError):
        fit.fits = False  # frozen


def test_gpu_fit_too_small(ranker):
    frame = memory_table(ranker)
    fit = gpu_fit(frame, 1, 16)
    # 36,343,745,536 / 16 GiB = 2.12 -> at least 3; item_id (14.3 GiB) fits on one.
    assert not fit.fits and fit.min_gpus == 3
    assert fit.message == "needs at least 3 GPUs of 16 GiB: 33.8 GiB against 16 GiB"
    small = gpu_fit(frame, 8, 8)
    # user_id alone (11.9 GiB) is larger than one 8 GiB GPU: say it must be sharded.
    assert small.fits
    assert "'item_id'" in small.message and "row- or column-wise" in small.message


def test_gpu_fit_tight_mentions_planner_reservation(ranker):
    frame = memory_table(ranker)
    needed = int(frame["total_bytes"].sum())
    hbm_gib = needed / GIB / 0.9  # 90 % full on one GPU: above torchrec's 85 % usable
    fit = gpu_fit(frame, 1, hbm_gib)
    assert fit.fits
    assert f"{PLANNER_RESERVED_FRACTION:.0%}" in fit.message and "embviz.plan" in fit.message


@pytest.mark.parametrize(
    ("gpus", "hbm", "argument"),
    [(0, 80, "gpus"), (2.5, 80, "gpus"), (True, 80, "gpus"), (4, 0, "hbm_gib"), (4, -1, "hbm_gib")],
)
def test_gpu_fit_bad_arguments(ranker, gpus, hbm, argument):
    with pytest.raises(ArgumentError) as info:
        gpu_fit(memory_table(ranker), gpus, hbm)
    assert info.value.argument == argument


def test_public_names_are_lazy_exports():
    for name in ["memory_table", "totals", "with_dtype", "human_bytes", "gpu_fit", "GpuFit"]:
        assert name in embviz.__all__
        assert getattr(embviz, name) is not None


def test_ten_thousand_tables_vectorised():
    tables = [
        {
            "name": f"t{i}",
            "num_embeddings": 1000 + i,
            "embedding_dim": 4 * (1 + i % 64),
            "data_type": "fp16" if i % 2 else "fp32",
            "optimizer": [{"sgd": {"lr": 0.1}}, {"adagrad": {"lr": 0.1}}, {"adam": {"lr": 0.1}}][
                i % 3
            ],
        }
        for i in range(10_000)
    ]
    cfg = embviz.LargeEmbeddingsConfig.model_validate({"tables": tables})
    frame = memory_table(cfg)
    rows = np.arange(10_000) + 1000
    dims = 4 * (1 + np.arange(10_000) % 64)
    e = np.where(np.arange(10_000) % 2, 2, 4)
    state = np.choose(np.arange(10_000) % 3, [0 * rows, rows * dims * 4, 2 * rows * dims * 4])
    np.testing.assert_array_equal(frame["total_bytes"].to_numpy(), rows * dims * e + state)


def test_largest_tables_keeps_the_sum(ranker):
    frame = memory_table(ranker)
    shown = largest_tables(frame, 5)
    assert list(shown.index) == [
        "user_id",
        "item_id",
        "user_follows_hashed",
        "author_id",
        "(8 others)",
    ]
    for column in BYTE_COLUMNS:
        assert shown[column].sum() == frame[column].sum()
        assert shown[column].dtype == np.int64
    assert largest_tables(frame, 12) is frame
    with pytest.raises(ArgumentError, match="n"):
        largest_tables(frame, 1)


def test_dtype_savings_against_the_current_config(ranker):
    frame = memory_table(ranker)
    savings = dtype_savings(frame)
    assert savings.index[-1] == "(total)"
    # item_id is fp16 already: switching it to fp16 saves nothing, and it is marked.
    assert savings.loc["item_id", "already_fp16"]
    assert savings.loc["item_id", "saved_bytes"] == 0
    assert savings.loc["item_id", "current_bytes"] == savings.loc["item_id", "fp16_bytes"]
    # author_id (fp32, Adagrad): the weights halve, the fp32 state stays.
    assert not savings.loc["author_id", "already_fp16"]
    assert savings.loc["author_id", "saved_bytes"] == 5_000_000 * 64 * 2
    assert savings.loc["author_id", "current_bytes"] == savings.loc["author_id", "fp32_bytes"]
    fp32_tables = frame.index[frame["data_type"] == "fp32"]
    expected = (frame.loc[fp32_tables, "weight_bytes"] // 2).sum()
    assert savings.loc["(total)", "saved_bytes"] == expected == 948_096_768
    assert savings.loc["(total)", "current_bytes"] == frame["total_bytes"].sum()
    assert (savings.iloc[:-1]["saved_bytes"] >= 0).all()
    with pytest.raises(ArgumentError, match="frame"):
        dtype_savings(savings)


def test_largest_tables_keep_groups_another_frame_alike(ranker):
    frame = memory_table(ranker)
    serving = embviz.serving_bytes(ranker)
    keep = list(largest_tables(frame, 5).index[:-1])
    grouped = largest_tables(serving, 5, keep=keep)
    assert list(grouped.index) == [*keep, "(8 others)"]
    for dtype in ("fp32", "fp16", "int8", "int4", "int2"):
        assert grouped[f"{dtype}_bytes"].sum() == serving[f"{dtype}_bytes"].sum()
