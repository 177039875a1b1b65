"""`nearest`: the rows closest to one row of a table, by an exact chunked scan."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from embviz.norms.errors import NormError, RowIndexError, UnknownEntityError, check_positive_int
from embviz.norms.labels import as_vocab, entity_labels
from embviz.norms.layout import as_table
from embviz.norms.rownorms import MEMORY_BUDGET_BYTES, row_norms

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Neighbours", "nearest"]


@dataclass(frozen=True)
class Neighbours:
    """The rows closest to one row (`nearest`): the table of neighbours and what was asked.

    Attributes
    ----------
    frame : pandas.DataFrame
        ``rank`` (1..k), ``row``, [``entity_id``], ``score`` (similarity or distance), ``norm``.
    query_row : int
        The row the neighbours are close to.
    metric : {"cosine", "l2"}
        How closeness was measured.
    query_entity_id : optional
        The entity id that was asked for (with a vocabulary), else None.
    """

    frame: pd.DataFrame
    query_row: int
    metric: Literal["cosine", "l2"]
    query_entity_id: Any = None

    @property
    def query(self) -> str:
        """``"row 42"``, or ``"entity 1003 (row 42)"`` with a vocabulary."""
        if self.query_entity_id is None:
            return f"row {self.query_row}"
        return f"entity {self.query_entity_id} (row {self.query_row})"

    def _repr_html_(self) -> str:
        title = html.escape(f"{len(self.frame)} nearest to {self.query} by {self.metric}")
        table = self.frame.to_html(index=False, float_format=lambda v: f"{v:.4g}")
        return f"<b>{title}</b>{table}"


def nearest(
    table: Any,
    row_or_entity_id: int,
    k: int = 10,
    metric: Literal["cosine", "l2"] = "cosine",
    vocab: Any = None,
) -> Neighbours:
    """The ``k`` rows closest to one row of a table, exactly (a chunked scan of every row).

    Parameters
    ----------
    table : torch.Tensor, module with ``.weight``, or `embviz.SnapshotTable`
        The table (rows x dim), any float dtype and device; compared in float32. A
        `SnapshotTable` is scanned in windows of rows, never held whole.
    row_or_entity_id : int
        A row index, or with ``vocab`` an entity id.
    k : int
        How many neighbours (the row itself is left out).
    metric : {"cosine", "l2"}
        Cosine similarity (largest first; rows of norm 0 are left out) or L2 distance (smallest
        first).
    vocab : path, Series, mapping or DataFrame, optional
        Entity id -> row (`embviz.load_vocab`); then ``row_or_entity_id`` is an entity id and the
        result has an ``entity_id`` column (the first id mapped to each row).

    Returns
    -------
    Neighbours
        ``frame``: ``rank`` (1..k), ``row``, [``entity_id``], ``score`` (similarity or
        distance), ``norm`` (`row_norms`); ``query_row``, ``metric`` and, with a vocabulary,
        ``query_entity_id``.

    Raises
    ------
    RowIndexError
        A row outside ``[0, rows)``.
    UnknownEntityError
        An entity id the vocabulary does not hold.
    NormError
        ``k`` not in ``[1, rows - 1]`` (or too few rows with a non-zero norm), an unknown
        metric, a query row of norm 0 under cosine.
    """
    import pandas as pd

    from embviz.snapshot_rows import SnapshotTable

    weight = table if isinstance(table, SnapshotTable) else as_table(table)
    rows, cols = int(weight.shape[0]), int(weight.shape[1])
    if metric not in ("cosine", "l2"):
        raise NormError(f"metric must be 'cosine' or 'l2', got {metric!r}")
    k = check_positive_int("k", k)
    series = as_vocab(vocab, rows)
    query_entity = None
    if series is not None:
        query_entity = row_or_entity_id
        try:
            found = series.loc[row_or_entity_id]
        except (KeyError, TypeError):
            raise UnknownEntityError(
                f"entity id {row_or_entity_id!r} is not in the vocabulary ({len(series):,} ids)"
            ) from None
        if isinstance(found, pd.Series):  # an id listed twice: keep the first
            found = found.iloc[0]
        row = int(found)
    else:
        if isinstance(row_or_entity_id, bool) or not isinstance(row_or_entity_id, int | np.integer):
            raise NormError(f"row must be an integer, got {row_or_entity_id!r}")
        row = int(row_or_entity_id)
        if not 0 <= row < rows:
            raise RowIndexError(f"row {row} is out of range: the table has {rows:,} rows")
    if k > rows - 1:
        raise NormError(
            f"k={k} is too large: the table has {rows:,} rows, so at most {rows - 1:,} neighbours"
        )
    with torch.no_grad():
        query = weight[row].to(torch.float32)
        qnorm = float(torch.linalg.vector_norm(query))
        if metric == "cosine" and qnorm == 0:
            raise NormError(f"row {row} has norm 0: its cosine similarity is undefined")
        chunk = max(1, (MEMORY_BUDGET_BYTES // 4) // max(1, cols * 4))
        best_scores = torch.empty(0, device=weight.device)
        best_rows = torch.empty(0, dtype=torch.int64, device=weight.device)
        largest = metric == "cosine"
        for s in range(0, rows, chunk):
            e = min(s + chunk, rows)
            x = weight[s:e].to(torch.float32)
            if metric == "cosine":
                norms = torch.linalg.vector_norm(x, dim=1)
                scores = (x @ query) / (norms * qnorm)
                scores[norms == 0] = -math.inf
            else:
                scores = torch.linalg.vector_norm(x - query, dim=1)
            if s <= row < e:
                scores[row - s] = -math.inf if largest else math.inf
            ids = torch.arange(s, e, device=weight.device)
            cand_scores = torch.cat([best_scores, scores])
            cand_rows = torch.cat([best_rows, ids])
            take = min(k, cand_scores.numel())
            top = torch.topk(cand_scores, take, largest=largest, sorted=True)
            best_scores, best_rows = top.values, cand_rows[top.indices]
        if metric == "cosine" and bool(torch.isinf(best_scores).any()):
            usable = int(torch.isfinite(best_scores).sum())
            raise NormError(f"k={k} is too large: only {usable} other rows have a non-zero norm")
        result_rows = best_rows.cpu().numpy()
        if isinstance(weight, SnapshotTable):
            result_norms = row_norms(weight.gather(result_rows)).numpy()
        else:
            result_norms = row_norms(weight, torch.from_numpy(result_rows)).cpu().numpy()
    data: dict[str, Any] = {"rank": np.arange(1, k + 1), "row": result_rows}
    if series is not None:
        data["entity_id"] = entity_labels(series, result_rows)
    data["score"] = best_scores.cpu().numpy()
    data["norm"] = result_norms
    return Neighbours(pd.DataFrame(data), row, metric, query_entity)
