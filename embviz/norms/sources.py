"""Where tables come from: a module, a state dict, or the path of a torchsnapshot.

Snapshot paths are read through `embviz.snapshots` (`snapshot_tables` for the names and shapes,
`read_table` for one table), one table at a time and only the tables asked for; statistics of
row norms stream them instead (`embviz.norms.streaming`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from embviz.norms.errors import NormError, unknown_tables
from embviz.norms.layout import sharded_tensor_type, table_layout

if TYPE_CHECKING:
    from embviz.config import LargeEmbeddingsConfig

__all__ = ["load_table", "table_names"]

# ``embedding_bags.<name>.weight`` at the end of a state-dict key or manifest path, whatever the
# prefix; torchrec table names are ModuleDict keys and hold no dots.
_TABLE_KEY = re.compile(r"(?:^|[./])embedding_bags\.(?P<name>[^./]+)\.weight$")


@dataclass
class Source:
    """Tables of a module, a state dict or a snapshot: names, and a loader for each."""

    label: str
    names: list[str]
    load: Any  # Callable[[str], weight]
    rows_of: Any  # Callable[[str], int]
    path: str | None = None  # a snapshot's: its tables are streamed (`embviz.norms.streaming`)


def _state_dict_tables(state: Mapping[str, Any], plain: bool = True) -> dict[str, Any]:
    """Tables of a state dict by name; ``plain``: else every 2-D tensor under its key."""
    matches = [
        (match.group("name"), str(key), value)
        for key, value in state.items()
        if (match := _TABLE_KEY.search(str(key))) is not None
    ]
    counts: dict[str, int] = {}
    for name, _, _ in matches:
        counts[name] = counts.get(name, 0) + 1
    # Two modules holding a table of the same name: both go by their full keys (as in
    # `embviz.snapshot_tables`).
    found = {(name if counts[name] == 1 else key): value for name, key, value in matches}
    if found or not plain:
        return found
    # A plain {table name: 2-D tensor} mapping.
    return {str(k): v for k, v in state.items() if _is_table_like(v)}


def _is_table_like(value: Any) -> bool:
    sharded = sharded_tensor_type()
    if sharded is not None and isinstance(value, sharded):
        return len(value.size()) == 2
    return isinstance(value, torch.Tensor) and value.dim() == 2


def _weight_rows(weight: Any) -> int:
    sharded = sharded_tensor_type()
    if sharded is not None and isinstance(weight, sharded):
        return table_layout(weight).rows
    return int(weight.shape[0])


def open_source(source: Any) -> Source:
    if isinstance(source, str | os.PathLike):
        from embviz.snapshots import read_table, snapshot_tables

        path = os.fspath(source)
        tables = snapshot_tables(path)
        return Source(
            label=path,
            names=[str(n) for n in tables.index],
            load=lambda name: read_table(path, name),
            rows_of=lambda name: int(tables.loc[name, "rows"]),
            path=path,
        )
    if isinstance(source, torch.nn.Module):
        found = _state_dict_tables(source.state_dict(), plain=False)
        if not found:
            raise NormError(
                f"{type(source).__name__}: holds no embedding tables (no state_dict key ends in "
                "'embedding_bags.<name>.weight')"
            )
        label = type(source).__name__
    elif isinstance(source, Mapping):
        found = _state_dict_tables(source)
        if not found:
            raise NormError(
                "state dict: holds no embedding tables (no key ends in "
                "'embedding_bags.<name>.weight' and no value is a 2-D tensor)"
            )
        label = "state dict"
    else:
        raise NormError(
            "source must be a module holding an EmbeddingBagCollection, a state dict, or the "
            f"path of a torchsnapshot; got {type(source).__name__}"
        )
    return Source(
        label=label,
        names=list(found),
        load=found.__getitem__,
        rows_of=lambda name: _weight_rows(found[name]),
    )


def table_names(source: Any) -> list[str]:
    """Names of the tables a source holds: a module, a state dict, or a snapshot path.

    Tables are found by keys ending in ``embedding_bags.<name>.weight`` (a snapshot's manifest
    is read without reading any tensor). Raises `NormError` or `SnapshotError` as `norm_stats`.
    """
    return list(open_source(source).names)


def load_table(source: Any, name: str) -> Any:
    """One table's weight from a module, a state dict, or a snapshot path (only that tensor).

    Raises
    ------
    UnknownTableError
        ``name`` is not a table of the source; the message lists those it holds.
    """
    src = open_source(source)
    if name not in src.names:
        raise unknown_tables([name], src.names)
    return src.load(name)


def choose_tables(
    src: Source, tables: str | Iterable[str] | None, config: LargeEmbeddingsConfig | None
) -> list[str]:
    if isinstance(tables, str):
        tables = [tables]
    if tables is None and config is not None:
        tables = config.logged_tables or None
    if tables is None:
        return list(src.names)
    chosen = list(dict.fromkeys(tables))
    if not chosen:
        raise NormError("tables: the list is empty; name at least one table")
    unknown = [t for t in chosen if t not in src.names]
    if unknown:
        raise unknown_tables(unknown, src.names)
    return chosen
