"""The streaming reader: blocks of rows, chunked and sharded snapshots, read shard by shard."""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.distributed as dist
from torch.distributed._shard.sharded_tensor import Shard, ShardedTensor, ShardMetadata
from torchsnapshot import Snapshot
from torchsnapshot.knobs import override_max_chunk_size_bytes, override_max_shard_size_bytes

import embviz
from embviz.errors import ArgumentError
from embviz.snapshot_reader import table_pieces, table_shape
from embviz.snapshots import METADATA_FILE, SnapshotError

KEY = "0/model/embedding_bags.user.weight"


class _Holder(torch.nn.Module):
    """A module whose state dict is one (sharded) table, as a sharded collection's is."""

    def __init__(self, weight):
        super().__init__()
        self.weight = weight

    def state_dict(self, *args, **kwargs):
        return {"embedding_bags.user.weight": self.weight}

    def load_state_dict(self, *args, **kwargs):
        pass


# Shards of a 10 x 6 table: row-wise (all columns), and column-wise pieces of the same rows.
LAYOUTS = {
    "row_wise": [((0, 0), (4, 6)), ((4, 0), (3, 6)), ((7, 0), (3, 6))],
    "column_wise": [((0, 0), (10, 2)), ((0, 2), (10, 4))],
    "mixed": [((0, 0), (4, 6)), ((4, 0), (6, 2)), ((4, 2), (6, 4))],
}


@pytest.fixture(scope="module")
def process_group(tmp_path_factory):
    """A gloo process group of world size 1 (a ShardedTensor needs one), for this module."""
    store = dist.FileStore(str(tmp_path_factory.mktemp("pg") / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def sharded_snapshot(path, layout: str, full: torch.Tensor, max_shard_bytes: int | None = None):
    shards = [
        Shard(
            full[r : r + nr, c : c + nc].clone(),
            ShardMetadata([r, c], [nr, nc], "rank:0/cpu"),
        )
        for (r, c), (nr, nc) in LAYOUTS[layout]
    ]
    weight = ShardedTensor._init_from_local_shards(shards, list(full.shape))
    if max_shard_bytes is None:
        Snapshot.take(str(path), {"model": _Holder(weight)})
    else:
        with override_max_shard_size_bytes(max_shard_bytes):
            Snapshot.take(str(path), {"model": _Holder(weight)})
    return path


@pytest.fixture
def full():
    torch.manual_seed(3)
    return torch.randn(10, 6)


def test_blocks_cover_the_table_in_bounded_pieces(tmp_path):
    torch.manual_seed(0)
    weight = torch.randn(1000, 16)
    path = embviz.save_snapshot(_Holder(weight), tmp_path / "plain")
    blocks = list(embviz.iter_table_blocks(path, "user", max_bytes=64 * 16 * 4))
    assert [r0 for r0, _ in blocks] == list(range(0, 1000, 64))
    assert all(b.shape[0] <= 64 and b.shape[1] == 16 for _, b in blocks)
    assert torch.equal(torch.cat([b for _, b in blocks]), weight)
    # A block smaller than a row still yields whole rows, one at a time.
    assert len(list(embviz.iter_table_blocks(path, "user", max_bytes=1))) == 1000
    with pytest.raises(ArgumentError, match="max_bytes"):
        embviz.iter_table_blocks(path, "user", max_bytes=0)


def test_writing_to_a_block_never_changes_the_file(tmp_path):
    weight = torch.ones(100, 4)
    path = embviz.save_snapshot(_Holder(weight), tmp_path / "plain")
    for _, block in embviz.iter_table_blocks(path, "user"):
        block.zero_()
    assert torch.equal(embviz.read_table(path, "user"), weight)


def test_chunked_entries_read_chunk_by_chunk(tmp_path):
    torch.manual_seed(1)
    weight = torch.randn(100, 8)
    with override_max_chunk_size_bytes(1000):
        path = embviz.save_snapshot(_Holder(weight), tmp_path / "chunked")
    entry = json.loads((path / METADATA_FILE).read_text())["manifest"][KEY]
    assert entry["type"] == "ChunkedTensor" and len(entry["chunks"]) > 3
    pieces = table_pieces(path, "user")
    assert len(pieces) == len(entry["chunks"])
    blocks = list(embviz.iter_table_blocks(path, "user", max_bytes=10**6))
    # One block per chunk: a block never spans two stored pieces.
    assert [r0 for r0, _ in blocks] == [p.offsets[0] for p in pieces]
    assert torch.equal(torch.cat([b for _, b in blocks]), weight)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_sharded_snapshots_read_shard_by_shard(tmp_path, process_group, full, layout):
    path = sharded_snapshot(tmp_path / layout, layout, full)
    entry = json.loads((path / METADATA_FILE).read_text())["manifest"][KEY]
    assert entry["type"] == "ShardedTensor" and len(entry["shards"]) == len(LAYOUTS[layout])
    assert embviz.snapshot_tables(path).loc["user", "shape"] == (10, 6)
    assert torch.equal(embviz.read_table(path, "user"), full)
    # Whole rows, shard by shard (column-wise shards of the same rows side by side).
    rebuilt = torch.full_like(full, float("nan"))
    for r0, block in embviz.iter_table_blocks(path, "user", max_bytes=2 * 6 * 4):
        assert block.shape[1] == 6 and block.shape[0] <= 2
        rebuilt[r0 : r0 + block.shape[0]] = block
    assert torch.equal(rebuilt, full)
    # The same through one reused buffer (each block copied before the next).
    rebuilt = torch.cat(
        [b.clone() for _, b in embviz.iter_table_blocks(path, "user", 48, reuse=True)]
    )
    assert torch.equal(rebuilt, full)
    assert table_shape(path, "user") == (10, 6)
    # Stored pieces, each in its own coordinates.
    rebuilt = torch.full_like(full, float("nan"))
    seen = 0
    for r0, c0, block in embviz.iter_table_pieces(path, "user", max_bytes=8):
        rebuilt[r0 : r0 + block.shape[0], c0 : c0 + block.shape[1]] = block
        seen += block.numel()
    assert seen == full.numel() and torch.equal(rebuilt, full)


def test_subdivided_shards(tmp_path, process_group, full):
    path = sharded_snapshot(tmp_path / "sub", "row_wise", full, max_shard_bytes=2 * 6 * 4)
    assert len(table_pieces(path, "user")) > 3
    assert torch.equal(embviz.read_table(path, "user"), full)


def _edit_shards(path, edit):
    meta = json.loads((path / METADATA_FILE).read_text())
    edit(meta["manifest"][KEY]["shards"])
    (path / METADATA_FILE).write_text(json.dumps(meta))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.pop(1), "gap"),
        (lambda s: s[1].update(offsets=[3, 0]), "overlap"),
        (lambda s: s[2].update(sizes=[3, 5]), "stores shape"),
        (lambda s: s[2]["tensor"].update(dtype="torch.float16"), "float16, the table float32"),
    ],
)
def test_shards_that_do_not_tile_the_table(tmp_path, process_group, full, edit, message):
    path = sharded_snapshot(tmp_path / "bad", "row_wise", full)
    good = sharded_snapshot(tmp_path / "good", "row_wise", full)
    _edit_shards(path, edit)
    with pytest.raises(SnapshotError, match=message) as info:
        embviz.read_table(path, "user")
    assert str(path / METADATA_FILE) in str(info.value)
    assert torch.equal(embviz.read_table(good, "user"), full)


