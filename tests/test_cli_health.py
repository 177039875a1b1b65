"""``embviz health`` and ``embviz drift``: the numbers of embviz.health and embviz.drift."""

from __future__ import annotations

import json
import math

import pytest
import torch

import embviz
from embviz.cli import main


def _module(seed: int, base: torch.nn.Module | None = None) -> torch.nn.Module:
    torch.manual_seed(seed)
    module = torch.nn.Module()
    module.ebc = torch.nn.Module()
    module.ebc.embedding_bags = torch.nn.ModuleDict(
        {"user": torch.nn.EmbeddingBag(3_000, 8), "tweet": torch.nn.EmbeddingBag(1_200, 16).half()}
    )
    if base is not None:  # the base tables, a third of the user rows changed
        with torch.no_grad():
            for name, bag in module.ebc.embedding_bags.items():
                bag.weight.copy_(base.ebc.embedding_bags[name].weight)
            module.ebc.embedding_bags["user"].weight[:1_000] *= 3.0
    return module


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    save_dir = tmp_path_factory.mktemp("cli") / "run"
    first = _module(0)
    embviz.save_snapshot(first, save_dir / "0")
    embviz.save_snapshot(_module(1, base=first), save_dir / "10")
    return save_dir


def _json(capsys, *argv: str) -> list[dict]:
    assert main([*map(str, argv), "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def _same(record: dict, expected) -> None:
    for key, value in record.items():
        if key in ("table", "bucket"):
            continue
        want = expected[key]
        if isinstance(want, str):
            assert value == want, key
        elif value is None:
            assert math.isnan(want), key
        else:
            assert value == want, key


def test_health_json_is_embviz_health_exactly(run, capsys):
    records = _json(capsys, "health", run, "--initial", "first", "--table", "user")
    expected = embviz.health(run / "10", tables="user", initial=run / "0", progress=False)
    assert [r["table"] for r in records] == ["user"]
    assert list(records[0]) == ["table", *expected.columns]
    _same(records[0], expected.loc["user"])
    assert records[0]["unchanged_share"] == pytest.approx(2 / 3)
    assert records[0]["smaller_dim"] is None  # NaN -> null


def test_health_table_format_and_step(run, capsys):
    assert main(["health", str(run), "--step", "0", "--sample", "500"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"snapshot: {run / '0'}"
    assert "effective_rank" in out and "tweet" in out and "user" in out
    assert " 500 " in out  # the sampled rows


def test_drift_json_is_embviz_drift_exactly(run, capsys):
    records = _json(capsys, "drift", run / "0", run / "10", "--k", "5", "--queries", "300")
    expected = embviz.drift(run / "0", run / "10", k=5, queries=300, progress=False)
    assert [r["table"] for r in records] == ["user", "tweet"]
    for record in records:
        _same(record, expected.loc[record["table"]])
    tweet = records[1]
    assert tweet["aligned_cosine"] == pytest.approx(1.0) and tweet["knn_overlap"] == 1.0


def test_drift_table_format(run, capsys):
    assert main(["drift", str(run / "0"), str(run), "--table", "tweet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"before: {run / '0'}\nafter:  {run / '10'}\n")
    assert "knn_overlap" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["health", "{run}/10", "--table", "nope"], "no table named 'nope'"),
        (["health", "{run}/missing"], "missing"),
        (["health", "{run}/10", "--sample", "1"], "sample: must be an integer >= 2"),
        (["health", "{run}/10", "--initial", "first"], "--initial first needs a checkpoint"),
        (["drift", "{run}/0", "{run}/10", "--k", "0"], "k: must be an integer >= 1"),
        (["drift", "{run}/0", "{run}/10", "--k", "5000"], "k: must be less than the rows"),
        (["drift", "{run}/0", "{run}/10", "--table", "x"], "no table named 'x'"),
    ],
)
def test_bad_input_exits_2_with_one_line(run, run_cli, argv, message):
    done = run_cli(*[a.format(run=run) for a in argv])
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
