"""Entity ids for rows: a vocabulary (entity id -> row) given in any of the accepted forms."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from embviz.norms.errors import NormError

if TYPE_CHECKING:
    import pandas as pd

__all__: list[str] = []


def as_vocab(vocab: Any, rows: int) -> pd.Series | None:
    """An entity id -> row Series from `embviz.load_vocab`'s output, a path, a mapping or frame."""
    import pandas as pd

    if vocab is None:
        return None
    if isinstance(vocab, str | os.PathLike):
        from embviz.vocab import load_vocab

        return load_vocab(vocab, num_embeddings=rows)
    if isinstance(vocab, pd.DataFrame):
        if not {"entity_id", "row"} <= set(vocab.columns):
            raise NormError("a vocabulary DataFrame needs columns 'entity_id' and 'row'")
        series = pd.Series(vocab["row"].to_numpy(), index=vocab["entity_id"].to_numpy())
    elif isinstance(vocab, pd.Series):
        series = vocab
    elif isinstance(vocab, Mapping):
        series = pd.Series(dict(vocab))
    else:
        raise NormError(
            "vocab must be a path, a Series from embviz.load_vocab, a mapping of entity id to "
            f"row, or a DataFrame with entity_id and row; got {type(vocab).__name__}"
        )
    values = series.to_numpy()
    if len(values) and (values.min() < 0 or values.max() >= rows):
        raise NormError(f"vocab maps ids to rows outside [0, {rows:,}) of the table")
    return series


def entity_labels(vocab: pd.Series | None, rows: np.ndarray) -> Any:
    """The first entity id (in vocabulary order) mapped to each row, <NA> where none is.

    Nullable Int64. One pass over the vocabulary into row-indexed arrays (no hashing), so a
    million rows take milliseconds.
    """
    import pandas as pd

    if vocab is None:
        return None
    table_rows = np.asarray(vocab.to_numpy(), dtype=np.int64)
    ids = np.asarray(vocab.index.to_numpy(), dtype=np.int64)
    rows = np.asarray(rows, dtype=np.int64)
    size = int(max(table_rows.max(initial=-1), rows.max(initial=-1))) + 1
    first = np.zeros(size, dtype=np.int64)
    has = np.zeros(size, dtype=bool)
    # Written last to first, so the first id of a row is the one that stays.
    first[table_rows[::-1]] = ids[::-1]
    has[table_rows] = True
    return pd.arrays.IntegerArray(first[rows], ~has[rows])
