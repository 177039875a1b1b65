"""`embviz report`: the static HTML report and the config comparison behind --compare."""

from __future__ import annotations

import re

import pytest
from report_html import cells

import embviz
from embviz.compare import compare_configs
from embviz.report import ReportError, write_report


@pytest.fixture(scope="module")
def ranker():
    return embviz.load_config(embviz.example("ranker"))


def changed(cfg):
    """ranker with user_id doubled, topic removed, a new table added, item_id in fp32."""
    tables = []
    for table in cfg.tables:
        if table.name == "topic":
            continue
        if table.name == "user_id":
            table = table.model_copy(update={"num_embeddings": 2 * table.num_embeddings})
        if table.name == "item_id":
            table = table.model_copy(update={"data_type": embviz.DataType.FP32})
        tables.append(table)
    extra = cfg.table("country").model_copy(update={"name": "region", "num_embeddings": 4_000})
    logged = [n for n in cfg.logged_tables if n != "topic"]
    return cfg.model_copy(update={"tables": [*tables, extra], "tables_to_log": logged})


def test_compare_names_each_change_and_the_bytes_it_moves(ranker):
    new = changed(ranker)
    diff = compare_configs(ranker, new)
    before, after = embviz.memory_table(ranker), embviz.memory_table(new)
    assert diff.at["topic", "change"] == "removed"
    assert diff.at["topic", "delta_bytes"] == -before.at["topic", "total_bytes"]
    assert diff.at["region", "change"] == "added"
    assert diff.at["region", "delta_bytes"] == after.at["region", "total_bytes"]
    assert diff.at["user_id", "change"] == "changed"
    assert diff.at["user_id", "details"] == "num_embeddings 100,000,000 -> 200,000,000"
    assert diff.at["user_id", "delta_bytes"] == 100_000_000 * 64 * 2  # fp16, SGD: weights only
    assert diff.at["item_id", "details"] == "data_type fp16 -> fp32"
    assert diff.at["item_id", "delta_bytes"] == 20_000_000 * 128 * 2  # fp32 state unchanged
    assert diff.at["country", "change"] == "unchanged" and diff.at["country", "delta_bytes"] == 0
    assert diff["delta_bytes"].sum() == after["total_bytes"].sum() - before["total_bytes"].sum()


def test_report_holds_every_table_exact_totals_and_figures(ranker, tmp_path):
    report = write_report(ranker, tmp_path / "out", gpus=4, hbm_gib=16, source="ranker.yaml")
    page = cells(report.index.read_text())
    assert report.index == tmp_path / "out" / "index.html"
    for name in ranker.table_names:
        assert f"<td>{name}</td>" in page
    total = int(embviz.memory_table(ranker)["total_bytes"].sum())
    assert f"{total:,}" in page
    names = {p.name for p in report.figures}
    assert names == {"memory.png", "dtype_savings.png", "placement.png"}
    for path in report.figures:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f'src="{path.name}"' in page
    placement = embviz.plan(ranker, gpus=4, hbm_gib=16, progress=False)
    for row in placement.tables.itertuples():
        assert re.search(rf"<td>{row.table}</td><td>{row.sharding_type}</td>", page)


def test_report_without_gpus_has_no_placement(ranker, tmp_path):
    report = write_report(ranker, tmp_path)
    assert {p.name for p in report.figures} == {"memory.png", "dtype_savings.png"}
    assert "Placement" not in report.index.read_text()


def test_report_says_when_the_planner_cannot_place(ranker, tmp_path):
    page = write_report(ranker, tmp_path, gpus=1, hbm_gib=8).index.read_text()
    assert "torchrec&#x27;s planner:" in page or "torchrec's planner:" in page
    assert "GPU" in page and not (tmp_path / "placement.png").exists()


def test_report_with_compare_lists_the_changes(ranker, tmp_path):
    page = cells(write_report(changed(ranker), tmp_path, compare=ranker).index.read_text())
    assert "<td>topic</td><td>removed</td>" in page
    assert "<td>region</td><td>added</td>" in page
    assert "num_embeddings 100,000,000 -&gt; 200,000,000" in page
    assert f"{100_000_000 * 64 * 2:+,}" in page


def test_gpus_and_hbm_go_together(ranker, tmp_path):
    with pytest.raises(ReportError, match="gpus and hbm_gib go together"):
        write_report(ranker, tmp_path, gpus=4)


