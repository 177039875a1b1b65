"""quantization_error against a dequantization written here, and against the served model.

The reference decodes FBGEMM's fused rows with NumPy from the format itself (packed values,
then an fp16 scale and an fp16 bias per row; ``x = q * scale + bias``) and computes every
measure by brute force in float64. The served model is torchrec's quantized collection: its
pooled output for a bag is what `dequantize` says the bag's rows are.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torchrec

import embviz
from embviz.errors import ArgumentError, UnknownTableError
from embviz.quantization import (
    QUALITY_COLUMNS,
    dequantize,
    quantization_error,
    quantization_error_table,
)
from embviz.serving import ServingWidthError

BITS = {"int8": 8, "int4": 4, "int2": 2}


def _table(rows: int, dim: int, seed: int = 0) -> torch.Tensor:
    """Rows of varied norms and offsets, like a trained table."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.rand(rows, 1, generator=g) * 2 + 0.05
    shift = torch.randn(rows, 1, generator=g) * 0.1
    return (torch.randn(rows, dim, generator=g) * scale + shift).float()


def _fbgemm_rows(x: torch.Tensor, bits: int) -> np.ndarray:
    import fbgemm_gpu  # noqa: F401

    return torch.ops.fbgemm.FloatOrHalfToFusedNBitRowwiseQuantizedSBHalf(x, bits).numpy()


def _decode(fused: np.ndarray, dim: int, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(q, scale, bias) of FBGEMM's fused rows: packed values, then fp16 scale and bias."""
    data = dim * bits // 8
    scale = fused[:, data : data + 2].copy().view(np.float16)[:, 0].astype(np.float64)
    bias = fused[:, data + 2 : data + 4].copy().view(np.float16)[:, 0].astype(np.float64)
    per_byte = 8 // bits
    mask = (1 << bits) - 1
    q = np.stack([(fused[:, :data] >> (bits * j)) & mask for j in range(per_byte)], axis=2)
    return q.reshape(len(fused), dim).astype(np.float64), scale, bias


def _served(x: torch.Tensor, dtype: str) -> np.ndarray:
    """The rows as served, float64, decoded here (fp16: a cast; fp32: unchanged)."""
    if dtype == "fp32":
        return x.double().numpy()
    if dtype == "fp16":
        return x.half().double().numpy()
    q, scale, bias = _decode(_fbgemm_rows(x, BITS[dtype]), x.shape[1], BITS[dtype])
    return q * scale[:, None] + bias[:, None]


@pytest.mark.parametrize("dtype", ["int8", "int4", "int2"])
def test_fbgemm_rows_follow_the_scale_bias_formulas(dtype):
    """bias = fp16(min), scale = fp16((max - bias) / (2**bits - 1)), q = round((x - bias) / scale)."""
    bits = BITS[dtype]
    x = _table(3000, 32)
    q, scale, bias = _decode(_fbgemm_rows(x, bits), 32, bits)
    xs = x.double().numpy()
    lo, hi = xs.min(1), xs.max(1)
    assert np.array_equal(bias, lo.astype(np.float16).astype(np.float64))
    want = ((hi - bias) / (2**bits - 1)).astype(np.float16).astype(np.float64)
    assert np.allclose(scale, want, rtol=2**-10, atol=0)  # within an fp16 rounding
    ideal = np.clip(np.rint((xs - bias[:, None]) / scale[:, None]), 0, 2**bits - 1)
    assert np.abs(q - ideal).max() <= 1  # a float32 rounding may land on the other side
    assert np.mean(q == ideal) > 0.999
    served = q * scale[:, None] + bias[:, None]
    assert np.abs(served - xs).max() <= 0.5 * scale.max() * (1 + 1e-3) + np.abs(bias - lo).max()


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "int8", "int4", "int2"])
def test_dequantize_equals_the_reference_decoding(dtype):
    x = _table(500, 64, seed=1)
    got = dequantize(x, dtype).double().numpy()
    np.testing.assert_allclose(got, _served(x, dtype), rtol=1e-6, atol=1e-6)


