from __future__ import annotations

import io
import json

import pandas as pd
import pytest
import torch
import torchrec

import embviz
from embviz.cli import main
from embviz.memory import memory_table
from embviz.snapshots import METADATA_FILE

RANKER = str(embviz.example("ranker"))
TWHIN = str(embviz.example("twhin"))


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_build_prints_predicted_and_measured(capsys):
    code, out, err = run(capsys, "build", RANKER, "--scale", "0.0001", "--device", "cpu")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == [
        "predicted_weight_bytes",
        "measured_weight_bytes",
        "predicted_optimizer_bytes",
    ]
    cfg = embviz.scale_config(embviz.load_config(RANKER), 0.0001)
    predicted = memory_table(cfg, "torch")
    row = next(line for line in lines if line.startswith("item_id "))
    numbers = [int(x) for x in row.split()[1:8]]
    item = predicted.loc["item_id"]
    assert numbers[:2] == [item["weight_bytes"]] * 2
    assert numbers[2:4] == [item["optimizer_bytes"]] * 2
    assert numbers[6] == 0  # difference
    total = int(predicted["total_bytes"].sum())
    assert "cpu: built 12 tables in" in lines[-1]
    assert f"predicted 2.96 MiB ({total:,} bytes), measured 2.96 MiB ({total:,} bytes)" in lines[-1]
    assert "difference +0 bytes (+0.00%)" in lines[-1]
    # Warnings are one line each on stderr, not a source listing.
    assert "warning: tables 'item_id', 'author_id'" in err
    assert "building" in err  # progress bar


def test_build_json_and_csv(capsys):
    code, out, err = run(
        capsys,
        "build",
        TWHIN,
        "--scale",
        "0.01",
        "--device",
        "cpu",
        "--format",
        "json",
        "--no-progress",
    )
    assert code == 0
    records = json.loads(out)
    assert [r["table"] for r in records] == ["user", "tweet"]
    assert records[0]["measured_total_bytes"] == round(424_241 * 0.01) * 4 * 4
    assert records[0]["difference_bytes"] == 0
    assert "cpu: built 2 tables" in err  # the summary stays off stdout
    assert "building" not in err
    code, out, _ = run(capsys, "build", TWHIN, "--scale", "0.01", "--format", "csv")
    frame = pd.read_csv(io.StringIO(out), index_col="table")
    assert (frame["relative_difference"] == 0).all()


def test_build_on_meta_predicts_only(capsys):
    code, out, _ = run(capsys, "build", RANKER, "--device", "meta", "--no-progress")
    assert code == 0
    assert "measured" not in out.splitlines()[0]
    assert "nothing to measure" in out
    assert "31,032,065,568 bytes" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--device", "tpu"], "device: must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'meta'"),
        (["--scale", "2"], "scale: must be a number in (0, 1]"),
        (["--device", "cuda:3"], "cuda:3"),
    ],
)
def test_build_bad_arguments_exit_2(capsys, argv, message):
    code, out, err = run(capsys, "build", TWHIN, "--no-progress", *argv)
    assert code == 2
    assert message in err
    assert "Traceback" not in err and out == ""


def test_build_refused_exit_2(tmp_path, capsys):
    huge = tmp_path / "huge.yaml"
    huge.write_text(
        "tables:\n  - name: huge\n    num_embeddings: 1_000_000_000_000\n    embedding_dim: 64\n"
        "    data_type: fp32\n    optimizer:\n      adam:\n        lr: 0.1\n"
    )
    code, _out, err = run(capsys, "build", str(huge), "--device", "cpu", "--no-progress")
    assert code == 2
    assert err.startswith("refusing to build on cpu: the tables need 698.49 TiB")
    assert "huge: 698.49 TiB (weights 232.83 TiB, optimizer state 465.66 TiB)" in err
    assert "Traceback" not in err


