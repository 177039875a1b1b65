"""Serving bytes against torchrec's quantized EmbeddingBagCollection and torchrec's planner.

Each collection is made the way a trained model is prepared for serving: a float
``torchrec.EmbeddingBagCollection`` on the CPU, quantized by
``torchrec.inference.modules.quantize_embeddings`` with its defaults (row alignment 16, FBGEMM's
128-byte table alignment). What a table takes is its share of the FBGEMM
``IntNBitTableBatchedEmbeddingBagsCodegen`` buffer (``weights_host`` on the CPU): the whole
buffer for one table per collection, the distance between table offsets for many.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest

import embviz
from embviz.memory import memory_table
from embviz.serving import (
    SERVING_DTYPES,
    SERVING_WIDTH_MULTIPLE,
    planner_serving_bytes,
    serving_row_bytes,
    serving_table_bytes,
)

torch = pytest.importorskip("torch")
pytest.importorskip("torchrec")

from torchrec.inference.modules import quantize_embeddings  # noqa: E402
from torchrec.modules.embedding_configs import (  # noqa: E402
    DataType,
    EmbeddingBagConfig,
    PoolingType,
)
from torchrec.modules.embedding_modules import EmbeddingBagCollection  # noqa: E402

# The torch dtypes quantize_embeddings takes for each serving dtype.
TORCH_DTYPE = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "int8": torch.qint8,
    "int4": torch.quint4x2,
    "int2": torch.quint2x4,
}
TORCHREC_DTYPE = {
    "fp32": DataType.FP32,
    "fp16": DataType.FP16,
    "int8": DataType.INT8,
    "int4": DataType.INT4,
    "int2": DataType.INT2,
}


def _quantized(shapes, dtypes, *, device="cpu"):
    """quantize_embeddings of a float collection with tables ``t0, t1, ...`` of these shapes."""
    tables = [
        EmbeddingBagConfig(
            name=f"t{i}",
            num_embeddings=rows,
            embedding_dim=dim,
            feature_names=[f"f{i}"],
            pooling=PoolingType.SUM,
        )
        for i, (rows, dim) in enumerate(shapes)
    ]
    ebc = EmbeddingBagCollection(tables=tables, device=torch.device(device))
    if isinstance(dtypes, str):
        dtypes = [dtypes] * len(shapes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = quantize_embeddings(
            torch.nn.Sequential(ebc),
            dtype=TORCH_DTYPE[dtypes[0]],
            inplace=False,
            per_table_weight_dtype={f"t{i}": TORCH_DTYPE[d] for i, d in enumerate(dtypes)},
        )
    return module[0]


def _kernel(collection):
    (kernel,) = collection._emb_modules  # one pooling type: one FBGEMM kernel
    return kernel


def _table_bytes(collection) -> list[int]:
    """Each table's share of FBGEMM's host buffer, in table order."""
    kernel = _kernel(collection)
    offsets = [int(o) for o in kernel.weights_physical_offsets]
    ends = [*offsets[1:], kernel.weights_host.numel()]
    return [end - start for start, end in zip(offsets, ends, strict=True)]


def _allowed(dtype: str, dims) -> list[int]:
    return [d for d in dims if d % SERVING_WIDTH_MULTIPLE[dtype] == 0]


WIDTHS = [1, 2, 3, 4, 6, 8, 12, 16, 20, 24, 31, 32, 36, 40, 64, 96, 100, 128, 250, 256, 1000]


@pytest.mark.parametrize("dtype", SERVING_DTYPES)
@pytest.mark.parametrize("rows", [1, 33, 4097])
def test_one_table_per_collection(dtype, rows):
    for dim in _allowed(dtype, WIDTHS):
        kernel = _kernel(_quantized([(rows, dim)], dtype))
        assert kernel.row_alignment == 16  # torchrec's default, what the rules assume
        assert kernel.weights_host.dtype == torch.uint8
        assert kernel.weights_dev.numel() == 0 and kernel.weights_uvm.numel() == 0
        measured = kernel.weights_host.numel()
        assert measured == int(serving_table_bytes(rows, dim, dtype)), (dtype, rows, dim)


def test_padding_examples_from_the_issue():
    # A 64-dim int4 row: 32 data bytes + 4 scale/bias = 36, stored in 48.
    assert _kernel(_quantized([(1000, 64)], "int4")).weights_host.numel() == 48_000
    # 3 rows of 8-dim int8: 3 x 16 = 48 bytes, rounded up to 128.
    assert _kernel(_quantized([(3, 8)], "int8")).weights_host.numel() == 128
    # fp32 rows are padded too: 3 columns take 16 bytes, not 12.
    assert _kernel(_quantized([(8, 3)], "fp32")).weights_host.numel() == 128


@pytest.mark.slow
@pytest.mark.parametrize("dtype", SERVING_DTYPES)
def test_every_width_up_to_1000(dtype):
    """All widths 1..1000 the dtype allows, 1 or 2 rows each, one collection per dtype."""
    shapes = [(1 + dim % 2, dim) for dim in _allowed(dtype, range(1, 1001))]
    collection = _quantized(shapes, dtype)
    expected = serving_table_bytes([r for r, _ in shapes], [d for _, d in shapes], dtype)
    assert _table_bytes(collection) == expected.tolist()
    assert _kernel(collection).weights_host.numel() == int(expected.sum())


def test_mixed_dtypes_in_one_collection_add_up():
    shapes = [(1000, 64), (7, 8), (333, 24), (5, 1000), (64, 12), (100, 16)]
    dtypes = ["int8", "int4", "int2", "fp16", "fp32", "int4"]
    collection = _quantized(shapes, dtypes)
    rows, dims = zip(*shapes, strict=True)
    expected = serving_table_bytes(rows, dims, np.array(dtypes, dtype=object))
    assert _table_bytes(collection) == expected.tolist()
    assert _kernel(collection).weights_host.numel() == int(expected.sum())


@pytest.mark.parametrize("dtype", ["int8", "int4", "int2"])
def test_quantize_op_refuses_exactly_the_widths_the_rule_names(dtype):
    """FBGEMM's row-wise quantization at every width 1..1000 (what quantize_embeddings calls)."""
    import fbgemm_gpu  # noqa: F401

    bits = {"int8": 8, "int4": 4, "int2": 2}[dtype]
    refused = []
    for dim in range(1, 1001):
        try:
            torch.ops.fbgemm.FloatOrHalfToFusedNBitRowwiseQuantizedSBHalf(torch.ones(1, dim), bits)
        except RuntimeError:
            refused.append(dim)
    assert refused == [d for d in range(1, 1001) if d % SERVING_WIDTH_MULTIPLE[dtype]]


