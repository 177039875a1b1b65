"""Serving dtypes in memory_table: hand-computed bytes, the API contract, errors, no torch.

The byte rules are measured against real quantized collections in
tests/test_serving_measured.py; this file pins the arithmetic and the contract.
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

import embviz
from embviz.errors import ArgumentError, UnknownTableError
from embviz.memory import memory_table, totals
from embviz.serving import (
    SERVING_DTYPES,
    ServingWidthError,
    parse_serving_dtype,
    planner_serving_bytes,
    serving_bytes,
    serving_dtypes,
    serving_row_bytes,
    serving_table_bytes,
)


@pytest.fixture(scope="module")
def ranker():
    return embviz.load_config(embviz.example("ranker"))


def _config(*tables):
    """A config of (name, rows, dim, dtype) tables; widths off 4 warn, which is not tested here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", embviz.FusedKernelWarning)
        return _validate(tables)


def _validate(tables):
    return embviz.LargeEmbeddingsConfig.model_validate(
        {
            "tables": [
                {
                    "name": name,
                    "num_embeddings": rows,
                    "embedding_dim": dim,
                    "data_type": data_type,
                    "optimizer": {"adam": {"lr": 0.01}},
                }
                for name, rows, dim, data_type in tables
            ]
        }
    )


# (dim, dtype, bytes per stored row), by hand: data D*bits/8, +4 scale/bias for ints, to 16.
ROWS = [
    (64, "int4", 48),  # 32 + 4 = 36 -> 48
    (64, "int8", 80),  # 64 + 4 = 68 -> 80
    (64, "int2", 32),  # 16 + 4 = 20 -> 32
    (16, "int2", 16),  # 4 + 4 = 8 -> 16: no smaller than int4
    (16, "int4", 16),  # 8 + 4 = 12 -> 16
    (128, "int8", 144),  # 128 + 4 = 132 -> 144
    (3, "fp32", 16),  # 12 -> 16: fp32 rows are padded too
    (8, "fp16", 16),
    (12, "fp16", 32),  # 24 -> 32
    (1000, "fp32", 4000),
    (24, "int8", 32),  # 24 + 4 = 28 -> 32
]


@pytest.mark.parametrize(("dim", "dtype", "expected"), ROWS)
def test_row_bytes_by_hand(dim, dtype, expected):
    assert int(serving_row_bytes(dim, dtype)) == expected


def test_table_bytes_round_to_128():
    assert int(serving_table_bytes(1000, 64, "int4")) == 48_000
    assert int(serving_table_bytes(1, 8, "int8")) == 128  # 16 bytes -> 128
    assert int(serving_table_bytes(9, 8, "int8")) == 256  # 144 -> 256
    assert int(serving_table_bytes(8, 8, "int8")) == 128  # 128 exactly
    got = serving_table_bytes([1, 2, 3], [64, 64, 64], np.array(["int8", "fp16", "int2"], object))
    assert got.tolist() == [128, 256, 128]
    assert got.dtype == np.int64


def test_planner_rule_by_hand():
    # R * row + 4 * R, no 128 rounding.
    assert int(planner_serving_bytes(1000, 64, "int4")) == 1000 * 48 + 4000
    assert int(planner_serving_bytes(1, 8, "int8")) == 16 + 4
    assert int(planner_serving_bytes(10, 64, "fp32")) == 2560 + 40


