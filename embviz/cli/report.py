"""``embviz report CONFIG --out DIR``: a static HTML report with figures."""

from __future__ import annotations

import argparse
from pathlib import Path

from embviz.cli.common import (
    add_accounting_arguments,
    add_config_arguments,
    add_gpus_per_host_argument,
    config_from_args,
)
from embviz.config import load_config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write an HTML report (memory table, figures, placement, changes)",
        description="Write DIR/index.html with the memory table and figures as PNG files beside "
        "it; with --compare, what changed since another config; with --gpus and --hbm-gib, "
        "the fit and torchrec's placement.",
    )
    add_config_arguments(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to write into")
    parser.add_argument("--compare", metavar="OTHER", help="an earlier config to compare with")
    parser.add_argument("--compare-key", metavar="K", help="section of OTHER (default: --key)")
    parser.add_argument("--gpus", type=int, metavar="N", help="number of GPUs")
    parser.add_argument("--hbm-gib", type=float, metavar="X", help="memory per GPU, GiB")
    add_gpus_per_host_argument(parser)
    parser.add_argument("--batch-size", type=int, default=512, metavar="B")
    parser.add_argument(
        "--snapshot",
        metavar="PATH",
        help="a snapshot or checkpoint folder: what int8/int4/int2 cost its tables (measured), "
        "each logged table's rows in 2-D (PCA) and its health (effective rank, spectra)",
    )
    add_accounting_arguments(parser, adagrad=False)
    parser.add_argument(
        "--serving-dtype",
        action="append",
        metavar="[TABLE=]DTYPE",
        help="the serving section's choice, as for embviz memory --mode inference (default "
        "int8; DTYPE for every table, TABLE=DTYPE for one, repeat)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from embviz.report import write_report
    from embviz.serving import parse_serving_dtype

    cfg = config_from_args(args)
    serving = parse_serving_dtype(args.serving_dtype or ["int8"], cfg)
    other = None
    if args.compare:
        other = load_config(args.compare, key=args.compare_key or args.key)
    report = write_report(
        cfg,
        args.out,
        compare=other,
        gpus=args.gpus,
        hbm_gib=args.hbm_gib,
        batch_size=args.batch_size,
        gpus_per_host=args.gpus_per_host,
        optimizer_state=args.optimizer_state,
        mode=args.mode,
        title=f"embviz report: {Path(args.config).name}",
        source=args.config,
        compare_source=args.compare,
        serving_dtype=serving,
        snapshot=args.snapshot,
    )
    print(report.index)
    return 0
