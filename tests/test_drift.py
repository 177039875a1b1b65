"""`embviz.drift`, `row_drift` and `neighbour_purity` against brute force and planted structure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import embviz
from embviz.errors import ArgumentError, UnknownTableError
from embviz.tablerows import HealthError


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    from embviz.demo import train_demo

    save_dir = tmp_path_factory.mktemp("drift") / "run"
    return train_demo(save_dir, steps=40, checkpoint_every=20, scale=0.02, progress=False)


def _rotation(dim: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
    return q


def _brute_neighbours(x: np.ndarray, k: int) -> list[set[int]]:
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    return [set(np.argsort(-row, kind="stable")[:k].tolist()) for row in sims]


def test_rotated_copy_has_no_drift_and_the_same_neighbours():
    x = np.random.default_rng(0).standard_normal((3_000, 16)) + 0.3
    rotated = x @ _rotation(16, 1)
    row = embviz.drift({"t": torch.from_numpy(x)}, {"t": torch.from_numpy(rotated)}, progress=False)
    got = row.loc["t"]
    assert got["sampled"] == 3_000 and got["queries"] == 1_000 and got["k"] == 10
    assert got["aligned_cosine"] == pytest.approx(1.0, abs=1e-12)
    assert got["knn_overlap"] == 1.0
    assert got["centroid_shift"] == pytest.approx(0.0, abs=1e-12)
    assert got["relative_change"] == pytest.approx(0.0, abs=1e-12)


def test_rotated_fp32_copy():
    gen = torch.Generator().manual_seed(2)
    table = torch.randn(200_000, 32, generator=gen)  # more rows than the default sample
    rotated = (table.double() @ torch.from_numpy(_rotation(32, 3))).float()
    got = embviz.drift({"t": table}, {"t": rotated}, progress=False).loc["t"]
    assert got["sampled"] == 100_000
    assert got["aligned_cosine"] > 1 - 1e-6
    assert got["knn_overlap"] > 0.999  # fp32 rounding may swap a near-tie


def test_unrelated_tables_share_almost_no_neighbours():
    gen = torch.Generator().manual_seed(4)
    a, b = torch.randn(20_000, 16, generator=gen), torch.randn(20_000, 16, generator=gen)
    got = embviz.drift({"t": a}, {"t": b}, progress=False).loc["t"]
    # Chance overlap is about k / rows = 0.0005.
    assert got["knn_overlap"] < 0.005
    assert abs(got["aligned_cosine"]) < 0.1
    assert got["relative_change"] > 1.0


def test_against_brute_force_and_numpy_procrustes():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1_500, 12))
    y = x @ _rotation(12, 6) + 0.4 * rng.standard_normal((1_500, 12))
    frame = embviz.row_drift(
        {"t": torch.from_numpy(x)}, {"t": torch.from_numpy(y)}, "t", k=7, queries=1_500
    )
    # Procrustes by hand: R = U V^T from the SVD of x^T y.
    u, _, vt = np.linalg.svd(x.T @ y)
    aligned = x @ (u @ vt)
    cos = (aligned * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
    np.testing.assert_allclose(frame["aligned_cosine"], cos, rtol=1e-9)
    np.testing.assert_allclose(frame["aligned_distance"], np.linalg.norm(aligned - y, axis=1))
    before, after = _brute_neighbours(x, 7), _brute_neighbours(y, 7)
    overlap = np.array([len(b & a) / 7 for b, a in zip(before, after, strict=True)])
    np.testing.assert_array_equal(frame["knn_overlap"].to_numpy(), overlap)
    summary = embviz.drift(
        {"t": torch.from_numpy(x)}, {"t": torch.from_numpy(y)}, k=7, queries=1_500, progress=False
    ).loc["t"]
    assert summary["knn_overlap"] == pytest.approx(overlap.mean(), abs=1e-12)
    assert summary["aligned_cosine"] == pytest.approx(cos.mean(), abs=1e-12)
    shift = np.linalg.norm(aligned.mean(0) - y.mean(0)) / np.linalg.norm(y, axis=1).mean()
    assert summary["centroid_shift"] == pytest.approx(shift, rel=1e-9)


def test_frequency_buckets():
    rng = np.random.default_rng(7)
    rows = 6_000
    counts = pd.Series(np.repeat([0, 5, 50, 500], rows // 4))
    x = rng.standard_normal((rows, 8))
    y = x.copy()
    hot = counts.to_numpy() == 500
    y[hot] = rng.standard_normal((int(hot.sum()), 8))  # only the most looked-up rows changed
    frame = embviz.drift(
        {"t": torch.from_numpy(x)}, {"t": torch.from_numpy(y)}, counts={"t": counts},
        progress=False,
    )  # fmt: skip
    assert frame.index.names == ["table", "bucket"]
    assert list(frame.loc["t"].index) == ["all", "0", "1-9", "10-99", "100-999"]
    by_bucket = frame.loc["t"]
    assert by_bucket.loc["all", "sampled"] == rows
    assert by_bucket["sampled"].iloc[1:].sum() == rows
    # Each bucket has its own queries (1,500 sampled rows each, so 1,000 queries each).
    assert (by_bucket["queries"] == 1_000).all()
    assert by_bucket.loc["0", "aligned_cosine"] > 0.9
    assert abs(by_bucket.loc["100-999", "aligned_cosine"]) < 0.2
    assert by_bucket.loc["100-999", "knn_overlap"] < by_bucket.loc["0", "knn_overlap"]
    per_row = embviz.row_drift(
        {"t": torch.from_numpy(x)}, {"t": torch.from_numpy(y)}, "t", counts={"t": counts}
    )
    assert per_row.groupby("bucket")["aligned_cosine"].mean().loc["0"] == pytest.approx(
        by_bucket.loc["0", "aligned_cosine"], abs=1e-12
    )
    per_bucket_knn = per_row.groupby("bucket")["knn_overlap"].mean()
    for label in ("0", "100-999"):
        assert per_bucket_knn.loc[label] == pytest.approx(by_bucket.loc[label, "knn_overlap"])
    # The all row is the uniform queries alone: the same as without counts.
    plain = embviz.drift({"t": torch.from_numpy(x)}, {"t": torch.from_numpy(y)}, progress=False)
    assert plain.loc["t", "knn_overlap"] == by_bucket.loc["all", "knn_overlap"]
    assert plain.loc["t", "queries"] == by_bucket.loc["all", "queries"] == 1_000


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_tables(dtype):
    gen = torch.Generator().manual_seed(8)
    a = torch.randn(2_000, 8, generator=gen).to(dtype)
    b = (a.double() @ torch.from_numpy(_rotation(8, 9))).to(dtype)
    got = embviz.drift({"t": a}, {"t": b}, progress=False).loc["t"]
    exact = embviz.drift({"t": a.double()}, {"t": b.double()}, progress=False).loc["t"]
    assert got["aligned_cosine"] == exact["aligned_cosine"]
    assert got["knn_overlap"] == exact["knn_overlap"] > 0.9


def test_zero_rows_are_left_out():
    x = np.random.default_rng(10).standard_normal((500, 4))
    x[:100] = 0
    frame = embviz.row_drift({"t": torch.from_numpy(x)}, {"t": torch.from_numpy(x)}, "t")
    assert frame["aligned_cosine"].isna().sum() == 100
    assert frame["knn_overlap"].iloc[:100].isna().all()
    assert (frame["knn_overlap"].iloc[100:] == 1.0).all()


def test_bad_arguments_name_what_is_wrong():
    a, b = {"t": torch.randn(50, 4)}, {"t": torch.randn(50, 4)}
    with pytest.raises(ArgumentError, match=r"^k: must be less than the rows searched: table 't'"):
        embviz.drift(a, b, k=50, progress=False)
    with pytest.raises(ArgumentError, match=r"^k: must be an integer >= 1"):
        embviz.drift(a, b, k=0, progress=False)
    with pytest.raises(ArgumentError, match=r"^queries: "):
        embviz.drift(a, b, queries=0, progress=False)
    with pytest.raises(HealthError, match=r"table 't' is 50 x 4 in before but 60 x 4 in after"):
        embviz.drift(a, {"t": torch.randn(60, 4)}, progress=False)
    with pytest.raises(UnknownTableError, match="'u'"):
        embviz.drift(a, b, tables=["u"], progress=False)
    with pytest.raises(UnknownTableError, match="'t'"):
        embviz.drift(a, {"other": torch.randn(50, 4)}, progress=False)
    with pytest.raises(ArgumentError, match=r"^labels: "):
        embviz.neighbour_purity(a["t"], [0, 1])
    with pytest.raises(ArgumentError, match=r"^k: "):
        embviz.neighbour_purity(a["t"], np.zeros(50), k=50)


def test_neighbour_purity_of_planted_clusters():
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 5, size=4_000)
    centres = rng.standard_normal((5, 16)) * 5
    table = torch.from_numpy(centres[labels] + rng.standard_normal((4_000, 16)))
    got = embviz.neighbour_purity(table, labels, k=10)
    assert got["purity"] == 1.0
    shares = np.bincount(labels) / len(labels)
    assert got["chance"] == pytest.approx((shares**2).sum(), abs=0.02)
    assert got["lift"] > 4
    noise = embviz.neighbour_purity(torch.from_numpy(rng.standard_normal((4_000, 16))), labels)
    assert abs(noise["purity"] - noise["chance"]) < 0.03
    only = embviz.neighbour_purity(table, pd.Series(labels), rows=np.arange(100, 600))
    assert only["candidates"] == 500 and only["queries"] == 500


def test_drift_history_over_checkpoints(demo_run):
    run = demo_run
    steps = list(run.checkpoint_steps)
    history = embviz.drift_history(run.save_dir, progress=False)
    assert history["step"].tolist() == [s for s in steps[1:] for _ in ("user", "tweet")]
    assert (history["reference_step"] == 0).all()
    direct = embviz.drift(run.save_dir / "0", run.save_dir / str(steps[-1]), progress=False)
    last = history[history["step"] == steps[-1]].set_index("table")[direct.columns]
    pd.testing.assert_frame_equal(last, direct, check_names=False, check_dtype=False)
    previous = embviz.drift_history(run.save_dir, reference="previous", progress=False)
    assert previous["reference_step"].tolist()[::2] == steps[:-1]