def test_memory_table_serving_columns(ranker):
    frame = memory_table(ranker, mode="inference", serving_dtype="int8")
    base = memory_table(ranker, mode="inference")
    assert list(frame.index) == ranker.table_names
    assert frame["serving_dtype"].tolist() == ["int8"] * 12
    # user_id: 100M x 64 -> 80-byte rows.
    assert frame.loc["user_id", "row_bytes"] == 80
    assert frame.loc["user_id", "weight_bytes"] == 8_000_000_000
    assert frame.loc["user_id", "planner_bytes"] == 8_400_000_000
    # device_type: 1024 x 16 -> 32-byte rows = 32,768 bytes (a multiple of 128).
    assert frame.loc["device_type", "weight_bytes"] == 32_768
    assert (frame["optimizer_bytes"] == 0).all()
    assert (frame["total_bytes"] == frame["weight_bytes"]).all()
    # The unquantized inference figure stays beside it.
    assert (frame["unquantized_bytes"] == base["weight_bytes"]).all()
    # fp32/fp16 columns: the same quantized collection in those dtypes (padding included).
    assert frame.loc["topic", "fp32_total_bytes"] == 100_000 * 1024
    assert frame.loc["app_version", "fp16_total_bytes"] == 5000 * 32
    for column in ("weight_bytes", "planner_bytes", "unquantized_bytes", "row_bytes"):
        assert frame[column].dtype == np.int64
    assert (frame["planner_note"] != "").all()
    assert "twice" not in frame.loc["user_id", "planner_note"]
    assert "scale and bias again" in frame.loc["user_id", "planner_note"]
    sums = totals(frame)
    assert sums["unquantized_bytes"] == base["weight_bytes"].sum()
    assert sums["total_bytes"] == frame["weight_bytes"].sum()


def test_total_for_ranker_in_each_dtype(ranker):
    # By hand, R x padded int8 row (every table here is already a multiple of 128 bytes):
    # 100M*80 + 20M*144 + 50M*48 + 5M*80 + 2M*80 + 1M*112 + 100k*272 + 10k*48 + 5000*32
    # + 1000*32 + 1000*32 + 1024*32.
    frame = memory_table(ranker, mode="inference", serving_dtype="int8")
    assert int(frame["total_bytes"].sum()) == 13_979_936_768
    by_table = serving_bytes(ranker)
    for dtype in SERVING_DTYPES:
        frame = memory_table(ranker, mode="inference", serving_dtype=dtype)
        assert frame["weight_bytes"].tolist() == by_table[f"{dtype}_bytes"].tolist()


def test_mapping_keeps_other_tables_in_their_dtype(ranker):
    frame = memory_table(ranker, mode="inference", serving_dtype={"user_id": "int4"})
    assert frame.loc["user_id", "serving_dtype"] == "int4"
    assert frame.loc["item_id", "serving_dtype"] == "fp16"
    assert frame.loc["topic", "serving_dtype"] == "fp32"
    # 128-wide fp16 rows are already 16-byte aligned: the same bytes as unquantized.
    assert frame.loc["item_id", "weight_bytes"] == frame.loc["item_id", "unquantized_bytes"]
    assert frame.loc["user_id", "weight_bytes"] == 100_000_000 * 48


def test_mapping_accepts_datatype_members(ranker):
    frame = memory_table(ranker, mode="inference", serving_dtype={"topic": embviz.DataType.FP16})
    assert frame.loc["topic", "serving_dtype"] == "fp16"


def test_none_is_todays_inference_figure(ranker):
    pd.testing.assert_frame_equal(
        memory_table(ranker, mode="inference", serving_dtype=None),
        memory_table(ranker, mode="inference"),
    )


@pytest.mark.parametrize("mode", ["train", "evaluate", embviz.Mode.TRAIN])
def test_serving_dtype_needs_inference(ranker, mode):
    with pytest.raises(ArgumentError, match="mode 'inference' only") as info:
        memory_table(ranker, mode=mode, serving_dtype="int8")
    assert info.value.argument == "serving_dtype"
    with pytest.raises(ArgumentError, match="serving_dtype"):
        memory_table(ranker, serving_dtype="int8")  # the default mode is train


@pytest.mark.parametrize("bad", ["int3", "INT8", "bf16", 8, ["int8"]])
def test_unknown_dtype_names_the_choices(ranker, bad):
    with pytest.raises(ArgumentError) as info:
        memory_table(ranker, mode="inference", serving_dtype=bad)
    message = str(info.value)
    assert message.startswith("serving_dtype:")
    assert all(repr(d) in message for d in SERVING_DTYPES)


def test_unknown_dtype_in_mapping(ranker):
    with pytest.raises(ArgumentError, match="'int16'"):
        memory_table(ranker, mode="inference", serving_dtype={"user_id": "int16"})


def test_unknown_table_in_mapping(ranker):
    with pytest.raises(UnknownTableError) as info:
        memory_table(ranker, mode="inference", serving_dtype={"users": "int8"})
    assert info.value.unknown == ["users"]
    assert "user_id" in str(info.value)


