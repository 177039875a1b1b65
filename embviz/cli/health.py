"""``embviz health PATH``: effective rank, information abundance and spread of tables.

The numbers are `embviz.health`'s; json gives them exactly (shortest round-trip floats, NaN as
null).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "health",
        help="how many dimensions each table uses (effective rank, information abundance)",
        description="Effective rank and information abundance of each table's singular values, "
        "the spread of its rows over the dimensions, and with --initial the share of rows still "
        "at their initial values. PATH is a torchsnapshot or a checkpoint folder (its latest "
        "finished step, or --step). Tables of more than --sample rows are sampled (see "
        "embviz.health).",
    )
    parser.add_argument(
        "path", metavar="PATH", help="a torchsnapshot folder, or a checkpoint folder"
    )
    parser.add_argument(
        "--initial",
        metavar="PATH",
        help="the initial values: a snapshot, or 'first' for the first checkpoint of PATH",
    )
    add_common_arguments(parser)
    parser.add_argument(
        "--step",
        type=int,
        metavar="S",
        help="with a checkpoint folder: the checkpoint of step S (default: the latest)",
    )
    parser.set_defaults(func=run)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """``--table``, ``--sample``, ``--seed`` and ``--format`` (shared with ``embviz drift``)."""
    parser.add_argument(
        "--table",
        dest="tables",
        action="append",
        metavar="NAME",
        help="a table to describe; repeat for more (default: every table)",
    )
    parser.add_argument(
        "--sample", type=int, metavar="N", help="rows read per table (default 100,000)"
    )
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the sample")
    parser.add_argument(
        "--format", choices=["table", "json"], default="table", help="output format"
    )


def _value(value: Any) -> Any:
    """JSON-safe exact value: ints stay ints, floats keep every digit, NaN becomes null."""
    if isinstance(value, str):
        return value
    import numpy as np

    if isinstance(value, int | np.integer):
        return int(value)
    value = float(value)
    return None if math.isnan(value) else value


def write(frame: Any, fmt: str, shown: list[str], header: str) -> None:
    """Print a frame indexed by table (and bucket) as json records or an aligned table."""
    flat = frame.reset_index()
    if fmt == "json":
        records = [
            {column: _value(value) for column, value in row.items()}
            for row in flat.astype(object).to_dict(orient="records")
        ]
        json.dump(records, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    print(header)
    columns = [c for c in shown if c in frame.columns]
    formatters = {
        c: (lambda v: f"{int(v):,}")
        for c in ("rows", "sampled", "queries", "dim", "k", "energy_rank_99")
    }
    text = frame[columns].to_string(
        formatters=formatters, float_format=lambda v: f"{v:.4g}", na_rep="-"
    )
    print(text)


def run(args: argparse.Namespace) -> int:
    from embviz.snapshots import resolve_snapshot
    from embviz.tablehealth import health

    path = resolve_snapshot(args.path, step=args.step)
    initial = args.initial
    if initial == "first":
        initial = resolve_snapshot(args.path, step=_first_step(args.path))
    elif initial is not None:
        initial = resolve_snapshot(initial)
    frame = health(
        path,
        tables=args.tables,
        sample=args.sample,
        seed=args.seed,
        initial=initial,
        progress=sys.stderr.isatty(),
    )
    where = f"snapshot: {path}" + (f" (initial values: {initial})" if initial else "")
    from embviz.tablehealth import HEALTH_COLUMNS

    # The table format stops before the counts' correlation and the dim advice (json: every column).
    shown = HEALTH_COLUMNS[: HEALTH_COLUMNS.index("norm_frequency_spearman")]
    write(frame, args.format, shown, where)
    return 0


def _first_step(path: str) -> int:
    from embviz.snapshots import SnapshotError, checkpoints

    try:
        return int(checkpoints(path)["step"].iloc[0])
    except SnapshotError:
        raise SnapshotError(
            f"{path}: --initial first needs a checkpoint folder (save_dir/<step>/)"
        ) from None
