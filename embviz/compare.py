"""What changed between two configs, table by table, and the bytes each change moves (pure)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from embviz.config import LargeEmbeddingsConfig, Mode
from embviz.memory import OptimizerState, memory_table

__all__ = ["compare_configs"]

# Columns compared for a table present in both configs, and how each change is described.
_DESCRIBED = ("num_embeddings", "embedding_dim", "data_type", "optimizer")


def compare_configs(
    old: LargeEmbeddingsConfig,
    new: LargeEmbeddingsConfig,
    optimizer_state: OptimizerState = "fused",
    mode: Mode | str = Mode.TRAIN,
) -> pd.DataFrame:
    """Tables added, removed and changed from ``old`` to ``new``, with the bytes each moves.

    Parameters
    ----------
    old, new : LargeEmbeddingsConfig
        The config before and after the change.
    optimizer_state, mode
        As for `embviz.memory_table`; both sides are counted the same way.

    Returns
    -------
    pandas.DataFrame
        Indexed by table name (tables of ``new`` in order, then removed ones), with ``change``
        (``"added"``, ``"removed"``, ``"changed"``, ``"unchanged"``), ``details`` (e.g.
        ``"num_embeddings 1,000 -> 2,000; data_type fp32 -> fp16"``), exact int64
        ``old_total_bytes``, ``new_total_bytes`` (0 where the table is absent) and
        ``delta_bytes`` (new minus old).
    """
    before = memory_table(old, optimizer_state, mode)
    after = memory_table(new, optimizer_state, mode)
    names = list(after.index) + [n for n in before.index if n not in after.index]
    rows = []
    for name in names:
        in_old, in_new = name in before.index, name in after.index
        old_bytes = int(before.at[name, "total_bytes"]) if in_old else 0
        new_bytes = int(after.at[name, "total_bytes"]) if in_new else 0
        if not in_old:
            change, details = "added", _shape(after.loc[name])
        elif not in_new:
            change, details = "removed", _shape(before.loc[name])
        else:
            changes = [
                f"{column} {_fmt(before.at[name, column])} -> {_fmt(after.at[name, column])}"
                for column in _DESCRIBED
                if before.at[name, column] != after.at[name, column]
            ]
            settings_changed = old.table(name) != new.table(name)
            if not changes and settings_changed:
                changes = ["optimizer settings or other fields"]
            change = "changed" if changes else "unchanged"
            details = "; ".join(changes)
        rows.append((name, change, details, old_bytes, new_bytes))
    frame = pd.DataFrame(
        rows, columns=["table", "change", "details", "old_total_bytes", "new_total_bytes"]
    ).set_index("table")
    for column in ("old_total_bytes", "new_total_bytes"):
        frame[column] = frame[column].astype(np.int64)
    frame["delta_bytes"] = frame["new_total_bytes"] - frame["old_total_bytes"]
    return frame


def _fmt(value: object) -> str:
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    return str(value)


def _shape(row: pd.Series) -> str:
    return (
        f"{int(row['num_embeddings']):,} x {int(row['embedding_dim'])} "
        f"{row['data_type']} {row['optimizer']}"
    )