def test_a_truncated_shard_names_its_file(tmp_path, process_group, full):
    path = sharded_snapshot(tmp_path / "trunc", "column_wise", full)
    meta = json.loads((path / METADATA_FILE).read_text())
    location = meta["manifest"][KEY]["shards"][1]["tensor"]["location"]
    file = path / location
    os.truncate(file, file.stat().st_size - 4)
    with pytest.raises(SnapshotError, match=str(file)):
        list(embviz.iter_table_blocks(path, "user"))


# --------------------------------------------------------------------------- streamed norms


def _reference(weight: torch.Tensor, rows: torch.Tensor | None = None) -> dict[str, float]:
    """Statistics of the row norms in float64: the exact reference."""
    from embviz.norms import QUANTILES

    w = weight.double() if rows is None else weight.double()[rows]
    norms = torch.linalg.vector_norm(w, dim=1)
    q = torch.quantile(norms, torch.tensor(list(QUANTILES.values()), dtype=torch.float64))
    return {
        "mean": float(norms.mean()),
        "std": float(norms.std()),
        "min": float(norms.min()),
        **dict(zip(QUANTILES, q.tolist(), strict=True)),
        "max": float(norms.max()),
    }


def _assert_close_to(stats, reference: dict[str, float], rel: float = 2e-6) -> None:
    for column, value in reference.items():
        assert stats[column] == pytest.approx(value, rel=rel), column


@pytest.fixture
def small_blocks(monkeypatch):
    """Stream in blocks of 1,000 bytes, so every table below takes many blocks."""
    import embviz.norms.streaming

    monkeypatch.setattr(embviz.norms.streaming, "BLOCK_BYTES", 1000)


