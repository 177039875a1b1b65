"""The local rows of a table: a tensor, a ShardedTensor or a list of shards, as row groups.

`table_layout` checks what it is given (2-D, dense, floating point, not on the meta device,
shards that neither overlap nor split a row across ranks) and groups the pieces by row range;
`local_row_ids` gives the global row of each local row, in the order `row_norms` returns them.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from embviz.norms.errors import EmptyTableError, NormError, RowIndexError

__all__ = ["local_row_ids"]


@dataclass(frozen=True)
class Piece:
    """A 2-D block of a table held here: global rows ``row0:row0+n``, columns ``col0:col0+d``."""

    row0: int
    col0: int
    tensor: torch.Tensor


@dataclass(frozen=True)
class Layout:
    """The local rows of a table, as groups of pieces that share one row range.

    A plain tensor is one group of one piece. Row-wise shards are one group each; column-wise
    shards of the same rows form a group whose row norms combine the pieces' squared norms.
    """

    groups: list[tuple[int, int, list[Piece]]]  # (row0, rows, pieces covering every column)
    cols: int
    device: torch.device

    @property
    def rows(self) -> int:
        return sum(n for _, n, _ in self.groups)

    def row_ids(self) -> torch.Tensor:
        parts = [torch.arange(r0, r0 + n, dtype=torch.int64) for r0, n, _ in self.groups]
        return torch.cat(parts) if parts else torch.empty(0, dtype=torch.int64)


def sharded_tensor_type() -> type | None:
    try:
        from torch.distributed._shard.sharded_tensor import ShardedTensor
    except Exception:  # torch built without distributed
        return None
    return ShardedTensor


def _shard_to_piece(shard: Any) -> Piece:
    offsets = list(shard.metadata.shard_offsets)
    tensor = shard.tensor
    if tensor.dim() != 2 or len(offsets) != 2:
        raise NormError(f"a shard must be 2-D (rows x dim), got shape {tuple(tensor.shape)}")
    return Piece(int(offsets[0]), int(offsets[1]), tensor)


def table_layout(weight: Any, what: str = "table") -> Layout:
    """The local pieces of ``weight``; see `row_norms` for what is accepted."""
    sharded = sharded_tensor_type()
    cols: int | None = None
    if isinstance(weight, torch.nn.Parameter | torch.Tensor) and (
        sharded is None or not isinstance(weight, sharded)
    ):
        if type(weight).__name__ == "DTensor":
            raise NormError(
                f"{what}: a DTensor; pass its local rows as [(row_offset, weight.to_local())]"
            )
        if weight.dim() != 2:
            raise NormError(
                f"{what}: expected a 2-D table (rows x dim), got shape {tuple(weight.shape)}"
            )
        pieces = [Piece(0, 0, weight)]
        cols = int(weight.shape[1])
    elif sharded is not None and isinstance(weight, sharded):
        size = weight.size()
        if len(size) != 2:
            raise NormError(f"{what}: expected a 2-D sharded table, got shape {tuple(size)}")
        cols = int(size[1])
        pieces = [_shard_to_piece(s) for s in weight.local_shards()]
    elif isinstance(weight, Sequence) and not isinstance(weight, str | bytes):
        pieces = []
        for item in weight:
            if hasattr(item, "metadata") and hasattr(item, "tensor"):
                pieces.append(_shard_to_piece(item))
            elif (
                isinstance(item, tuple)
                and len(item) == 2
                and isinstance(item[0], int)
                and isinstance(item[1], torch.Tensor)
            ):
                if item[1].dim() != 2:
                    raise NormError(
                        f"{what}: shard at row {item[0]} is not 2-D (shape {tuple(item[1].shape)})"
                    )
                pieces.append(Piece(int(item[0]), 0, item[1]))
            else:
                raise NormError(
                    f"{what}: a list must hold torch Shards or (row_offset, tensor) pairs, "
                    f"got {type(item).__name__}"
                )
    else:
        raise NormError(
            f"{what}: expected a 2-D tensor, a ShardedTensor, or a list of local shards, "
            f"got {type(weight).__name__}"
        )
    for piece in pieces:
        t = piece.tensor
        if t.layout != torch.strided:
            raise NormError(f"{what}: a {t.layout} tensor; pass a dense (strided) table")
        if t.device.type == "meta":
            raise NormError(
                f"{what}: on the meta device, it holds no values (materialise it, "
                "e.g. build the collection on 'cpu')"
            )
        if not t.is_floating_point():
            raise NormError(f"{what}: dtype {t.dtype} is not a floating-point type")
        if piece.row0 < 0 or piece.col0 < 0:
            raise NormError(f"{what}: negative shard offset ({piece.row0}, {piece.col0})")
    devices = {p.tensor.device for p in pieces}
    if len(devices) > 1:
        raise NormError(f"{what}: local shards on several devices ({sorted(map(str, devices))})")
    device = devices.pop() if devices else torch.device("cpu")
    if cols is None:
        # A list of pieces: the width is where the widest piece ends.
        cols = max((p.col0 + int(p.tensor.shape[1]) for p in pieces), default=0)
    # Group pieces by row range; each group must cover every column exactly once.
    by_rows: dict[tuple[int, int], list[Piece]] = {}
    for piece in pieces:
        by_rows.setdefault((piece.row0, int(piece.tensor.shape[0])), []).append(piece)
    groups = []
    for (row0, n), members in sorted(by_rows.items()):
        members.sort(key=lambda p: p.col0)
        col = 0
        for p in members:
            if p.col0 != col:
                raise NormError(
                    f"{what}: rows {row0}:{row0 + n} have columns {col}:{p.col0} on another "
                    "rank (column-wise sharding); a row norm needs the whole row: gather the "
                    "table or norm a row-wise/table-wise sharded copy"
                )
            col += int(p.tensor.shape[1])
        if col != cols:
            raise NormError(
                f"{what}: rows {row0}:{row0 + n} have columns {col}:{cols} on another rank "
                "(column-wise sharding); a row norm needs the whole row"
            )
        groups.append((row0, n, members))
    for (a0, an, _), (b0, _, _) in itertools.pairwise(groups):
        if b0 < a0 + an:
            raise NormError(f"{what}: local shards overlap (rows {a0}:{a0 + an} and from {b0})")
    return Layout(groups, cols, device)


def local_row_ids(weight: Any) -> torch.Tensor:
    """Global row ids of the rows `row_norms` returns, in the same order (int64, on the CPU).

    For a plain tensor that is ``arange(rows)``; for local shards, the rows this process holds,
    in ascending order.
    """
    return table_layout(weight).row_ids()


def as_index(rows: torch.Tensor | Sequence[int], n: int) -> torch.Tensor:
    index = torch.as_tensor(rows)
    if (
        index.dim() != 1
        or (index.numel() and index.dtype.is_floating_point)
        or index.dtype == (torch.bool)
    ):
        raise NormError("rows must be a 1-D sequence of integer row positions")
    index = index.to(torch.int64).cpu()
    if index.numel():
        lo, hi = int(index.min()), int(index.max())
        if lo < 0 or hi >= n:
            bad = lo if lo < 0 else hi
            raise RowIndexError(f"row {bad} is out of range: the table has {n:,} rows")
    return index


def as_table(table: Any) -> torch.Tensor:
    weight = getattr(table, "weight", table)
    if not isinstance(weight, torch.Tensor):
        raise NormError(
            f"table must be a 2-D tensor or a module with a .weight, got {type(table).__name__}"
        )
    layout = table_layout(weight)
    if layout.rows == 0:
        raise EmptyTableError("the table has no rows")
    return weight.detach()
