"""`embviz validate` and `embviz schema` end to end."""

from __future__ import annotations

import json

import embviz
from embviz.cli import main


def test_validate_prints_one_line_per_table(run_cli):
    path = embviz.example("ranker")
    result = run_cli("validate", path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 13
    assert lines[0].split()[:4] == ["user_id", "100,000,000", "x", "64"]
    assert "fp16" in lines[0] and "sgd(lr=0.01)" in lines[0] and "logged" in lines[0]
    assert lines[-1] == f"{path}: 12 tables, valid"


def test_validate_with_key(run_cli):
    result = run_cli("validate", embviz.example("twhin"), "--key", "model.embeddings")
    assert result.returncode == 0
    assert result.stdout.splitlines()[0].split()[:4] == ["user", "424,241", "x", "4"]


def test_python_dash_m_runs_the_same_cli(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "embviz", "validate", str(embviz.example("twhin"))],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and "2 tables, valid" in result.stdout


def test_warnings_go_to_stderr_and_keep_exit_zero(tmp_path, run_cli):
    path = tmp_path / "odd.yaml"
    path.write_text(
        "tables:\n- {name: a, num_embeddings: 10, embedding_dim: 6, data_type: fp32,"
        " optimizer: {sgd: {lr: 1}}}\n"
    )
    result = run_cli("validate", path)
    assert result.returncode == 0
    assert f"{path}: warning: table 'a': embedding_dim 6 is not a multiple of 4" in result.stderr


def test_every_problem_on_its_own_line(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "tables:\n"
        "- {name: a, num_embeddings: 10, embedding_dim: 0, data_type: fp32, optimizer: {}}\n"
        "tables_to_log: [ghost]\n"
    )
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"{path}: tables[0].embedding_dim: must be > 0, got 0",
        f"{path}: tables[0].optimizer: exactly one of adam, sgd, adagrad is required",
        f"{path}: tables_to_log[0]: no table named 'ghost' (tables: 'a')",
    ]


def test_schema_prints_json_schema(run_cli):
    result = run_cli("schema")
    assert result.returncode == 0
    assert json.loads(result.stdout) == embviz.config_schema()


def test_usage_errors_exit_two(run_cli):
    result = run_cli("validate")
    assert result.returncode == 2 and "usage:" in result.stderr