def _reference(x: torch.Tensor, dtype: str, k: int) -> dict[str, float]:
    """Row measures and neighbours of every row, by brute force in float64."""
    xs = x.double().numpy()
    ys = _served(x, dtype)
    nx, ny = np.linalg.norm(xs, axis=1), np.linalg.norm(ys, axis=1)
    rel = np.abs(ny - nx) / nx
    cos = (xs * ys).sum(1) / (nx * ny)
    ux, uy = xs / nx[:, None], ys / ny[:, None]
    kept = []
    for i in range(len(xs)):
        sx, sy = ux @ ux[i], uy @ uy[i]
        sx[i] = sy[i] = -np.inf
        near_x = set(np.argsort(-sx, kind="stable")[:k])
        near_y = set(np.argsort(-sy, kind="stable")[:k])
        kept.append(len(near_x & near_y) / k)
    return {
        "norm_rel_err_mean": rel.mean(),
        "norm_rel_err_max": rel.max(),
        "cos_mean": cos.mean(),
        "cos_min": cos.min(),
        "knn_kept_mean": float(np.mean(kept)),
        "knn_kept_min": float(np.min(kept)),
    }


@pytest.mark.parametrize("dtype", ["fp16", "int8", "int4", "int2"])
def test_row_measures_and_neighbours_equal_the_reference(dtype):
    x = _table(400, 32, seed=2)
    got = quantization_error(x, dtype, k=7, pairs=50, queries=10_000)  # every row a query
    want = _reference(x, dtype, 7)
    assert list(got.index) == list(QUALITY_COLUMNS)
    assert got["rows"] == 400 and got["queries"] == 400 and got["k"] == 7
    assert got["dtype"] == dtype and got["embedding_dim"] == 32
    for key in ("norm_rel_err_mean", "norm_rel_err_max"):
        assert math.isclose(got[key], want[key], rel_tol=1e-4, abs_tol=1e-9), key
    for key in ("cos_mean", "cos_min"):
        assert math.isclose(got[key], want[key], rel_tol=0, abs_tol=1e-9), key
    assert got["knn_kept_mean"] == pytest.approx(want["knn_kept_mean"], abs=1e-12)
    assert got["knn_kept_min"] == pytest.approx(want["knn_kept_min"], abs=1e-12)
    assert got["zero_rows"] == 0 and got["overflow_rows"] == 0


def test_quantization_gets_worse_with_fewer_bits():
    x = _table(2000, 64, seed=3)
    results = {d: quantization_error(x, d, pairs=2000, queries=200) for d in BITS}
    for wider, narrower in [("int8", "int4"), ("int4", "int2")]:
        assert results[wider]["cos_mean"] > results[narrower]["cos_mean"]
        assert results[wider]["knn_kept_mean"] > results[narrower]["knn_kept_mean"]
        assert results[wider]["bag_rel_err_mean"] < results[narrower]["bag_rel_err_mean"]


def test_fp32_changes_nothing():
    got = quantization_error(_table(300, 16), "fp32", pairs=100, queries=50)
    for key in ("norm_rel_err_max", "bag_rel_err_max", "pair_cos_abs_err_max"):
        assert got[key] == 0.0
    assert got["cos_min"] == pytest.approx(1.0, abs=1e-15)
    assert got["knn_kept_min"] == 1.0


def test_bags_of_every_row_equal_the_reference():
    """bag_size = rows: every bag is the whole table, so the bag error is exact."""
    x = _table(40, 16, seed=4)
    got = quantization_error(x, "int4", k=3, pairs=5, bag_size=40)
    xs, ys = x.double().numpy(), _served(x, "int4")
    want = np.linalg.norm(ys.sum(0) - xs.sum(0)) / np.linalg.norm(xs.sum(0))
    assert got["bags"] == 5 and got["bag_size"] == 40
    assert got["bag_rel_err_mean"] == pytest.approx(want, rel=1e-5)
    assert got["bag_rel_err_max"] == pytest.approx(want, rel=1e-5)


