"""`to_torchrec()` gives the tables the-algorithm-ml's LargeEmbeddings builds, and they run."""

from __future__ import annotations

import pytest
import torch
import torchrec
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

import embviz


@pytest.fixture(scope="module")
def cfg():
    return embviz.parse_config(
        """
tables:
  - {name: user, num_embeddings: 100, embedding_dim: 8, data_type: fp32, optimizer: {sgd: {lr: 0.1}}}
  - {name: item, num_embeddings: 50, embedding_dim: 4, data_type: fp16, optimizer: {adam: {lr: 0.1}}}
"""
    )


def test_one_feature_per_table_sum_pooling_dtype_mapped(cfg):
    user, item = cfg.to_torchrec()
    assert isinstance(user, torchrec.EmbeddingBagConfig)
    assert (user.name, user.num_embeddings, user.embedding_dim) == ("user", 100, 8)
    assert user.feature_names == ["user"] and item.feature_names == ["item"]
    assert user.pooling == item.pooling == torchrec.PoolingType.SUM
    assert user.data_type == torchrec.DataType.FP32
    assert item.data_type == torchrec.DataType.FP16


def test_collection_builds_on_meta_without_allocating(cfg):
    ebc = torchrec.EmbeddingBagCollection(tables=cfg.to_torchrec(), device=torch.device("meta"))
    weights = {k: v for k, v in ebc.state_dict().items()}
    assert weights["embedding_bags.user.weight"].shape == (100, 8)
    assert weights["embedding_bags.user.weight"].is_meta
    assert weights["embedding_bags.item.weight"].dtype == torch.float16


def test_collection_runs_a_forward_pass_on_the_cpu(cfg):
    torch.manual_seed(0)
    ebc = torchrec.EmbeddingBagCollection(tables=cfg.to_torchrec(), device=torch.device("cpu"))
    # Two examples: user ids [1, 2] and [3]; item ids [] and [4, 4].
    features = KeyedJaggedTensor.from_lengths_sync(
        keys=["user", "item"],
        values=torch.tensor([1, 2, 3, 4, 4]),
        lengths=torch.tensor([2, 1, 0, 2]),
    )
    pooled = ebc(features).to_dict()
    user = ebc.state_dict()["embedding_bags.user.weight"]
    item = ebc.state_dict()["embedding_bags.item.weight"]
    torch.testing.assert_close(pooled["user"][0], user[1] + user[2])
    torch.testing.assert_close(pooled["user"][1], user[3])
    # The fp16 table's pooled values come out in the collection's common (fp32) output dtype.
    torch.testing.assert_close(pooled["item"][0], torch.zeros(4))
    torch.testing.assert_close(pooled["item"][1], (item[4] + item[4]).float())