@pytest.mark.parametrize(
    ("dim", "dtype", "ok"),
    [
        (7, "int8", False),
        (6, "int8", True),
        (6, "int4", False),
        (4, "int4", True),
        (4, "int2", False),
        (12, "int2", False),
        (16, "int2", True),
        (7, "fp16", True),
        (1, "fp32", True),
    ],
)
def test_refused_widths(dim, dtype, ok):
    cfg = _config(("wide", 10, 64, "fp32"), ("odd", 10, dim, "fp32"))
    if ok:
        memory_table(cfg, mode="inference", serving_dtype=dtype)
        return
    with pytest.raises(ServingWidthError) as info:
        memory_table(cfg, mode="inference", serving_dtype=dtype)
    error = info.value
    assert (error.table, error.embedding_dim, error.dtype) == ("odd", dim, dtype)
    assert str(error).startswith(f"table 'odd': embedding_dim {dim} cannot be served as {dtype}")
    assert f"% {error.multiple} == 0" in str(error)
    assert isinstance(error, embviz.EmbvizError)


def test_refused_width_only_for_the_table_that_asks():
    cfg = _config(("odd", 10, 6, "fp32"), ("wide", 10, 64, "fp32"))
    frame = memory_table(cfg, mode="inference", serving_dtype={"wide": "int2"})
    assert frame["serving_dtype"].tolist() == ["fp32", "int2"]


def test_serving_bytes_marks_refused_widths():
    cfg = _config(("a", 100, 6, "fp16"), ("b", 100, 64, "fp32"))
    frame = serving_bytes(cfg)
    assert frame.loc["a", "unquantized_bytes"] == 1200
    assert frame.loc["a", "fp32_bytes"] == 3200  # 24 -> 32-byte rows
    assert frame.loc["a", "int8_bytes"] == 1664  # 10 -> 16-byte rows = 1600 -> 1664
    assert pd.isna(frame.loc["a", "int4_bytes"]) and pd.isna(frame.loc["a", "int2_bytes"])
    assert "int4 needs embedding_dim % 4 == 0" in frame.loc["a", "refused"]
    assert frame.loc["b", "refused"] == ""
    assert frame.loc["b", "int2_bytes"] == 3200
    assert str(frame["int4_bytes"].dtype) == "Int64"


def test_serving_dtypes_resolves_every_table(ranker):
    got = serving_dtypes(ranker, {"topic": "int2"})
    assert list(got) == ranker.table_names
    assert got["topic"] == "int2" and got["user_id"] == "fp16"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], None),
        (["int8"], "int8"),
        (["user_id=int4"], {"user_id": "int4"}),
    ],
)
def test_parse_serving_dtype(ranker, values, expected):
    assert parse_serving_dtype(values, ranker) == expected


def test_parse_default_and_overrides(ranker):
    got = parse_serving_dtype(["user_id=int4", "int8"], ranker)
    assert got == {name: "int4" if name == "user_id" else "int8" for name in ranker.table_names}


@pytest.mark.parametrize(
    ("values", "match"),
    [
        (["int8", "int4"], "one default dtype at most"),
        (["user_id=int4", "user_id=int2"], "given twice"),
        (["=int4"], "TABLE=DTYPE"),
        (["user_id="], "TABLE=DTYPE"),
        (["user_id=int9"], "'int9'"),
    ],
)
def test_parse_errors(ranker, values, match):
    with pytest.raises(ArgumentError, match=match):
        parse_serving_dtype(values, ranker)


def test_parse_unknown_table(ranker):
    with pytest.raises(UnknownTableError):
        parse_serving_dtype(["nope=int8"], ranker)


def test_serving_path_imports_no_torch():
    code = (
        "import sys, embviz\n"
        "from embviz.memory import memory_table\n"
        "from embviz.serving import serving_bytes\n"
        "cfg = embviz.load_config(embviz.example('ranker'))\n"
        "memory_table(cfg, mode='inference', serving_dtype={'user_id': 'int4'})\n"
        "serving_bytes(cfg)\n"
        "from embviz.cli import main\n"
        "main(['memory', str(embviz.example('ranker')), '--mode', 'inference',"
        " '--serving-dtype', 'int8'])\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'torchrec', "
        "'fbgemm_gpu')]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