def test_norm_stats_streamed_match_the_gathered_table(tmp_path, small_blocks):
    from embviz.norms import sample_rows

    torch.manual_seed(5)
    initial = torch.randn(5000, 16)
    weight = initial.clone()
    moved = torch.randperm(5000)[:1234]
    weight[moved] += 0.5
    # Different chunkings, so the two snapshots' blocks are cut at different rows.
    with override_max_chunk_size_bytes(40_000):
        path = embviz.save_snapshot(_Holder(weight), tmp_path / "now")
    with override_max_chunk_size_bytes(64_000):
        start = embviz.save_snapshot(_Holder(initial), tmp_path / "start")
    assert len(table_pieces(path, "user")) != len(table_pieces(start, "user")) > 1
    stats = embviz.norm_stats(path, initial=start, progress=False).loc["user"]
    assert stats["rows"] == stats["sampled"] == 5000
    _assert_close_to(stats, _reference(weight))
    assert stats["unchanged_share"] == (5000 - 1234) / 5000
    # Held in memory, the same norms give the same statistics.
    live = embviz.norm_stats({"user": weight}, initial={"user": initial}, progress=False)
    assert embviz.norm_stats(path, initial=start, progress=False).equals(live)
    # A sample: the same rows as in memory, across block boundaries.
    sampled = embviz.norm_stats(path, sample=700, seed=3, initial=start, progress=False)
    assert sampled.loc["user", "sampled"] == 700
    _assert_close_to(sampled.loc["user"], _reference(weight, sample_rows(5000, 700, 3)))
    expected = embviz.norm_stats(
        {"user": weight}, sample=700, seed=3, initial={"user": initial}, progress=False
    )
    assert sampled.equals(expected)
    # The histogram streams too: its counts add up to the rows.
    histogram = embviz.norm_histogram(path, bins=7, progress=False)
    assert int(histogram.frame["count"].sum()) == 5000


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_norm_stats_of_sharded_snapshots(tmp_path, process_group, small_blocks, layout):
    torch.manual_seed(8)
    full = torch.randn(10, 6)
    path = sharded_snapshot(tmp_path / layout, layout, full)
    stats = embviz.norm_stats(path, progress=False).loc["user"]
    assert stats["rows"] == 10
    _assert_close_to(stats, _reference(full))


def test_norm_history_streams_beside_the_first_checkpoint(tmp_path, small_blocks):
    torch.manual_seed(2)
    first = torch.randn(300, 8)
    later = first.clone()
    later[:100] *= 2
    run = tmp_path / "run"
    embviz.save_snapshot(_Holder(first), run / "0")
    with override_max_chunk_size_bytes(3000):
        embviz.save_snapshot(_Holder(later), run / "10")
    history = embviz.norm_history(run, initial="first", progress=False).set_index("step")
    assert history.loc[0, "unchanged_share"] == 1.0
    assert history.loc[10, "unchanged_share"] == 200 / 300
    _assert_close_to(history.loc[10], _reference(later))
    # A truncated checkpoint is named, not read as zeros.
    data = [p for p in (run / "10").rglob("*") if p.is_file() and p.name != METADATA_FILE]
    os.truncate(data[0], 10)
    with pytest.raises(SnapshotError, match=str(data[0])):
        embviz.norm_history(run, initial="first", progress=False)


# --------------------------------------------------------------------------- two ranks


def _two_rank_writer(rank: int, store_file: str, path: str, full: torch.Tensor) -> None:
    """Rank ``rank`` of 2 (gloo): one ShardedTensor per layout, each rank holding its shards;
    the ranks take one snapshot together, as a sharded training job does."""
    store = dist.FileStore(store_file, 2)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=2)
    try:
        rows, cols = full.shape
        half_r, half_c = rows // 2, cols // 2
        layouts = {
            # row-wise: rank 0 the first rows, rank 1 the rest
            "row": [((0, 0), (half_r, cols), 0), ((half_r, 0), (rows - half_r, cols), 1)],
            # column-wise: rank 0 the first columns, rank 1 the rest
            "col": [((0, 0), (rows, half_c), 0), ((0, half_c), (rows, cols - half_c), 1)],
        }
        state = {}
        for name, shards in layouts.items():
            local = [
                Shard(
                    full[r : r + nr, c : c + nc].clone(),
                    ShardMetadata([r, c], [nr, nc], f"rank:{owner}/cpu"),
                )
                for (r, c), (nr, nc), owner in shards
                if owner == rank
            ]
            state[f"embedding_bags.{name}.weight"] = ShardedTensor._init_from_local_shards(
                local, list(full.shape)
            )

        class Holder(torch.nn.Module):
            def state_dict(self, *args, **kwargs):
                return state

            def load_state_dict(self, *args, **kwargs):
                pass

        Snapshot.take(path, {"model": Holder()})
    finally:
        dist.destroy_process_group()


def test_a_snapshot_taken_by_two_ranks_reads_shard_by_shard(tmp_path):
    import torch.multiprocessing as mp

    torch.manual_seed(11)
    full = torch.randn(1000, 12)
    path = tmp_path / "two_ranks"
    mp.spawn(_two_rank_writer, args=(str(tmp_path / "store"), str(path), full), nprocs=2, join=True)
    meta = json.loads((path / METADATA_FILE).read_text())
    assert meta["world_size"] == 2
    for name in ("row", "col"):
        # Each rank wrote its own shard: the manifest holds one entry per rank.
        assert {k.split("/")[0] for k in meta["manifest"] if k.endswith(f"{name}.weight")} == {
            "0",
            "1",
        }
        assert torch.equal(embviz.read_table(path, name), full)
        blocks = list(embviz.iter_table_blocks(path, name, max_bytes=1000))
        assert torch.equal(torch.cat([b for _, b in blocks]), full)
        stats = embviz.norm_stats(path, tables=name, progress=False).loc[name]
        _assert_close_to(stats, _reference(full))
