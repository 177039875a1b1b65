"""`embviz.Projector` and the projection underneath, against independent references.

x/y against numpy's SVD of the centred table in float64, norms against `row_norms` (and
float64), entity labels against the vocabulary parquet, drift against scipy's orthogonal
Procrustes, the selection and the widget's wiring driven through its traits.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
import torch

import embviz
from embviz.norms.projection import ProjectorError, color_values, project, stratified_sample
from embviz.projector import Projector

SCALES = torch.tensor([6.0, 3.0, 2.0, 1.0, 0.7, 0.5, 0.3, 0.2])


def _planted(rows: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    """Rows with distinct variances along a random rotation, off-centre: a well-defined PCA."""
    generator = torch.Generator().manual_seed(seed)
    dim = len(SCALES)
    rotation, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator))
    base = torch.randn(rows, dim, generator=generator) * SCALES
    return (base @ rotation.T + 3.0).to(dtype)


def _reference_xy(weight: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    x = weight.to(torch.float64).numpy()
    centred = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T, s**2 / np.sum(s**2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_xy_equal_an_exact_svd_up_to_sign(dtype):
    weight = _planted(30_000, dtype)
    projection = project(weight)
    reference, ratios = _reference_xy(weight)
    frame = projection.frame
    assert len(frame) == 30_000 and not projection.sampled
    scale = np.abs(reference).max()
    for j, column in enumerate("xy"):
        got = frame[column].to_numpy().astype(np.float64)
        sign = np.sign(got @ reference[:, j])
        # float32 storage of coordinates computed in float64: a few float32 ulps of the scale.
        np.testing.assert_allclose(sign * got, reference[:, j], rtol=0, atol=1e-6 * scale)
    np.testing.assert_allclose(projection.explained_variance, ratios[:2], rtol=1e-9)
    assert weight.dtype == dtype  # the table is read as it is, not converted in place


def test_a_sample_is_placed_by_the_pca_of_the_whole_table():
    weight = _planted(40_000)
    projection = project(weight, n=5_000)
    reference, _ = _reference_xy(weight)
    rows = projection.frame["row"].to_numpy()
    assert len(rows) == 5_000 and np.all(np.diff(rows) > 0)
    for j, column in enumerate("xy"):
        got = projection.frame[column].to_numpy().astype(np.float64)
        sign = np.sign(got @ reference[rows, j])
        np.testing.assert_allclose(sign * got, reference[rows, j], atol=1e-6 * 30)


def test_norms_equal_row_norms():
    weight = _planted(20_000, torch.float16)
    frame = Projector(weight).frame
    expected = embviz.row_norms(weight).numpy()
    np.testing.assert_array_equal(frame["norm"].to_numpy(), expected)
    exact = np.linalg.norm(weight.to(torch.float64).numpy(), axis=1)
    np.testing.assert_allclose(frame["norm"].to_numpy(), exact, rtol=1e-6)
    sampled = Projector(weight, max_points=3_000).frame
    np.testing.assert_array_equal(sampled["norm"].to_numpy(), expected[sampled["row"].to_numpy()])


def test_entity_labels_agree_with_the_vocabulary_parquet(tmp_path):
    rows = 5_000
    weight = _planted(rows)
    rng = np.random.default_rng(1)
    # Ids on two thirds of the rows, some rows holding two ids (hash collisions).
    table_rows = np.concatenate([np.arange(0, rows, 3), np.arange(1, rows, 3), [4, 7, 10]])
    ids = rng.choice(10**12, size=table_rows.size, replace=False).astype(np.int64)
    embviz.write_vocab(tmp_path / "vocab", ids, table_rows, files=2)
    frame = Projector(weight, vocab=tmp_path / "vocab").frame
    first: dict[int, int] = {}
    read = pd.read_parquet(tmp_path / "vocab")
    for entity, row in zip(read["entity_id"], read["row"], strict=True):
        first.setdefault(int(row), int(entity))
    expected = pd.array([first.get(r) for r in frame["row"]], dtype="Int64")
    assert frame["entity"].dtype == "Int64"
    pd.testing.assert_extension_array_equal(frame["entity"].array, expected)
    assert frame["entity"].isna().sum() == sum(1 for r in range(rows) if r % 3 == 2)


def test_sources_state_dict_and_table_names():
    state = {"user": _planted(1_000), "item": _planted(800, seed=2)}
    projector = Projector(state, "item")
    assert len(projector.frame) == 800
    with pytest.raises(ProjectorError, match="holds 2 tables; name one"):
        Projector(state)
    with pytest.raises(embviz.UnknownTableError, match="nope"):
        Projector(state, "nope")


def test_selection_returns_the_rows_asked_for():
    weight = _planted(10_000)
    projector = Projector(weight, max_points=2_000)
    shown = projector.frame["row"].to_numpy()
    wanted = [int(shown[17]), int(shown[3]), int(shown[1_500])]
    selection = projector.select(wanted)
    assert list(selection.columns) == ["row", "norm", "x", "y"]
    assert selection["row"].tolist() == sorted(wanted)
    frame = projector.frame.set_index("row")
    np.testing.assert_array_equal(selection["x"], frame.loc[sorted(wanted), "x"])
    not_shown = int(np.setdiff1d(np.arange(10_000), shown)[0])
    with pytest.raises(ProjectorError, match=f"rows not shown \\(1\\): {not_shown}"):
        projector.select([not_shown])
    assert projector.selection["row"].tolist() == sorted(wanted)  # kept
    assert projector.select(None).empty


def test_above_max_points_a_stated_sample_stratified_by_norm_keeps_the_tail():
    weight = _planted(200_000)
    weight[:7] *= 1_000  # seven outlying norms, one of each kind a uniform sample would miss
    projector = Projector(weight, max_points=20_000)
    projection = projector.projection
    rows = projector.frame["row"].to_numpy()
    assert len(rows) == 20_000 and len(np.unique(rows)) == 20_000
    assert set(range(7)) <= set(rows.tolist())
    strata = projection.strata
    assert strata["rows"].sum() == 200_000 and strata["shown"].sum() == 20_000
    assert projection.stratified_by == "norm"
    assert "20,000 of 200,000 rows, a sample stratified by norm" in projector.description
    # Each stratum is kept whole up to the level, sampled down to it beyond.
    level = strata["shown"].max()
    assert ((strata["shown"] == strata["rows"]) | (strata["shown"] >= level - 1)).all()
    # The stated strata are the rows of each norm bin.
    norms = embviz.row_norms(weight).numpy()
    for _, stratum in strata.iterrows():
        if stratum["low"] == 0:
            continue
        inside = (norms[rows] >= stratum["low"]) & (norms[rows] <= stratum["high"])
        assert inside.sum() >= stratum["shown"]


def test_with_counts_the_sample_is_stratified_by_count():
    rows = 100_000
    counts = np.zeros(rows)
    rng = np.random.default_rng(0)
    counts[rng.choice(rows, 60_000, replace=False)] = rng.integers(1, 10, 60_000)
    counts[:50] = 10**6  # fifty head rows
    counts[50:80] = 0
    projector = Projector(_planted(rows), max_points=5_000, counts=pd.Series(counts))
    frame = projector.frame
    assert projector.projection.stratified_by == "count"
    assert set(range(50)) <= set(frame["row"].tolist())
    np.testing.assert_array_equal(frame["count"], counts[frame["row"]])
    strata = projector.projection.strata
    assert strata.loc[7, "rows"] == 50 and strata.loc[7, "shown"] == 50  # 10**6: decade 7
    with pytest.raises(ProjectorError, match="counts: 3 values for a table of 100,000 rows"):
        Projector(_planted(rows), counts=[1, 2, 3])


def test_a_ten_million_row_table_is_shown_as_a_sample_of_max_points():
    """The default shows at least 1,000,000 rows of any larger table (here scaled down 100x)."""
    import inspect

    default = inspect.signature(Projector).parameters["max_points"].default
    assert default >= 1_000_000
    weight = torch.randn(100_000, 4, dtype=torch.float16)
    projection = project(weight, n=10_000)
    assert len(projection.frame) == 10_000 and projection.sampled


def test_stratified_sample_is_seeded_and_exact_in_size():
    values = np.random.default_rng(0).lognormal(size=50_000)
    a, strata = stratified_sample(values, 1_234, "norm", seed=3)
    b, _ = stratified_sample(values, 1_234, "norm", seed=3)
    c, _ = stratified_sample(values, 1_234, "norm", seed=4)
    np.testing.assert_array_equal(a, b)
    assert len(a) == 1_234 and not np.array_equal(a, c)
    assert strata["shown"].sum() == 1_234


def test_drift_is_the_distance_after_orthogonal_procrustes():
    from scipy.linalg import orthogonal_procrustes

    after = _planted(5_000)
    rotation, _ = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(5)))
    before = after @ rotation  # only rotated: no drift
    moved = before.clone()
    moved[:100] += 0.5 * torch.randn(100, 8, generator=torch.Generator().manual_seed(6))
    projector = Projector(after, color="drift", against=moved)
    r, _ = orthogonal_procrustes(moved.double().numpy(), after.double().numpy())
    expected = np.linalg.norm(moved.double().numpy() @ r - after.double().numpy(), axis=1)
    np.testing.assert_allclose(projector.frame["drift"], expected, rtol=1e-5, atol=1e-5)
    still = Projector(after, color="drift", against=before).frame["drift"]
    assert float(still.max()) < 1e-4
    with pytest.raises(ProjectorError, match=r"against: the table has shape \(10, 8\)"):
        Projector(after, color="drift", against=after[:10])


def test_colour_choices_and_their_errors():
    weight = _planted(2_000)
    label = pd.Series(np.arange(2_000) % 3, name="cluster")
    assert (
        Projector(weight, color=label).frame["cluster"].tolist() == (np.arange(2000) % 3).tolist()
    )
    # Integer labels given as categories stay categories: a legend of labels, not a colour scale.
    community = pd.Series(np.arange(2_000) % 4, name="community").astype("category")
    frame = Projector(weight, color=community).frame
    assert isinstance(frame["community"].dtype, pd.CategoricalDtype)
    assert frame["community"].astype(int).tolist() == (np.arange(2000) % 4).tolist()
    values, title, clip = color_values(frame, "community")
    assert title == "community" and clip is None and isinstance(values.dtype, pd.CategoricalDtype)
    with pytest.raises(ProjectorError, match="color='count' needs counts="):
        Projector(weight, color="count")
    with pytest.raises(ProjectorError, match="color='drift' needs against="):
        Projector(weight, color="drift")
    with pytest.raises(ProjectorError, match="color must be"):
        Projector(weight, color="size")
    with pytest.raises(ProjectorError, match="max_points: must be a positive integer, got 0"):
        Projector(weight, max_points=0)
    with pytest.raises(ProjectorError, match="method: must be 'pca' or 'umap'"):
        Projector(weight, method="tsne")


def test_norm_colour_is_log_scaled_and_clipped_at_quantiles():
    from embviz.norms.projection import COLOR_CLIP

    weight = _planted(10_000)
    weight[0] *= 10**4
    frame = Projector(weight).frame
    values, title, (lo, hi) = color_values(frame, "norm")
    norms = frame["norm"].to_numpy(np.float64)
    assert (lo, hi) == tuple(np.quantile(norms, COLOR_CLIP))
    np.testing.assert_allclose(values, np.log10(np.clip(norms, lo, hi)), rtol=1e-6)
    assert title.startswith("log10 norm (clipped to")


def test_umap_without_umap_learn_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)
    with pytest.raises(ProjectorError, match="needs umap-learn \\(pip install umap-learn"):
        Projector(_planted(500), method="umap")


@pytest.mark.slow  # numba compiles UMAP's kernels on first use: about a minute on 2 cores
def test_umap_places_a_seeded_sample_and_states_its_parameters():
    pytest.importorskip("umap")
    weight = _planted(3_000)
    options = {"sample": 600, "n_neighbors": 10}
    first = Projector(weight, method="umap", umap=options)
    again = Projector(weight, method="umap", umap=options)
    assert len(first.frame) == 600
    pd.testing.assert_frame_equal(first.frame, again.frame)
    assert "n_neighbors=10" in first.description and "random_state=0" in first.description


# ------------------------------------------------------------------ the widget


def test_widget_selection_hover_and_neighbours_follow_the_scatter():
    weight = _planted(3_000)
    vocab = pd.Series(np.arange(3_000, dtype=np.int64), index=np.arange(3_000) + 10**9)
    projector = Projector(weight, vocab=vocab, k=5)
    view = projector.widget
    scatter = view.controls["scatter"]
    assert scatter.points.shape[0] == 3_000  # every row goes to the browser
    # What the browser does on a lasso: set the selection trait (positions in the frame).
    scatter.selection = np.array([4, 8, 15], dtype="uint32")
    assert projector.selection["row"].tolist() == projector.frame["row"].iloc[[4, 8, 15]].tolist()
    assert "3 rows selected" in view.outputs["selection"].value
    selected_bars = view.figure.axes[0].containers[1]
    assert sum(p.get_height() for p in selected_bars.patches) == 3
    # A click selects one point: its neighbours appear, labelled by entity.
    scatter.selection = np.array([42], dtype="uint32")
    expected = embviz.nearest(weight, 42, k=5).frame
    shown = view.neighbours
    assert shown["row"].tolist() == expected["row"].tolist()
    assert shown["entity"].tolist() == (expected["row"] + 10**9).tolist()
    text = view.outputs["neighbours"].value
    assert "5 nearest to row 42 (entity 1000000042) by cosine" in text
    assert all(f"<td>{entity}</td>" in text for entity in shown["entity"])
    scatter.hovering = 7
    assert view.outputs["hover"].value == (
        f"hover: row 7, entity {10**9 + 7}, norm {projector.frame['norm'].iat[7]:.4g}"
    )
    # The Python side drives the browser's selection too.
    projector.select([1, 2])
    assert scatter.selection.tolist() == [1, 2]
    assert view.outputs["neighbours"].value == ""


def test_plot_projection_sample_draws_a_stratified_sample(tmp_path):
    from embviz.plots.projection import plot_projection_sample

    projector = Projector(_planted(50_000), max_points=30_000)
    fig = plot_projection_sample(projector, points=4_000)
    (collection,) = fig.axes[0].collections
    assert len(collection.get_offsets()) == 4_000
    assert (
        "4,000 drawn of 30,000 rows shown (the table has 50,000)\nstratified by norm:"
        in fig.axes[0].get_title()
    )
    assert fig.axes[0].get_xlabel().startswith("PC 1 (")
    fig.savefig(tmp_path / "projection.png")


def test_report_draws_each_logged_table_from_a_snapshot(tmp_path):
    import torchrec

    from embviz.snapshots import save_snapshot

    cfg = embviz.parse_config(
        """
