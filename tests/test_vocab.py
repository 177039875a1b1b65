from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import embviz
from embviz.errors import EmbvizError
from embviz.vocab import VocabError


def table(name, rows, dim=8, vocab=None):
    return {
        "name": name,
        "num_embeddings": rows,
        "embedding_dim": dim,
        "data_type": "fp32",
        "optimizer": {"sgd": {"lr": 0.1}},
        **({"vocab": str(vocab)} if vocab else {}),
    }


def config(*tables):
    return embviz.LargeEmbeddingsConfig.model_validate({"tables": list(tables)})


def test_round_trip_over_several_files(tmp_path):
    ids = np.array([10**15 + 7, 42, 10**12, 5, 99], dtype=np.int64)
    rows = np.array([3, 0, 4, 1, 2])
    folder = embviz.write_vocab(tmp_path / "v", ids, rows, files=2)
    assert sorted(p.name for p in folder.glob("*.parquet")) == ["part-0.parquet", "part-1.parquet"]
    vocab = embviz.load_vocab(folder, num_embeddings=5)
    assert isinstance(vocab, pd.Series)
    assert vocab.name == "row" and vocab.index.name == "entity_id"
    assert vocab.dtype == np.int64 and vocab.index.dtype == np.int64
    assert vocab.loc[10**15 + 7] == 3
    assert vocab.loc[42] == 0
    assert dict(vocab) == dict(zip(ids.tolist(), rows.tolist(), strict=True))


def test_narrow_integer_columns_are_accepted(tmp_path):
    pq.write_table(
        pa.table({"entity_id": pa.array([1, 2], pa.uint32()), "row": pa.array([0, 1], pa.int8())}),
        tmp_path / "a.parquet",
    )
    vocab = embviz.load_vocab(tmp_path)
    assert vocab.dtype == np.int64
    assert vocab.to_dict() == {1: 0, 2: 1}


def test_single_file_path(tmp_path):
    embviz.write_vocab(tmp_path / "v", [7, 8], [1, 0])
    vocab = embviz.load_vocab(tmp_path / "v" / "part-0.parquet")
    assert vocab.to_dict() == {7: 1, 8: 0}


def test_missing_folder_and_no_files(tmp_path):
    with pytest.raises(VocabError, match="no such vocabulary folder") as info:
        embviz.load_vocab(tmp_path / "missing")
    assert isinstance(info.value, EmbvizError) and isinstance(info.value, ValueError)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.csv").write_text("entity_id,row\n1,0\n")
    with pytest.raises(VocabError, match="no parquet files"):
        embviz.load_vocab(tmp_path / "empty")


def test_not_parquet(tmp_path):
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(VocabError, match=r"bad\.parquet: not a readable parquet file"):
        embviz.load_vocab(tmp_path)


def test_missing_column_names_the_file(tmp_path):
    pq.write_table(pa.table({"id": [1, 2], "row": [0, 1]}), tmp_path / "x.parquet")
    with pytest.raises(VocabError, match=r"x\.parquet: missing column 'entity_id' \(has: id, row"):
        embviz.load_vocab(tmp_path)


@pytest.mark.parametrize(
    ("column", "values", "kind"),
    [("row", [0.0, 1.0], "double"), ("entity_id", ["a", "b"], "string")],
)
def test_mistyped_columns(tmp_path, column, values, kind):
    data = {"entity_id": [1, 2], "row": [0, 1], column: values}
    pq.write_table(pa.table(data), tmp_path / "x.parquet")
    with pytest.raises(VocabError, match=rf"column '{column}' is {kind}, expected an integer"):
        embviz.load_vocab(tmp_path)


def test_nulls(tmp_path):
    pq.write_table(
        pa.table({"entity_id": pa.array([1, None, 3], pa.int64()), "row": [0, 1, 2]}),
        tmp_path / "x.parquet",
    )
    with pytest.raises(VocabError, match="'entity_id' has 1 null values"):
        embviz.load_vocab(tmp_path)


def test_duplicate_ids_across_files(tmp_path):
    embviz.write_vocab(tmp_path, [1, 2, 3, 2, 9, 1], [0, 1, 2, 3, 4, 5], files=2)
    with pytest.raises(VocabError, match="2 entity ids appear more than once: 2, 1"):
        embviz.load_vocab(tmp_path)


