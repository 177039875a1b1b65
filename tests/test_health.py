"""`embviz.health` and `embviz.spectrum` against planted structure and numpy's SVD."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

import embviz
from embviz.errors import ArgumentError, UnknownTableError
from embviz.tablehealth import effective_rank, information_abundance
from embviz.tablerows import HealthError


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    from embviz.demo import train_demo

    save_dir = tmp_path_factory.mktemp("health") / "run"
    return train_demo(save_dir, steps=40, checkpoint_every=20, scale=0.02, progress=False)


def _planted(rows: int, singular_values: list[float], dim: int, seed: int = 0) -> torch.Tensor:
    """A rows x dim float64 table whose singular values are exactly ``singular_values``."""
    rng = np.random.default_rng(seed)
    k = len(singular_values)
    u, _ = np.linalg.qr(rng.standard_normal((rows, k)))
    v, _ = np.linalg.qr(rng.standard_normal((dim, k)))
    return torch.from_numpy(u @ np.diag(singular_values) @ v.T)


def _reference(table: torch.Tensor) -> tuple[float, float, np.ndarray]:
    s = np.linalg.svd(table.double().numpy(), compute_uv=False)
    p = s[s > 1e-12 * s[0]] / s.sum()
    return float(np.exp(-(p * np.log(p)).sum())), float(s.sum() / s[0]), s


@pytest.mark.parametrize("k", [1, 3, 7, 16])
def test_k_equal_singular_values_give_k(k):
    table = _planted(2_000, [2.5] * k, dim=16, seed=k)
    row = embviz.health({"t": table}, progress=False).loc["t"]
    assert row["rows"] == 2_000 and row["dim"] == 16 and row["sampled"] == 2_000
    assert row["effective_rank"] == pytest.approx(k, rel=1e-9)
    assert row["information_abundance"] == pytest.approx(k, rel=1e-9)
    assert row["energy_rank_99"] == k
    assert row["top_energy_share"] == pytest.approx(1 / k, rel=1e-9)


def test_spectrum_equals_numpy_svd():
    rng = np.random.default_rng(3)
    table = torch.from_numpy(rng.standard_normal((5_000, 24)) * np.linspace(3, 0.1, 24))
    erank, ia, s = _reference(table)
    frame = embviz.spectrum({"t": table}, progress=False)
    assert frame["k"].tolist() == list(range(1, 25))
    np.testing.assert_allclose(frame["singular_value"], s, rtol=1e-9)
    np.testing.assert_allclose(frame["share"], s / s.sum(), rtol=1e-9)
    np.testing.assert_allclose(frame["cumulative_energy"].iloc[-1], 1.0, rtol=1e-12)
    row = embviz.health({"t": table}, progress=False).loc["t"]
    assert row["effective_rank"] == pytest.approx(erank, rel=1e-9)
    assert row["information_abundance"] == pytest.approx(ia, rel=1e-9)
    assert effective_rank(s) == pytest.approx(erank, rel=1e-12)
    assert information_abundance(s) == pytest.approx(ia, rel=1e-12)


def test_fewer_rows_than_dim():
    table = _planted(6, [3.0, 2.0, 1.0, 1.0, 0.5, 0.5], dim=40)
    erank, ia, _ = _reference(table)
    row = embviz.health({"t": table}, progress=False).loc["t"]
    assert row["effective_rank"] == pytest.approx(erank, rel=1e-9)
    assert row["information_abundance"] == pytest.approx(ia, rel=1e-9)
    assert len(embviz.spectrum({"t": table}, progress=False)) == 6


def test_isotropic_gaussian_is_near_dim():
    gen = torch.Generator().manual_seed(0)
    table = torch.randn(150_000, 32, generator=gen)  # more than the default sample
    row = embviz.health({"t": table}, progress=False).loc["t"]
    assert row["sampled"] == 100_000
    assert 0.98 * 32 < row["effective_rank"] <= 32
    assert 0.9 * 32 < row["information_abundance"] <= 32
    assert row["dim_spread"] == pytest.approx(1.0, abs=0.02)


def test_collapsed_table():
    gen = torch.Generator().manual_seed(1)
    direction = torch.randn(16, generator=gen)
    scale = torch.rand(20_000, 1, generator=gen) + 0.5
    table = scale * direction + 1e-3 * torch.randn(20_000, 16, generator=gen)
    row = embviz.health({"t": table}, progress=False).loc["t"]
    assert row["effective_rank"] < 1.1
    assert row["top_energy_share"] > 0.999
    assert row["dim_spread"] < 0.01
    assert row["energy_rank_99"] == 1


def test_sampled_estimate_of_a_power_law_table_against_full_svd():
    # Row norms follow a Zipf law: a few rows carry most of the energy. The default sample takes
    # them exactly; a uniform sample alone would miss them.
    gen = torch.Generator().manual_seed(2)
    rows, dim = 300_000, 16
    scales = torch.arange(1, rows + 1, dtype=torch.float64) ** -0.6
    table = torch.randn(rows, dim, generator=gen, dtype=torch.float64) * torch.linspace(2, 0.2, dim)
    table = (table * scales[torch.randperm(rows, generator=gen)][:, None]).float()
    erank, ia, s = _reference(table)
    for seed in range(3):
        row = embviz.health({"t": table}, seed=seed, progress=False).loc["t"]
        assert abs(row["effective_rank"] - erank) < 0.0005 * dim
        assert abs(row["information_abundance"] - ia) < 0.001 * dim
        sigma = embviz.spectrum({"t": table}, seed=seed, progress=False)["singular_value"]
        assert np.abs(sigma.to_numpy() - s).max() < 0.005 * s[0]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_tables(dtype):
    gen = torch.Generator().manual_seed(4)
    table = (torch.randn(3_000, 8, generator=gen) * torch.linspace(2, 0.1, 8)).to(dtype)
    exact = table.to(torch.float64)  # every fp16/bf16 value is exact in float64
    erank, ia, _ = _reference(exact)
    got = embviz.health({"t": table}, progress=False).loc["t"]
    assert got["dtype"] == str(dtype).removeprefix("torch.")
    assert got["effective_rank"] == pytest.approx(erank, rel=1e-9)
    assert got["information_abundance"] == pytest.approx(ia, rel=1e-9)
    same = embviz.health({"t": exact}, progress=False).loc["t"]
    assert got["dim_spread"] == pytest.approx(same["dim_spread"], rel=1e-12)


def test_unchanged_share_and_frequency_correlation():
    gen = torch.Generator().manual_seed(5)
    initial = torch.randn(1_000, 8, generator=gen)
    current = initial.clone()
    current[:300] *= 2.0
    row = embviz.health({"t": current}, initial={"t": initial}, progress=False).loc["t"]
    assert row["unchanged_share"] == pytest.approx(0.7, abs=1e-12)
    norms = current.double().norm(dim=1).numpy()
    counts = pd.Series(np.argsort(np.argsort(norms)))  # counts ranked exactly as the norms
    row = embviz.health({"t": current}, counts={"t": counts}, progress=False).loc["t"]
    assert row["norm_frequency_spearman"] == pytest.approx(1.0, abs=1e-12)
    reversed_counts = {"t": pd.Series(-counts.to_numpy() + 2_000)}
    row = embviz.health({"t": current}, counts=reversed_counts, progress=False).loc["t"]
    assert row["norm_frequency_spearman"] == pytest.approx(-1.0, abs=1e-12)
    # A reference without ties: the Pearson correlation of the ranks (argsort of argsort).
    random_counts = np.random.default_rng(0).permutation(1_000)
    reference = np.corrcoef(np.argsort(np.argsort(norms)), random_counts)[0, 1]
    row = embviz.health({"t": current}, counts={"t": pd.Series(random_counts)}, progress=False).loc[
        "t"
    ]
    assert row["norm_frequency_spearman"] == pytest.approx(reference, abs=1e-12)
    # Rows missing from the counts count 0; a table missing from the mapping has no counts.
    row = embviz.health({"t": current}, counts={"other": counts}, progress=False).loc["t"]
    assert math.isnan(row["norm_frequency_spearman"])


def test_smaller_dim_saves_bytes_through_memory_table():
    table = _planted(4_000, [1.0] * 6, dim=64)
    cfg = embviz.LargeEmbeddingsConfig.model_validate(
        {
            "tables": [
                {"name": "t", "num_embeddings": 4_000, "embedding_dim": 64,
                 "optimizer": {"adagrad": {"lr": 0.1}}, "data_type": "fp32"},
            ]
        }
    )  # fmt: skip
    row = embviz.health({"t": table}, config=cfg, progress=False).loc["t"]
    assert row["energy_rank_99"] == 6
    assert row["smaller_dim"] == 8  # 6 rounded up to a multiple of 4
    # fp32 weights and fused Adagrad state (fp32): 2 x rows x (64 - 8) x 4 bytes.
    assert row["smaller_dim_saves_bytes"] == 2 * 4_000 * 56 * 4
    full = embviz.health({"t": torch.randn(4_000, 64)}, config=cfg, progress=False).loc["t"]
    assert math.isnan(full["smaller_dim"]) and math.isnan(full["smaller_dim_saves_bytes"])


def test_zero_rows_are_left_out_of_the_spread():
    table = torch.zeros(1_000, 8)
    table[:500] = torch.randn(500, 8, generator=torch.Generator().manual_seed(6))
    row = embviz.health({"t": table}, progress=False).loc["t"]
    unit = table[:500].double() / table[:500].double().norm(dim=1, keepdim=True)
    expected = float(unit.std(dim=0, correction=0).mean() * math.sqrt(8))
    assert row["dim_spread"] == pytest.approx(expected, rel=1e-9)


def test_module_and_snapshot_sources(tmp_path):
    ebc = embviz.build_collection(
        embviz.LargeEmbeddingsConfig.model_validate(
            {"tables": [{"name": "a", "num_embeddings": 500, "embedding_dim": 8,
                         "optimizer": {"sgd": {"lr": 0.1}}, "data_type": "fp32"}]}
        ),
        device="cpu",
        progress=False,
    )  # fmt: skip
    from_module = embviz.health(ebc, progress=False)
    weight = ebc.embedding_bags["a"].weight.detach()
    erank, _, _ = _reference(weight)
    assert from_module.loc["a", "effective_rank"] == pytest.approx(erank, rel=1e-9)
    embviz.save_snapshot(ebc, tmp_path / "snap")
    from_snapshot = embviz.health(str(tmp_path / "snap"), progress=False)
    pd.testing.assert_frame_equal(from_module, from_snapshot)


def test_bad_arguments_name_what_is_wrong():
    table = {"t": torch.randn(100, 4)}
    with pytest.raises(UnknownTableError, match="'nope'"):
        embviz.health(table, tables=["nope"], progress=False)
    with pytest.raises(UnknownTableError, match="'t'"):
        embviz.health(table, initial={"other": torch.randn(100, 4)}, progress=False)
    with pytest.raises(ArgumentError, match=r"^sample: "):
        embviz.health(table, sample=1, progress=False)
    with pytest.raises(ArgumentError, match=r"^seed: "):
        embviz.health(table, seed="x", progress=False)
    with pytest.raises(ArgumentError, match=r"^counts: "):
        embviz.health(table, counts=[1, 2], progress=False)
    with pytest.raises(ArgumentError, match=r"^counts: table 't': rows outside"):
        embviz.health(table, counts={"t": pd.Series([1], index=[100])}, progress=False)
    with pytest.raises(HealthError, match=r"table 't' is 100 x 4 but its initial values are"):
        embviz.health(table, initial={"t": torch.randn(90, 4)}, progress=False)
    with pytest.raises(HealthError, match="table 'i': expected a floating-point table"):
        embviz.health({"i": torch.ones(10, 4, dtype=torch.int64)}, progress=False)
    with pytest.raises(HealthError, match=r"table 'e' is empty"):
        embviz.health({"e": torch.empty(0, 4)}, progress=False)


def test_health_history_over_checkpoints(demo_run):
    run = demo_run
    history = embviz.health_history(run.save_dir, progress=False)
    steps = list(run.checkpoint_steps)
    assert history["step"].tolist() == [s for s in steps for _ in ("user", "tweet")]
    first = history[history["step"] == 0].set_index("table")
    assert (first["unchanged_share"] == 1.0).all()
    last_step = steps[-1]
    direct = embviz.health(
        run.save_dir / str(last_step), initial=run.save_dir / "0", progress=False
    )
    got = history[history["step"] == last_step].set_index("table")[direct.columns]
    pd.testing.assert_frame_equal(got, direct, check_names=False)
    spectra = embviz.spectrum_history(run.save_dir, tables="user", progress=False)
    assert set(spectra["step"]) == set(steps)
    assert (spectra.groupby("step")["k"].max() == 4).all()
