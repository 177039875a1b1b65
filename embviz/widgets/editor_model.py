"""The editor's rows as data: what was typed, what validated, the last valid config's bytes.

No widgets here. `EditorRows` keeps one `Row` per table with the text as typed in each field,
validates a row with the schema (`EmbeddingBagConfig`) when it changes, checks the tables
together with `LargeEmbeddingsConfig` (duplicate names, `tables_to_log`), and keeps the
`memory_table` frame of the last valid config up to date one row at a time: an edit recomputes
the edited table with `memory_table` on that table alone and puts its row into the frame.

A new config is adopted only when every row validates and its bytes could be counted (any
exception while counting, an ``OverflowError`` past int64 for instance, is a problem of that row,
and totals past int64 are refused): so `config` and `memory` always describe the same tables.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from embviz.config import (
    ConfigError,
    DataType,
    EmbeddingBagConfig,
    FusedKernelWarning,
    LargeEmbeddingsConfig,
    OptimizerConfig,
    SgdConfig,
)
from embviz.widgets._common import format_count, parse_count

__all__ = ["FIELDS", "OPTIMIZERS", "EditorRows", "Row", "capture_validation"]

FIELDS = ("name", "num_embeddings", "embedding_dim", "data_type", "optimizer", "lr", "log")
OPTIMIZERS = ("sgd", "adagrad", "adam")
# The table fields the row shows; every other field (pretrained, vocab, ...) rides along as is.
_SHOWN_TABLE_FIELDS = ("name", "num_embeddings", "embedding_dim", "data_type", "optimizer")
# Byte totals are int64 in every frame: a config whose sum would pass this is refused.
INT64_MAX = 2**63 - 1
# Past this many changed rows a whole `memory_table` is cheaper than row by row.
_FULL_RECOUNT_ROWS = 64


def capture_validation(func, *args: Any) -> tuple[Any, list[tuple[str, str]], list[str]]:
    """Run a pydantic validation; return (result or None, problems, FusedKernelWarning texts)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FusedKernelWarning)
        try:
            result, problems = func(*args), []
        except ValidationError as exc:
            result, problems = None, ConfigError.from_validation_error(exc).problems
    notes = []
    for item in caught:
        if issubclass(item.category, FusedKernelWarning):
            notes.append(str(item.message))
        else:  # not ours to swallow
            warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
    return result, problems, notes


def field_of(location: str) -> str:
    """The row field a table-relative pydantic location belongs to ("" for the row itself)."""
    head = location.split(".", 1)[0].split("[", 1)[0]
    if head == "optimizer":
        return "lr" if location.endswith(".lr") else "optimizer"
    return head if head in FIELDS else ""


def _number(text: Any) -> Any:
    """A float from typed text ("0.01", "1e-3"); the text itself when it is not a number."""
    if isinstance(text, str):
        try:
            return float(text.replace(",", "").replace("_", "").strip())
        except ValueError:
            return text
    return text


def _integer(text: Any) -> Any:
    if isinstance(text, str):
        parsed = parse_count(text)
        return parsed if parsed is not None else text
    return text


@dataclass(eq=False)
class Row:
    """One table: the fields as typed, the fields not shown, and the last validation."""

    id: int
    texts: dict[str, Any]
    hidden: dict[str, Any]
    schedule: dict[str, Any]
    settings: dict[str, dict[str, Any]]
    model: EmbeddingBagConfig | None = None
    problems: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    dirty: bool = True

    @property
    def name(self) -> str:
        """The name as typed."""
        return str(self.texts["name"])

    def candidate(self) -> dict[str, Any]:
        """The table as plain data, from the typed fields and the hidden ones.

        The optimizer's other settings (betas, eps, momentum) are looked up by the kind picked,
        so switching sgd -> adam -> sgd finds sgd's momentum again; lr is shared by all kinds.
        Text that is not a number goes to pydantic as typed, so its message names it.
        """
        texts = self.texts
        kind = texts["optimizer"]
        settings = {"lr": _number(texts["lr"]), **self.settings.get(kind, {})}
        return {
            "name": texts["name"],
            "num_embeddings": _integer(texts["num_embeddings"]),
            "embedding_dim": _integer(texts["embedding_dim"]),
            **self.hidden,
            "optimizer": {**self.schedule, kind: settings},
            "data_type": texts["data_type"],
        }

    def validate(self) -> None:
        """Validate the typed fields with the schema (`EmbeddingBagConfig`)."""
        if self.texts["optimizer"] not in OPTIMIZERS:
            self.model, self.notes = None, []
            self.problems = [("optimizer", f"must be one of {', '.join(OPTIMIZERS)}")]
        else:
            self.model, self.problems, self.notes = capture_validation(
                EmbeddingBagConfig.model_validate, self.candidate()
            )
        self.dirty = False


