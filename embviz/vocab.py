"""Vocabularies: parquet files mapping entity ids to table rows, sizing heuristics, collisions.

A table's ``vocab`` (the-algorithm-ml's ``EmbeddingBagConfig.vocab``) is a folder of parquet files
with two integer columns:

``entity_id``
    The id the data uses (a user id, a tweet id...). Unique across the folder.
``row``
    The table row holding that entity's embedding, ``0 <= row < num_embeddings``.

A table smaller than its vocabulary cannot give every id its own row; it hashes ids as
``id % num_embeddings`` and the ids that land on the same row share (collide in) one embedding.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embviz.errors import EmbvizError

if TYPE_CHECKING:
    import pandas as pd

    from embviz.config import LargeEmbeddingsConfig

__all__ = [
    "ID_COLUMN",
    "ROW_COLUMN",
    "VocabError",
    "collision_share",
    "load_vocab",
    "suggested_dims",
    "vocab_report",
    "write_vocab",
]

ID_COLUMN = "entity_id"
ROW_COLUMN = "row"

# How many offending values an error message shows.
_SHOWN = 5


class VocabError(EmbvizError, ValueError):
    """A vocabulary folder that is missing, empty, or does not map ids to rows one to one."""


def _examples(values: Any) -> str:
    values = list(values)
    shown = ", ".join(str(v) for v in values[:_SHOWN])
    return shown + (f", ... ({len(values)} in all)" if len(values) > _SHOWN else "")


def _clip(exc: Exception, limit: int = 200) -> str:
    """An error's text on one line, cut to ``limit`` characters."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _parquet_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*.parquet") if p.is_file())


