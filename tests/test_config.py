"""The schema rules of the-algorithm-ml's embedding config, one by one."""

from __future__ import annotations

import copy
import warnings

import pytest

import embviz
from embviz import (
    ConfigError,
    DataType,
    FusedKernelWarning,
    LargeEmbeddingsConfig,
    Mode,
    OptimizerConfig,
    parse_config,
)

TABLE = {
    "name": "user",
    "num_embeddings": 1000,
    "embedding_dim": 8,
    "data_type": "fp32",
    "optimizer": {"sgd": {"lr": 0.1}},
}


def config(**table_changes):
    table = copy.deepcopy(TABLE)
    table.update(table_changes)
    return {"tables": [table]}


def problems(data) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        embviz.config._validate(data, source=None)
    return info.value.problems


def test_defaults_match_the_algorithm_ml():
    cfg = LargeEmbeddingsConfig.model_validate(
        config(optimizer={"adam": {"lr": 0.1}}, data_type="fp16")
    )
    table = cfg.tables[0]
    assert table.pretrained is None and table.vocab is None
    assert table.data_type is DataType.FP16
    assert table.optimizer.adam.betas == (0.9, 0.999)
    assert table.optimizer.adam.eps == 1e-7
    assert table.optimizer.learning_rate is None
    assert cfg.tables_to_log is None
    assert OptimizerConfig(sgd={"lr": 1}).sgd.momentum == 0.0
    assert OptimizerConfig(adagrad={"lr": 1}).adagrad.eps == 0
    assert [m.value for m in Mode] == ["train", "evaluate", "inference"]
    assert [d.value for d in DataType] == ["fp32", "fp16"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("num_embeddings", 0, "must be > 0, got 0"),
        ("num_embeddings", -1, "must be > 0, got -1"),
        ("num_embeddings", 1.0, "must be an integer, got 1.0 (float)"),
        ("num_embeddings", True, "must be an integer, got True (bool)"),
        ("num_embeddings", "1000", "must be an integer, got '1000' (str)"),
        ("embedding_dim", 0, "must be > 0, got 0"),
        ("embedding_dim", 8.5, "must be an integer, got 8.5 (float)"),
        ("embedding_dim", False, "must be an integer, got False (bool)"),
        ("embedding_dim", None, "must be an integer, got None (NoneType)"),
        ("data_type", "bf16", "must be one of 'fp32' or 'fp16', got 'bf16'"),
    ],
)
def test_table_fields_are_checked(field, value, message):
    assert problems(config(**{field: value})) == [(f"tables[0].{field}", message)]


def test_unknown_fields_are_refused_at_every_level():
    data = config(colour="red")
    data["extra"] = 1
    data["tables"][0]["optimizer"]["sgd"]["nesterov"] = True
    got = problems(data)
    assert ("tables[0].colour", "unknown field") in got
    assert ("extra", "unknown field") in got
    assert ("tables[0].optimizer.sgd.nesterov", "unknown field") in got


def test_exactly_one_optimizer():
    assert problems(config(optimizer={})) == [
        ("tables[0].optimizer", "exactly one of adam, sgd, adagrad is required")
    ]
    two = {"sgd": {"lr": 1}, "adagrad": {"lr": 1}}
    assert problems(config(optimizer=two)) == [
        ("tables[0].optimizer", "exactly one of adam, sgd, adagrad is allowed, got sgd, adagrad")
    ]


def test_learning_rate_needs_exactly_one_schedule():
    with_lr = {"sgd": {"lr": 1}, "learning_rate": {}}
    (location, message), *_ = problems(config(optimizer=with_lr))
    assert location == "tables[0].optimizer.learning_rate"
    assert message.startswith("exactly one of constant, linear_ramp_to_cosine")
    piecewise = {"learning_rate_values": [1.0]}
    two = {"sgd": {"lr": 1}, "learning_rate": {"constant": 1, "piecewise_constant": piecewise}}
    ((_, message),) = problems(config(optimizer=two))
    assert "is allowed, got constant, piecewise_constant" in message
    ok = {"sgd": {"lr": 1}, "learning_rate": {"constant": 0.5}}
    assert LargeEmbeddingsConfig.model_validate(config(optimizer=ok))


def test_lr_must_not_be_negative_but_zero_is_fine():
    assert problems(config(optimizer={"adagrad": {"lr": -0.5}})) == [
        ("tables[0].optimizer.adagrad.lr", "must be >= 0, got -0.5")
    ]
    LargeEmbeddingsConfig.model_validate(config(optimizer={"adagrad": {"lr": 0}}))


@pytest.mark.parametrize("field", ["num_ramp_steps", "final_num_steps"])
def test_ramp_steps_must_be_positive(field):
    schedule = {
        "learning_rate": 1.0,
        "final_learning_rate": 0.1,
        "num_ramp_steps": 10,
        "final_num_steps": 100,
    }
    schedule[field] = 0
    optimizer = {"sgd": {"lr": 1}, "learning_rate": {"linear_ramp_to_cosine": schedule}}
    assert problems(config(optimizer=optimizer)) == [
        (f"tables[0].optimizer.learning_rate.linear_ramp_to_cosine.{field}", "must be > 0, got 0")
    ]
    ramp = {"learning_rate": 1.0, "num_ramp_steps": -1}
    optimizer = {"sgd": {"lr": 1}, "learning_rate": {"linear_ramp_to_constant": ramp}}
    ((location, _),) = problems(config(optimizer=optimizer))
    assert location.endswith("linear_ramp_to_constant.num_ramp_steps")