def make_row(row_id: int, table: EmbeddingBagConfig, logged: bool) -> Row:
    """A row showing ``table`` (already valid: no validation is run)."""
    opt = table.optimizer
    kind = "sgd" if opt.sgd is not None else "adagrad" if opt.adagrad is not None else "adam"
    settings = opt.settings
    kind_settings = {
        k: v
        for k, v in settings.model_dump(mode="json", exclude_unset=True).items()
        if k != "lr" and k in settings.model_fields_set
    }
    schedule = {}
    if opt.learning_rate is not None:
        schedule["learning_rate"] = opt.learning_rate.model_dump(mode="json", exclude_none=True)
    hidden = {}
    for name in table.model_fields_set:
        if name not in _SHOWN_TABLE_FIELDS:
            value = getattr(table, name)
            if value is not None:
                hidden[name] = (
                    value.model_dump(mode="json", exclude_none=True)
                    if hasattr(value, "model_dump")
                    else value
                )
    texts = {
        "name": table.name,
        "num_embeddings": format_count(table.num_embeddings),
        "embedding_dim": str(table.embedding_dim),
        "data_type": table.data_type.value,
        "optimizer": kind,
        "lr": repr(float(settings.lr)),
        "log": logged,
    }
    return Row(row_id, texts, hidden, schedule, {kind: kind_settings}, model=table, dirty=False)


def placeholder(name: str) -> EmbeddingBagConfig:
    """Stands in for an invalid row in the cross-table checks (only its name is read)."""
    return EmbeddingBagConfig.model_construct(
        name=name,
        num_embeddings=1,
        embedding_dim=4,
        data_type=DataType.FP32,
        optimizer=OptimizerConfig.model_construct(sgd=SgdConfig.model_construct(lr=0.0)),
    )


