"""`embviz memory` and `embviz plan` end to end: exact bytes out, clear errors, exit codes."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest

import embviz
from embviz.cli import main
from embviz.memory import memory_table, totals

RANKER = str(embviz.example("ranker"))
TWHIN = str(embviz.example("twhin"))


@pytest.fixture(scope="module")
def ranker():
    return embviz.load_config(RANKER)


def test_memory_table_format(run_cli):
    result = run_cli("memory", RANKER)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    body = [line for line in lines[2:] if line.split() and line.split()[0] != "planner"]
    names = [line.split()[0] for line in body[:13]]
    assert names[:12] == embviz.load_config(RANKER).table_names
    assert names[12] == "(total)"
    total = body[12]
    assert "21.61 GiB" in total and "12.23 GiB" in total and "33.85 GiB" in total
    assert "item_id" in result.stdout and "EXACT_ADAGRAD" in result.stdout
    assert any(
        line.startswith("planner differs for item_id, ad_campaign:") and "#4142" in line
        for line in lines
    )
    assert lines[-1] == f"{RANKER}: 12 tables, train, fused optimizer state"


def test_memory_csv_is_exact(ranker, capsys):
    assert main(["memory", RANKER, "--format", "csv"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out), index_col="table")
    frame = memory_table(ranker)
    assert list(table.index) == [*ranker.table_names, "(total)"]
    for column in ["weight_bytes", "optimizer_bytes", "total_bytes", "planner_bytes"]:
        assert table.loc[ranker.table_names, column].tolist() == frame[column].tolist()
        assert table.loc["(total)", column] == totals(frame)[column]
    assert table.loc["(total)", "total_bytes"] == 36_343_745_536


def test_memory_json_torch_evaluate(ranker, capsys):
    args = ["memory", RANKER, "--format", "json", "--optimizer-state", "torch"]
    assert main([*args, "--mode", "evaluate"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["table"] for r in records] == [*ranker.table_names, "(total)"]
    assert all(r["optimizer_bytes"] == 0 for r in records)
    assert records[1]["weight_bytes"] == 5_120_000_000
    assert records[-1]["num_embeddings"] is None
    assert main([*args, "--mode", "train"]) == 0
    records = json.loads(capsys.readouterr().out)
    # torch.optim Adagrad on the fp16 item_id table: fp16 state plus a 4-byte step.
    assert records[1]["optimizer_bytes"] == 5_120_000_004


def test_memory_rowwise_what_if(capsys):
    assert main(["memory", RANKER, "--adagrad", "rowwise", "--format", "json"]) == 0
    records = {r["table"]: r for r in json.loads(capsys.readouterr().out)}
    assert records["item_id"]["optimizer_bytes"] == 20_000_000 * 4
    assert records["item_id"]["optimizer_kernel"] == "EXACT_ROWWISE_ADAGRAD"


def test_memory_errors_exit_2_without_traceback(tmp_path, run_cli):
    result = run_cli("memory", RANKER, "--adagrad", "rowwise", "--optimizer-state", "torch")
    assert result.returncode == 2
    assert result.stderr.startswith("adagrad: 'rowwise'")
    assert "Traceback" not in result.stderr
    missing = run_cli("memory", tmp_path / "nope.yaml")
    assert missing.returncode == 2 and "no such file" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_plan_json_shape(ranker, capsys):
    code = main(["plan", RANKER, "--gpus", "4", "--hbm-gib", "80", "--format", "json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["rank"] for r in data["ranks"]] == [0, 1, 2, 3]
    assert all({"rank", "hbm_bytes", "tables"} <= set(r) for r in data["ranks"])
    assert [t["table"] for t in data["tables"]] == ranker.table_names
    assert all({"table", "sharding_type", "ranks"} <= set(t) for t in data["tables"])
    placed = {t for r in data["ranks"] for t in r["tables"]}
    assert placed == set(ranker.table_names)
    assert sum(r["table_bytes"] for r in data["ranks"]) == 36_343_745_536


def test_plan_table_format(capsys):
    code = main(
        ["plan", RANKER, "--gpus", "2", "--hbm-gib", "80", "--sharding-types", "table_wise"]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "planner HBM" in out and "tables (exact)" in out
    table_lines = [line for line in out.splitlines() if line.startswith("item_id ")]
    assert table_lines and "table_wise" in table_lines[0] and "14.31 GiB" in table_lines[0]
    assert out.splitlines()[-1].endswith("2 x 80 GiB, batch 512, exact estimate, full search")


def test_plan_too_small_exit_2_with_min_gpus(run_cli):
    result = run_cli("plan", RANKER, "--gpus", "1", "--hbm-gib", "16")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stdout == ""
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("no placement on 1 x 16 GiB: the tables need 33.8 GiB")
    assert message.endswith("the smallest number of 16 GiB GPUs that plans is 3")


@pytest.mark.parametrize(
    ("args", "start"),
    [
        (["--gpus", "0", "--hbm-gib", "80"], "gpus:"),
        (["--gpus", "2", "--hbm-gib", "-1"], "hbm_gib:"),
        (["--gpus", "2", "--hbm-gib", "80", "--sharding-types", "diagonal"], "sharding_types:"),
        (["--gpus", "2", "--hbm-gib", "80", "--gpus-per-host", "0"], "gpus_per_host:"),
    ],
)
def test_plan_bad_arguments(args, start, capsys):
    assert main(["plan", RANKER, *args]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(start) and captured.out == ""


def test_plan_beyond_128_gpus(capsys):
    # Row-wise over 256 ranks: a shard on every rank, past torch's largest device index (127)
    # if all were on one host; 8 GPUs per host by default.
    args = ["plan", TWHIN, "--key", "model.embeddings", "--gpus", "256", "--hbm-gib", "80"]
    assert main([*args, "--sharding-types", "row_wise", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["gpus"] == 256 and data["gpus_per_host"] == 8
    assert [r["rank"] for r in data["ranks"] if r["shards"]] == list(range(256))
    assert main([*args, "--sharding-types", "row_wise", "--gpus-per-host", "16"]) == 0
    assert "256 x 80 GiB" in capsys.readouterr().out.splitlines()[-1]


def test_report_passes_gpus_per_host(tmp_path, capsys):
    args = ["report", TWHIN, "--key", "model.embeddings", "--gpus", "256", "--hbm-gib", "80"]
    assert main([*args, "--out", str(tmp_path / "ok"), "--gpus-per-host", "16"]) == 0
    assert "Placement on 256 GPUs" in (tmp_path / "ok" / "index.html").read_text()
    assert main([*args, "--out", str(tmp_path / "bad"), "--gpus-per-host", "0"]) == 2
    assert capsys.readouterr().err.startswith("gpus_per_host: must be an integer >= 1")