@pytest.mark.parametrize("dtype", SERVING_DTYPES)
def test_quantize_embeddings_refuses_the_same_widths(dtype):
    for dim in range(1, 17):
        if dim % SERVING_WIDTH_MULTIPLE[dtype]:
            with pytest.raises(RuntimeError, match="multiple of 2 Bytes"):
                _quantized([(3, dim)], dtype)
        else:
            _quantized([(3, dim)], dtype)


def test_quantized_constructor_is_looser_than_quantization():
    """The collection built directly (no trained weights) accepts int4 at even widths, int2 at
    multiples of 4, and refuses narrower packing; a trained table of those widths cannot be
    quantized into it (the test above)."""
    from torchrec.quant.embedding_modules import EmbeddingBagCollection as QuantCollection

    def build(dim, dtype):
        table = EmbeddingBagConfig(
            name="t",
            num_embeddings=4,
            embedding_dim=dim,
            feature_names=["f"],
            pooling=PoolingType.SUM,
            data_type=TORCHREC_DTYPE[dtype],
        )
        return QuantCollection([table], is_weighted=False, device=torch.device("cpu"))

    for dim, dtype in [(7, "int8"), (6, "int4"), (4, "int2")]:
        kernel = _kernel(build(dim, dtype))
        assert kernel.weights_host.numel() == int(serving_table_bytes(4, dim, dtype))
    for dim, dtype in [(5, "int4"), (6, "int2")]:
        with pytest.raises(AssertionError, match="byte granularity"):
            build(dim, dtype)


def test_memory_table_matches_a_quantized_collection():
    """A config with a per-table mapping: each table's bytes, as quantize_embeddings makes them."""
    cfg = embviz.LargeEmbeddingsConfig.model_validate(
        {
            "tables": [
                {
                    "name": name,
                    "num_embeddings": rows,
                    "embedding_dim": dim,
                    "data_type": data_type,
                    "optimizer": {"sgd": {"lr": 0.1}},
                }
                for name, rows, dim, data_type in [
                    ("user", 1001, 64, "fp32"),
                    ("item", 777, 24, "fp16"),
                    ("tag", 13, 8, "fp32"),
                    ("country", 200, 12, "fp16"),
                    ("topic", 50, 1000, "fp32"),
                ]
            ]
        }
    )
    mapping = {"user": "int4", "item": "int8", "tag": "int2", "topic": "fp16"}
    frame = memory_table(cfg, mode="inference", serving_dtype=mapping)
    # Tables the mapping leaves out keep their own dtype (country: fp16).
    dtypes = [mapping.get(name, "fp16") for name in cfg.table_names]
    assert frame["serving_dtype"].tolist() == dtypes
    shapes = [(t.num_embeddings, t.embedding_dim) for t in cfg.tables]
    collection = _quantized(shapes, dtypes)
    assert frame["weight_bytes"].tolist() == _table_bytes(collection)
    assert int(frame["total_bytes"].sum()) == _kernel(collection).weights_host.numel()
    assert (frame["optimizer_bytes"] == 0).all()