def test_cli_writes_the_report_and_prints_where(tmp_path, run_cli):
    out = tmp_path / "report"
    result = run_cli(
        "report", embviz.example("ranker"), "--out", out, "--compare", embviz.example("ranker")
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out / "index.html")
    assert "+0 B in all (+0 bytes); 12 tables unchanged." in (out / "index.html").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gpus", "4"], "gpus and hbm_gib go together"),
        (["--compare", "nope.yaml"], "nope.yaml: no such file"),
    ],
)
def test_cli_bad_arguments_exit_two(tmp_path, run_cli, args, message):
    result = run_cli("report", embviz.example("ranker"), "--out", tmp_path, *args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_fp16_section_is_against_the_current_config(ranker, tmp_path):
    page = write_report(ranker, tmp_path).index.read_text()
    section = page[page.index("What fp16 saves") : page.index("<h2>Serving")]
    savings = embviz.dtype_savings(embviz.memory_table(ranker))
    assert f"{int(savings.loc['(total)', 'saved_bytes']):,} bytes" in section
    assert "948,096,768 bytes" in section  # not the all-fp32 against all-fp16 difference
    for name in ("user_id", "item_id", "user_follows_hashed", "ad_campaign"):
        assert name in section.split("Already fp16")[1].split(".")[0]


def test_serving_section_agrees_with_the_cli(ranker, tmp_path, run_cli):
    import io

    import pandas as pd

    page = cells(write_report(ranker, tmp_path, serving_dtype="int4").index.read_text())
    result = run_cli(
        "memory",
        str(embviz.example("ranker")),
        "--mode",
        "inference",
        "--serving-dtype",
        "int4",
        "--format",
        "csv",
    )
    assert result.returncode == 0, result.stderr
    cli = pd.read_csv(io.StringIO(result.stdout), index_col="table")
    total = int(cli.loc["(total)", "total_bytes"])
    assert total == int(
        embviz.memory_table(ranker, mode="inference", serving_dtype="int4")["total_bytes"].sum()
    )
    assert f"({total:,} bytes)" in page
    assert "--serving-dtype int4" in page
    serving = embviz.serving_bytes(ranker)
    for dtype in ("int8", "int4", "int2"):
        assert f"<td>{embviz.human_bytes(int(serving[f'{dtype}_bytes'].sum()))}</td>" in page


def test_placement_section_has_bytes_per_rank_and_why(ranker, tmp_path):
    from embviz.placement_reasons import placement_reasons

    page = write_report(ranker, tmp_path, gpus=4, hbm_gib=16).index.read_text()
    placement = embviz.plan(ranker, gpus=4, hbm_gib=16, progress=False)
    reasons = placement_reasons(placement)
    by_rank = placement.bytes_by_rank(top=len(ranker.tables))
    for rank in range(4):
        # The reasons' per-rank bytes are the plan's, table by table.
        column = reasons[f"rank {rank}"]
        for table, value in by_rank.loc[rank].items():
            assert column[table] == value
    assert reasons.loc["item_id", "sharding_type"] == "row_wise"
    assert not reasons.loc["item_id", "fits_one_gpu"]  # 14.31 GiB > 16 GiB x 0.85
    assert "must be split" in reasons.loc["item_id", "reason"]
    assert "must be split" not in reasons.loc["user_id", "reason"]
    for _, row in reasons.iterrows():
        assert embviz.human_bytes(int(row["table_bytes"])) in row["reason"]
    import html as html_module

    for reason in reasons["reason"]:  # escaped: GPU's is GPU&#39;s
        assert html_module.escape(reason).replace("&#x27;", "&#39;") in page


def test_serving_section_measures_quality_from_a_snapshot(tmp_path):
    import torch
    import torchrec

    from embviz.snapshots import save_snapshot

    cfg = embviz.parse_config(
        """
tables:
  - {name: wide, num_embeddings: 3_000, embedding_dim: 16, data_type: fp32,
     optimizer: {sgd: {lr: 0.1}}}
  - {name: narrow, num_embeddings: 800, embedding_dim: 4, data_type: fp32,
     optimizer: {sgd: {lr: 0.1}}}
"""
    )
    torch.manual_seed(0)
    module = torchrec.EmbeddingBagCollection(tables=cfg.to_torchrec(), device=torch.device("cpu"))
    path = save_snapshot(module, tmp_path / "snap")
    page = cells(write_report(cfg, tmp_path / "report", snapshot=path).index.read_text())
    quality = embviz.quantization_error_table(path, ("int8", "int4", "int2"), progress=False)
    for table, dtype in [("wide", "int8"), ("wide", "int4"), ("wide", "int2"), ("narrow", "int4")]:
        kept = quality.loc[(table, dtype), "knn_kept_mean"]
        assert f"<td>{table}</td><td>{dtype}</td><td>" in page
        assert f"<td>{kept:.3f}</td>" in page
    # narrow is 4 wide: int2 is refused, and the report says why.
    assert "embedding_dim 4 cannot be served as int2" in page


def test_hostile_table_names_are_escaped_in_every_table(ranker, tmp_path):
    hostile = "x<b>bold</b>&'\""
    tables = [
        t.model_copy(update={"name": hostile}) if t.name == "topic" else t for t in ranker.tables
    ]
    logged = [n for n in ranker.logged_tables if n != "topic"]
    cfg = ranker.model_copy(update={"tables": tables, "tables_to_log": logged})
    page = write_report(cfg, tmp_path, compare=ranker, gpus=4, hbm_gib=16).index.read_text()
    assert "<b>bold" not in page
    escaped = "<td>x&lt;b&gt;bold&lt;/b&gt;&amp;&#39;&#34;</td>"
    # memory, serving, placement and the comparison (added) each show the name, escaped
    assert cells(page).count(escaped) == 4
