"""``embviz snapshot ls PATH``: a torchsnapshot's tables, or a checkpoint folder's steps."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from embviz.cli.common import write_frame

if TYPE_CHECKING:
    import pandas as pd


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "snapshot",
        help="look inside torchsnapshots and checkpoint folders",
        description="Inspect torchsnapshots as the-algorithm-ml writes them.",
    )
    commands = parser.add_subparsers(dest="snapshot_command", required=True, metavar="COMMAND")
    ls = commands.add_parser(
        "ls",
        help="list a snapshot's tables, or a checkpoint folder's steps",
        description="For one snapshot (a folder with .snapshot_metadata): its embedding tables "
        "with shapes and dtypes, read from the manifest only. For a checkpoint folder "
        "(save_dir/<step>/): its finished steps in order, and the tables of the last one.",
    )
    ls.add_argument("path", metavar="PATH", help="snapshot or checkpoint folder")
    ls.add_argument(
        "--format", choices=["table", "csv", "json"], default="table", help="output format"
    )
    ls.set_defaults(func=run_ls)


def _is_checkpoint_folder(path: Path) -> bool:
    from embviz.snapshots import METADATA_FILE

    if not path.is_dir() or (path / METADATA_FILE).exists():
        return False
    return any(child.is_dir() and child.name.isdigit() for child in path.iterdir())


def _shown(tables: pd.DataFrame) -> pd.DataFrame:
    frame = tables[["shape", "dtype", "rows", "dim", "bytes", "path"]].copy()
    frame["shape"] = [" x ".join(str(n) for n in shape) for shape in frame["shape"]]
    return frame


def run_ls(args: argparse.Namespace) -> int:
    from embviz.snapshots import checkpoints, snapshot_tables

    path = Path(args.path)
    if _is_checkpoint_folder(path):
        listed = checkpoints(path, unfinished=True)
        steps = listed[listed["finished"]][["step", "path"]]
        write_frame(steps.set_index("step"), args.format, index_label="step")
        if args.format == "table":
            unfinished = listed.loc[~listed["finished"], "step"].tolist()
            if unfinished:
                print(f"unfinished (skipped): {', '.join(map(str, unfinished))}")
            last = steps["path"].iloc[-1]
            print(f"\ntables at step {steps['step'].iloc[-1]}:")
            write_frame(_shown(snapshot_tables(last)), "table")
        return 0
    write_frame(_shown(snapshot_tables(path)), args.format, index_label="table")
    return 0
