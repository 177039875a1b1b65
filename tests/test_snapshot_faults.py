"""Fault corpus for snapshots: damaged, truncated, oversized and escaping copies of a real one.

Every case builds a damaged copy of a small snapshot written by torchsnapshot, and checks three
things in the same test: the API raises `SnapshotError` naming the file, ``embviz norms`` exits
2 with one line naming it (no traceback), and an undamaged copy still reads back exactly (so a
reader that refuses everything fails here).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torchrec
from torchsnapshot.knobs import override_is_batching_disabled

import embviz
from embviz.cli import main
from embviz.snapshots import METADATA_FILE, SnapshotError

USER = "0/model/embedding_bags.user.weight"
TWEET = "0/model/embedding_bags.tweet.weight"


def make_ebc() -> torchrec.EmbeddingBagCollection:
    torch.manual_seed(0)
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


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """Two real snapshots of the same collection: batched (one data file) and unbatched."""
    root = tmp_path_factory.mktemp("originals")
    ebc = make_ebc()
    batched = embviz.save_snapshot(ebc, root / "batched")
    with override_is_batching_disabled(True):
        unbatched = embviz.save_snapshot(ebc, root / "unbatched")
    weights = {name: bag.weight.detach().clone() for name, bag in ebc.embedding_bags.items()}
    return {"batched": batched, "unbatched": unbatched, "weights": weights}


def copy_of(originals, tmp_path: Path, kind: str = "batched", name: str = "copy") -> Path:
    target = tmp_path / name
    shutil.copytree(originals[kind], target)
    return target


def manifest(path: Path) -> dict:
    return json.loads((path / METADATA_FILE).read_text())


def edit_manifest(path: Path, edit: Callable[[dict], None]) -> None:
    meta = manifest(path)
    edit(meta["manifest"])
    (path / METADATA_FILE).write_text(json.dumps(meta))


def data_file(path: Path, key: str = USER) -> Path:
    return path / manifest(path)["manifest"][key]["location"]


def assert_reads_correctly(path: Path, originals) -> None:
    for name in ("user", "tweet"):
        assert torch.equal(embviz.read_table(path, name), originals["weights"][name])


def assert_refused(path: Path, originals, capsys, tmp_path, *, names: str | Path) -> str:
    """API and CLI refuse ``path`` naming ``names``; an undamaged copy reads correctly."""
    shown = str(names)
    with pytest.raises(SnapshotError) as info:
        embviz.read_table(path, "user")
    assert shown in str(info.value), str(info.value)
    capsys.readouterr()
    assert main(["norms", str(path), "--table", "user"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert shown in lines[0] and "Traceback" not in err
    # The same reader on an undamaged copy, next to the damaged one.
    good = copy_of(originals, Path(tempfile.mkdtemp(dir=tmp_path)), name="undamaged")
    assert_reads_correctly(good, originals)
    assert main(["norms", str(good), "--table", "user", "--format", "json"]) == 0
    stats = json.loads(capsys.readouterr().out)[0]
    norms = originals["weights"]["user"].double().norm(dim=1)
    assert stats["rows"] == 100
    assert stats["mean"] == pytest.approx(float(norms.mean()), rel=1e-6)
    assert stats["max"] == pytest.approx(float(norms.max()), rel=1e-6)
    return str(info.value)


# --------------------------------------------------------------------------- damaged data


@pytest.mark.parametrize("kind", ["batched", "unbatched"])
def test_truncated_data_file(originals, tmp_path, capsys, kind):
    path = copy_of(originals, tmp_path, kind)
    file = data_file(path)
    size = file.stat().st_size
    with open(file, "r+b") as f:
        f.truncate(size // 2)
    message = assert_refused(path, originals, capsys, tmp_path, names=file)
    assert "truncated" in message


@pytest.mark.parametrize("kind", ["batched", "unbatched"])
def test_emptied_data_file(originals, tmp_path, capsys, kind):
    path = copy_of(originals, tmp_path, kind)
    file = data_file(path)
    file.write_bytes(b"")
    message = assert_refused(path, originals, capsys, tmp_path, names=file)
    assert "holds 0 bytes" in message


def test_missing_data_file(originals, tmp_path, capsys):
    path = copy_of(originals, tmp_path, "unbatched")
    file = data_file(path)
    file.unlink()
    message = assert_refused(path, originals, capsys, tmp_path, names=file)
    assert "missing" in message
    # The other table, in its own file, still reads.
    assert torch.equal(embviz.read_table(path, "tweet"), originals["weights"]["tweet"])


def test_appended_bytes_in_an_unbatched_file(originals, tmp_path, capsys):
    path = copy_of(originals, tmp_path, "unbatched")
    file = data_file(path)
    with open(file, "ab") as f:
        f.write(b"\0" * 16)
    assert_refused(path, originals, capsys, tmp_path, names=file)


# --------------------------------------------------------------------------- manifest


def _set(key: str, field: str, value) -> Callable[[dict], None]:
    def edit(entries: dict) -> None:
        entries[key][field] = value

    return edit


@pytest.mark.parametrize("kind", ["batched", "unbatched"])
def test_manifest_shape_larger_than_the_data(originals, tmp_path, capsys, kind):
    path = copy_of(originals, tmp_path, kind)
    edit_manifest(path, _set(USER, "shape", [1_000_000, 4]))
    # What the manifest says is listed; reading it is refused, naming the data file.
    assert embviz.snapshot_tables(path).loc["user", "rows"] == 1_000_000
    message = assert_refused(path, originals, capsys, tmp_path, names=data_file(path))
    assert "1000000 x 4" in message


@pytest.mark.parametrize("shape", [[-5, 4], [2**62, 4096], [100, "4"], [100, True], "100x4"])
def test_negative_huge_or_malformed_shape(originals, tmp_path, capsys, shape):
    path = copy_of(originals, tmp_path)
    edit_manifest(path, _set(USER, "shape", shape))
    metadata = path / METADATA_FILE
    with pytest.raises(SnapshotError, match="shape"):
        embviz.snapshot_tables(path)
    assert_refused(path, originals, capsys, tmp_path, names=metadata)


def test_unknown_dtype(originals, tmp_path, capsys):
    path = copy_of(originals, tmp_path)
    edit_manifest(path, _set(USER, "dtype", "torch.float99"))
    message = assert_refused(path, originals, capsys, tmp_path, names=path / METADATA_FILE)
    assert "unknown dtype 'torch.float99'" in message


def test_unverifiable_serializer(originals, tmp_path, capsys):
    path = copy_of(originals, tmp_path)
    edit_manifest(path, _set(USER, "serializer", "per_tensor_qtensor"))
    message = assert_refused(path, originals, capsys, tmp_path, names=data_file(path))
    assert "per_tensor_qtensor" in message


@pytest.mark.parametrize("byte_range", [[1600, 0], [-4, 1596], [0, 1600, 3], [0, "1600"]])
def test_invalid_byte_range(originals, tmp_path, capsys, byte_range):
    path = copy_of(originals, tmp_path)
    edit_manifest(path, _set(USER, "byte_range", byte_range))
    assert_refused(path, originals, capsys, tmp_path, names=path / METADATA_FILE)


def test_byte_range_past_the_end_of_the_file(originals, tmp_path, capsys):
    path = copy_of(originals, tmp_path)
    file = data_file(path)
    end = file.stat().st_size
    edit_manifest(path, _set(USER, "byte_range", [end - 800, end + 800]))
    message = assert_refused(path, originals, capsys, tmp_path, names=file)
    assert f"holds {end:,} bytes" in message


def test_torch_save_pieces_are_loaded_and_checked(originals, tmp_path, capsys):
    """A piece stored with torch.save (which torchsnapshot uses for other dtypes) is verified."""
    path = copy_of(originals, tmp_path, "unbatched")
    file = data_file(path)
    torch.save(originals["weights"]["user"].clone(), file)
    edit_manifest(path, _set(USER, "serializer", "torch_save"))
    assert torch.equal(embviz.read_table(path, "user"), originals["weights"]["user"])
    # The same bytes but the manifest shape differs from what torch.save stored.
    torch.save(originals["weights"]["user"][:50].clone(), file)
    message = assert_refused(path, originals, capsys, tmp_path, names=file)
    assert "[50, 4] float32" in message
    # Damaged torch.save bytes.
    file.write_bytes(b"PK\x03\x04 not a zip at all")
    assert_refused(path, originals, capsys, tmp_path, names=file)


# --------------------------------------------------------------------------- locations


@pytest.fixture
def secret(tmp_path) -> Path:
    """A file outside every snapshot, of exactly the size the user table needs (1,600 bytes):
    only the location check can refuse reading it."""
    file = tmp_path / "outside" / "secret.bin"
    file.parent.mkdir()
    file.write_bytes(bytes(range(256)) * 6 + bytes(64))
    assert file.stat().st_size == 100 * 4 * 4
    return file


@pytest.mark.parametrize("how", ["dotdot", "absolute", "dotdot_deep"])
def test_location_escaping_the_snapshot(originals, tmp_path, capsys, secret, how):
    path = copy_of(originals, tmp_path, "unbatched")
    location = {
        "dotdot": "../outside/secret.bin",
        "absolute": str(secret),
        "dotdot_deep": "0/model/../../../outside/secret.bin",
    }[how]
    edit_manifest(path, _set(USER, "location", location))
    message = assert_refused(path, originals, capsys, tmp_path, names=path / METADATA_FILE)
    assert "leads outside the snapshot folder" in message


def test_data_file_symlinked_outside(originals, tmp_path, capsys, secret):
    path = copy_of(originals, tmp_path, "unbatched")
    file = data_file(path)
    file.unlink()
    file.symlink_to(secret)
    message = assert_refused(path, originals, capsys, tmp_path, names=path / METADATA_FILE)
    assert str(secret) in message


def test_location_to_a_folder_or_a_fifo(originals, tmp_path, capsys):
    path = copy_of(originals, tmp_path, "unbatched")
    edit_manifest(path, _set(USER, "location", "0"))
    assert_refused(path, originals, capsys, tmp_path, names=path / "0")
    fifo = path / "fifo"
    os.mkfifo(fifo)
    edit_manifest(path, _set(USER, "location", "fifo"))
    message = assert_refused(path, originals, capsys, tmp_path, names=fifo)
    assert "not a regular file" in message


def test_symlinked_snapshot_and_checkpoint_folders_still_read(originals, tmp_path):
    real = copy_of(originals, tmp_path, "unbatched", name="real")
    link = tmp_path / "link"
    link.symlink_to(real)
    assert_reads_correctly(link, originals)
    run = tmp_path / "run"
    run.mkdir()
    (run / "5").symlink_to(real)
    saves = tmp_path / "saves"
    saves.symlink_to(run)
    assert_reads_correctly(saves / "5", originals)
    for uri in (f"file://{link}", f"fs://{link}"):
        assert torch.equal(embviz.read_table(uri, "user"), originals["weights"]["user"])
    # A location with ".." that stays inside the folder is fine.
    edit_manifest(real, lambda m: m[USER].update(location="0/../" + m[USER]["location"]))
    assert torch.equal(embviz.read_table(link, "user"), originals["weights"]["user"])


def test_file_uris_are_checked_the_same(originals, tmp_path, secret):
    path = copy_of(originals, tmp_path, "unbatched")
    edit_manifest(path, _set(USER, "location", "../outside/secret.bin"))
    for uri in (f"file://{path}", f"fs://{path}"):
        with pytest.raises(SnapshotError, match="leads outside the snapshot folder"):
            embviz.read_table(uri, "user")


# --------------------------------------------------------------------------- pretrained


def test_pretrained_table_from_a_damaged_snapshot_is_refused(originals, tmp_path, capsys):
    from embviz.config import dump_config, parse_config

    path = copy_of(originals, tmp_path)
    good = copy_of(originals, tmp_path, name="good")

    def config(snapshot: Path) -> embviz.LargeEmbeddingsConfig:
        return parse_config(
            "tables:\n"
            "  - name: user\n"
            "    num_embeddings: 100\n"
            "    embedding_dim: 4\n"
            "    data_type: fp32\n"
            "    optimizer: {sgd: {lr: 0.01}}\n"
            f"    pretrained: {{emb_name: user, embedding_snapshot_uri: '{snapshot}'}}\n"
        )

    built = embviz.build_collection(config(good), device="cpu", progress=False)
    assert torch.equal(built.embedding_bags["user"].weight.detach(), originals["weights"]["user"])
    file = data_file(path)
    with open(file, "r+b") as f:
        f.truncate(1000)
    with pytest.raises(SnapshotError, match=str(file)):
        embviz.build_collection(config(path), device="cpu", progress=False)
    # `embviz build` reports it and exits 2, where it used to load zeros and succeed.
    yaml_file = tmp_path / "tables.yaml"
    yaml_file.write_text(dump_config(config(path)))
    capsys.readouterr()
    assert main(["build", str(yaml_file), "--device", "cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(file) in err and "truncated" in err and "Traceback" not in err


# --------------------------------------------------------------------------- remote snapshots


@pytest.fixture
def remote(monkeypatch):
    """A ``testfs://`` storage plugin registered the way torchsnapshot finds third-party ones
    (its ``storage_plugins`` entry points), backed by local folders: it stands in for s3/gs,
    whose locations the reader checks the same way."""
    import types

    import torchsnapshot.storage_plugin as plugins
    from torchsnapshot.storage_plugins.fs import FSStoragePlugin

    def factory(root, storage_options):
        return FSStoragePlugin(root=root, storage_options=storage_options)

    entry = types.SimpleNamespace(name="testfs", value="tests:factory", load=lambda: factory)
    real = plugins.entry_points
    monkeypatch.setattr(
        plugins, "entry_points", lambda group: [entry] if group == "storage_plugins" else real()
    )
    return lambda path: f"testfs://{path}"


def test_remote_snapshots_are_read_and_checked(originals, tmp_path, remote, secret):
    good = copy_of(originals, tmp_path, name="good")
    assert embviz.snapshot_tables(remote(good)).loc["user", "rows"] == 100
    assert_reads_correctly(remote(good), originals)
    blocks = list(embviz.iter_table_blocks(remote(good), "user", max_bytes=160))
    assert len(blocks) == 10
    assert torch.equal(torch.cat([b for _, b in blocks]), originals["weights"]["user"])
    # A truncated object: the short read is an error naming it.
    truncated = copy_of(originals, tmp_path, "unbatched", name="truncated")
    file = data_file(truncated)
    os.truncate(file, 100)
    location = manifest(truncated)["manifest"][USER]["location"]
    with pytest.raises(SnapshotError, match=f"{remote(truncated)}/{location}: read 100 bytes"):
        embviz.read_table(remote(truncated), "user")
    # Locations are plain relative paths: no "..", absolute paths or other URIs.
    for location in ("../outside/secret.bin", str(secret), "0/../../outside/secret.bin"):
        escaping = copy_of(originals, Path(tempfile.mkdtemp(dir=tmp_path)), "unbatched")
        edit_manifest(escaping, _set(USER, "location", location))
        with pytest.raises(SnapshotError, match="leads outside the snapshot; refused"):
            embviz.read_table(remote(escaping), "user")
