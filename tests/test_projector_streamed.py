"""The Projector over a snapshot path: PCA, norms, the shown sample and neighbours, streamed."""

from __future__ import annotations

import pandas as pd
import pytest
import streamed_helpers
import torch
from torchsnapshot.knobs import override_max_chunk_size_bytes

import embviz

BLOCK = streamed_helpers.BLOCK
small_blocks = streamed_helpers.small_blocks  # the fixture


@pytest.fixture
def pair(tmp_path):
    torch.manual_seed(12)
    before = torch.randn(2500, 16) * torch.linspace(3, 0.1, 16)
    after = before + 0.05 * torch.randn(2500, 16)
    with override_max_chunk_size_bytes(30_000):
        now = embviz.save_snapshot(streamed_helpers.Holder(after), tmp_path / "now")
    then = embviz.save_snapshot(streamed_helpers.Holder(before), tmp_path / "then")
    return now, then, after, before


@pytest.mark.parametrize("max_points", [10_000, 600])
def test_projector_of_a_snapshot_equals_the_table_in_memory(pair, small_blocks, max_points):
    now, then, after, before = pair
    streamed = embviz.Projector(
        now, "user", max_points=max_points, color="drift", against=then, progress=False
    )
    held = embviz.Projector(
        after, max_points=max_points, color="drift", against=before, progress=False
    )
    assert len(streamed.frame) == min(max_points, 2500)
    pd.testing.assert_frame_equal(streamed.frame, held.frame, check_exact=False, rtol=1e-6)
    assert streamed.explained_variance == pytest.approx(held.explained_variance, rel=1e-12)
    pd.testing.assert_frame_equal(
        streamed.neighbours(5), held.neighbours(5), check_exact=False, rtol=1e-6
    )
    assert max(small_blocks) <= BLOCK


def test_project_takes_a_snapshot_table(pair, small_blocks):
    now, _, after, _ = pair
    table = embviz.SnapshotTable(now, "user")
    got = embviz.project(table, n=300, seed=3)
    expected = embviz.project(after, n=300, seed=3)
    pd.testing.assert_frame_equal(got.frame, expected.frame, check_exact=False, rtol=1e-6)
    found = embviz.nearest(table, 17, k=4, metric="l2").frame
    pd.testing.assert_frame_equal(found, embviz.nearest(after, 17, k=4, metric="l2").frame)
    with pytest.raises(embviz.UnknownTableError, match="nothing"):
        embviz.Projector(now, "nothing", progress=False)