def test_piecewise_constant_has_one_more_value_than_boundaries():
    def schedule(boundaries, values):
        piecewise = {"learning_rate_boundaries": boundaries, "learning_rate_values": values}
        return config(
            optimizer={"sgd": {"lr": 1}, "learning_rate": {"piecewise_constant": piecewise}}
        )

    LargeEmbeddingsConfig.model_validate(schedule([10, 20], [1.0, 0.5, 0.1]))
    ((location, message),) = problems(schedule([10, 20], [1.0, 0.5]))
    assert location == "tables[0].optimizer.learning_rate.piecewise_constant"
    assert "got 2 values for 2 boundaries" in message


def test_table_names_unique_and_logged_tables_exist():
    data = {"tables": [TABLE, TABLE, {**TABLE, "name": "item"}], "tables_to_log": ["item", "ghost"]}
    assert problems(data) == [
        ("tables[1].name", "duplicate table name 'user' (also tables[0])"),
        ("tables_to_log[1]", "no table named 'ghost' (tables: 'user', 'item')"),
    ]


def test_cross_table_problems_reported_with_field_problems_in_one_pass():
    bad = {**TABLE, "embedding_dim": 0}
    data = {"tables": [bad, TABLE], "tables_to_log": ["ghost"]}
    got = problems(data)
    assert ("tables[0].embedding_dim", "must be > 0, got 0") in got
    assert ("tables[1].name", "duplicate table name 'user' (also tables[0])") in got
    assert ("tables_to_log[0]", "no table named 'ghost' (tables: 'user')") in got


def test_dim_not_multiple_of_four_warns_but_is_valid():
    with pytest.warns(FusedKernelWarning, match=r"'user': embedding_dim 6 is not a multiple of 4"):
        cfg = LargeEmbeddingsConfig.model_validate(config(embedding_dim=6))
    assert cfg.tables[0].embedding_dim == 6
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LargeEmbeddingsConfig.model_validate(config(embedding_dim=12))


def test_config_error_is_a_value_error_with_rendered_lines():
    error = ConfigError([("tables[1].embedding_dim", "must be > 0")], source="a.yaml")
    assert isinstance(error, ValueError) and isinstance(error, embviz.EmbvizError)
    assert str(error) == "a.yaml: tables[1].embedding_dim: must be > 0"


def test_table_lookup_and_names():
    cfg = embviz.load_config(embviz.example("ranker"))
    assert cfg.table("topic").embedding_dim == 256
    assert cfg.table_names[0] == "user_id"
    assert cfg.logged_tables == ["user_id", "item_id", "query_token", "topic"]
    with pytest.raises(KeyError, match="no table named 'nope'"):
        cfg.table("nope")


def test_ranker_example_is_realistic():
    cfg = embviz.load_config(embviz.example("ranker"))
    rows = [t.num_embeddings for t in cfg.tables]
    dims = {t.embedding_dim for t in cfg.tables}
    assert len(cfg.tables) >= 12
    assert min(rows) == 1_000 and max(rows) == 100_000_000
    assert min(dims) == 16 and max(dims) == 256
    assert {t.data_type for t in cfg.tables} == {DataType.FP16, DataType.FP32}
    assert {t.optimizer.name for t in cfg.tables} == {"adam", "sgd", "adagrad"}
    assert len(cfg.logged_tables) >= 2


def test_twhin_example_has_the_published_tables():
    cfg = embviz.load_config(embviz.example("twhin"), key="model.embeddings")
    user, tweet = cfg.tables
    assert (user.name, user.num_embeddings, user.embedding_dim) == ("user", 424_241, 4)
    assert (tweet.name, tweet.num_embeddings, tweet.embedding_dim) == ("tweet", 72_543, 4)
    assert user.optimizer.sgd.lr == 0.01 and tweet.optimizer.sgd.lr == 0.005
    assert {t.data_type for t in cfg.tables} == {DataType.FP32}
    # The one section holding tables is found without a key.
    assert embviz.load_config(embviz.example("twhin")) == cfg


def test_unknown_example_lists_the_bundled_ones():
    with pytest.raises(ValueError, match="examples: ranker, twhin"):
        embviz.example("nope")


def test_schema_is_json_schema_of_the_config():
    schema = embviz.config_schema()
    assert schema["type"] == "object"
    assert set(schema["required"]) == {"tables"}
    table = schema["$defs"]["EmbeddingBagConfig"]
    assert table["additionalProperties"] is False
    assert table["properties"]["num_embeddings"]["exclusiveMinimum"] == 0
    assert set(table["required"]) == {
        "name",
        "num_embeddings",
        "embedding_dim",
        "optimizer",
        "data_type",
    }


def test_parse_config_reads_yaml_text():
    text = "tables:\n- {name: a, num_embeddings: 1_000, embedding_dim: 4, data_type: fp16, optimizer: {adam: {lr: 1e-3}}}\n"
    cfg = parse_config(text)
    assert cfg.tables[0].num_embeddings == 1000
    # PyYAML alone would leave 1e-3 a string; it is a float here.
    assert cfg.tables[0].optimizer.adam.lr == pytest.approx(0.001)
