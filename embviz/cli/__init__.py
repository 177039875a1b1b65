"""The ``embviz`` command line: one subcommand per module in this package.

Each subcommand module defines ``register(subparsers)``, which adds its parser and sets
``func`` to a function taking the parsed arguments and returning the exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from embviz.errors import EmbvizError

__all__ = ["main"]

# Subcommand modules, in the order `embviz --help` lists them.
SUBCOMMANDS = ["validate", "schema", "report", "build", "snapshot", "memory", "plan", "norms"]
SUBCOMMANDS += ["health", "drift"]  # embviz.tablehealth, embviz.tabledrift


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="embviz",
        description="Size, place and inspect torchrec embedding tables.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"embviz.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; bad input prints its message and returns 2, with no traceback.

    So does an `OSError` (a file the system refuses), as one line naming the file.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except EmbvizError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except BrokenPipeError:  # `embviz ... | head`
        return 0
    except OSError as exc:
        # A file the system would not let us read or write (permissions, a full disk, ...):
        # the commands word the ones they expect; this is the one line for any other.
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{where}{exc.strerror or exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