def test_pairs_of_three_rows_cover_every_pair():
    """3 rows, 3,000 pairs: every pair is drawn, so the worst errors are the reference's."""
    x = _table(3, 24, seed=5)
    got = quantization_error(x, "int2", k=1, pairs=3000)
    xs, ys = x.double().numpy(), _served(x, "int2")

    def cos(a, b):
        return a @ b / (np.linalg.norm(a) * np.linalg.norm(b))

    bags, pair_cos = [], []
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        bags.append(np.linalg.norm(ys[i] + ys[j] - xs[i] - xs[j]) / np.linalg.norm(xs[i] + xs[j]))
        pair_cos.append(abs(cos(ys[i], ys[j]) - cos(xs[i], xs[j])))
    assert got["bag_rel_err_max"] == pytest.approx(max(bags), rel=1e-5)
    assert min(bags) <= got["bag_rel_err_mean"] <= max(bags)
    assert got["pair_cos_abs_err_max"] == pytest.approx(max(pair_cos), rel=1e-4, abs=1e-9)


def test_sampled_rows_and_row_ids():
    x = _table(1000, 16, seed=6)
    ids = [5, 17, 400, 999, 3, 250, 251, 252, 600, 700, 800, 900]
    got = quantization_error(x, "int8", k=3, pairs=20, rows=ids)
    want = _reference(x[sorted(ids)], "int8", 3)
    assert got["rows"] == len(ids)
    assert got["cos_min"] == pytest.approx(want["cos_min"], abs=1e-9)
    assert got["knn_kept_mean"] == pytest.approx(want["knn_kept_mean"], abs=1e-12)
    sampled = quantization_error(x, "int8", k=3, pairs=20, rows=100, seed=1)
    assert sampled["rows"] == 100
    again = quantization_error(x, "int8", k=3, pairs=20, rows=100, seed=1)
    assert sampled.equals(again)


def test_zero_rows_are_left_out():
    x = _table(50, 8, seed=7)
    x[[3, 10]] = 0
    got = quantization_error(x, "int8", k=3, pairs=200, queries=100)
    assert got["zero_rows"] == 2
    want = _reference(x[[i for i in range(50) if i not in (3, 10)]], "int8", 3)
    assert got["cos_min"] == pytest.approx(want["cos_min"], abs=1e-9)
    assert got["knn_kept_mean"] == pytest.approx(want["knn_kept_mean"], abs=1e-12)
    assert got["queries"] == 48


def test_fp16_overflow_rows():
    x = _table(20, 8)
    x[4, 2] = 1e6
    got = quantization_error(x, "fp16", k=2, pairs=10)
    assert got["overflow_rows"] == 1


def test_fp16_table_quantized_to_int4():
    x = _table(300, 16, seed=8).half()
    got = quantization_error(x, "int4", k=5, pairs=100, queries=1000)
    want = _reference(x.float(), "int4", 5)
    assert got["cos_mean"] == pytest.approx(want["cos_mean"], abs=1e-9)


# --------------------------------------------------------------------------- served model


def _float_collection(tables: dict[str, torch.Tensor]) -> torchrec.EmbeddingBagCollection:
    ebc = torchrec.EmbeddingBagCollection(
        tables=[
            torchrec.EmbeddingBagConfig(
                name=name,
                num_embeddings=w.shape[0],
                embedding_dim=w.shape[1],
                feature_names=[name],
            )
            for name, w in tables.items()
        ],
        device=torch.device("cpu"),
    )
    with torch.no_grad():
        for name, w in tables.items():
            ebc.embedding_bags[name].weight.copy_(w)
    return ebc


@pytest.mark.parametrize("dtype", ["int8", "int4", "int2", "fp16"])
def test_dequantize_is_what_the_quantized_collection_serves(dtype):
    from torchrec.inference.modules import quantize_embeddings
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    torch_dtype = {
        "int8": torch.qint8,
        "int4": torch.quint4x2,
        "int2": torch.quint2x4,
        "fp16": torch.float16,
    }
    x = _table(64, 32, seed=9)
    ebc = _float_collection({"t": x})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        served = quantize_embeddings(
            torch.nn.Sequential(ebc), dtype=torch_dtype[dtype], inplace=False
        )[0]
    # 64 bags of one row, then 32 bags of two rows.
    ids = torch.cat([torch.arange(64), torch.arange(64)])
    lengths = torch.cat([torch.ones(64, dtype=torch.int64), torch.full((32,), 2)])
    kjt = KeyedJaggedTensor(keys=["t"], values=ids, lengths=lengths)
    out = served(kjt)["t"].double().numpy()
    rows = dequantize(x, dtype).double().numpy()
    np.testing.assert_allclose(out[:64], rows, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out[64:], rows[0::2] + rows[1::2], rtol=1e-6, atol=1e-5)