def test_rows_outside_the_table(tmp_path):
    embviz.write_vocab(tmp_path, [1, 2, 3], [0, 5, 7])
    embviz.load_vocab(tmp_path)  # fine without a table size
    with pytest.raises(VocabError, match=r"2 ids map to rows outside \[0, 5\).*rows 5, 7"):
        embviz.load_vocab(tmp_path, num_embeddings=5)
    embviz.write_vocab(tmp_path, [1, 2], [0, -1])
    with pytest.raises(VocabError, match="outside"):
        embviz.load_vocab(tmp_path, num_embeddings=5)
    with pytest.raises(VocabError, match="negative rows: -1"):
        embviz.load_vocab(tmp_path)


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        # fastai round(1.6 n^0.56), NVTabular clipped to [16, 512], round(n^0.25), ceil(2 n^0.25)
        (16, {"fastai": 8, "nvtabular": 16, "google": 2, "merlin": 4}),
        (10_000, {"fastai": 278, "nvtabular": 278, "google": 10, "merlin": 20}),
        (424_241, {"fastai": 600, "nvtabular": 512, "google": 26, "merlin": 52}),
        (1, {"fastai": 2, "nvtabular": 16, "google": 1, "merlin": 2}),
    ],
)
def test_suggested_dims(n, expected):
    assert embviz.suggested_dims(n) == expected


def test_suggested_dims_formulas_over_a_range():
    for n in (2, 3, 77, 1_000, 123_456, 10**9):
        dims = embviz.suggested_dims(n)
        assert dims["fastai"] == min(600, round(1.6 * n**0.56))
        assert dims["nvtabular"] == min(512, max(16, dims["fastai"]))
        assert dims["merlin"] == math.ceil(2 * n**0.25)
    with pytest.raises(ValueError, match=">= 1"):
        embviz.suggested_dims(0)


def test_collision_share_is_exact():
    assert embviz.collision_share([0, 5, 10, 3], 5) == 0.75
    assert embviz.collision_share([1, 2, 3], 10) == 0.0
    rng = np.random.default_rng(1)
    ids = rng.choice(10**9, size=5_000, replace=False)
    counts = Counter(int(i) % 1_000 for i in ids)
    brute = sum(1 for i in ids if counts[int(i) % 1_000] > 1) / len(ids)
    assert embviz.collision_share(ids, 1_000) == brute


def test_vocab_report(tmp_path):
    rng = np.random.default_rng(0)
    # fits: 60 ids in a 100-row table, rows 0..59 shuffled
    fit_ids = rng.choice(10**12, size=60, replace=False)
    embviz.write_vocab(tmp_path / "fits", fit_ids, rng.permutation(60))
    # too small: 500 ids hashed into 200 rows
    big_ids = rng.choice(10**12, size=500, replace=False)
    embviz.write_vocab(tmp_path / "big", big_ids, np.arange(500))
    cfg = config(
        table("fits", 100, vocab=tmp_path / "fits"),
        table("hashed", 200, dim=16, vocab=tmp_path / "big"),
        table("plain", 10_000),
    )
    report = embviz.vocab_report(cfg)
    assert list(report.index) == ["fits", "hashed", "plain"]

    fits = report.loc["fits"]
    assert fits["mapping"] == "vocab"
    assert fits["vocab_size"] == 60 and fits["rows_used"] == 60
    assert fits["utilisation"] == 0.6
    assert fits["collision_share"] == 0.0
    assert fits["sized_from"] == "vocab"
    assert fits["dim_fastai"] == embviz.suggested_dims(60)["fastai"]

    hashed = report.loc["hashed"]
    hashed_rows = big_ids % 200
    counts = Counter(hashed_rows.tolist())
    assert hashed["mapping"] == "hash"
    assert hashed["vocab_size"] == 500
    assert hashed["rows_used"] == len(counts)
    assert hashed["utilisation"] == len(counts) / 200
    assert hashed["collision_share"] == sum(counts[r] > 1 for r in hashed_rows) / 500
    assert hashed["collision_share"] > 0.5  # 500 ids in 200 rows

    plain = report.loc["plain"]
    assert pd.isna(plain["vocab"]) and pd.isna(plain["mapping"])
    assert pd.isna(plain["vocab_size"]) and pd.isna(plain["rows_used"])
    assert math.isnan(plain["utilisation"]) and math.isnan(plain["collision_share"])
    assert plain["sized_from"] == "num_embeddings"
    assert plain["dim_merlin"] == embviz.suggested_dims(10_000)["merlin"]
    assert str(report["vocab_size"].dtype) == "Int64"


def test_vocab_report_refuses_a_vocab_that_fits_but_points_outside(tmp_path):
    embviz.write_vocab(tmp_path / "v", [1, 2, 3], [0, 1, 50])
    with pytest.raises(VocabError, match=r"table 't'.*3 ids.*num_embeddings 10.*50"):
        embviz.vocab_report(config(table("t", 10, vocab=tmp_path / "v")))


def test_vocab_report_reports_the_bad_folder(tmp_path):
    with pytest.raises(VocabError, match="no such vocabulary folder"):
        embviz.vocab_report(config(table("t", 10, vocab=tmp_path / "nope")))
