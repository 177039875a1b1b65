"""Argument helpers shared by subcommands."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import TYPE_CHECKING, Any

from embviz.config import LargeEmbeddingsConfig, load_config

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "add_accounting_arguments",
    "add_config_arguments",
    "add_gpus_per_host_argument",
    "config_from_args",
    "write_frame",
]


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``CONFIG`` and ``--key``."""
    parser.add_argument("config", metavar="CONFIG", help="YAML file with the tables")
    parser.add_argument(
        "--key",
        metavar="K",
        help="dotted path to the section holding the tables, e.g. model.embeddings "
        "(default: the top level, or the one section that has 'tables')",
    )


def add_accounting_arguments(
    parser: argparse.ArgumentParser, *, optimizer_state: bool = True, adagrad: bool = True
) -> None:
    """``--optimizer-state``, ``--mode`` and ``--adagrad``: how `memory_table` counts bytes."""
    if optimizer_state:
        parser.add_argument(
            "--optimizer-state",
            choices=["fused", "torch"],
            default="fused",
            help="fused: FBGEMM kernels of a sharded model, state in fp32 (default); torch: "
            "torch.optim applied in backward to an unsharded collection",
        )
    parser.add_argument(
        "--mode",
        choices=["train", "evaluate", "inference"],
        default="train",
        help="only train keeps optimizer state (default: train)",
    )
    if adagrad:
        parser.add_argument(
            "--adagrad",
            choices=["exact", "rowwise"],
            default="exact",
            help="rowwise: what-if of EXACT_ROWWISE_ADAGRAD (one fp32 per row; fused only)",
        )


def add_gpus_per_host_argument(parser: argparse.ArgumentParser) -> None:
    """``--gpus-per-host``: torchrec's local world size for the planner."""
    parser.add_argument(
        "--gpus-per-host",
        type=int,
        default=8,
        metavar="G",
        help="GPUs per host: torchrec places rank r on cuda:<r %% G> of its host (default 8)",
    )


def config_from_args(args: argparse.Namespace) -> LargeEmbeddingsConfig:
    """Load the config named on the command line (raises ConfigError); warnings go to stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg = load_config(args.config, key=args.key)
    for warning in caught:
        print(f"{args.config}: warning: {warning.message}", file=sys.stderr)
    return cfg


def write_frame(frame: pd.DataFrame, fmt: str, *, index_label: str | None = None) -> None:
    """Print a DataFrame as an aligned table, CSV or JSON records (exact values in csv/json)."""
    out = sys.stdout
    if fmt == "csv":
        frame.to_csv(out, index=index_label is not None, index_label=index_label)
    elif fmt == "json":
        data = frame.reset_index() if index_label is not None else frame
        records: list[dict[str, Any]] = json.loads(data.to_json(orient="records"))
        json.dump(records, out, indent=2)
        out.write("\n")
    else:
        out.write(frame.to_string() + "\n")
