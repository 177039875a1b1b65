"""The errors of the norm functions, and the one argument check they share."""

from __future__ import annotations

from typing import Any

import numpy as np

from embviz.errors import EmbvizError

__all__ = ["EmptyTableError", "NormError", "RowIndexError", "UnknownEntityError"]


class NormError(EmbvizError, ValueError):
    """An argument or a table the norm functions cannot work with (the message says which)."""


class EmptyTableError(NormError):
    """A table with no rows: it has no norm distribution."""


class RowIndexError(EmbvizError, IndexError):
    """A row index outside ``[0, rows)``."""


class UnknownEntityError(EmbvizError, KeyError):
    """An entity id the vocabulary does not hold."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


def unknown_tables(unknown: list[str], known: list[str]) -> EmbvizError:
    from embviz.memory import UnknownTableError

    return UnknownTableError(unknown, known)


def check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise NormError(f"{name} must be a positive integer, got {value!r}")
    return int(value)
