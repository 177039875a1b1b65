"""`embviz memory --mode inference --serving-dtype ...`: bytes out, one-line errors, exit 2."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest

import embviz
from embviz.cli import main
from embviz.memory import memory_table

RANKER = str(embviz.example("ranker"))


@pytest.fixture(scope="module")
def ranker():
    return embviz.load_config(RANKER)


def test_table_format(capsys, ranker):
    assert main(["memory", RANKER, "--mode", "inference", "--serving-dtype", "int4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "rows",
        "dim",
        "dtype",
        "serving",
        "row",
        "weights",
        "unquantized",
        "planner",
        "logged",
    ]
    user = next(line for line in lines if line.startswith("user_id "))
    # 100M rows of 48 bytes (64-dim int4), against 11.92 GiB unquantized fp16.
    assert "int4" in user and "48 B" in user and "4.47 GiB" in user and "11.92 GiB" in user
    assert any(line.startswith("planner differs for user_id") for line in lines)
    assert lines[-1] == (
        f"{RANKER}: 12 tables, inference, served from torchrec's quantized collection (int4 x 12)"
    )


def test_per_table_with_a_default_csv_is_exact(capsys, ranker):
    args = ["memory", RANKER, "--mode", "inference", "--format", "csv"]
    assert main([*args, "--serving-dtype", "user_id=int2", "--serving-dtype", "int8"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out), index_col="table")
    mapping = {name: "int8" for name in ranker.table_names} | {"user_id": "int2"}
    frame = memory_table(ranker, mode="inference", serving_dtype=mapping)
    names = ranker.table_names
    assert table.loc[names, "serving_dtype"].tolist() == frame["serving_dtype"].tolist()
    for column in ("weight_bytes", "planner_bytes", "unquantized_bytes", "row_bytes"):
        assert table.loc[names, column].tolist() == frame[column].tolist()
    assert table.loc["(total)", "weight_bytes"] == frame["weight_bytes"].sum()
    assert table.loc["(total)", "unquantized_bytes"] == frame["unquantized_bytes"].sum()
    assert table.loc["user_id", "weight_bytes"] == 100_000_000 * 32


def test_per_table_only_keeps_other_dtypes_json(capsys):
    args = ["memory", RANKER, "--mode", "inference", "--format", "json"]
    assert main([*args, "--serving-dtype", "topic=int4"]) == 0
    records = {r["table"]: r for r in json.loads(capsys.readouterr().out)}
    assert records["topic"]["serving_dtype"] == "int4"
    assert records["user_id"]["serving_dtype"] == "fp16"
    assert records["topic"]["weight_bytes"] == 100_000 * 144


@pytest.mark.parametrize(
    ("args", "start"),
    [
        (["--serving-dtype", "int8"], "serving_dtype: applies to mode 'inference' only"),
        (["--mode", "train", "--serving-dtype", "int8"], "serving_dtype: applies to mode"),
        (["--mode", "inference", "--serving-dtype", "int3"], "serving_dtype: must be one of"),
        (["--mode", "inference", "--serving-dtype", "nope=int8"], "no table named 'nope'"),
        (
            ["--mode", "inference", "--serving-dtype", "int8", "--serving-dtype", "int4"],
            "serving_dtype: one default dtype at most",
        ),
    ],
)
def test_bad_combinations_exit_2_with_one_line(args, start, capsys):
    assert main(["memory", RANKER, *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(start)
    assert len(captured.err.strip().splitlines()) == 1
    if "must be one of" in start:
        assert all(d in captured.err for d in ("'fp32'", "'fp16'", "'int8'", "'int4'", "'int2'"))


def test_refused_width_exits_2(tmp_path, run_cli):
    config = tmp_path / "odd.yaml"
    config.write_text(
        "tables:\n"
        "  - name: narrow\n"
        "    num_embeddings: 10\n"
        "    embedding_dim: 12\n"
        "    data_type: fp32\n"
        "    optimizer: {sgd: {lr: 0.1}}\n"
    )
    result = run_cli("memory", config, "--mode", "inference", "--serving-dtype", "int2")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == (
        "table 'narrow': embedding_dim 12 cannot be served as int2: int2 needs "
        "embedding_dim % 8 == 0 (FBGEMM's row-wise quantization packs 4 values a byte, then "
        "the fp16 scale and bias, which must start at an even byte)"
    )
    ok = run_cli("memory", config, "--mode", "inference", "--serving-dtype", "int4")
    assert ok.returncode == 0, ok.stderr
