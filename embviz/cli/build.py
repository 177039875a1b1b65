"""``embviz build CONFIG``: build the collection on a device, print predicted and measured bytes.

With ``--nproc N`` the collection is sharded across N processes by torchrec's
DistributedModelParallel (launched with torchrun) and each rank's bytes are printed next to the
plan's prediction.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from typing import TypeVar

from embviz.cli.common import add_config_arguments, config_from_args, write_frame
from embviz.config import LargeEmbeddingsConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "build",
        help="build the tables on a device and measure them",
        description="Build the config's EmbeddingBagCollection (each table's optimizer applied "
        "in backward), take one step so the optimizer state exists, and print the predicted and "
        "measured bytes per table. Refuses (exit 2) when the tables would not fit the device. "
        "With --nproc N, shard across N processes with DistributedModelParallel instead and "
        "print the bytes per rank.",
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--device",
        default="auto",
        metavar="D",
        help="auto (CUDA if available, else CPU), cpu, cuda, cuda:N or meta (default: auto)",
    )
    parser.add_argument(
        "--scale",
        type=float,
        metavar="S",
        help="multiply every table's rows by S, in (0, 1], for a quick copy of a huge config",
    )
    parser.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help="shard across N processes (torchrun; gloo on CPU, NCCL on GPUs)",
    )
    parser.add_argument(
        "--hbm-gib",
        type=float,
        metavar="X",
        help="with --nproc: memory per device the plan may use, GiB (default: what each device "
        "has free)",
    )
    parser.add_argument(
        "--format", choices=["table", "csv", "json"], default="table", help="output format"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


T = TypeVar("T")


def _warnings_to_stderr(work: Callable[[], T]) -> T:
    """Run ``work``; its warnings become one ``warning: ...`` line each on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        result = work()
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    return result


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if args.nproc is not None:
        return _run_sharded(args, cfg)
    from embviz.measure import build_and_measure

    check = _warnings_to_stderr(
        lambda: build_and_measure(cfg, args.device, scale=args.scale, progress=not args.no_progress)
    )
    write_frame(check.comparison, args.format, index_label="table")
    print(check.summary(), file=sys.stdout if args.format == "table" else sys.stderr)
    return 0


def _run_sharded(args: argparse.Namespace, cfg: LargeEmbeddingsConfig) -> int:
    from embviz.distributed import build_sharded_from_config

    result = build_sharded_from_config(
        cfg,
        nproc=args.nproc,
        device=args.device,
        scale=args.scale,
        hbm_gib=args.hbm_gib,
        progress=not args.no_progress,
    )
    write_frame(result.ranks, args.format, index_label="rank")
    print(result.summary(), file=sys.stdout if args.format == "table" else sys.stderr)
    return 0