@pytest.mark.slow  # a fresh interpreter imports torchrec
def test_build_subprocess_missing_pretrained(tmp_path, run_cli):
    cfg = tmp_path / "pre.yaml"
    cfg.write_text(
        "tables:\n  - name: t\n    num_embeddings: 10\n    embedding_dim: 4\n"
        "    data_type: fp32\n    optimizer:\n      sgd:\n        lr: 0.1\n"
        f"    pretrained:\n      emb_name: t\n      embedding_snapshot_uri: {tmp_path}/gone\n"
    )
    result = run_cli("build", cfg, "--device", "cpu", "--no-progress")
    assert result.returncode == 2
    assert "table 't': pretrained:" in result.stderr
    assert "no such snapshot" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def run_dir(tmp_path):
    torch.manual_seed(0)
    ebc = torchrec.EmbeddingBagCollection(
        tables=[
            torchrec.EmbeddingBagConfig(
                name="user", num_embeddings=12, embedding_dim=4, feature_names=["user"]
            ),
            torchrec.EmbeddingBagConfig(
                name="tweet",
                num_embeddings=7,
                embedding_dim=8,
                feature_names=["tweet"],
                data_type=torchrec.DataType.FP16,
            ),
        ]
    )
    save_dir = tmp_path / "run"
    for step in (0, 5, 10):
        embviz.save_snapshot(ebc, save_dir / str(step), step=step)
    cut = embviz.save_snapshot(ebc, save_dir / "15", step=15)
    (cut / METADATA_FILE).unlink()
    return save_dir


def test_snapshot_ls_one_snapshot(capsys, run_dir):
    code, out, _ = run(capsys, "snapshot", "ls", str(run_dir / "10"))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["shape", "dtype", "rows", "dim", "bytes", "path"]
    user = next(line for line in lines if line.startswith("user "))
    assert user.split() == [
        "user",
        "12",
        "x",
        "4",
        "float32",
        "12",
        "4",
        "192",
        "0/model/embedding_bags.user.weight",
    ]
    tweet = next(line for line in lines if line.startswith("tweet "))
    assert "7 x 8  float16" in tweet
    code, out, _ = run(capsys, "snapshot", "ls", str(run_dir / "10"), "--format", "json")
    records = json.loads(out)
    assert records[1] == {
        "table": "tweet",
        "shape": "7 x 8",
        "dtype": "float16",
        "rows": 7,
        "dim": 8,
        "bytes": 112,
        "path": "0/model/embedding_bags.tweet.weight",
    }


def test_snapshot_ls_checkpoint_folder(capsys, run_dir):
    code, out, _ = run(capsys, "snapshot", "ls", str(run_dir))
    assert code == 0
    lines = out.splitlines()
    steps = [line.split()[0] for line in lines[2:5]]
    assert steps == ["0", "5", "10"]
    assert "unfinished (skipped): 15" in out
    assert "tables at step 10:" in out
    assert any(line.startswith("tweet ") for line in lines)
    code, out, _ = run(capsys, "snapshot", "ls", str(run_dir), "--format", "csv")
    assert out.splitlines() == [
        "step,path",
        f"0,{run_dir / '0'}",
        f"5,{run_dir / '5'}",
        f"10,{run_dir / '10'}",
    ]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("missing", "no such snapshot"),
        ("run/15", "unfinished or not a snapshot"),
        ("file.txt", "not a torchsnapshot"),
    ],
)
def test_snapshot_ls_errors_exit_2(capsys, tmp_path, run_dir, path, message):
    (tmp_path / "file.txt").write_text("x")
    code, _out, err = run(capsys, "snapshot", "ls", str(tmp_path / path))
    assert code == 2
    assert message in err
    assert "Traceback" not in err


@pytest.mark.slow  # a fresh interpreter imports torchrec (twice)
def test_snapshot_ls_subprocess(run_cli, run_dir):
    result = run_cli("snapshot", "ls", run_dir / "5")
    assert result.returncode == 0, result.stderr
    assert "user" in result.stdout and "float16" in result.stdout
    result = run_cli("snapshot", "ls", run_dir / "nope")
    assert result.returncode == 2
    assert "no such snapshot" in result.stderr and "Traceback" not in result.stderr
