"""health, spectrum and drift of snapshot paths: read block by block, equal to the table in memory.

Every snapshot here is read in blocks of a few hundred bytes (``small_blocks``), so each table
takes many blocks and the chunked snapshots' pieces are cut at other rows than the blocks. The
whole-table readers (`embviz.read_table` and the reader's ``read_into``) are made to fail: a
snapshot path must never be read whole.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import streamed_helpers
import torch
import torch.distributed as dist
from torch.distributed._shard.sharded_tensor import Shard, ShardedTensor, ShardMetadata
from torchsnapshot import Snapshot
from torchsnapshot.knobs import override_max_chunk_size_bytes

import embviz
import embviz.snapshot_reader
import embviz.snapshot_rows
import embviz.snapshots
import embviz.tablerows
from embviz.norms.errors import RowIndexError

BLOCK = streamed_helpers.BLOCK
_Holder = streamed_helpers.Holder
small_blocks = streamed_helpers.small_blocks  # the fixture


@pytest.fixture
def run(tmp_path):
    """Two chunked snapshots of a 3,000 x 16 table (initial and trained), and the tensors."""
    torch.manual_seed(4)
    initial = torch.randn(3000, 16)
    weight = initial.clone()
    weight[torch.randperm(3000)[:700]] += 0.4
    weight[:20] *= 30  # heavy rows: the sample takes them exactly
    with override_max_chunk_size_bytes(40_000):
        trained = embviz.save_snapshot(_Holder(weight), tmp_path / "run" / "10")
    with override_max_chunk_size_bytes(64_000):
        start = embviz.save_snapshot(_Holder(initial), tmp_path / "run" / "0")
    return {"weight": weight, "initial": initial, "path": trained, "start": start}


def _counts(rows: int) -> dict[str, pd.Series]:
    rng = np.random.default_rng(0)
    return {"user": pd.Series(rng.zipf(1.5, rows).astype(float), index=pd.RangeIndex(rows))}


@pytest.mark.parametrize("sample", [None, 400])
def test_health_of_a_snapshot_equals_the_table_in_memory(run, small_blocks, sample):
    counts = _counts(3000)
    streamed = embviz.health(
        run["path"], sample=sample, seed=2, initial=run["start"], counts=counts, progress=False
    )
    held = embviz.health(
        {"user": run["weight"]},
        sample=sample,
        seed=2,
        initial={"user": run["initial"]},
        counts=counts,
        progress=False,
    )
    assert streamed.loc["user", "sampled"] == (3000 if sample is None else 400)
    pd.testing.assert_frame_equal(streamed, held, check_exact=False, rtol=1e-12)
    # The table was mapped in ranges of at most one block, never whole.
    assert small_blocks and max(small_blocks) <= BLOCK
    spectrum = embviz.spectrum(run["path"], sample=sample, seed=2, progress=False)
    pd.testing.assert_frame_equal(
        spectrum,
        embviz.spectrum({"user": run["weight"]}, sample=sample, seed=2, progress=False),
        check_exact=False,
        rtol=1e-12,
    )


def test_health_history_streams_every_checkpoint(run, small_blocks):
    history = embviz.health_history(run["path"].parent, sample=500, progress=False)
    assert list(history["step"]) == [0, 10]
    for step, weight in ((0, run["initial"]), (10, run["weight"])):
        held = embviz.health(
            {"user": weight}, sample=500, initial={"user": run["initial"]}, progress=False
        )
        got = history[history["step"] == step].set_index("table").drop(columns="step")
        pd.testing.assert_frame_equal(got, held, check_exact=False, rtol=1e-12)


def test_drift_of_snapshots_equals_the_tables_in_memory(run, small_blocks):
    before, after = {"user": run["initial"]}, {"user": run["weight"]}
    counts = _counts(3000)
    for sample in (None, 800):
        streamed = embviz.drift(
            run["start"], run["path"], sample=sample, counts=counts, progress=False
        )
        held = embviz.drift(before, after, sample=sample, counts=counts, progress=False)
        pd.testing.assert_frame_equal(streamed, held, check_exact=False, rtol=1e-12)
    rows = embviz.row_drift(run["start"], run["path"], "user", sample=600)
    pd.testing.assert_frame_equal(
        rows, embviz.row_drift(before, after, "user", sample=600), check_exact=False, rtol=1e-12
    )
    history = embviz.drift_history(run["path"].parent, sample=600, progress=False)
    expected = embviz.drift(before, after, sample=600, progress=False)
    assert history["step"].tolist() == [10]
    got = history.set_index("table")[embviz.tabledrift.DRIFT_COLUMNS]
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-12)
    assert max(small_blocks) <= BLOCK


def test_neighbour_purity_of_a_snapshot_table(run, small_blocks):
    labels = np.arange(3000) % 7
    table = embviz.SnapshotTable(run["path"], "user")
    got = embviz.neighbour_purity(table, labels, sample=900, seed=1)
    expected = embviz.neighbour_purity(run["weight"], labels, sample=900, seed=1)
    assert got.to_dict() == pytest.approx(expected.to_dict(), rel=1e-12)


def test_snapshot_table_gathers_rows_in_any_order(run, small_blocks):
    table = embviz.SnapshotTable(run["path"], "user")
    assert table.shape == (3000, 16) and table.dtype == torch.float32 and len(table) == 3000
    ids = torch.tensor([2999, 5, 5, 1234, 0, 77, 2048])
    assert torch.equal(table.gather(ids), run["weight"][ids])
    assert torch.equal(table[10:1500], run["weight"][10:1500])
    assert torch.equal(table[10:12], run["weight"][10:12])  # one window: a view of the map
    assert table[5:5].shape == (0, 16)
    with pytest.raises(RowIndexError, match="out of range"):
        table.row_range(10, 3001)
    assert torch.equal(table[-1], run["weight"][-1])
    assert torch.equal(table.gather(ids, dtype=torch.float64), run["weight"][ids].double())
    assert torch.equal(table.norms(), embviz.row_norms(run["weight"]))
    # A sparse gather maps only the windows that hold wanted rows: two rows, two windows.
    small_blocks.clear()
    table.gather([3, 2900])
    assert len(small_blocks) == 2 and max(small_blocks) <= BLOCK
    with pytest.raises(RowIndexError, match="row 3000 is out of range"):
        table.gather([1, 3000])
    with pytest.raises(embviz.SnapshotError, match="nothing"):
        embviz.SnapshotTable(run["path"], "nothing")
    with pytest.raises(embviz.UnknownTableError, match="nothing"):
        embviz.health(run["path"], tables="nothing", progress=False)


# Column-wise and mixed shards of a 40 x 8 table, as a sharded collection saves them.
LAYOUTS = {
    "column_wise": [((0, 0), (40, 3)), ((0, 3), (40, 5))],
    "mixed": [((0, 0), (15, 8)), ((15, 0), (25, 4)), ((15, 4), (25, 4))],
}


@pytest.fixture(scope="module")
def process_group(tmp_path_factory):
    store = dist.FileStore(str(tmp_path_factory.mktemp("pg") / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_sharded_snapshots_gather_shard_by_shard(tmp_path, process_group, small_blocks, layout):
    torch.manual_seed(6)
    full = torch.randn(40, 8)
    shards = [
        Shard(full[r : r + nr, c : c + nc].clone(), ShardMetadata([r, c], [nr, nc], "rank:0/cpu"))
        for (r, c), (nr, nc) in LAYOUTS[layout]
    ]
    weight = ShardedTensor._init_from_local_shards(shards, list(full.shape))
    Snapshot.take(str(tmp_path / layout), {"model": _Holder(weight)})
    table = embviz.SnapshotTable(tmp_path / layout, "user")
    ids = torch.tensor([39, 0, 14, 15, 16, 3, 3])
    assert torch.equal(table.gather(ids), full[ids])
    assert torch.equal(table[2:37], full[2:37])
    assert torch.equal(table.norms(), embviz.row_norms(full))
    pd.testing.assert_frame_equal(
        embviz.health(tmp_path / layout, sample=20, progress=False),
        embviz.health({"user": full}, sample=20, progress=False),
        check_exact=False,
        rtol=1e-12,
    )