# --------------------------------------------------------------------------- sources


class Wrapper(torch.nn.Module):
    def __init__(self, ebc: torch.nn.Module):
        super().__init__()
        self.ebc = ebc


def test_table_of_a_snapshot_a_state_dict_and_a_live_collection(tmp_path):
    tables = {"user": _table(500, 16, seed=10), "odd": _table(100, 6, seed=11)}
    ebc = _float_collection(tables)
    snap = embviz.save_snapshot(Wrapper(ebc), tmp_path / "snap")
    kwargs = {"k": 4, "pairs": 100, "queries": 50, "progress": False}
    frames = [
        quantization_error_table(source, ["int8", "int4"], **kwargs)
        for source in (snap, ebc.state_dict(), Wrapper(ebc))
    ]
    for frame in frames[1:]:
        assert frame.equals(frames[0])
    frame = frames[0]
    assert list(frame.index) == [
        ("user", "int8"),
        ("user", "int4"),
        ("odd", "int8"),
        ("odd", "int4"),
    ]
    assert frame.index.names == ["table", "dtype"]
    one = quantization_error(tables["user"], "int4", k=4, pairs=100, queries=50)
    for key in ("cos_mean", "knn_kept_mean", "bag_rel_err_mean"):
        assert frame.loc[("user", "int4"), key] == one[key]
    assert frame.loc[("odd", "int8"), "refused"] == ""
    assert "embedding_dim 6 cannot be served as int4" in frame.loc[("odd", "int4"), "refused"]
    assert "'odd'" in frame.loc[("odd", "int4"), "refused"]
    assert math.isnan(frame.loc[("odd", "int4"), "cos_mean"])
    only = quantization_error_table(snap, "int2", tables="user", **kwargs)
    assert list(only.index) == [("user", "int2")]
    with pytest.raises(UnknownTableError):
        quantization_error_table(snap, "int8", tables=["nope"], **kwargs)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("dtype", ["int3", "bf16", None])
def test_unknown_dtype_names_the_choices(dtype):
    with pytest.raises(ArgumentError) as info:
        quantization_error(_table(10, 8), dtype)
    assert all(d in str(info.value) for d in ("'fp32'", "'fp16'", "'int8'", "'int4'", "'int2'"))


@pytest.mark.parametrize(("dim", "dtype"), [(7, "int8"), (6, "int4"), (12, "int2")])
def test_refused_widths(dim, dtype):
    with pytest.raises(ServingWidthError, match=f"embedding_dim {dim} cannot be served"):
        quantization_error(_table(10, dim), dtype)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 0}, "k:"),
        ({"k": 10}, "k=10 is too large"),
        ({"pairs": 0}, "pairs:"),
        ({"rows": [0, 99]}, "out of range"),
        ({"rows": []}, "rows:"),
        ({"rows": 1.5}, "rows:"),
        ({"queries": -1}, "queries:"),
        ({"bag_size": 11, "k": 3}, "bag_size:"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ArgumentError, match=match):
        quantization_error(_table(10, 8), "int8", **kwargs)


@pytest.mark.parametrize(
    "weight",
    [torch.zeros(3), torch.zeros(4, 8, dtype=torch.int64), torch.empty(0, 8), "table", None],
)
def test_bad_weights(weight):
    with pytest.raises(ArgumentError, match="weight"):
        quantization_error(weight, "int8")


def test_meta_table_is_refused():
    with pytest.raises(ArgumentError, match="meta"):
        quantization_error(torch.empty(10, 8, device="meta"), "int8")
