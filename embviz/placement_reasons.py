"""Why each table sits where torchrec's planner put it, from the plan's own facts (pure).

`placement_reasons` reads a `embviz.placement.Placement` (the planner's sharding types, shard
shapes and ranks, and the exact bytes of every shard) and says, per table, what the choice means
in bytes: whether the table could have stayed whole on one GPU (its bytes against one GPU's
memory less torchrec's reserve for the dense model), how it was split, and what each rank holds
of it. torchrec's planner keeps, among the proposals that fit, the one its performance model
ranks cheapest; where memory did not force a split, the reason says so rather than inventing one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from embviz.memory import PLANNER_RESERVED_FRACTION, human_bytes

if TYPE_CHECKING:
    from embviz.placement import Placement

__all__ = ["placement_reasons", "usable_bytes"]


def usable_bytes(placement: Placement) -> int:
    """Bytes of one GPU torchrec's planner may fill with tables (less its dense-model reserve)."""
    return int(placement.hbm_bytes * (1 - PLANNER_RESERVED_FRACTION))


def _ranks_text(ranks: list[int]) -> str:
    return "rank " + str(ranks[0]) if len(ranks) == 1 else "ranks " + ", ".join(map(str, ranks))


def placement_reasons(placement: Placement) -> pd.DataFrame:
    """Per table: its sharding, the bytes each rank holds of it, and why (in bytes).

    Parameters
    ----------
    placement : embviz.placement.Placement
        From `embviz.plan`.

    Returns
    -------
    pandas.DataFrame
        Indexed by table (config order): ``sharding_type``, ``num_shards``, ``table_bytes``
        (exact, all shards), ``fits_one_gpu`` (``table_bytes`` at most `usable_bytes`), one
        int64 column per rank, ``rank <r>``, with the exact bytes of the table's shards there,
        and ``reason``: one sentence built from these facts.
    """
    usable = usable_bytes(placement)
    shards = placement.shards
    per_rank = (
        shards.pivot_table(
            index="table", columns="rank", values="table_bytes", aggfunc="sum", fill_value=0
        )
        .reindex(columns=range(placement.gpus), fill_value=0)
        .astype(np.int64)
    )
    per_rank.columns = [f"rank {r}" for r in per_rank.columns]
    records = []
    for _, row in placement.tables.iterrows():
        name = str(row["table"])
        kind = str(row["sharding_type"])
        ranks = [int(r) for r in row["ranks"]]
        total = int(row["table_bytes"])
        own = shards[shards["table"] == name]
        fits = total <= usable
        where = _ranks_text(ranks)
        gpu = f"one GPU's usable {human_bytes(usable)}"
        if kind == "table_wise":
            reason = f"whole on {where}: {human_bytes(total)} fits {gpu}"
        elif kind == "data_parallel":
            reason = (
                f"a copy on every rank ({human_bytes(total)} in all): small enough to replicate"
            )
        elif kind in ("row_wise", "table_row_wise"):
            rows = int(own["rows"].max())
            split = f"split by rows into {len(own)} shards of up to {rows:,} rows on {where}" + (
                " of one host" if kind == "table_row_wise" else ""
            )
            if fits:
                reason = (
                    f"{split}; {human_bytes(total)} would fit {gpu}, so memory did not force "
                    "the split: the planner's performance model spread its lookups"
                )
            else:
                reason = f"{split}: {human_bytes(total)} is more than {gpu}, so it must be split"
        elif kind in ("column_wise", "table_column_wise", "grid_shard"):
            cols = sorted({int(c) for c in own["cols"]})
            dim = int(own["col_offset"].max() + own.loc[own["col_offset"].idxmax(), "cols"])
            if len(own) == 1:
                reason = (
                    f"one column shard of all {dim} columns on {where}, the whole table as "
                    f"table-wise would hold it ({human_bytes(total)} fits {gpu}): the planner "
                    "preferred it by its performance estimate, not for memory"
                )
            else:
                width = "/".join(map(str, cols))
                reason = (
                    f"split by columns into {len(own)} shards of {width} of its {dim} columns "
                    f"on {where}"
                    + (
                        f": {human_bytes(total)} is more than {gpu}"
                        if not fits
                        else f"; {human_bytes(total)} would fit {gpu}, so memory did not force "
                        "the split: the planner's performance model spread its lookups"
                    )
                )
        else:
            reason = f"{kind} on {where}"
        records.append(
            {
                "table": name,
                "sharding_type": kind,
                "num_shards": int(row["num_shards"]),
                "table_bytes": total,
                "fits_one_gpu": fits,
                "reason": reason,
            }
        )
    frame = pd.DataFrame.from_records(records).set_index("table")
    frame = frame.join(per_rank)
    rank_columns = list(per_rank.columns)
    frame[rank_columns] = frame[rank_columns].fillna(0).astype(np.int64)
    return frame[
        ["sharding_type", "num_shards", "table_bytes", "fits_one_gpu", *rank_columns, "reason"]
    ]