class EditorRows:
    """Every row, the problems across rows, and the last valid config with its memory frame.

    Parameters
    ----------
    cfg : LargeEmbeddingsConfig
        The tables to start from.
    question : dict
        Keyword arguments of `memory_table` (``optimizer_state``, ``mode``, ``adagrad``).
    """

    def __init__(self, cfg: LargeEmbeddingsConfig, question: dict[str, Any]):
        self._ids = itertools.count()
        self.question = dict(question)
        self.load(cfg)

    # ------------------------------------------------------------------ structure

    def load(self, cfg: LargeEmbeddingsConfig) -> None:
        """Replace every row with ``cfg``'s tables; ``cfg`` becomes the valid config."""
        from embviz.memory import memory_table

        logged = set(cfg.logged_tables)
        self.rows: list[Row] = [make_row(next(self._ids), t, t.name in logged) for t in cfg.tables]
        by_name = {r.name: r for r in self.rows}
        # tables_to_log keeps its order (and its absence) while the toggles leave it alone.
        self.log_order: list[Row] = [by_name[n] for n in cfg.logged_tables if n in by_name]
        self.log_unset = cfg.tables_to_log is None
        self.cross: list[tuple[str, str]] = []
        self.cross_rows: dict[int, list[tuple[str, str]]] = {}
        self.count_problems: dict[int, list[tuple[str, str]]] = {}
        frame = memory_table(cfg, **self.question)  # the caller reports errors of the question
        self.config, self.memory = cfg, frame
        self._counted: list[Any] = [(r.model, r.texts["log"]) for r in self.rows]
        # Row ids in the frame's order, and the positions the last adoption recounted (None:
        # all of them).
        self.counted_ids = [r.id for r in self.rows]
        self.recounted: list[int] | None = None
        self._reindex()

    def _reindex(self) -> None:
        self.position = {r.id: i for i, r in enumerate(self.rows)}
        self.by_id = {r.id: r for r in self.rows}

    def new_row(self, table: EmbeddingBagConfig, logged: bool = False) -> Row:
        """A row for ``table`` with a fresh id (not inserted)."""
        return make_row(next(self._ids), table, logged)

    def insert(self, index: int, row: Row) -> None:
        """Insert ``row`` at ``index`` (validated by the next `settle`)."""
        self.rows.insert(index, row)
        if row.texts["log"] and row not in self.log_order:
            self.log_order.append(row)
        self._reindex()

    def remove(self, row: Row) -> None:
        """Remove ``row`` (and its place in tables_to_log)."""
        self.rows.remove(row)
        if row in self.log_order:
            self.log_order.remove(row)
        self._reindex()

    def find(self, name: str) -> Row | None:
        """The first row whose typed name is ``name``."""
        for row in self.rows:
            if row.texts["name"] == name:
                return row
        return None

    def free_name(self, stem: str) -> str:
        """``stem``, or ``stem_2``, ``stem_3``, ...: a name no row has."""
        taken = {r.texts["name"] for r in self.rows}
        if stem not in taken:
            return stem
        i = 2
        while f"{stem}_{i}" in taken:
            i += 1
        return f"{stem}_{i}"

    def set_question(self, question: dict[str, Any]) -> None:
        """Count the valid config's bytes another way (`memory_table`'s keyword arguments).

        Raises the `ArgumentError` of an invalid question, keeping the current one.
        """
        from embviz.memory import memory_table

        frame = memory_table(self.config, **question)
        self.question, self.memory, self.recounted = dict(question), frame, None

    # ------------------------------------------------------------------ edits

    def set_text(self, row: Row, name: str, value: Any) -> None:
        """Record what was typed into one field (validated by `settle`)."""
        if name == "log":
            value = bool(value)
            if value and row not in self.log_order:
                self.log_order.append(row)
            elif not value and row in self.log_order:
                self.log_order.remove(row)
        row.texts[name] = value
        row.dirty = True

    def tables_to_log(self) -> list[str] | None:
        """The logged names in the order they were ticked (None when never set)."""
        names = [r.texts["name"] for r in self.log_order]
        return None if not names and self.log_unset else names

    def problems(self) -> list[tuple[str, str]]:
        """Every current problem as (config location, message), in row order."""
        out = []
        counted = self.count_problems
        for i, row in enumerate(self.rows):
            if row.problems or row.id in counted:  # most rows are fine: skip them fast
                own = row.problems + counted.get(row.id, [])
                out += [(_join(f"tables[{i}]", loc), msg) for loc, msg in own]
        return out + self.cross

    def row_problems(self, row: Row) -> list[tuple[str, str]]:
        """The row's own problems and the cross-table ones that point at it."""
        return row.problems + self.count_problems.get(row.id, []) + self.cross_rows.get(row.id, [])

    def settle(self) -> bool:
        """Validate the changed rows and the tables together; adopt the result when valid.

        Returns True when the config (and so the memory frame) changed.
        """
        self.count_problems = {}
        for row in self.rows:
            if row.dirty:
                row.validate()
        tables = [r.model if r.model is not None else placeholder(r.name) for r in self.rows]
        data: dict[str, Any] = {"tables": tables}
        log = self.tables_to_log()
        if log is not None:
            data["tables_to_log"] = log
        candidate, cross, _ = capture_validation(LargeEmbeddingsConfig.model_validate, data)
        self._mark_cross(cross)
        if any(r.problems for r in self.rows) or cross:
            return False
        return self._adopt(candidate)

    def _mark_cross(self, cross: list[tuple[str, str]]) -> None:
        self.cross = list(cross)
        self.cross_rows = {}
        for location, message in cross:
            if not location.startswith("tables["):
                continue
            index_text, _, rest = location[len("tables[") :].partition("]")
            index, name = int(index_text), rest.lstrip(".")
            row = self.rows[index]
            self.cross_rows.setdefault(row.id, []).append((name, message))
            if name == "name":
                # pydantic names the later of two equal names; the user may be typing in the
                # earlier one, so every row carrying the name is marked.
                for other in self.rows:
                    if other is not row and other.texts["name"] == row.texts["name"]:
                        self.cross_rows.setdefault(other.id, []).append((name, message))

    def _adopt(self, cfg: LargeEmbeddingsConfig) -> bool:
        """Make ``cfg`` the valid config once its bytes are counted; False if nothing changed."""
        counted = [(r.model, r.texts["log"]) for r in self.rows]
        if cfg == self.config and counted == self._counted:
            return False
        try:
            frame = self._recount(cfg, counted)
        except (BytesOverflow, OverflowError) as exc:  # past int64: the row's problem
            self._count_failed(exc, counted)
            return False
        # Any other exception propagates with config and memory untouched (a bug: the editor
        # shows it and keeps the last valid config).
        self.config, self.memory, self._counted = cfg, frame, counted
        self.counted_ids = [r.id for r in self.rows]
        return True

    def _recount(self, cfg: LargeEmbeddingsConfig, counted: list[Any]) -> pd.DataFrame:
        """The memory frame of ``cfg``: the changed rows recounted, or the whole frame."""
        from embviz.memory import memory_table

        same_shape = len(counted) == len(self._counted)
        changed = []
        if same_shape:
            pairs = zip(counted, self._counted, strict=True)
            changed = [i for i, (new, old) in enumerate(pairs) if new != old]
        for i in changed if same_shape else range(len(counted)):
            _check_table(counted[i][0], i)
        if not same_shape or len(changed) > _FULL_RECOUNT_ROWS:
            frame = memory_table(cfg, **self.question)
            self.recounted = None
        else:
            self.recounted = changed
            frame = self.memory.copy(deep=False)
            for i in changed:
                table, logged = counted[i]
                one = LargeEmbeddingsConfig.model_construct(
                    tables=[table], tables_to_log=[table.name] if logged else None
                )
                _put_row(frame, i, memory_table(one, **self.question))
        _check_bytes(frame, changed if same_shape else range(len(frame)))
        if same_shape and frame.equals(self.memory):
            return self.memory  # an lr edit: same bytes, nothing downstream to redo
        return frame

    def _count_failed(self, exc: BaseException, counted: list[Any]) -> None:
        """Put a counting failure on the rows it comes from (or on the config)."""
        index = getattr(exc, "row", None)
        rows = (
            [self.rows[index]]
            if index is not None
            else [
                self.rows[i]
                for i, (new, old) in enumerate(itertools.zip_longest(counted, self._counted))
                if new != old and i < len(self.rows)
            ][:1]
        )
        message = str(exc) if isinstance(exc, BytesOverflow) else f"cannot count bytes: {exc!r}"
        if rows:
            self.count_problems[rows[0].id] = [("num_embeddings", message)]
        else:
            self.cross.append(("tables", message))


