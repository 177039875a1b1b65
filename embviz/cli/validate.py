"""``embviz validate CONFIG``: check a config, one summary line per table."""

from __future__ import annotations

import argparse

from embviz.cli.common import add_config_arguments, config_from_args
from embviz.config import LargeEmbeddingsConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check a config file",
        description="Validate a config: exit 0 and a line per table, or 2 and a line per problem.",
    )
    add_config_arguments(parser)
    parser.set_defaults(func=run)


def summary_lines(cfg: LargeEmbeddingsConfig) -> list[str]:
    """One line per table: name, shape, dtype, optimizer, logged."""
    width = max(len(t.name) for t in cfg.tables)
    lines = []
    for table in cfg.tables:
        settings = table.optimizer.settings
        logged = "  logged" if table.name in cfg.logged_tables else ""
        lines.append(
            f"{table.name:<{width}}  {table.num_embeddings:>13,} x {table.embedding_dim:<4} "
            f"{table.data_type.value}  {table.optimizer.name}(lr={settings.lr:g}){logged}"
        )
    return lines


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    for line in summary_lines(cfg):
        print(line)
    print(f"{args.config}: {len(cfg.tables)} tables, valid")
    return 0
