"""``embviz norms PATH --table NAME``: row-norm statistics of tables in a snapshot.

The numbers are `embviz.norm_stats`'s; json gives them exactly (shortest round-trip floats).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

# The columns printed, in this order (json: one object per table with these keys).
COLUMNS = ["table", "rows", "sampled", "mean", "std", "min", "p1", "p5", "p50", "p95", "p99", "max"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "norms",
        help="row-norm statistics of tables in a snapshot",
        description="Distribution of the L2 norm of every row (or of a sample of rows) of the "
        "named tables: mean, std, min, p1, p5, p50, p95, p99, max. PATH is a torchsnapshot or a "
        "checkpoint folder (save_dir with <step>/ snapshots: its latest finished step, or "
        "--step). Tables are found by the manifest path ending in embedding_bags.<NAME>.weight.",
    )
    parser.add_argument(
        "path", metavar="PATH", help="a torchsnapshot folder, or a checkpoint folder"
    )
    parser.add_argument(
        "--table",
        dest="tables",
        action="append",
        required=True,
        metavar="NAME",
        help="a table to describe; repeat for more",
    )
    parser.add_argument(
        "--sample",
        type=int,
        metavar="N",
        help="describe N distinct rows per table, drawn at random (seed 0), instead of all",
    )
    parser.add_argument(
        "--step",
        type=int,
        metavar="S",
        help="with a checkpoint folder: the checkpoint of step S (default: the latest)",
    )
    parser.add_argument(
        "--format", choices=["table", "json"], default="table", help="output format"
    )
    parser.set_defaults(func=run)


def _number(value: Any) -> Any:
    """JSON-safe exact value: ints stay ints, floats keep every digit, NaN becomes null."""
    if isinstance(value, int):
        return value
    value = float(value)
    return None if math.isnan(value) else value


def run(args: argparse.Namespace) -> int:
    from embviz.norms import norm_stats
    from embviz.snapshots import resolve_snapshot

    path = resolve_snapshot(args.path, step=args.step)
    stats = norm_stats(path, tables=args.tables, sample=args.sample, progress=sys.stderr.isatty())
    frame = stats.reset_index()[COLUMNS]
    if args.format == "json":
        records = [
            {
                column: (row[column] if column == "table" else _number(row[column]))
                for column in COLUMNS
            }
            for row in frame.astype(object).to_dict(orient="records")
        ]
        json.dump(records, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"snapshot: {path}")
    shown = frame.set_index("table")
    formatters = {c: (lambda v: f"{int(v):,}") for c in ("rows", "sampled")}
    print(shown.to_string(formatters=formatters, float_format=lambda v: f"{v:.6g}"))
    return 0