def load_vocab(path: str | os.PathLike[str], num_embeddings: int | None = None) -> pd.Series:
    """Read a vocabulary folder into an id -> row mapping.

    Parameters
    ----------
    path : str or path-like
        Folder of parquet files (searched recursively), or one parquet file, with integer
        columns ``entity_id`` and ``row``.
    num_embeddings : int, optional
        Rows of the table; when given, every ``row`` must be in ``[0, num_embeddings)``.

    Returns
    -------
    pandas.Series
        int64 rows named ``row``, indexed by the int64 ``entity_id``, in file order; look one up
        with ``vocab.loc[entity_id]``.

    Raises
    ------
    VocabError
        Missing folder, no parquet files, an unreadable file, a missing or non-integer column,
        nulls, duplicate ids, or rows outside ``[0, num_embeddings)``; the message names the file
        or the offending values.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(path)
    if not folder.exists():
        raise VocabError(f"{folder}: no such vocabulary folder")
    try:
        files = _parquet_files(folder)
    except OSError as exc:
        raise VocabError(f"{exc.filename or folder}: cannot list ({exc.strerror})") from None
    if not files:
        raise VocabError(f"{folder}: no parquet files (expected *.parquet with {_columns_text()})")
    ids: list[np.ndarray] = []
    rows: list[np.ndarray] = []
    for file in files:
        try:
            schema = pq.read_schema(file)
        except (OSError, pa.ArrowException) as exc:
            raise VocabError(f"{file}: not a readable parquet file ({_clip(exc)})") from None
        missing = [c for c in (ID_COLUMN, ROW_COLUMN) if c not in schema.names]
        if missing:
            raise VocabError(
                f"{file}: missing column{'s' if len(missing) > 1 else ''} "
                f"{', '.join(repr(c) for c in missing)} (has: {', '.join(schema.names) or 'none'}; "
                f"expected {_columns_text()})"
            )
        for column in (ID_COLUMN, ROW_COLUMN):
            kind = schema.field(column).type
            if not pa.types.is_integer(kind):
                raise VocabError(f"{file}: column {column!r} is {kind}, expected an integer type")
        try:
            table = pq.read_table(file, columns=[ID_COLUMN, ROW_COLUMN])
        except (OSError, pa.ArrowException) as exc:
            raise VocabError(f"{file}: cannot read its data: damaged ({_clip(exc)})") from None
        for column in (ID_COLUMN, ROW_COLUMN):
            nulls = table.column(column).null_count
            if nulls:
                raise VocabError(f"{file}: column {column!r} has {nulls} null values")
        ids.append(_as_int64(table.column(ID_COLUMN), file, ID_COLUMN))
        rows.append(_as_int64(table.column(ROW_COLUMN), file, ROW_COLUMN))
    id_values = np.concatenate(ids) if ids else np.empty(0, np.int64)
    row_values = np.concatenate(rows) if rows else np.empty(0, np.int64)
    if len(id_values) == 0:
        raise VocabError(f"{folder}: the vocabulary is empty (0 rows in {len(files)} files)")
    duplicated = pd.Index(id_values).duplicated()
    if duplicated.any():
        repeated = pd.unique(id_values[duplicated])
        raise VocabError(
            f"{folder}: {len(repeated)} entity ids appear more than once: {_examples(repeated)}"
        )
    if num_embeddings is not None:
        outside = (row_values < 0) | (row_values >= num_embeddings)
        if outside.any():
            bad = pd.unique(row_values[outside])
            raise VocabError(
                f"{folder}: {int(outside.sum())} ids map to rows outside [0, {num_embeddings}) "
                f"(num_embeddings {num_embeddings}): rows {_examples(bad)}"
            )
    elif (row_values < 0).any():
        raise VocabError(
            f"{folder}: negative rows: {_examples(pd.unique(row_values[row_values < 0]))}"
        )
    index = pd.Index(id_values, name=ID_COLUMN)
    return pd.Series(row_values, index=index, name=ROW_COLUMN)


def _columns_text() -> str:
    return f"integer columns {ID_COLUMN!r} and {ROW_COLUMN!r}"


def _as_int64(column: Any, file: Path, name: str) -> np.ndarray:
    values = column.to_numpy()
    if values.dtype == np.uint64 and len(values) and values.max() > np.iinfo(np.int64).max:
        raise VocabError(f"{file}: column {name!r} has values above the int64 range")
    return values.astype(np.int64, copy=False)


def write_vocab(
    path: str | os.PathLike[str], entity_ids: Any, rows: Any, *, files: int = 1
) -> Path:
    """Write a vocabulary folder that `load_vocab` reads (``part-<i>.parquet``, int64 columns).

    Parameters
    ----------
    path : str or path-like
        Folder to create (parents too); existing ``part-*.parquet`` files in it are replaced.
    entity_ids, rows : array-like of int
        Same length: ``rows[i]`` is the row of ``entity_ids[i]``.
    files : int, default 1
        Split into this many parquet files, as a distributed job would write them.

    Returns
    -------
    pathlib.Path
        The folder.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = np.asarray(entity_ids, dtype=np.int64)
    row_values = np.asarray(rows, dtype=np.int64)
    if ids.shape != row_values.shape or ids.ndim != 1:
        raise VocabError(
            f"entity_ids and rows must be 1-d and the same length, got {ids.shape} and "
            f"{row_values.shape}"
        )
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("part-*.parquet"):
        old.unlink()
    for i, part in enumerate(np.array_split(np.arange(len(ids)), max(1, files))):
        table = pa.table({ID_COLUMN: ids[part], ROW_COLUMN: row_values[part]})
        pq.write_table(table, folder / f"part-{i}.parquet")
    return folder