# --------------------------------------------------------------------------- the planner


def _planner_storage(collection, compute_device: str) -> list[int]:
    """torchrec's storage estimate of each table as one table-wise ``quant`` shard."""
    from torchrec.distributed.planner import Topology
    from torchrec.distributed.planner.enumerators import EmbeddingEnumerator
    from torchrec.distributed.planner.shard_estimators import (
        EmbeddingPerfEstimator,
        EmbeddingStorageEstimator,
    )
    from torchrec.distributed.quant_embeddingbag import QuantEmbeddingBagCollectionSharder

    topology = Topology(world_size=1, compute_device=compute_device, hbm_cap=2**40)
    estimators = [
        EmbeddingPerfEstimator(topology=topology, is_inference=True),
        EmbeddingStorageEstimator(topology=topology, is_inference=True),
    ]
    enumerator = EmbeddingEnumerator(topology=topology, batch_size=512, estimator=estimators)
    logging.disable(logging.WARNING)
    try:
        options = enumerator.enumerate(
            torch.nn.Sequential(collection), [QuantEmbeddingBagCollectionSharder()]
        )
    finally:
        logging.disable(logging.NOTSET)
    found = {}
    for option in options:
        if option.sharding_type == "table_wise" and option.compute_kernel == "quant":
            (shard,) = option.shards
            storage = shard.storage.hbm if compute_device == "cuda" else shard.storage.ddr
            found[option.name] = storage
    return [found[f"t{i}"] for i in range(len(found))]


@pytest.mark.parametrize("compute_device", ["cuda", "cpu"])
def test_planner_estimate_is_torchrecs(compute_device):
    shapes = [(1000, 64), (7, 8), (333, 24), (5, 1000), (64, 12), (3, 16), (31, 40)]
    dtypes = ["int8", "int4", "int2", "fp16", "fp32", "int8", "int4"]
    collection = _quantized(shapes, dtypes)
    rows, dims = zip(*shapes, strict=True)
    expected = planner_serving_bytes(rows, dims, np.array(dtypes, dtype=object))
    assert _planner_storage(collection, compute_device) == expected.tolist()


def test_planner_estimate_on_a_meta_collection():
    """The planner usually sees a collection on ``meta``: same figures."""
    shapes = [(1000, 64), (333, 24), (5, 1000)]
    dtypes = ["int4", "int8", "fp16"]
    collection = _quantized(shapes, dtypes, device="meta")
    rows, dims = zip(*shapes, strict=True)
    expected = planner_serving_bytes(rows, dims, np.array(dtypes, dtype=object))
    assert _planner_storage(collection, "cuda") == expected.tolist()


def test_state_dict_shows_int4_and_int2_rows_unpacked():
    """Why a state dict is no measure of serving bytes: int4/int2 weights appear unpacked."""
    from torchrec.distributed.types import get_tensor_size_bytes

    for dtype, width in [("int8", 80), ("int4", 96), ("int2", 128)]:
        collection = _quantized([(10, 64)], dtype)
        weight = collection.state_dict()["embedding_bags.t0.weight"]
        assert tuple(weight.shape) == (10, width)
        # torchrec's own byte count of it is the padded row, 16-byte aligned.
        assert get_tensor_size_bytes(weight) == 10 * int(serving_row_bytes(64, dtype))


def test_constants_are_torchrec_and_fbgemm_defaults():
    from fbgemm_gpu.split_embedding_configs import SparseType
    from fbgemm_gpu.split_table_batched_embeddings_ops_common import (
        DEFAULT_SCALE_BIAS_SIZE_IN_BYTES,
    )
    from fbgemm_gpu.split_table_batched_embeddings_ops_inference import (
        align_to_cacheline,
        rounded_row_size_in_bytes,
    )
    from torchrec.quant.embedding_modules import DEFAULT_ROW_ALIGNMENT

    from embviz.serving import ROW_ALIGNMENT, SCALE_BIAS_BYTES, TABLE_ALIGNMENT

    assert ROW_ALIGNMENT == DEFAULT_ROW_ALIGNMENT
    assert SCALE_BIAS_BYTES == DEFAULT_SCALE_BIAS_SIZE_IN_BYTES
    assert align_to_cacheline(1) == TABLE_ALIGNMENT
    for dtype in SERVING_DTYPES:
        sparse = SparseType(dtype)
        dims = _allowed(dtype, range(1, 1001))
        fbgemm = [rounded_row_size_in_bytes(d, sparse, DEFAULT_ROW_ALIGNMENT) for d in dims]
        assert serving_row_bytes(dims, dtype).tolist() == fbgemm
