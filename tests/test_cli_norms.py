"""``embviz norms``: the numbers of norm_stats, from a snapshot or a checkpoint folder."""

from __future__ import annotations

import json

import pytest
import torch

import embviz
from embviz.cli import main
from embviz.norms import norm_stats

KEYS = ["table", "rows", "sampled", "mean", "std", "min", "p1", "p5", "p50", "p95", "p99", "max"]


def _module(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    module = torch.nn.Module()
    module.ebc = torch.nn.Module()
    module.ebc.embedding_bags = torch.nn.ModuleDict(
        {
            "user": torch.nn.EmbeddingBag(4_000, 8),
            "tweet": torch.nn.EmbeddingBag(1_500, 16).half(),
        }
    )
    return module


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    save_dir = tmp_path_factory.mktemp("cli") / "run"
    for step in (0, 10, 20):
        embviz.save_snapshot(_module(step), save_dir / str(step))
    # Being written (or cut short): data files but no metadata yet.
    (save_dir / "30" / "0").mkdir(parents=True)
    (save_dir / "30" / "0" / "model").write_bytes(b"partial")
    return save_dir


def _json(capsys, *argv: str) -> list[dict]:
    assert main(["norms", *map(str, argv), "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_is_norm_stats_exactly(run, capsys):
    records = _json(capsys, run / "10", "--table", "tweet", "--table", "user")
    assert [r["table"] for r in records] == ["tweet", "user"]
    assert all(list(r) == KEYS for r in records)
    expected = norm_stats(run / "10", tables=["tweet", "user"], progress=False)
    for record in records:
        for key in KEYS[1:]:
            assert record[key] == expected.loc[record["table"], key], key
    assert records[1]["rows"] == 4_000 and records[1]["sampled"] == 4_000


def test_checkpoint_folder_latest_or_step(run, capsys):
    latest = _json(capsys, run, "--table", "user")
    assert latest == _json(capsys, run / "20", "--table", "user")
    at_step = _json(capsys, run, "--table", "user", "--step", "0")
    assert at_step == _json(capsys, run / "0", "--table", "user")
    assert at_step != latest


def test_sample(run, capsys):
    records = _json(capsys, run / "0", "--table", "user", "--sample", "100")
    assert records[0]["rows"] == 4_000 and records[0]["sampled"] == 100
    expected = norm_stats(run / "0", tables="user", sample=100, progress=False)
    assert records[0]["p50"] == expected.loc["user", "p50"]


def test_table_format(run, capsys):
    assert main(["norms", str(run), "--table", "user", "--table", "tweet"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"snapshot: {run / '20'}"
    assert out[1].split() == KEYS[1:]
    assert out[2].split() == ["table"]
    assert out[3].split()[0] == "user" and out[3].split()[1] == "4,000"
    stats = norm_stats(run / "20", tables="user", progress=False)
    assert f"{stats.loc['user', 'p99']:.6g}" in out[3]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--table", "users"], "no table named 'users' (tables: user, tweet)"),
        (
            ["--table", "user", "--step", "30"],
            "no finished checkpoint at step 30 (steps: 0, 10, 20)",
        ),
        (["--table", "user", "--sample", "0"], "sample must be a positive integer, got 0"),
    ],
)
def test_errors_exit_2_with_the_reason(run, capsys, argv, message):
    assert main(["norms", str(run), *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().endswith(message)


def test_bad_paths_exit_2(tmp_path, run, capsys):
    assert main(["norms", str(tmp_path / "missing"), "--table", "user"]) == 2
    assert "no such snapshot" in capsys.readouterr().err
    assert main(["norms", str(run / "30"), "--table", "user"]) == 2
    assert "unfinished or not a snapshot" in capsys.readouterr().err


def test_table_is_required(run, capsys):
    with pytest.raises(SystemExit) as info:
        main(["norms", str(run)])
    assert info.value.code == 2
    assert "--table" in capsys.readouterr().err


@pytest.mark.slow
def test_installed_command(run, run_cli):
    done = run_cli("norms", run, "--table", "tweet", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["table"] == "tweet"
    bad = run_cli("norms", run, "--table", "nope")
    assert bad.returncode == 2
    assert bad.stderr.strip().endswith("no table named 'nope' (tables: user, tweet)")
    assert "Traceback" not in bad.stderr