tables:
  - {name: user, num_embeddings: 30_000, embedding_dim: 8, data_type: fp32,
     optimizer: {sgd: {lr: 0.1}}}
  - {name: item, num_embeddings: 500, embedding_dim: 4, data_type: fp16,
     optimizer: {sgd: {lr: 0.1}}}
tables_to_log: [user]
"""
    )
    torch.manual_seed(0)
    module = torchrec.EmbeddingBagCollection(tables=cfg.to_torchrec(), device=torch.device("cpu"))
    with torch.no_grad():
        module.embedding_bags["user"].weight.copy_(_planted(30_000))
    path = save_snapshot(module, tmp_path / "snap")
    report = embviz.write_report(cfg, tmp_path / "report", snapshot=path)
    page = report.index.read_text()
    assert "<h2>Rows of the logged tables</h2>" in page
    assert "<h3>user</h3>" in page and "<h3>item</h3>" not in page  # only the logged table
    expected = Projector(path, "user")
    assert expected.description in page
    figure = tmp_path / "report" / "projection_user.png"
    assert figure in report.figures and figure.stat().st_size > 10_000


def test_cli_report_with_a_bad_snapshot_is_one_line(run_cli, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        "tables:\n  - {name: user, num_embeddings: 100, embedding_dim: 4, data_type: fp32,\n"
        "     optimizer: {sgd: {lr: 0.1}}}\n"
    )
    missing = tmp_path / "nowhere"
    result = run_cli("report", config, "--out", tmp_path / "out", "--snapshot", missing)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and str(missing) in result.stderr
    assert "Traceback" not in result.stderr


def test_widget_builds_for_every_colour():
    weight = _planted(2_000)
    counts = pd.Series(np.arange(2_000) % 50, dtype="int64")
    cluster = pd.Series(np.where(np.arange(2_000) < 1_000, "a", "b"), name="cluster")
    for projector, column in (
        (Projector(weight, color="count", counts=counts), "log10(count + 1)"),
        (Projector(weight, color=cluster), "cluster"),
        (Projector(weight, color="drift", against=weight.flip(1)), "drift"),
    ):
        scatter = projector.widget.controls["scatter"]
        assert scatter.color_title == column
        if column == "cluster":  # categories: distinct colours, not a continuous map's first ones
            first, second = np.asarray(scatter.color[:2], dtype=float)[:, :3]
            assert np.abs(first - second).max() > 0.3, scatter.color[:2]
        assert projector.color in projector.widget.controls["scatter"].data.columns