def suggested_dims(n: int) -> dict[str, int]:
    """Embedding dims that common rules of thumb give for ``n`` distinct values.

    Parameters
    ----------
    n : int
        Vocabulary size (distinct ids), at least 1.

    Returns
    -------
    dict of str to int
        ``fastai``: ``min(600, round(1.6 * n ** 0.56))``; ``nvtabular``: the same clipped to
        ``[16, 512]``; ``google``: ``round(n ** 0.25)`` (the fourth-root rule of thumb, at least
        1); ``merlin``: ``ceil(2 * n ** 0.25)``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    fastai = min(600, round(1.6 * n**0.56))
    return {
        "fastai": int(fastai),
        "nvtabular": int(min(512, max(16, fastai))),
        "google": int(max(1, round(n**0.25))),
        "merlin": math.ceil(2 * n**0.25),
    }


def collision_share(entity_ids: Any, num_embeddings: int) -> float:
    """Share of ids that share their row with another id under ``id % num_embeddings``.

    Exact for the given ids: 0 when every id gets its own row, 1 when none does.
    """
    ids = np.asarray(entity_ids, dtype=np.int64)
    if len(ids) == 0:
        return 0.0
    return _shared_share(np.mod(ids, num_embeddings))


def _shared_share(rows: np.ndarray) -> float:
    _, inverse, counts = np.unique(rows, return_inverse=True, return_counts=True)
    return float((counts[inverse] > 1).sum() / len(rows))


def vocab_report(cfg: LargeEmbeddingsConfig) -> pd.DataFrame:
    """Per table: vocabulary size, rows used, utilisation, collisions and suggested dims.

    Tables with a ``vocab`` folder are measured from it. When the vocabulary fits (every row is
    in ``[0, num_embeddings)``) its own rows are used (``mapping = "vocab"``); when it has more
    ids than the table has rows, ids are hashed as ``id % num_embeddings`` (``mapping = "hash"``)
    and the collisions are counted exactly from the ids. Tables without ``vocab`` get the
    suggestions for ``num_embeddings`` values and NaN where the vocabulary is unknown.

    Parameters
    ----------
    cfg : LargeEmbeddingsConfig
        The tables; their ``vocab`` folders are read.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``table``, columns ``num_embeddings``, ``embedding_dim``, ``vocab`` (folder or
        None), ``mapping`` (``"vocab"``, ``"hash"`` or None), ``vocab_size``, ``rows_used``
        (nullable Int64), ``utilisation`` (rows used / num_embeddings), ``collision_share``
        (share of ids whose row holds other ids too), ``sized_from`` (``"vocab"`` or
        ``"num_embeddings"``: what the suggestions are computed from) and ``dim_fastai``,
        ``dim_nvtabular``, ``dim_google``, ``dim_merlin`` (see `suggested_dims`).

    Raises
    ------
    VocabError
        A vocabulary folder that `load_vocab` refuses, or one that has no more ids than the table
        has rows yet maps some of them outside the table.
    """
    import pandas as pd

    records = []
    for table in cfg.tables:
        rows_count = table.num_embeddings
        record: dict[str, Any] = {
            "table": table.name,
            "num_embeddings": rows_count,
            "embedding_dim": table.embedding_dim,
            "vocab": table.vocab,
            "mapping": None,
            "vocab_size": pd.NA,
            "rows_used": pd.NA,
            "utilisation": math.nan,
            "collision_share": math.nan,
        }
        sized = rows_count
        if table.vocab is not None:
            vocab = load_vocab(table.vocab)
            size = len(vocab)
            rows = vocab.to_numpy()
            fits = bool((rows < rows_count).all())
            if not fits and size <= rows_count:
                outside = pd.unique(rows[rows >= rows_count])
                raise VocabError(
                    f"table {table.name!r}: vocabulary {table.vocab} has {size} ids, no more than "
                    f"num_embeddings {rows_count}, but maps some to rows outside the table: "
                    f"{_examples(outside)}"
                )
            used_rows = rows if fits else np.mod(vocab.index.to_numpy(), rows_count)
            used = len(np.unique(used_rows))
            record.update(
                mapping="vocab" if fits else "hash",
                vocab_size=size,
                rows_used=used,
                utilisation=used / rows_count,
                collision_share=_shared_share(used_rows),
            )
            sized = size
        dims = suggested_dims(sized)
        record["sized_from"] = "vocab" if table.vocab is not None else "num_embeddings"
        record.update({f"dim_{k}": v for k, v in dims.items()})
        records.append(record)
    frame = pd.DataFrame(records).set_index("table")
    for column in ("vocab_size", "rows_used"):
        frame[column] = frame[column].astype("Int64")
    return frame
