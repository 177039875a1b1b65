"""What serving a trained table in int8, int4, int2 or fp16 costs in quality.

`quantization_error` quantizes a table with FBGEMM's own row-wise ops, the ones torchrec's
``quantize_embeddings`` uses to fill its quantized ``EmbeddingBagCollection``
(``FloatOrHalfToFusedNBitRowwiseQuantizedSBHalf``: per row, ``bias = min`` and
``scale = (max - min) / (2**bits - 1)``, both stored as fp16, values rounded to
``round((x - bias) / scale)``), reads the rows back with the matching dequantization
(``FusedNBitRowwiseQuantizedSBHalfToFloat``: ``q * scale + bias``), and compares them with the
trained rows in float64. fp16 is a plain cast, fp32 keeps the table as it is.

The comparison covers what a model served from those rows sees: the rows' norms, their
directions, their nearest neighbours, and sum-pooled bags of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from embviz.serving import (
    SERVING_DTYPES,
    SERVING_WIDTH_MULTIPLE,
    ServingWidthError,
    _argument_error,
    _as_dtype,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "QUALITY_COLUMNS",
    "dequantize",
    "quantization_error",
    "quantization_error_table",
]

#: The measures `quantization_error` returns, in order (see there).
QUALITY_COLUMNS: tuple[str, ...] = (
    "dtype",
    "rows",
    "embedding_dim",
    "norm_rel_err_mean",
    "norm_rel_err_max",
    "cos_mean",
    "cos_min",
    "knn_kept_mean",
    "knn_kept_min",
    "k",
    "queries",
    "bag_rel_err_mean",
    "bag_rel_err_max",
    "bags",
    "bag_size",
    "pair_cos_abs_err_mean",
    "pair_cos_abs_err_max",
    "zero_rows",
    "overflow_rows",
)

_BITS = {"int8": 8, "int4": 4, "int2": 2}
# Work memory of one pass (float64 copies of a chunk and the query similarities).
_BUDGET_BYTES = 64 * 2**20


def _positive_int(argument: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise _argument_error(argument, f"must be an integer >= 1, got {value!r}")
    return int(value)


def _as_weight(weight: Any) -> Any:
    """A plain 2-D floating-point tensor from a tensor, an array, or a module with ``.weight``.

    An `embviz.SnapshotTable` is checked and kept: its rows are gathered as they are needed.
    """
    from embviz.snapshot_rows import SnapshotTable

    weight = getattr(weight, "weight", weight)
    if isinstance(weight, SnapshotTable):
        if not weight.dtype.is_floating_point:
            raise _argument_error("weight", f"dtype {weight.dtype} is not a floating-point type")
        if weight.shape[0] == 0 or weight.shape[1] == 0:
            raise _argument_error("weight", f"has no values (shape {tuple(weight.shape)})")
        return weight
    if isinstance(weight, np.ndarray):
        weight = torch.from_numpy(weight)
    kind = type(weight).__name__
    if kind in ("ShardedTensor", "DTensor"):
        raise _argument_error(
            "weight", f"a {kind}: gather the table (or load it from a snapshot) first"
        )
    if not isinstance(weight, torch.Tensor):
        raise _argument_error(
            "weight",
            "must be a 2-D tensor or array, or a module with a .weight (see "
            f"embviz.load_table), got {kind}",
        )
    if weight.dim() != 2:
        raise _argument_error(
            "weight", f"must be 2-D (rows x dim), got shape {tuple(weight.shape)}"
        )
    if weight.device.type == "meta":
        raise _argument_error("weight", "is on the meta device: it holds no values")
    if not weight.is_floating_point():
        raise _argument_error("weight", f"dtype {weight.dtype} is not a floating-point type")
    if weight.shape[0] == 0 or weight.shape[1] == 0:
        raise _argument_error("weight", f"has no values (shape {tuple(weight.shape)})")
    return weight.detach()


def dequantize(rows: torch.Tensor, dtype: str) -> torch.Tensor:
    """``rows`` as served in ``dtype`` and read back, on the CPU, in float32 or float64.

    int8/int4/int2: FBGEMM's row-wise quantization and dequantization (float32 out); fp16: a
    cast to fp16 and back; fp32: the rows as float32 (a float64 table keeps float64).

    Raises
    ------
    embviz.ArgumentError
        An unknown ``dtype``.
    ServingWidthError
        A width FBGEMM cannot quantize to ``dtype`` (see `embviz.serving`).
    """
    dtype = _as_dtype(dtype, "dtype")
    rows = rows.detach().cpu()
    if rows.shape[-1] % SERVING_WIDTH_MULTIPLE[dtype]:
        raise ServingWidthError("table", int(rows.shape[-1]), dtype)
    if dtype == "fp32":
        return rows if rows.dtype == torch.float64 else rows.to(torch.float32)
    if dtype == "fp16":
        return rows.to(torch.float16).to(torch.float32)
    import fbgemm_gpu  # noqa: F401  (registers torch.ops.fbgemm)

    source = rows if rows.dtype in (torch.float32, torch.float16) else rows.to(torch.float32)
    bits = _BITS[dtype]
    packed = torch.ops.fbgemm.FloatOrHalfToFusedNBitRowwiseQuantizedSBHalf(
        source.contiguous(), bits
    )
    return torch.ops.fbgemm.FusedNBitRowwiseQuantizedSBHalfToFloat(packed, bits)


def _chosen_rows(total: int, rows: Any, rng: np.random.Generator) -> np.ndarray | None:
    """Sorted row ids to compare, or None for every row."""
    if rows is None:
        return None
    if isinstance(rows, bool):
        raise _argument_error("rows", f"must be None, an integer or row ids, got {rows!r}")
    if isinstance(rows, int | np.integer):
        n = _positive_int("rows", rows)
        if n >= total:
            return None
        return np.sort(rng.choice(total, size=n, replace=False)).astype(np.int64)
    try:
        ids = np.asarray(rows.cpu() if isinstance(rows, torch.Tensor) else rows)
    except (TypeError, ValueError):  # not an array of ids
        ids = np.asarray([], dtype=object)
    if ids.ndim != 1 or ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
        raise _argument_error("rows", "must be None, an integer, or a non-empty list of row ids")
    bad = ids[(ids < 0) | (ids >= total)]
    if bad.size:
        raise _argument_error(
            "rows", f"row {int(bad[0])} is out of range: the table has {total:,} rows"
        )
    ids = np.unique(ids.astype(np.int64))
    return None if ids.size == total else ids


def _distinct_bags(n: int, bags: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``bags`` x ``size`` positions in ``[0, n)``, distinct within each bag."""
    if size * size <= n:
        # Clashes are rare (probability about size**2 / 2n): redraw the bags that have one.
        out = rng.integers(0, n, size=(bags, size))
        while size > 1:
            ordered = np.sort(out, axis=1)
            clash = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
            if not clash.any():
                break
            out[clash] = rng.integers(0, n, size=(int(clash.sum()), size))
        return out
    # Large bags: the first ``size`` of a random order of the n rows, some bags at a time.
    parts = []
    step = max(1, _BUDGET_BYTES // (8 * n))
    for start in range(0, bags, step):
        keys = rng.random((min(step, bags - start), n))
        parts.append(np.argpartition(keys, size - 1, axis=1)[:, :size])
    return np.concatenate(parts)


def _unit(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    norms = torch.linalg.vector_norm(x, dim=1)
    return x / torch.where(norms > 0, norms, 1.0).unsqueeze(1), norms


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(1) / (
        torch.linalg.vector_norm(a, dim=1) * torch.linalg.vector_norm(b, dim=1)
    )


def quantization_error(
    weight: Any,
    dtype: str,
    k: int = 10,
    pairs: int = 10_000,
    rows: int | Sequence[int] | None = None,
    *,
    queries: int = 1_000,
    bag_size: int = 2,
    seed: int = 0,
    progress: bool = True,
) -> pd.Series:
    """What serving a table in ``dtype`` costs: norms, directions, neighbours and bags.

    The table is quantized with FBGEMM's row-wise ops (see `dequantize`) and compared with the
    trained rows in float64.

    Parameters
    ----------
    weight : torch.Tensor, numpy.ndarray, module with ``.weight``, or `embviz.SnapshotTable`
        The trained table (rows x dim, fp32 or fp16, any device), e.g.
        ``embviz.load_table(source, name)`` for a state dict or a live collection, or
        ``embviz.SnapshotTable(path, name)`` for a table in a snapshot: then only the rows
        compared, the queries and the bags are read, in windows of rows, never the whole table.
        Sharded tables must be gathered first (a snapshot's are read shard by shard).
    dtype : {"fp32", "fp16", "int8", "int4", "int2"}
        The serving dtype.
    k : int
        Neighbours compared per query row.
    pairs : int
        Sampled bags (``bag_size`` distinct rows each, a pair by default) whose sum-pooled
        vector is compared; their first two rows also form a pair whose cosine similarity is
        compared.
    rows : None, int or sequence of int
        The rows compared: every row (None), that many rows drawn at random, or these row ids.
        They are also where neighbours are searched: the neighbour search takes
        ``queries x rows x dim`` multiply-adds, so for tables of many millions of rows pass a
        sample, e.g. ``rows=1_000_000``.
    queries : int
        Rows, drawn from the compared ones, whose ``k`` nearest neighbours are compared.
    bag_size : int
        Rows in each pooled bag.
    seed : int
        Seeds every draw (rows, queries, bags).
    progress : bool
        Show a progress bar over the table's rows (tables of more than one pass).

    Returns
    -------
    pandas.Series
        Named by ``dtype``, with (`QUALITY_COLUMNS`): ``dtype``; ``rows`` compared;
        ``embedding_dim``; ``norm_rel_err_mean``/``_max``: ``|‖y‖ - ‖x‖| / ‖x‖`` over the rows,
        ``x`` a trained row and ``y`` the same row served; ``cos_mean``/``cos_min``: cosine
        between ``x`` and ``y`` (1 is no change); ``knn_kept_mean``/``_min``: per query row,
        the share of its ``k`` nearest neighbours by cosine among the compared rows (itself
        left out) that are still among its ``k`` nearest once every row is served;
        ``k`` and ``queries`` used; ``bag_rel_err_mean``/``_max``: ``‖Σy - Σx‖ / ‖Σx‖`` over
        the bags; ``bags`` and ``bag_size``; ``pair_cos_abs_err_mean``/``_max``:
        ``|cos(y_i, y_j) - cos(x_i, x_j)|`` over the pairs; ``zero_rows``: compared rows of
        norm 0, left out of the relative errors, cosines and neighbour searches;
        ``overflow_rows``: rows with a value beyond fp16's range (they become inf in fp16).

    Raises
    ------
    embviz.ArgumentError
        An unknown ``dtype``, a bad ``weight``, ``k``, ``pairs``, ``rows``, ``queries``,
        ``bag_size``; or too few rows with a non-zero norm for ``k`` neighbours or bags.
    ServingWidthError
        A width FBGEMM cannot quantize to ``dtype`` (int8 even, int4 a multiple of 4, int2 a
        multiple of 8).
    """
    return _quantization_error(
        weight, dtype, k, pairs, rows, queries, bag_size, seed, "table", progress
    )


def _quantization_error(
    weight: Any,
    dtype: str,
    k: int,
    pairs: int,
    rows: Any,
    queries: int,
    bag_size: int,
    seed: int,
    name: str,
    progress: bool,
) -> pd.Series:
    import pandas as pd
    from tqdm.auto import tqdm

    dtype = _as_dtype(dtype, "dtype")
    weight = _as_weight(weight)
    k = _positive_int("k", k)
    pairs = _positive_int("pairs", pairs)
    queries = _positive_int("queries", queries)
    bag_size = _positive_int("bag_size", bag_size)
    total, dim = int(weight.shape[0]), int(weight.shape[1])
    if dim % SERVING_WIDTH_MULTIPLE[dtype]:
        raise ServingWidthError(name, dim, dtype)
    rng = np.random.default_rng(int(seed))
    ids = _chosen_rows(total, rows, rng)
    n = total if ids is None else int(ids.size)

    def take(positions: np.ndarray) -> torch.Tensor:
        """Rows at these positions among the compared ones (CPU, the table's dtype)."""
        global_ids = positions if ids is None else ids[positions]
        index = torch.from_numpy(np.ascontiguousarray(global_ids, dtype=np.int64))
        return weight.index_select(0, index.to(weight.device)).cpu()

    with torch.no_grad():
        # Queries: positions among the compared rows, their trained and served unit rows.
        query_pos = np.sort(rng.choice(n, size=min(queries, n), replace=False))
        qx = take(query_pos).to(torch.float64)
        qy = dequantize(take(query_pos), dtype).to(torch.float64)
        qx_unit, qx_norm = _unit(qx)
        qy_unit, qy_norm = _unit(qy)
        query_ok = (qx_norm > 0) & (qy_norm > 0)
        query_t = torch.from_numpy(query_pos)
        nq = len(query_pos)

        chunk = max(1, _BUDGET_BYTES // (8 * (nq + 6 * dim)))
        best = {
            s: (torch.empty(nq, 0, dtype=torch.float64), torch.empty(nq, 0, dtype=torch.int64))
            for s in ("x", "y")
        }
        norm_err_sum, norm_err_max, cos_sum, cos_min, cos_count = 0.0, 0.0, 0.0, math.inf, 0
        zero_rows = overflow_rows = 0
        passes = tqdm(
            range(0, n, chunk),
            desc=f"{name} as {dtype}",
            unit="pass",
            leave=False,
            disable=not progress or n <= chunk,
        )
        for start in passes:
            stop = min(start + chunk, n)
            if ids is None:
                raw = weight[start:stop].cpu()
            else:
                raw = take(np.arange(start, stop))
            x = raw.to(torch.float64)
            y = dequantize(raw, dtype).to(torch.float64)
            x_unit, x_norm = _unit(x)
            y_unit, y_norm = _unit(y)
            nonzero = (x_norm > 0) & (y_norm > 0)
            zero_rows += int((x_norm == 0).sum())
            if dtype == "fp16":
                overflow_rows += int((~torch.isfinite(y)).any(dim=1).sum())
            rel = ((y_norm - x_norm).abs() / x_norm)[x_norm > 0]
            if rel.numel():
                norm_err_sum += float(rel.sum())
                norm_err_max = max(norm_err_max, float(rel.max()))
            cos = (x_unit * y_unit).sum(1)[nonzero]
            if cos.numel():
                cos_count += int(cos.numel())
                cos_sum += float(cos.sum())
                cos_min = min(cos_min, float(cos.min()))
            # Left out of every neighbour list: the query itself and rows of norm 0.
            inside = (query_t >= start) & (query_t < stop)
            self_q = torch.nonzero(inside).squeeze(1)
            self_col = query_t[inside] - start
            zero_col = torch.nonzero(~nonzero).squeeze(1)
            for space, q_unit, unit in (("x", qx_unit, x_unit), ("y", qy_unit, y_unit)):
                # Candidates by a float32 product (twice as fast), ranked again in float64:
                # a true neighbour is lost only if float32's ~1e-7 error exceeds the gap
                # between the k-th and the 2k-th similarity.
                sims = q_unit.to(torch.float32) @ unit.to(torch.float32).T
                sims[self_q, self_col] = -math.inf
                sims[:, zero_col] = -math.inf
                top = torch.topk(sims, min(2 * k, sims.shape[1]), dim=1)
                exact = torch.einsum("qd,qcd->qc", q_unit, unit[top.indices])
                exact = exact.masked_fill(torch.isinf(top.values), -math.inf)
                scores, found = best[space]
                scores = torch.cat([scores, exact], dim=1)
                cand = torch.cat([found, top.indices + start], dim=1)
                merged = torch.topk(scores, min(k, scores.shape[1]), dim=1)
                best[space] = (merged.values, cand.gather(1, merged.indices))
        usable = n - zero_rows
        if usable - 1 < k:
            raise _argument_error(
                "k",
                f"k={k} is too large: {usable:,} compared rows have a non-zero norm, so at "
                f"most {max(usable - 1, 0):,} neighbours",
            )
        scores_x, near_x = best["x"]
        scores_y, near_y = best["y"]
        valid = query_ok & torch.isfinite(scores_x).all(1) & torch.isfinite(scores_y).all(1)
        kept = (near_x.unsqueeze(2) == near_y.unsqueeze(1)).any(2).sum(1).to(torch.float64) / k
        kept = kept[valid]

        if bag_size > n:
            raise _argument_error(
                "bag_size", f"must be at most the {n:,} compared rows, got {bag_size}"
            )
        bag_pos = _distinct_bags(n, pairs, bag_size, rng)
        bag_err_parts, pair_err_parts = [], []
        per_group = max(1, _BUDGET_BYTES // (16 * bag_size * dim))
        for s in range(0, pairs, per_group):
            group = bag_pos[s : s + per_group]
            raw = take(group.ravel())
            bx = raw.to(torch.float64).view(len(group), bag_size, dim)
            by = dequantize(raw, dtype).to(torch.float64).view(len(group), bag_size, dim)
            sum_x, sum_y = bx.sum(1), by.sum(1)
            sum_norm = torch.linalg.vector_norm(sum_x, dim=1)
            error = torch.linalg.vector_norm(sum_y - sum_x, dim=1) / sum_norm
            bag_err_parts.append(error[sum_norm > 0])
            if bag_size >= 2:
                cx = _cosine(bx[:, 0], bx[:, 1])
                cy = _cosine(by[:, 0], by[:, 1])
                both = torch.isfinite(cx) & torch.isfinite(cy)
                pair_err_parts.append((cy - cx).abs()[both])
        bag_err = torch.cat(bag_err_parts)
        pair_err = torch.cat(pair_err_parts) if pair_err_parts else torch.empty(0)

    def stat(values: torch.Tensor, fn: str) -> float:
        return float(getattr(values, fn)()) if values.numel() else math.nan

    compared = max(n - zero_rows, 0)
    return pd.Series(
        {
            "dtype": dtype,
            "rows": n,
            "embedding_dim": dim,
            "norm_rel_err_mean": norm_err_sum / compared if compared else math.nan,
            "norm_rel_err_max": norm_err_max if compared else math.nan,
            "cos_mean": cos_sum / cos_count if cos_count else math.nan,
            "cos_min": cos_min if cos_count else math.nan,
            "knn_kept_mean": stat(kept, "mean"),
            "knn_kept_min": stat(kept, "min"),
            "k": k,
            "queries": int(kept.numel()),
            "bag_rel_err_mean": stat(bag_err, "mean"),
            "bag_rel_err_max": stat(bag_err, "max"),
            "bags": int(bag_err.numel()),
            "bag_size": bag_size,
            "pair_cos_abs_err_mean": stat(pair_err, "mean"),
            "pair_cos_abs_err_max": stat(pair_err, "max"),
            "zero_rows": zero_rows,
            "overflow_rows": overflow_rows,
        },
        dtype=object,
        name=dtype,
    )


def quantization_error_table(
    source: Any,
    dtypes: str | Iterable[str] = ("int8", "int4", "int2"),
    tables: str | Iterable[str] | None = None,
    k: int = 10,
    pairs: int = 10_000,
    rows: int | Sequence[int] | None = None,
    *,
    queries: int = 1_000,
    bag_size: int = 2,
    seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """`quantization_error` of each table of a source in each serving dtype.

    Parameters
    ----------
    source : module, state dict or str
        A live collection (or a model holding one), a state dict, or the path of a
        torchsnapshot: whatever `embviz.load_table` reads. A snapshot's tables are read as
        `embviz.SnapshotTable` handles: only the rows each measure needs, block by block.
    dtypes : str or iterable of str
        Serving dtypes (`embviz.serving.SERVING_DTYPES`).
    tables : str or iterable of str, optional
        The tables (default: all the source holds).
    k, pairs, rows, queries, bag_size, seed
        As in `quantization_error`.
    progress : bool
        Show a progress bar over tables.

    Returns
    -------
    pandas.DataFrame
        One row per (``table``, ``dtype``) (a two-level index), columns `QUALITY_COLUMNS` but
        ``dtype``, plus ``refused``: why a width cannot be served in that dtype (the measures
        are then missing), ``""`` elsewhere.

    Raises
    ------
    UnknownTableError
        Tables the source does not hold (the message lists those it does).
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from embviz.norms import load_table, table_names
    from embviz.snapshot_rows import SnapshotTable, is_snapshot_path

    chosen_dtypes = [
        _as_dtype(d, "dtypes") for d in ([dtypes] if isinstance(dtypes, str) else dtypes)
    ]
    if not chosen_dtypes:
        shown = ", ".join(repr(d) for d in SERVING_DTYPES)
        raise _argument_error("dtypes", f"must name at least one of {shown}")
    names = (
        table_names(source)
        if tables is None
        else ([tables] if isinstance(tables, str) else list(tables))
    )
    known = table_names(source) if is_snapshot_path(source) else None
    records: dict[tuple[str, str], dict[str, Any]] = {}
    for name in tqdm(names, desc="quantization error", unit="table", disable=not progress):
        if known is not None:
            if name not in known:
                from embviz.errors import UnknownTableError

                raise UnknownTableError([name], known)
            weight = SnapshotTable(source, name)
        else:
            weight = load_table(source, name)
        for dtype in chosen_dtypes:
            try:
                result = _quantization_error(
                    weight, dtype, k, pairs, rows, queries, bag_size, seed, name, progress
                ).to_dict()
                result["refused"] = ""
            except ServingWidthError as exc:
                result = {c: math.nan for c in QUALITY_COLUMNS}
                result["embedding_dim"] = exc.embedding_dim
                result["refused"] = str(exc)
            result.pop("dtype", None)
            records[(name, dtype)] = result
    frame = pd.DataFrame.from_dict(records, orient="index")
    frame.index = pd.MultiIndex.from_tuples(frame.index, names=["table", "dtype"])
    return frame.infer_objects()