def _put_row(frame: pd.DataFrame, i: int, record: pd.DataFrame) -> None:
    """Put ``record``'s one row (a `memory_table` of one table) at position ``i`` of ``frame``.

    Only the columns whose value differs are replaced, each by a new array (numpy copies of a
    few thousand values: microseconds), so the frame keeps `memory_table`'s dtypes exactly and
    frames handed out earlier are left as they were.
    """
    for j in range(frame.shape[1]):
        new = record.iat[0, j]
        if new == frame.iat[i, j]:
            continue
        dtype = frame.dtypes.iloc[j]
        values = frame.iloc[:, j].to_numpy(copy=True)  # object values for string columns
        values[i] = new
        frame.isetitem(j, values if isinstance(dtype, np.dtype) else pd.array(values, dtype=dtype))
    name = record.index[0]
    if frame.index[i] != name:
        names = frame.index.to_numpy(dtype=object, copy=True)
        names[i] = name
        frame.index = pd.Index(names, dtype=frame.index.dtype, name=frame.index.name)


class BytesOverflow(ArithmeticError):
    """A table's or the config's bytes are past what an int64 frame holds exactly."""

    def __init__(self, message: str, row: int | None = None):
        super().__init__(message)
        self.row = row


# The most bytes per cell any column of memory_table counts: fp32 weights plus Adam's two fp32
# states (``fp32_total_bytes`` of an Adam table), plus torch's 4-byte step tensor.
_MAX_BYTES_PER_CELL = 12


def _check_table(table: EmbeddingBagConfig, index: int) -> None:
    """Refuse a table whose bytes in any column would pass int64 (exact Python integers)."""
    cells = table.num_embeddings * table.embedding_dim
    if cells * _MAX_BYTES_PER_CELL + 4 > INT64_MAX:
        raise BytesOverflow(
            f"{format_count(table.num_embeddings)} x {table.embedding_dim} is past what int64 "
            "byte counts hold (9.2 EB): fewer rows or a smaller dim",
            row=index,
        )


def _check_bytes(frame: pd.DataFrame, rows: Any) -> None:
    """Refuse negative (wrapped) byte counts in ``rows`` and totals past int64."""
    from embviz.memory import BYTE_COLUMNS

    values = frame[list(BYTE_COLUMNS)].to_numpy(dtype=np.int64)
    for i in rows:
        if (values[i] < 0).any():
            raise BytesOverflow(
                "its bytes are past int64 (9.2 EB): fewer rows or a smaller dim", row=i
            )
    # Float sums cannot wrap: compare them with int64's limit before trusting the int sums.
    if (values.astype(np.float64).sum(axis=0) >= float(INT64_MAX)).any():
        last = next(iter(rows), None) if not isinstance(rows, range) else None
        raise BytesOverflow(
            "the tables' total bytes would pass int64 (9.2 EB): fewer rows or a smaller dim",
            row=last,
        )


def _join(prefix: str, location: str) -> str:
    if not location:
        return prefix
    return prefix + location if location.startswith("[") else f"{prefix}.{location}"
