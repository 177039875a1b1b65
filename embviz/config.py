"""The embedding-table schema of the-algorithm-ml, ported to pydantic 2, with YAML in and out.

The classes mirror ``common/modules/embedding/config.py`` and ``optimizers/config.py`` of
the-algorithm-ml field for field (same names, same defaults). Validation is stricter where the
original silently coerced: row counts and dims must be real positive integers.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from embviz.errors import EmbvizError
from embviz.yamlload import (
    YAML12_FLOAT,
    YamlProblem,
    load_yaml,
    no_cycle_collection,
    quote,
    read_limited,
    substitute_env,
)

if TYPE_CHECKING:
    import torchrec

__all__ = [
    "MAX_BYTES",
    "AdagradConfig",
    "AdamConfig",
    "ConfigError",
    "DataType",
    "EmbeddingBagConfig",
    "EmbeddingSnapshot",
    "FusedKernelWarning",
    "LargeEmbeddingsConfig",
    "LearningRate",
    "LinearRampToConstant",
    "LinearRampToCosine",
    "Mode",
    "OptimizerConfig",
    "PiecewiseConstant",
    "SgdConfig",
    "byte_limit_problems",
    "config_schema",
    "dump_config",
    "example",
    "load_config",
    "optimizer_name",
    "parse_config",
    "table_bytes_bound",
]

# Strict so that 4.0, True and "4" are refused instead of silently becoming 4.
PositiveInt = Annotated[int, Field(strict=True, gt=0)]
# Every float of the schema is finite: YAML's .inf and .nan are refused.
Float = Annotated[float, Field(allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]

#: The most bytes a table, or all tables together, may take in any accounting: byte counts are
#: exact int64 (`embviz.memory_table`), and 2**63 - 1 bytes (8 EiB) is int64's largest value.
MAX_BYTES = 2**63 - 1
# Characters a table name may not hold, and why.
_NAME_REFUSED = {
    ".": "torch module names cannot contain '.', so build, plan and report would fail",
    "/": "snapshot paths use '/' to separate a table's path, so it would not read back",
}
# Problems shown in a ConfigError's message (all are kept in `problems`).
_SHOWN_PROBLEMS = 50

# PydanticCustomError type used to report problems whose location is not the validator's own
# (an index inside ``tables_to_log``, say); `ConfigError.from_validation_error` unpacks it.
_PROBLEMS = "embviz_problems"


class FusedKernelWarning(UserWarning):
    """A table is valid for torchrec but FBGEMM's fused (sharded) kernels cannot run it."""


