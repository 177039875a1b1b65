"""The embedding-table schema of the-algorithm-ml, ported to pydantic 2, with YAML in and out.

The classes mirror ``common/modules/embedding/config.py`` and ``optimizers/config.py`` of
the-algorithm-ml field for field (same names, same defaults). Validation is stricter where the
original silently coerced: row counts and dims must be real positive integers.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import string
import warnings
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from embviz.errors import EmbvizError

if TYPE_CHECKING:
    import torchrec

__all__ = [
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
    "config_schema",
    "dump_config",
    "example",
    "load_config",
    "optimizer_name",
    "parse_config",
]

# Strict so that 4.0, True and "4" are refused instead of silently becoming 4.
PositiveInt = Annotated[int, Field(strict=True, gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]

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
        for location, message in self.problems:
            where = ": ".join(p for p in (self.source, location) if p)
            lines.append(f"{where}: {message}" if where else message)
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
    shown = f"{value!r} ({type(value).__name__})"
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "greater_than":
        return f"must be > {ctx['gt']:g}, got {value!r}"
    if kind == "greater_than_equal":
        return f"must be >= {ctx['ge']:g}, got {value!r}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"must be an integer, got {shown}"
    if kind in ("float_type", "float_parsing"):
        return f"must be a number, got {shown}"
    if kind == "enum":
        return f"must be one of {ctx['expected']}, got {value!r}"
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
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-7


class SgdConfig(_Base):
    """torch.optim.SGD settings (FBGEMM's EXACT_SGD once sharded)."""

    lr: NonNegativeFloat
    momentum: NonNegativeFloat = 0.0


class AdagradConfig(_Base):
    """torch.optim.Adagrad settings (FBGEMM's EXACT_ADAGRAD once sharded)."""

    lr: NonNegativeFloat
    eps: float = 0


class PiecewiseConstant(_Base):
    """Learning rate ``learning_rate_values[i]`` until step ``learning_rate_boundaries[i]``."""

    learning_rate_boundaries: list[Annotated[int, Field(strict=True)]] | None = None
    learning_rate_values: list[float] | None = None

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

    learning_rate: float
    num_ramp_steps: PositiveInt


class LinearRampToCosine(_Base):
    """Linear ramp to ``learning_rate``, then cosine decay to ``final_learning_rate``."""

    learning_rate: float
    final_learning_rate: float
    num_ramp_steps: PositiveInt
    final_num_steps: PositiveInt


_SCHEDULES = ("constant", "linear_ramp_to_cosine", "linear_ramp_to_constant", "piecewise_constant")
_OPTIMIZERS = ("adam", "sgd", "adagrad")


class LearningRate(_Base):
    """A learning-rate schedule: exactly one of the four kinds."""

    constant: float | None = None
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
    def _name_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _warn_unfused_dim(self) -> EmbeddingBagConfig:
        if self.embedding_dim % 4:
            warnings.warn(
                f"table {self.name!r}: embedding_dim {self.embedding_dim} is not a multiple of 4; "
                "an unsharded collection accepts it, but FBGEMM's fused kernels (used once "
                "sharded) need embedding_dim % 4 == 0",
                FusedKernelWarning,
                stacklevel=2,
            )
        return self


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
            problems.append((f"tables[{i}].name", f"duplicate table name {name!r} (also {other})"))
        first_seen.setdefault(name, i)
    for i, name in enumerate(tables_to_log if isinstance(tables_to_log, list) else []):
        if isinstance(name, str) and name not in first_seen:
            known = ", ".join(repr(n) for n in first_seen)
            problems.append((f"tables_to_log[{i}]", f"no table named {name!r} (tables: {known})"))
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


class _Loader(yaml.SafeLoader):
    """Safe loading, plus YAML 1.2 floats: PyYAML alone reads ``1e-3`` as a string."""


_YAML12_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _YAML12_FLOAT, list("-+0123456789"))


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
_Dumper.add_implicit_resolver("tag:yaml.org,2002:float", _YAML12_FLOAT, list("-+0123456789"))
_Dumper.add_representer(int, _represent_int)
_Dumper.add_representer(list, _represent_list)


def _substitute_env(text: str) -> str:
    # Same as the-algorithm-ml's loader: $VAR / ${VAR} from the environment, $USER always set.
    try:
        user = getpass.getuser()
    except Exception:  # no user name in minimal containers
        user = os.environ.get("USER", "")
    return string.Template(text).safe_substitute(os.environ, USER=user)


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
            has = ", ".join(map(str, node)) if isinstance(node, dict) else type(node).__name__
            raise ConfigError([(key, f"no {part!r} under {where} (has: {has})")], source)
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
    text = _substitute_env(text)
    try:
        document = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or str(exc)
        tag = re.search(r"for the tag '([^']+)'", problem)
        if tag:
            name = tag.group(1).replace("tag:yaml.org,2002:", "!!")
            problem = f"tag {name!r} is refused: only plain YAML is read (safe loading)"
        raise ConfigError([(where, problem)], source) from None
    except yaml.YAMLError as exc:
        raise ConfigError([("", f"not valid YAML: {exc}")], source) from None
    if document is None:
        raise ConfigError([("", "the file is empty (expected a mapping with 'tables')")], source)
    if not isinstance(document, dict):
        raise ConfigError(
            [("", f"expected a mapping at the top level, got {type(document).__name__}")], source
        )
    section, prefix = _select(document, key, source)
    if not isinstance(section, dict):
        raise ConfigError(
            [(prefix, f"expected a mapping with 'tables', got {type(section).__name__}")], source
        )
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
        raw = Path(path).read_bytes()
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
