from __future__ import annotations

import shutil

import pandas as pd
import pytest
import torch
import torchrec
from torchsnapshot import Snapshot
from torchsnapshot.knobs import override_is_batching_disabled, override_max_chunk_size_bytes

import embviz
from embviz.errors import EmbvizError
from embviz.snapshots import METADATA_FILE, SnapshotError


def make_ebc(seed: int = 0) -> torchrec.EmbeddingBagCollection:
    torch.manual_seed(seed)
    return torchrec.EmbeddingBagCollection(
        tables=[
            torchrec.EmbeddingBagConfig(
                name="user", num_embeddings=100, embedding_dim=4, feature_names=["user"]
            ),
            torchrec.EmbeddingBagConfig(
                name="tweet",
                num_embeddings=30,
                embedding_dim=8,
                feature_names=["tweet"],
                data_type=torchrec.DataType.FP16,
            ),
        ]
    )


class Wrapper(torch.nn.Module):
    """the-algorithm-ml's nesting: model.large_embeddings.ebc."""

    def __init__(self, ebc: torch.nn.Module):
        super().__init__()
        self.large_embeddings = torch.nn.Module()
        self.large_embeddings.ebc = ebc


@pytest.fixture
def ebc():
    return make_ebc()


@pytest.fixture
def snap(tmp_path, ebc):
    return embviz.save_snapshot(Wrapper(ebc), tmp_path / "snap", step=7)


def test_snapshot_tables_lists_names_shapes_dtypes_from_the_manifest(snap, ebc):
    tables = embviz.snapshot_tables(snap)
    assert list(tables.index) == ["user", "tweet"]
    assert tables.index.name == "table"
    assert tables.loc["user", "path"] == "0/model/large_embeddings.ebc.embedding_bags.user.weight"
    assert tables.loc["user", "shape"] == (100, 4)
    assert tables.loc["tweet", "shape"] == (30, 8)
    assert tables.loc["user", "rows"] == 100 and tables.loc["tweet", "dim"] == 8
    assert tables.loc["user", "dtype"] == "float32"
    assert tables.loc["tweet", "dtype"] == "float16"
    assert tables.loc["user", "bytes"] == ebc.embedding_bags["user"].weight.nbytes
    assert tables.loc["tweet", "bytes"] == ebc.embedding_bags["tweet"].weight.nbytes
    # The manifest path is what torchsnapshot itself reads.
    raw = Snapshot(str(snap)).read_object(tables.loc["tweet", "path"], torch.empty(30, 8).half())
    assert torch.equal(raw, ebc.embedding_bags["tweet"].weight)


def test_bare_collection_paths_and_step(tmp_path, ebc):
    path = embviz.save_snapshot(ebc, tmp_path / "bare", step=3)
    tables = embviz.snapshot_tables(path)
    assert tables.loc["user", "path"] == "0/model/embedding_bags.user.weight"
    assert Snapshot(str(path)).read_object("0/extra_state/step") == 3


def test_read_table_returns_the_saved_tensor(snap, ebc):
    for name in ("user", "tweet"):
        tensor = embviz.read_table(snap, name)
        weight = ebc.embedding_bags[name].weight
        assert tensor.device.type == "cpu"
        assert tensor.dtype == weight.dtype
        assert torch.equal(tensor, weight.detach())


def test_read_table_into_out_checks_shape_and_dtype(snap, ebc):
    out = torch.zeros(100, 4)
    assert embviz.read_table(snap, "user", out=out) is out
    assert torch.equal(out, ebc.embedding_bags["user"].weight.detach())
    with pytest.raises(SnapshotError, match=r"'user' is 100 x 4 float32 .* 100 x 4 float16"):
        embviz.read_table(snap, "user", out=torch.zeros(100, 4, dtype=torch.float16))
    with pytest.raises(SnapshotError, match=r"100 x 4 float32 .* 99 x 4 float32"):
        embviz.read_table(snap, "user", out=torch.zeros(99, 4))


def test_read_table_reads_only_that_tensor(tmp_path, ebc):
    with override_is_batching_disabled(True):
        path = embviz.save_snapshot(ebc, tmp_path / "unbatched")
    tables = embviz.snapshot_tables(path)
    # Each tensor now has its own file; remove the tweet table's data.
    tweet_file = path / Snapshot(str(path)).get_manifest()[tables.loc["tweet", "path"]].location
    assert tweet_file.is_file()
    tweet_file.unlink()
    assert torch.equal(embviz.read_table(path, "user"), ebc.embedding_bags["user"].weight.detach())
    with pytest.raises(SnapshotError, match="'tweet'"):
        embviz.read_table(path, "tweet")


def test_chunked_tensor_entries(tmp_path, ebc):
    with override_max_chunk_size_bytes(256):
        path = embviz.save_snapshot(ebc, tmp_path / "chunked")
    entry = Snapshot(str(path)).get_manifest()["0/model/embedding_bags.user.weight"]
    assert entry.type == "ChunkedTensor"
    assert embviz.snapshot_tables(path).loc["user", "shape"] == (100, 4)
    assert torch.equal(embviz.read_table(path, "user"), ebc.embedding_bags["user"].weight.detach())


