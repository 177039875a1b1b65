"""``embviz schema``: the JSON Schema of the config."""

from __future__ import annotations

import argparse

from embviz.config import config_schema_json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "schema", help="print the config's JSON Schema", description="Print the JSON Schema."
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(config_schema_json())
    return 0