class ConfigError(EmbvizError, ValueError):
    """A config that cannot be read or is not valid.

    Attributes
    ----------
    problems : list of (str, str)
        One ``(location, message)`` per problem; the location is in YAML terms
        (``tables[1].optimizer``), empty when the problem concerns the whole document.
    source : str or None
        The file (or other origin) the config came from.
    """

    def __init__(self, problems: list[tuple[str, str]], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        lines = []
        for location, message in self.problems[:_SHOWN_PROBLEMS]:
            where = ": ".join(p for p in (self.source, location) if p)
            lines.append(f"{where}: {message}" if where else message)
        if len(self.problems) > _SHOWN_PROBLEMS:
            more = len(self.problems) - _SHOWN_PROBLEMS
            lines.append(
                f"{self.source + ': ' if self.source else ''}... and {more:,} more problems"
            )
        return "\n".join(lines)

    @classmethod
    def from_validation_error(
        cls, error: ValidationError, source: str | None = None, prefix: str = ""
    ) -> ConfigError:
        """Turn pydantic's errors into one ``(location, message)`` per problem."""
        problems: list[tuple[str, str]] = []
        for item in error.errors(include_url=False):
            location = _join_location(prefix, _format_location(item["loc"]))
            if item["type"] == _PROBLEMS:
                for sub_location, message in item["ctx"]["problems"]:
                    problems.append((_join_location(location, sub_location), message))
            else:
                problems.append((location, _friendly_message(item)))
        return cls(problems, source)


def _format_location(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _join_location(prefix: str, location: str) -> str:
    if not prefix:
        return location
    if not location:
        return prefix
    return prefix + location if location.startswith("[") else f"{prefix}.{location}"


def _friendly_message(item: dict[str, Any]) -> str:
    kind, ctx, value = item["type"], item.get("ctx", {}), item.get("input")
    shown = f"{quote(value)} ({type(value).__name__})"
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "greater_than":
        return f"must be > {ctx['gt']:g}, got {quote(value)}"
    if kind == "greater_than_equal":
        return f"must be >= {ctx['ge']:g}, got {quote(value)}"
    if kind == "finite_number":
        return f"must be a finite number, got {quote(value)}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"must be an integer, got {shown}"
    if kind in ("float_type", "float_parsing"):
        return f"must be a number, got {shown}"
    if kind == "enum":
        return f"must be one of {ctx['expected']}, got {quote(value)}"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"must be a mapping, got {shown}"
    if kind == "list_type":
        return f"must be a list, got {shown}"
    if kind in ("string_type",):
        return f"must be a string, got {shown}"
    message = item["msg"]
    return message.removeprefix("Value error, ")


class _Base(BaseModel):
    # the-algorithm-ml's BaseConfig forbids unknown fields; so do we.
    model_config = ConfigDict(extra="forbid", use_enum_values=False)


def _exactly_one(model: BaseModel, names: tuple[str, ...], required: bool) -> None:
    chosen = [n for n in names if getattr(model, n) is not None]
    if len(chosen) > 1:
        raise ValueError(f"exactly one of {', '.join(names)} is allowed, got {', '.join(chosen)}")
    if required and not chosen:
        raise ValueError(f"exactly one of {', '.join(names)} is required")


class DataType(str, Enum):
    """Storage dtype of a table's weights."""

    FP32 = "fp32"
    FP16 = "fp16"

    @property
    def itemsize(self) -> int:
        """Bytes per element."""
        return 4 if self is DataType.FP32 else 2


class Mode(str, Enum):
    """What the model is run for; only TRAIN keeps optimizer state."""

    TRAIN = "train"
    EVALUATE = "evaluate"
    INFERENCE = "inference"


class AdamConfig(_Base):
    """torch.optim.Adam settings (FBGEMM's ADAM once sharded)."""

    lr: NonNegativeFloat
    betas: tuple[Float, Float] = (0.9, 0.999)
    eps: Float = 1e-7


class SgdConfig(_Base):
    """torch.optim.SGD settings (FBGEMM's EXACT_SGD once sharded)."""

    lr: NonNegativeFloat
    momentum: NonNegativeFloat = 0.0


class AdagradConfig(_Base):
    """torch.optim.Adagrad settings (FBGEMM's EXACT_ADAGRAD once sharded)."""

    lr: NonNegativeFloat
    eps: Float = 0


class PiecewiseConstant(_Base):
    """Learning rate ``learning_rate_values[i]`` until step ``learning_rate_boundaries[i]``."""

    learning_rate_boundaries: list[Annotated[int, Field(strict=True)]] | None = None
    learning_rate_values: list[Float] | None = None

    @model_validator(mode="after")
    def _one_more_value_than_boundaries(self) -> PiecewiseConstant:
        boundaries = self.learning_rate_boundaries or []
        values = self.learning_rate_values or []
        if len(values) != len(boundaries) + 1:
            raise ValueError(
                "learning_rate_values must have one more entry than learning_rate_boundaries, "
                f"got {len(values)} values for {len(boundaries)} boundaries"
            )
        return self


class LinearRampToConstant(_Base):
    """Linear ramp from 0 to ``learning_rate`` over ``num_ramp_steps``, then constant."""

    learning_rate: Float
    num_ramp_steps: PositiveInt


class LinearRampToCosine(_Base):
    """Linear ramp to ``learning_rate``, then cosine decay to ``final_learning_rate``."""

    learning_rate: Float
    final_learning_rate: Float
    num_ramp_steps: PositiveInt
    final_num_steps: PositiveInt


_SCHEDULES = ("constant", "linear_ramp_to_cosine", "linear_ramp_to_constant", "piecewise_constant")
_OPTIMIZERS = ("adam", "sgd", "adagrad")


class LearningRate(_Base):
    """A learning-rate schedule: exactly one of the four kinds."""

    constant: Float | None = None
    linear_ramp_to_cosine: LinearRampToCosine | None = None
    linear_ramp_to_constant: LinearRampToConstant | None = None
    piecewise_constant: PiecewiseConstant | None = None

    @model_validator(mode="after")
    def _one_schedule(self) -> LearningRate:
        _exactly_one(self, _SCHEDULES, required=True)
        return self


class OptimizerConfig(_Base):
    """Exactly one of ``adam``, ``sgd``, ``adagrad``, and an optional schedule."""

    learning_rate: LearningRate | None = None
    adam: AdamConfig | None = None
    sgd: SgdConfig | None = None
    adagrad: AdagradConfig | None = None

    @model_validator(mode="after")
    def _one_optimizer(self) -> OptimizerConfig:
        _exactly_one(self, _OPTIMIZERS, required=True)
        return self

    @property
    def name(self) -> str:
        """``"adam"``, ``"sgd"`` or ``"adagrad"``."""
        return next(n for n in _OPTIMIZERS if getattr(self, n) is not None)

    @property
    def settings(self) -> AdamConfig | SgdConfig | AdagradConfig:
        """The chosen optimizer's own config."""
        return getattr(self, self.name)


def optimizer_name(table: EmbeddingBagConfig) -> str:
    """Name of a table's optimizer (``"adam"``, ``"sgd"`` or ``"adagrad"``)."""
    return table.optimizer.name


class EmbeddingSnapshot(_Base):
    """Where a pretrained table lives: a torchsnapshot and the table's name inside it."""

    emb_name: str = Field(description="Name of the embedding table in the loaded snapshot.")
    embedding_snapshot_uri: str = Field(description="Path to the torchsnapshot.")


class EmbeddingBagConfig(_Base):
    """One embedding table (one feature, sum pooling)."""

    name: str = Field(description="Name of the embedding bag.")
    num_embeddings: PositiveInt = Field(description="Rows in the table.")
    embedding_dim: PositiveInt = Field(description="Size of each embedding vector.")
    pretrained: EmbeddingSnapshot | None = Field(None, description="Snapshot to load from.")
    vocab: str | None = Field(
        None, description="Folder of parquet files mapping entity id to table row."
    )
    optimizer: OptimizerConfig
    data_type: DataType

    @field_validator("name")
    @classmethod
    def _name_is_usable(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        for char, reason in _NAME_REFUSED.items():
            if char in value:
                raise ValueError(f"must not contain {char!r}: {reason} (got {quote(value)})")
        return value

    @model_validator(mode="after")
    def _bytes_fit_int64(self) -> EmbeddingBagConfig:
        problem = _table_bytes_problem(self.name, self.num_embeddings, self.embedding_dim)
        if problem:
            raise PydanticCustomError(
                _PROBLEMS, problem, {"problems": [("num_embeddings", problem)]}
            )
        return self

    @model_validator(mode="after")
    def _warn_unfused_dim(self) -> EmbeddingBagConfig:
        if self.embedding_dim % 4:
            warnings.warn(
                f"table {quote(self.name)}: embedding_dim {self.embedding_dim} is not a multiple "
                "of 4; an unsharded collection accepts it, but FBGEMM's fused kernels (used once "
                "sharded) need embedding_dim % 4 == 0",
                FusedKernelWarning,
                stacklevel=2,
            )
        return self


# What FBGEMM and torchrec give a table served in fp32, the widest serving row (as in
# `embviz.serving`; tests/test_faults.py checks the bound against memory_table's columns).
_ROW_ALIGNMENT = 16
_TABLE_ALIGNMENT = 128
_PLANNER_SCALE_BIAS_BYTES = 4


def table_bytes_bound(num_embeddings: int, embedding_dim: int) -> int:
    """The most bytes a table of this shape takes in any accounting embviz computes.

    Whatever its dtype, optimizer and mode: the largest of fp32 weights with torch.optim's Adam
    state (``3 * 4RD + 4``), torchrec's planner estimate of that (``4RD + ceil(8RD)``, in its
    float arithmetic), and the table served in fp32 from the quantized collection (FBGEMM's
    bytes, rounded to 128, and the planner's ``R * row + 4R``). Every intermediate of
    `embviz.memory_table` is at most this, so a table whose bound fits int64 is counted exactly.

    Parameters
    ----------
    num_embeddings, embedding_dim : int
        The table's rows R and width D (positive).

    Returns
    -------
    int
        Bytes, exact (a Python int: it may be past int64).
    """
    rows, dim = int(num_embeddings), int(embedding_dim)
    fp32_weights = 4 * rows * dim
    torch_adam = 3 * fp32_weights + 4
    if torch_adam > MAX_BYTES:  # past the limit already (and maybe past a float's range)
        return torch_adam
    planner_adam = fp32_weights + math.ceil(float(fp32_weights) * 2.0)
    row = -(-4 * dim // _ROW_ALIGNMENT) * _ROW_ALIGNMENT
    served = -(-rows * row // _TABLE_ALIGNMENT) * _TABLE_ALIGNMENT
    planner_served = rows * row + rows * _PLANNER_SCALE_BIAS_BYTES
    return max(torch_adam, planner_adam, served, planner_served)


def _bytes_text(n: int) -> str:
    return f"{n:,}" if n < 10**24 else f"{float(n):.3g}"


def _table_bytes_problem(name: str, num_embeddings: int, embedding_dim: int) -> str | None:
    bound = table_bytes_bound(num_embeddings, embedding_dim)
    if bound <= MAX_BYTES:
        return None
    return (
        f"table {quote(name)} ({_bytes_text(num_embeddings)} rows x {embedding_dim:,}) would "
        f"take {_bytes_text(bound)} bytes in fp32 with Adam's state, more than {MAX_BYTES:,} "
        "(8 EiB), the most a byte count holds (int64): use fewer num_embeddings or a smaller "
        "embedding_dim"
    )


def byte_limit_problems(cfg: LargeEmbeddingsConfig) -> list[tuple[str, str]]:
    """Tables (or all tables together) past `MAX_BYTES` in some accounting; empty when none.

    The schema refuses such configs; this checks a config built without validation
    (``model_construct``, ``model_copy(update=...)``), as `embviz.memory_table` does.
    """
    problems = []
    total = 0
    for i, table in enumerate(cfg.tables):
        problem = _table_bytes_problem(table.name, table.num_embeddings, table.embedding_dim)
        if problem:
            problems.append((f"tables[{i}].num_embeddings", problem))
        total += table_bytes_bound(table.num_embeddings, table.embedding_dim)
    if not problems and total > MAX_BYTES:
        problems.append(("tables", _total_bytes_problem(len(cfg.tables), total)))
    return problems


def _total_bytes_problem(count: int, total: int) -> str:
    return (
        f"the {count:,} tables together would take up to {_bytes_text(total)} bytes in fp32 "
        f"with Adam's state, more than {MAX_BYTES:,} (8 EiB), the most a byte count holds "
        "(int64): split the config or make tables smaller"
    )


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _listing(items: Any, shown: int = 20) -> str:
    """``a, b, c`` of the first ``shown`` items, and how many there are in all past that."""
    items = list(items)
    text = ", ".join(str(i) for i in items[:shown])
    return text + (f", ... ({len(items):,} in all)" if len(items) > shown else "")


def _name_problems(names: list[Any], tables_to_log: Any) -> list[tuple[str, str]]:
    """Duplicate table names and `tables_to_log` entries naming no table."""
    problems: list[tuple[str, str]] = []
    if not names:
        problems.append(("tables", "must list at least one table"))
    first_seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if not isinstance(name, str):
            continue
        if name in first_seen:
            other = f"tables[{first_seen[name]}]"
            problems.append(
                (f"tables[{i}].name", f"duplicate table name {quote(name)} (also {other})")
            )
        first_seen.setdefault(name, i)
    for i, name in enumerate(tables_to_log if isinstance(tables_to_log, list) else []):
        if isinstance(name, str) and name not in first_seen:
            known = _listing(quote(n) for n in first_seen)
            problems.append(
                (f"tables_to_log[{i}]", f"no table named {quote(name)} (tables: {known})")
            )
    return problems


class LargeEmbeddingsConfig(_Base):
    """All the tables of a model, and which of them have their norms logged."""

    tables: list[EmbeddingBagConfig] = Field(description="List of embedding tables.")
    tables_to_log: list[str] | None = Field(
        None, description="Tables whose norms are logged during training."
    )

    @model_validator(mode="after")
    def _names_resolve(self) -> LargeEmbeddingsConfig:
        problems = _name_problems([t.name for t in self.tables], self.tables_to_log)
        total = sum(table_bytes_bound(t.num_embeddings, t.embedding_dim) for t in self.tables)
        if total > MAX_BYTES:
            problems.append(("tables", _total_bytes_problem(len(self.tables), total)))
        if problems:
            raise PydanticCustomError(
                _PROBLEMS,
                "; ".join(f"{loc}: {msg}" for loc, msg in problems),
                {"problems": problems},
            )
        return self

    def table(self, name: str) -> EmbeddingBagConfig:
        """The table called ``name``; `KeyError` listing the names when there is none."""
        for table in self.tables:
            if table.name == name:
                return table
        raise KeyError(f"no table named {name!r} (tables: {', '.join(self.table_names)})")

    @property
    def table_names(self) -> list[str]:
        """Names of the tables, in config order."""
        return [t.name for t in self.tables]

    @property
    def logged_tables(self) -> list[str]:
        """Names in ``tables_to_log`` (empty when unset)."""
        return list(self.tables_to_log or [])

    def to_torchrec(self) -> list[torchrec.EmbeddingBagConfig]:
        """torchrec's table configs, as the-algorithm-ml's ``LargeEmbeddings`` builds them.

        One feature per table, named after the table, with sum pooling and the dtype mapped.
        """
        import torchrec

        dtypes = {DataType.FP32: torchrec.DataType.FP32, DataType.FP16: torchrec.DataType.FP16}
        return [
            torchrec.EmbeddingBagConfig(
                name=t.name,
                num_embeddings=t.num_embeddings,
                embedding_dim=t.embedding_dim,
                feature_names=[t.name],
                pooling=torchrec.PoolingType.SUM,
                data_type=dtypes[t.data_type],
            )
            for t in self.tables
        ]


# --------------------------------------------------------------------------- YAML


class _Dumper(yaml.SafeDumper):
    """Writes big integers as ``424_241``, as project files do."""


def _represent_int(dumper: yaml.SafeDumper, value: int) -> yaml.Node:
    text = f"{value:_}" if abs(value) >= 10_000 else str(value)
    return dumper.represent_scalar("tag:yaml.org,2002:int", text)


def _represent_list(dumper: yaml.SafeDumper, value: list[Any]) -> yaml.Node:
    # Lists of scalars (betas, tables_to_log) inline, as people write them; tables as blocks.
    flow = all(not isinstance(v, (dict, list)) for v in value)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flow)


# The dumper must know every implicit type the loader resolves, so that it quotes a string such
# as "1e5" that would otherwise come back as a float.
_Dumper.add_implicit_resolver("tag:yaml.org,2002:float", YAML12_FLOAT, list("-+0123456789"))
_Dumper.add_representer(int, _represent_int)
_Dumper.add_representer(list, _represent_list)


def _find_table_sections(obj: Any, path: str = "") -> list[str]:
    found = []
    if isinstance(obj, dict):
        if "tables" in obj and path:
            found.append(path)
        for key, value in obj.items():
            if isinstance(value, dict):
                found += _find_table_sections(value, f"{path}.{key}" if path else str(key))
    return found


def _select(document: Any, key: str | None, source: str | None) -> tuple[Any, str]:
    if key is None:
        if isinstance(document, dict) and "tables" not in document:
            candidates = _find_table_sections(document)
            if len(candidates) == 1:
                key = candidates[0]
            elif len(candidates) > 1:
                raise ConfigError(
                    [("", f"several sections hold tables ({', '.join(candidates)}): pass key=")],
                    source,
                )
        if key is None:
            return document, ""
    node = document
    walked: list[str] = []
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            where = ".".join(walked) or "the top level"
            has = (
                _listing(_clip(str(k)) for k in node)
                if isinstance(node, dict)
                else type(node).__name__
            )
            raise ConfigError([(key, f"no {quote(part)} under {where} (has: {has})")], source)
        node = node[part]
        walked.append(part)
    return node, key


def parse_config(
    text: str, key: str | None = None, *, source: str | None = None
) -> LargeEmbeddingsConfig:
    """Parse YAML text into a `LargeEmbeddingsConfig`.

    Parameters
    ----------
    text : str
        YAML. ``$VAR`` and ``${VAR}`` are substituted from the environment first.
    key : str, optional
        Dotted path to the section holding ``tables`` (``"model.embeddings"``). When omitted,
        the top level is used if it has ``tables``, else the one section that does.
    source : str, optional
        Name used in error messages (the file path).

    Returns
    -------
    LargeEmbeddingsConfig

    Raises
    ------
    ConfigError
        With one ``(location, message)`` per problem.
    """
    with no_cycle_collection():
        try:
            document = load_yaml(substitute_env(text))
        except YamlProblem as exc:
            raise ConfigError([(exc.location, exc.message)], source) from None
        if document is None:
            raise ConfigError(
                [("", "the file is empty (expected a mapping with 'tables')")], source
            )
        if not isinstance(document, dict):
            kind = type(document).__name__
            raise ConfigError([("", f"expected a mapping at the top level, got {kind}")], source)
        section, prefix = _select(document, key, source)
        if not isinstance(section, dict):
            kind = type(section).__name__
            raise ConfigError([(prefix, f"expected a mapping with 'tables', got {kind}")], source)
        return _validate(section, source, prefix)


def _validate(data: dict[str, Any], source: str | None, prefix: str = "") -> LargeEmbeddingsConfig:
    try:
        return LargeEmbeddingsConfig.model_validate(data)
    except ValidationError as exc:
        error = ConfigError.from_validation_error(exc, source, prefix)
    # Field errors stop pydantic before the cross-table checks; run them on the raw data so one
    # pass reports every problem.
    tables = data.get("tables")
    if isinstance(tables, list):
        names = [t.get("name") if isinstance(t, dict) else None for t in tables]
        for location, message in _name_problems(names, data.get("tables_to_log")):
            problem = (_join_location(prefix, location), message)
            if names and problem not in error.problems:
                error.problems.append(problem)
    raise ConfigError(error.problems, source)


def load_config(path: str | os.PathLike[str], key: str | None = None) -> LargeEmbeddingsConfig:
    """Read a YAML file into a `LargeEmbeddingsConfig` (see `parse_config`).

    Raises
    ------
    ConfigError
        For a missing, unreadable, empty, non-UTF-8, malformed or invalid file.
    """
    source = str(path)
    try:
        raw = read_limited(path)
    except YamlProblem as exc:
        raise ConfigError([(exc.location, exc.message)], source) from None
    except FileNotFoundError:
        raise ConfigError([("", "no such file")], source) from None
    except IsADirectoryError:
        raise ConfigError([("", "is a directory, not a YAML file")], source) from None
    except OSError as exc:
        raise ConfigError([("", f"cannot read: {exc.strerror}")], source) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [("", f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})")], source
        ) from None
    return parse_config(text, key, source=source)


def config_to_dict(cfg: LargeEmbeddingsConfig) -> dict[str, Any]:
    """Plain data as users write it: unset and ``None`` fields left out."""
    return cfg.model_dump(mode="json", exclude_none=True, exclude_unset=True)


def dump_config(cfg: LargeEmbeddingsConfig) -> str:
    """YAML text that `parse_config` reads back to an equal config."""
    data = config_to_dict(cfg)
    # Tuples come out of model_dump(mode="json") as lists already; keep key order as declared.
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100)


def config_schema() -> dict[str, Any]:
    """JSON Schema of `LargeEmbeddingsConfig`, for editors and validators."""
    schema = LargeEmbeddingsConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "embviz LargeEmbeddingsConfig"
    return schema


def config_schema_json() -> str:
    """`config_schema` as indented JSON text."""
    return json.dumps(config_schema(), indent=2)


def example(name: str = "ranker") -> Path:
    """Path of a bundled example config: ``"ranker"`` or ``"twhin"``."""
    folder = Path(__file__).parent / "examples"
    path = folder / f"{name.removesuffix('.yaml')}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in folder.glob("*.yaml"))
        raise ValueError(f"no bundled example {name!r} (examples: {', '.join(names)})")
    return path
