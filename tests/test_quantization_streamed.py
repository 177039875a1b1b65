"""fp16_error and quantization_error of snapshot tables: only the sampled rows read, in blocks."""

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
def table(tmp_path):
    torch.manual_seed(9)
    weight = torch.randn(2000, 16)
    weight[7] = 0.0  # a row of norm 0
    weight[11] *= 1e5  # beyond fp16's range: an overflow row
    with override_max_chunk_size_bytes(30_000):
        path = embviz.save_snapshot(streamed_helpers.Holder(weight), tmp_path / "snap")
    return path, weight


def test_fp16_error_of_a_snapshot_equals_the_table_in_memory(table, small_blocks):
    path, weight = table
    streamed = embviz.fp16_error_table(path, pairs=3000, seed=4, progress=False)
    held = embviz.fp16_error_table({"user": weight}, pairs=3000, seed=4, progress=False)
    assert streamed.loc["user", "overflow_rows"] == 1
    pd.testing.assert_frame_equal(streamed, held, check_exact=False, rtol=1e-12)
    one = embviz.fp16_error(embviz.SnapshotTable(path, "user"), pairs=500, seed=1)
    assert one.to_dict() == pytest.approx(embviz.fp16_error(weight, pairs=500, seed=1).to_dict())
    assert max(small_blocks) <= BLOCK


@pytest.mark.parametrize("rows", [None, 300, [5, 7, 11, 1999, 40, 41, 42, 43, 44, 45, 46, 47]])
def test_quantization_error_of_a_snapshot_equals_the_table_in_memory(table, small_blocks, rows):
    path, weight = table
    kwargs = {"dtypes": ("fp16", "int8", "int4"), "k": 3, "pairs": 400, "rows": rows,
              "queries": 50, "bag_size": 3, "seed": 2, "progress": False}  # fmt: skip
    streamed = embviz.quantization_error_table(path, **kwargs)
    held = embviz.quantization_error_table({"user": weight}, **kwargs)
    pd.testing.assert_frame_equal(streamed, held, check_exact=False, rtol=1e-12)
    assert max(small_blocks) <= BLOCK
    with pytest.raises(embviz.UnknownTableError, match="nothing"):
        embviz.quantization_error_table(path, tables="nothing", progress=False)
