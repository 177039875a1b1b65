"""``embviz memory CONFIG``: exact bytes per table (weights, optimizer state) and the total.

The numbers are `embviz.memory_table`'s; the table format shows them in binary units, csv and
json give exact bytes (with a ``(total)`` row).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from embviz.cli.common import (
    add_accounting_arguments,
    add_config_arguments,
    config_from_args,
    write_frame,
)

if TYPE_CHECKING:
    import pandas as pd


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
        "--serving-dtype",
        action="append",
        metavar="[TABLE=]DTYPE",
        help="with --mode inference: bytes of the quantized collection a model is served "
        "from, in fp32, fp16, int8, int4 or int2; DTYPE for every table, TABLE=DTYPE for one "
        "(repeat; other tables keep their own dtype unless a DTYPE is given too)",
    )
    parser.add_argument(
        "--format", choices=["table", "csv", "json"], default="table", help="output format"
    )
    parser.set_defaults(func=run)


def _display(frame: pd.DataFrame) -> pd.DataFrame:
    """Human units for the table format (the bytes themselves are the frame's)."""
    import pandas as pd

    from embviz.memory import human_bytes, with_totals

    shown = with_totals(frame)
    out = pd.DataFrame(index=shown.index)
    out["rows"] = [f"{v:,}" if not pd.isna(v) else "" for v in shown["num_embeddings"]]
    out["dim"] = [str(v) if not pd.isna(v) else "" for v in shown["embedding_dim"]]
    out["dtype"] = shown["data_type"].fillna("")
    if "serving_dtype" in shown.columns:
        out["serving"] = shown["serving_dtype"].fillna("")
        out["row"] = [f"{v} B" if not pd.isna(v) else "" for v in shown["row_bytes"]]
        columns = [
            ("weight_bytes", "weights"),
            ("unquantized_bytes", "unquantized"),
            ("planner_bytes", "planner"),
        ]
    else:
        out["optimizer"] = shown["optimizer_kernel"].fillna("")
        columns = [
            ("weight_bytes", "weights"),
            ("optimizer_bytes", "optimizer state"),
            ("total_bytes", "total"),
            ("fp16_total_bytes", "as fp16"),
            ("planner_bytes", "planner"),
        ]
    for column, title in columns:
        out[title] = [human_bytes(int(v)) for v in shown[column]]
    out["logged"] = ["yes" if not pd.isna(v) and bool(v) else "" for v in shown["logged"]]
    out.index.name = "table"
    return out


def run(args: argparse.Namespace) -> int:
    from embviz.memory import memory_table, with_totals
    from embviz.serving import parse_serving_dtype

    cfg = config_from_args(args)
    serving = parse_serving_dtype(args.serving_dtype or [], cfg)
    frame = memory_table(
        cfg, args.optimizer_state, args.mode, adagrad=args.adagrad, serving_dtype=serving
    )
    if args.format in ("csv", "json"):
        write_frame(with_totals(frame), args.format, index_label="table")
        return 0
    print(_display(frame).to_string())
    notes = frame[frame["planner_note"] != ""]
    for note, group in notes.groupby("planner_note", sort=False):
        print(f"planner differs for {', '.join(group.index)}: {note}")
    for note, group in frame[frame["note"] != ""].groupby("note", sort=False):
        print(f"note for {', '.join(group.index)}: {note}")
    if serving is not None:
        counts = frame["serving_dtype"].value_counts(sort=False)
        served = ", ".join(f"{dtype} x {n}" for dtype, n in counts.items())
        print(
            f"{args.config}: {len(frame)} tables, inference, served from torchrec's quantized "
            f"collection ({served})"
        )
        return 0
    state = f"{args.optimizer_state} optimizer state"
    if args.adagrad == "rowwise":
        state += ", row-wise Adagrad"
    print(f"{args.config}: {len(frame)} tables, {args.mode}, {state}")
    return 0
