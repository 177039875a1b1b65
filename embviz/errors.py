"""Typed exceptions: every user-facing error derives from `EmbvizError`.

The CLI turns an `EmbvizError` into its message on stderr and exit code 2; widgets show it inline.
Anything else that escapes is a bug and keeps its traceback.

`ArgumentError` is the one error for an argument of a public function that has a value it
cannot take, whatever the module (`embviz.arguments` holds the checks that raise it).
"""

from __future__ import annotations

__all__ = ["ArgumentError", "EmbvizError", "UnknownTableError"]


class EmbvizError(Exception):
    """Base of the errors caused by what the user gave (a file, a config, a table name)."""


class ArgumentError(EmbvizError, ValueError):
    """An argument has a value it cannot take; the message starts with its name.

    Attributes
    ----------
    argument : str
        The parameter's name (``"gpus"``, ``"mode"``, ``"optimizer_state"``, ...).
    """

    def __init__(self, argument: str, message: str):
        self.argument = argument
        super().__init__(f"{argument}: {message}")


class UnknownTableError(EmbvizError, KeyError):
    """Table names that are not in the config; the message lists the config's tables."""

    def __init__(self, unknown: list[str], known: list[str]):
        self.unknown = list(unknown)
        self.known = list(known)
        names = ", ".join(repr(n) for n in unknown)
        shown = ", ".join(known[:50]) + (f", ... ({len(known)} in all)" if len(known) > 50 else "")
        super().__init__(f"no table named {names} (tables: {shown})")

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])
