"""What casting a table to fp16 costs: error of row norms and of cosine similarities."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch

from embviz.norms.errors import EmptyTableError, NormError, check_positive_int
from embviz.norms.layout import as_table, table_layout
from embviz.norms.rownorms import MEMORY_BUDGET_BYTES
from embviz.norms.sources import choose_tables, open_source

if TYPE_CHECKING:
    import pandas as pd

    from embviz.config import LargeEmbeddingsConfig

__all__ = ["fp16_error", "fp16_error_table"]


def fp16_error(weight: Any, pairs: int = 10_000, seed: int = 0) -> pd.Series:
    """What casting a table to fp16 costs: error of row norms and of cosine similarities.

    Parameters
    ----------
    weight : torch.Tensor, module with ``.weight``, or `embviz.SnapshotTable`
        The table as trained (fp32; an fp16 table has nothing left to lose and gives zeros). A
        `SnapshotTable` is read in windows of rows, the sampled pairs gathered block by block:
        never the whole table in memory.
    pairs : int
        Random row pairs ``(i, j)``, ``i != j``, whose cosine similarity is compared.
    seed : int
        Seeds the pairs.

    Returns
    -------
    pandas.Series
        ``rows``; ``norm_rel_err_mean`` / ``norm_rel_err_max``: ``|n16 - n32| / n32`` over every
        row (0 for rows of norm 0), with ``n32`` the norm of the row and ``n16`` that of the row
        cast to fp16, both computed in float64; ``cos_abs_err_mean`` / ``cos_abs_err_max``:
        ``|c16 - c32|`` over the pairs; ``cos_rel_err_mean`` / ``cos_rel_err_max``:
        ``|c16 - c32| / |c32|`` over the pairs with ``|c32| >= 0.01`` (the relative error of a
        cosine near 0 says nothing); ``pairs`` compared (pairs with a zero row are left out);
        ``overflow_rows``: rows with a value beyond fp16's range (±65504), which become inf.
    """
    import pandas as pd

    from embviz.snapshot_rows import SnapshotTable

    if isinstance(weight, SnapshotTable):
        if weight.shape[0] == 0:
            raise EmptyTableError(f"table {weight.name!r} has no rows")
        if not weight.dtype.is_floating_point:
            raise NormError(f"table {weight.name!r}: {weight.dtype} is not a floating-point type")
    else:
        weight = as_table(weight)
    pairs = check_positive_int("pairs", pairs)
    rows, cols = int(weight.shape[0]), int(weight.shape[1])
    chunk = max(1, (MEMORY_BUDGET_BYTES // 8) // max(1, cols * 8))
    err_sum, err_max, overflow = 0.0, 0.0, 0
    with torch.no_grad():
        for s in range(0, rows, chunk):
            x = weight[s : s + chunk].to(torch.float64)
            half = x.to(torch.float16).to(torch.float64)
            n64 = torch.linalg.vector_norm(x, dim=1)
            n16 = torch.linalg.vector_norm(half, dim=1)
            rel = (n16 - n64).abs() / n64
            rel[(n64 == 0) & (n16 == 0)] = 0.0
            overflow += int((~torch.isfinite(half)).any(dim=1).sum())
            err_sum += float(rel.sum())
            err_max = max(err_max, float(rel.max()))
        generator = torch.Generator().manual_seed(int(seed))
        cos_abs = torch.empty(0, dtype=torch.float64)
        cos_ref = torch.empty(0, dtype=torch.float64)
        if rows >= 2:
            i = torch.randint(0, rows, (pairs,), generator=generator)
            j = torch.randint(0, rows - 1, (pairs,), generator=generator)
            j = j + (j >= i).to(torch.int64)  # uniform over j != i
            a = weight.index_select(0, i.to(weight.device)).to(torch.float64).cpu()
            b = weight.index_select(0, j.to(weight.device)).to(torch.float64).cpu()
            a16, b16 = (t.to(torch.float16).to(torch.float64) for t in (a, b))

            def cosine(u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
                return (u * w).sum(1) / (
                    torch.linalg.vector_norm(u, dim=1) * torch.linalg.vector_norm(w, dim=1)
                )

            c64, c16 = cosine(a, b), cosine(a16, b16)
            valid = torch.isfinite(c64) & torch.isfinite(c16)
            cos_abs = (c16 - c64).abs()[valid]
            cos_ref = c64[valid]
    big = cos_ref.abs() >= 0.01
    rel_cos = cos_abs[big] / cos_ref[big].abs()

    def stat(values: torch.Tensor, fn: str) -> float:
        return float(getattr(values, fn)()) if values.numel() else math.nan

    return pd.Series(
        {
            "rows": rows,
            "norm_rel_err_mean": err_sum / rows,
            "norm_rel_err_max": err_max,
            "cos_abs_err_mean": stat(cos_abs, "mean"),
            "cos_abs_err_max": stat(cos_abs, "max"),
            "cos_rel_err_mean": stat(rel_cos, "mean"),
            "cos_rel_err_max": stat(rel_cos, "max"),
            "pairs": int(cos_abs.numel()),
            "overflow_rows": overflow,
        },
        dtype=object,
    )


def fp16_error_table(
    source: Any,
    tables: str | Iterable[str] | None = None,
    pairs: int = 10_000,
    seed: int = 0,
    *,
    config: LargeEmbeddingsConfig | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """`fp16_error` of each table of a source (module, state dict or snapshot), by table.

    A snapshot path's tables are read as `embviz.SnapshotTable` handles (in windows of rows,
    never whole).
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from embviz.snapshot_rows import SnapshotTable

    src = open_source(source)
    chosen = choose_tables(src, tables, config)
    records = {}
    for name in tqdm(chosen, desc="fp16 error", unit="table", disable=not progress):
        if src.path is not None:
            weight = SnapshotTable(src.path, name)
        else:
            weight = src.load(name)
        if isinstance(weight, SnapshotTable):
            rows = int(weight.shape[0])
        else:
            rows = table_layout(weight, f"table {name!r}").rows
        if rows == 0:
            raise EmptyTableError(f"table {name!r} has no rows")
        records[name] = fp16_error(weight, pairs=pairs, seed=seed)
    frame = pd.DataFrame.from_dict(records, orient="index").infer_objects()
    frame.index.name = "table"
    return frame
