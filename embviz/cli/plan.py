"""``embviz plan CONFIG --gpus N --hbm-gib X``: where torchrec's planner puts the tables.

Runs `embviz.plan` (torchrec's EmbeddingShardingPlanner on a meta collection, no GPU needed).
When nothing fits, prints how much is needed against how much there is and the smallest number
of GPUs of that size that plans, and exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from embviz.cli.common import (
    add_accounting_arguments,
    add_config_arguments,
    add_gpus_per_host_argument,
    config_from_args,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="place the tables on N GPUs with torchrec's planner",
        description="Run torchrec's EmbeddingShardingPlanner for N GPUs of X GiB (no GPU "
        "needed) and print each rank's bytes and tables and each table's sharding. Exit 2 with "
        "the smallest number of GPUs that would do when the tables do not fit.",
    )
    add_config_arguments(parser)
    parser.add_argument("--gpus", type=int, required=True, metavar="N", help="number of GPUs")
    parser.add_argument(
        "--hbm-gib", type=float, required=True, metavar="X", help="memory per GPU, GiB"
    )
    add_gpus_per_host_argument(parser)
    parser.add_argument(
        "--batch-size", type=int, default=512, metavar="B", help="per-rank batch (default 512)"
    )
    parser.add_argument(
        "--ddr-gib",
        type=float,
        default=0.0,
        metavar="Y",
        help="host memory per rank the planner may use for UVM offload (default 0: all in HBM)",
    )
    parser.add_argument(
        "--sharding-types",
        metavar="T[,T...]",
        help="allowed sharding types for every table, e.g. table_wise,row_wise",
    )
    add_accounting_arguments(parser, optimizer_state=False)
    parser.add_argument(
        "--estimate",
        choices=["exact", "torchrec"],
        default="exact",
        help="exact: FBGEMM's real fp32 optimizer state (default); torchrec: the planner's own",
    )
    parser.add_argument(
        "--search",
        choices=["auto", "full", "fast"],
        default="auto",
        help="torchrec's full proposer search, or the fast one for large configs (default auto)",
    )
    parser.add_argument(
        "--format", choices=["table", "json"], default="table", help="output format"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from embviz.memory import compact_bytes, human_bytes
    from embviz.placement import plan

    cfg = config_from_args(args)
    types = [t.strip() for t in args.sharding_types.split(",")] if args.sharding_types else None
    placement = plan(
        cfg,
        args.gpus,
        args.hbm_gib,
        args.batch_size,
        ddr_gib=args.ddr_gib,
        gpus_per_host=args.gpus_per_host,
        sharding_types=types,
        mode=args.mode,
        adagrad=args.adagrad,
        estimate=args.estimate,
        search=args.search,
        progress=sys.stderr.isatty(),
    )
    if args.format == "json":
        json.dump(placement.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    ranks = pd.DataFrame(
        {
            "planner HBM": [human_bytes(int(b)) for b in placement.ranks["hbm_bytes"]],
            "tables (exact)": [human_bytes(int(b)) for b in placement.ranks["table_bytes"]],
            "shards": placement.ranks["num_shards"].to_numpy(),
            "tables": [", ".join(t) for t in placement.ranks["tables"]],
        },
        index=pd.Index(placement.ranks["rank"], name="rank"),
    )
    tables = pd.DataFrame(
        {
            "sharding": placement.tables["sharding_type"].to_numpy(),
            "kernel": placement.tables["compute_kernel"].to_numpy(),
            "ranks": [",".join(map(str, r)) for r in placement.tables["ranks"]],
            "bytes (exact)": [human_bytes(int(b)) for b in placement.tables["table_bytes"]],
        },
        index=pd.Index(placement.tables["table"], name="table"),
    )
    print(ranks.to_string(max_colwidth=80))
    print()
    print(tables.to_string())
    for warning in placement.warnings:
        print(f"warning: {warning}")
    print(
        f"{args.config}: {len(tables)} tables on {placement.gpus} x "
        f"{compact_bytes(placement.hbm_bytes)}, batch {placement.batch_size}, "
        f"{placement.estimate} estimate, {placement.search} search"
    )
    return 0