def test_same_table_name_in_two_modules_is_listed_by_full_path(tmp_path):
    model = torch.nn.Module()
    model.a = make_ebc(0)
    model.b = make_ebc(1)
    path = embviz.save_snapshot(model, tmp_path / "two")
    tables = embviz.snapshot_tables(path)
    assert "model/a.embedding_bags.user.weight" in tables.index
    assert "model/b.embedding_bags.user.weight" in tables.index
    got = embviz.read_table(path, "model/b.embedding_bags.user.weight")
    assert torch.equal(got, model.b.embedding_bags["user"].weight.detach())
    with pytest.raises(SnapshotError, match="no table 'user'"):
        embviz.read_table(path, "user")


def test_unknown_table_lists_the_tables(snap):
    with pytest.raises(SnapshotError) as info:
        embviz.read_table(snap, "item")
    assert isinstance(info.value, EmbvizError)
    assert isinstance(info.value, LookupError)
    assert "no table 'item'" in str(info.value)
    assert "'user', 'tweet'" in str(info.value)


def test_bad_snapshot_paths(tmp_path, snap):
    with pytest.raises(SnapshotError, match="no such snapshot"):
        embviz.snapshot_tables(tmp_path / "missing")
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    with pytest.raises(SnapshotError, match="not a torchsnapshot"):
        embviz.snapshot_tables(afile)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SnapshotError, match="folder is empty"):
        embviz.read_table(empty, "user")
    unfinished = tmp_path / "unfinished"
    shutil.copytree(snap, unfinished)
    (unfinished / METADATA_FILE).unlink()
    with pytest.raises(SnapshotError, match=r"unfinished or not a snapshot.*\.snapshot_metadata"):
        embviz.snapshot_tables(unfinished)
    corrupt = tmp_path / "corrupt"
    shutil.copytree(snap, corrupt)
    (corrupt / METADATA_FILE).write_text("{not: [valid")
    with pytest.raises(SnapshotError, match="corrupt snapshot"):
        embviz.snapshot_tables(corrupt)


def test_snapshot_without_tables(tmp_path):
    path = embviz.save_snapshot(torch.nn.Linear(2, 2), tmp_path / "linear")
    with pytest.raises(SnapshotError, match="no embedding tables"):
        embviz.snapshot_tables(path)


def test_save_snapshot_never_overwrites(tmp_path, ebc, snap):
    with pytest.raises(SnapshotError, match="not empty"):
        embviz.save_snapshot(ebc, snap)
    (tmp_path / "f").write_text("x")
    with pytest.raises(SnapshotError, match="a file"):
        embviz.save_snapshot(ebc, tmp_path / "f")


def make_run(save_dir, ebc, steps, unfinished=()):
    for step in steps:
        embviz.save_snapshot(ebc, save_dir / str(step), step=step)
    for step in unfinished:
        path = embviz.save_snapshot(ebc, save_dir / str(step), step=step)
        (path / METADATA_FILE).unlink()


def test_checkpoints_in_step_order_marking_unfinished(tmp_path, ebc):
    run = tmp_path / "run"
    make_run(run, ebc, [0, 5, 10, 100], unfinished=[150])
    (run / "vocab").mkdir()
    (run / "config.yaml").write_text("tables: []")
    frame = embviz.checkpoints(run)
    assert list(frame.columns) == ["step", "path", "finished"]
    assert frame["step"].tolist() == [0, 5, 10, 100] and frame["finished"].all()
    listed = embviz.checkpoints(run, unfinished=True)
    assert list(listed.columns) == ["step", "path", "finished"]
    assert listed["step"].tolist() == [0, 5, 10, 100, 150]  # numeric, not "10" < "5"
    assert listed["step"].dtype == "int64" and listed["finished"].dtype == bool
    assert listed["finished"].tolist() == [True, True, True, True, False]
    assert listed.attrs == {} and frame.attrs == {}
    assert listed[listed["finished"]].equals(frame)
    assert frame["path"].tolist() == [str(run / s) for s in ("0", "5", "10", "100")]
    # Each finished checkpoint is a readable snapshot.
    assert isinstance(embviz.snapshot_tables(frame["path"].iloc[-1]), pd.DataFrame)


def test_checkpoint_folder_errors(tmp_path, ebc, snap):
    with pytest.raises(SnapshotError, match="no such checkpoint folder"):
        embviz.checkpoints(tmp_path / "nope")
    empty = tmp_path / "empty_run"
    empty.mkdir()
    with pytest.raises(SnapshotError, match="no finished checkpoints"):
        embviz.checkpoints(empty)
    only_unfinished = tmp_path / "cut"
    make_run(only_unfinished, ebc, [], unfinished=[10])
    with pytest.raises(SnapshotError, match="1 unfinished"):
        embviz.checkpoints(only_unfinished)
    with pytest.raises(SnapshotError, match="a single snapshot"):
        embviz.checkpoints(snap)


def test_snapshot_tables_on_a_checkpoint_folder_names_a_step(tmp_path, ebc):
    run = tmp_path / "run"
    make_run(run, ebc, [0, 20])
    with pytest.raises(SnapshotError, match=r"checkpoint folder \(finished steps: 0, 20\).*run/20"):
        embviz.snapshot_tables(run)
