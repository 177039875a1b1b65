"""``embviz memory CONFIG``: exact bytes per table (weights, optimizer state) and the total.

The numbers are `embviz.memory_table`'s; the table format shows them in binary units, csv and
json give exact bytes (with a ``(total)`` row).
"""

from __future__ import annotations

import argparse

import pandas as pd

from embviz.cli.common import (
    add_accounting_arguments,
    add_config_arguments,
    config_from_args,
    write_frame,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "memory",
        help="exact bytes per table and in total",
        description="Bytes per table: weights, optimizer state (FBGEMM's fused kernels or "
        "torch.optim), the total, what fp32/fp16 would take, and torchrec's planner estimate "
        "beside it. One row per table plus a total; csv and json give exact bytes.",
    )
    add_config_arguments(parser)
    add_accounting_arguments(parser)
    parser.add_argument(
        "--format", choices=["table", "csv", "json"], default="table", help="output format"
    )
    parser.set_defaults(func=run)


def _display(frame: pd.DataFrame) -> pd.DataFrame:
    """Human units for the table format (the bytes themselves are the frame's)."""
    from embviz.memory import human_bytes, with_totals

    shown = with_totals(frame)
    out = pd.DataFrame(index=shown.index)
    out["rows"] = [f"{v:,}" if not pd.isna(v) else "" for v in shown["num_embeddings"]]
    out["dim"] = [str(v) if not pd.isna(v) else "" for v in shown["embedding_dim"]]
    out["dtype"] = shown["data_type"].fillna("")
    out["optimizer"] = shown["optimizer_kernel"].fillna("")
    for column, title in [
        ("weight_bytes", "weights"),
        ("optimizer_bytes", "optimizer state"),
        ("total_bytes", "total"),
        ("fp16_total_bytes", "as fp16"),
        ("planner_bytes", "planner"),
    ]:
        out[title] = [human_bytes(int(v)) for v in shown[column]]
    out["logged"] = ["yes" if not pd.isna(v) and bool(v) else "" for v in shown["logged"]]
    out.index.name = "table"
    return out


def run(args: argparse.Namespace) -> int:
    from embviz.memory import memory_table, with_totals

    cfg = config_from_args(args)
    frame = memory_table(cfg, args.optimizer_state, args.mode, adagrad=args.adagrad)
    if args.format in ("csv", "json"):
        write_frame(with_totals(frame), args.format, index_label="table")
        return 0
    print(_display(frame).to_string())
    notes = frame[frame["planner_note"] != ""]
    for note, group in notes.groupby("planner_note", sort=False):
        print(f"planner differs for {', '.join(group.index)}: {note}")
    for note, group in frame[frame["note"] != ""].groupby("note", sort=False):
        print(f"note for {', '.join(group.index)}: {note}")
    state = f"{args.optimizer_state} optimizer state"
    if args.adagrad == "rowwise":
        state += ", row-wise Adagrad"
    print(f"{args.config}: {len(frame)} tables, {args.mode}, {state}")
    return 0
