"""YAML in and out: env substitution, sections, safe loading, round trips."""

from __future__ import annotations

import getpass
import os
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import embviz
from embviz import ConfigError, LargeEmbeddingsConfig, dump_config, load_config, parse_config

ONE_TABLE = """
tables:
  - name: ${TABLE_NAME}
    num_embeddings: 424_241
    embedding_dim: 4
    data_type: fp32
    optimizer:
      sgd: {lr: 0.01}
    vocab: /data/$USER/vocab
"""


def test_env_substitution_like_the_original_loader(monkeypatch):
    monkeypatch.setenv("TABLE_NAME", "user")
    cfg = parse_config(ONE_TABLE)
    assert cfg.tables[0].name == "user"
    assert cfg.tables[0].num_embeddings == 424_241
    assert cfg.tables[0].vocab == f"/data/{getpass.getuser()}/vocab"


def test_unknown_variables_are_left_as_written(monkeypatch):
    monkeypatch.delenv("TABLE_NAME", raising=False)
    cfg = parse_config(ONE_TABLE)
    assert cfg.tables[0].name == "${TABLE_NAME}"


def test_key_selects_a_dotted_section():
    text = Path(embviz.example("twhin")).read_text()
    cfg = parse_config(text, key="model.embeddings")
    assert cfg.table_names == ["user", "tweet"]
    with pytest.raises(ConfigError) as info:
        parse_config(text, key="model.tables")
    ((location, message),) = info.value.problems
    assert location == "model.tables"
    assert "no 'tables' under model (has: translation_optimizer, embeddings, relations)" == message


def test_errors_inside_a_section_carry_its_path():
    text = "model:\n  embeddings:\n    tables:\n      - {name: a}\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, key="model.embeddings")
    locations = [loc for loc, _ in info.value.problems]
    assert "model.embeddings.tables[0].num_embeddings" in locations


def test_several_sections_with_tables_need_a_key():
    text = "a: {tables: []}\nb: {tables: []}\n"
    with pytest.raises(ConfigError, match=r"several sections hold tables \(a, b\)"):
        parse_config(text)


def test_python_tags_are_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    text = f'tables: !!python/object/apply:os.system ["touch {marker}"]\n'
    with pytest.raises(ConfigError, match=r"tag '!!python/object/apply:os\.system' is refused"):
        parse_config(text)
    assert not marker.exists()


def test_load_config_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("tables:\n  - name: a\n    num_embeddings: 0\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.source == str(path)
    assert str(info.value).startswith(f"{path}: tables[0].num_embeddings: must be > 0")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_dump_writes_the_hand_written_shape():
    cfg = load_config(embviz.example("twhin"))
    text = dump_config(cfg)
    assert "num_embeddings: 424_241" in text
    assert "pretrained" not in text and "vocab" not in text and "null" not in text
    assert "betas" not in text  # defaults the user did not write stay out
    assert "tables_to_log: [user, tweet]" in text
    assert parse_config(text) == cfg


def test_dump_round_trips_every_bundled_example():
    for name in ("ranker", "twhin"):
        cfg = load_config(embviz.example(name))
        assert parse_config(dump_config(cfg)) == cfg


def test_dump_is_plain_yaml_other_tools_read():
    cfg = load_config(embviz.example("ranker"))
    data = yaml.safe_load(dump_config(cfg))
    assert data["tables"][0]["name"] == "user_id"
    assert data["tables"][0]["data_type"] == "fp16"


def test_strings_that_look_like_numbers_stay_strings():
    cfg = parse_config(
        "tables:\n- {name: '1e5', num_embeddings: 10, embedding_dim: 4, data_type: fp32,"
        " vocab: '0e0', optimizer: {sgd: {lr: 1}}}\n"
    )
    assert (cfg.tables[0].name, cfg.tables[0].vocab) == ("1e5", "0e0")
    assert parse_config(dump_config(cfg)) == cfg


# --------------------------------------------------------------------------- hypothesis

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=12)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
lrs = st.floats(min_value=0, max_value=10, allow_nan=False)
positive = st.integers(min_value=1, max_value=10**12)

optimizers = st.one_of(
    st.builds(
        lambda lr, b1, b2, eps: {"adam": {"lr": lr, "betas": [b1, b2], "eps": eps}},
        lrs,
        finite,
        finite,
        finite,
    ),
    st.builds(lambda lr: {"adam": {"lr": lr}}, lrs),
    st.builds(lambda lr, m: {"sgd": {"lr": lr, "momentum": m}}, lrs, lrs),
    st.builds(lambda lr: {"sgd": {"lr": lr}}, lrs),
    st.builds(lambda lr, eps: {"adagrad": {"lr": lr, "eps": eps}}, lrs, finite),
)
schedules = st.one_of(
    st.none(),
    st.builds(lambda c: {"constant": c}, finite),
    st.builds(
        lambda a, b, n, m: {
            "linear_ramp_to_cosine": {
                "learning_rate": a,
                "final_learning_rate": b,
                "num_ramp_steps": n,
                "final_num_steps": m,
            }
        },
        finite,
        finite,
        positive,
        positive,
    ),
    st.builds(
        lambda a, n: {"linear_ramp_to_constant": {"learning_rate": a, "num_ramp_steps": n}},
        finite,
        positive,
    ),
    st.lists(st.integers(-(10**9), 10**9), max_size=4).flatmap(
        lambda bounds: st.lists(finite, min_size=len(bounds) + 1, max_size=len(bounds) + 1).map(
            lambda values: {
                "piecewise_constant": {
                    "learning_rate_boundaries": bounds,
                    "learning_rate_values": values,
                }
            }
        )
    ),
)


@st.composite
def tables(draw, name):
    optimizer = dict(draw(optimizers))
    schedule = draw(schedules)
    if schedule is not None:
        optimizer["learning_rate"] = schedule
    table = {
        "name": name,
        "num_embeddings": draw(positive),
        "embedding_dim": draw(st.integers(1, 4096).map(lambda d: d * 4)),
        "data_type": draw(st.sampled_from(["fp32", "fp16"])),
        "optimizer": optimizer,
    }
    if draw(st.booleans()):
        table["vocab"] = draw(names)
    if draw(st.booleans()):
        table["pretrained"] = {"emb_name": draw(names), "embedding_snapshot_uri": draw(names)}
    return table


@st.composite
def configs(draw):
    table_names = draw(st.lists(names, min_size=1, max_size=5, unique=True))
    data = {"tables": [draw(tables(n)) for n in table_names]}
    if draw(st.booleans()):
        data["tables_to_log"] = draw(st.lists(st.sampled_from(table_names), max_size=3))
    return LargeEmbeddingsConfig.model_validate(data)


@settings(max_examples=150, deadline=None)
@given(configs())
def test_dump_then_parse_round_trips(cfg):
    assert parse_config(dump_config(cfg)) == cfg


@settings(max_examples=50, deadline=None)
@given(configs())
def test_round_trip_through_a_file_and_a_section(tmp_path_factory, cfg):
    path = tmp_path_factory.mktemp("rt") / "project.yaml"
    body = "\n".join("    " + line for line in dump_config(cfg).splitlines())
    path.write_text("model:\n  embeddings:\n" + body + "\n")
    assert load_config(path, key="model.embeddings") == cfg
    os.remove(path)
