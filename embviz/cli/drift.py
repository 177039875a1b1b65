"""``embviz drift A B``: how tables changed between two snapshots, beyond a rotation.

The numbers are `embviz.drift`'s; json gives them exactly (NaN as null).
"""

from __future__ import annotations

import argparse
import sys

from embviz.cli.health import add_common_arguments, write


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "drift",
        help="how tables changed between two snapshots (aligned cosine, shared neighbours)",
        description="Compare each table of snapshot A with the same table of snapshot B: the "
        "mean cosine between rows after the best rotation (orthogonal Procrustes), the share of "
        "nearest neighbours (cosine) that stay the same, and the shift of the mean row. A and B "
        "are torchsnapshots or checkpoint folders (their latest finished step).",
    )
    parser.add_argument("before", metavar="A", help="the earlier snapshot")
    parser.add_argument("after", metavar="B", help="the later snapshot")
    parser.add_argument(
        "--k", type=int, default=10, metavar="K", help="neighbours per query row (default 10)"
    )
    parser.add_argument(
        "--queries", type=int, default=1000, metavar="Q", help="query rows (default 1,000)"
    )
    add_common_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from embviz.snapshots import resolve_snapshot
    from embviz.tabledrift import drift

    before, after = resolve_snapshot(args.before), resolve_snapshot(args.after)
    frame = drift(
        before,
        after,
        tables=args.tables,
        k=args.k,
        sample=args.sample,
        seed=args.seed,
        queries=args.queries,
        progress=sys.stderr.isatty(),
    )
    from embviz.tabledrift import DRIFT_COLUMNS

    write(frame, args.format, DRIFT_COLUMNS, f"before: {before}\nafter:  {after}")
    return 0
