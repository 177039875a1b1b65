"""Checks of public functions' arguments: each returns the value or raises `ArgumentError`.

One set of checks for every module (memory, placement, build, distributed), so the same bad
value gets the same message, ``"<argument>: must be ..., got <value>"``, wherever it is passed.
Pure Python: importing this imports nothing heavy.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

from embviz.config import LargeEmbeddingsConfig, Mode
from embviz.errors import ArgumentError

__all__ = ["as_config", "as_mode", "choice", "integer", "number"]


def integer(argument: str, value: object, minimum: int = 1) -> int:
    """``value`` as an int when it is an integer (not a bool) ``>= minimum``."""
    if (
        isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum  # type: ignore[operator]
    ):
        raise ArgumentError(argument, f"must be an integer >= {minimum}, got {value!r}")
    return int(value)  # type: ignore[call-overload]


def seed(value: object, argument: str = "seed") -> int:
    """``value`` as an int when it is an integer (not a bool): a random seed, any sign."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentError(argument, f"must be an integer, got {value!r}")
    return int(value)


def number(
    argument: str,
    value: object,
    *,
    minimum: float = 0.0,
    strict: bool = False,
    maximum: float | None = None,
) -> float:
    """``value`` as a float when it is a finite real number (not a bool) in range.

    ``minimum`` is excluded when ``strict``; ``maximum``, when given, is included.
    """
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        x = float(value)  # type: ignore[arg-type]
        ok = math.isfinite(x) and (x > minimum if strict else x >= minimum)
        ok = ok and (maximum is None or x <= maximum)
    if not ok:
        low = f"{minimum:g}"
        if maximum is not None:
            bound = f"in {'(' if strict else '['}{low}, {maximum:g}]"
        else:
            bound = f"{'>' if strict else '>='} {low}"
        raise ArgumentError(argument, f"must be a number {bound}, got {value!r}")
    return x


def choice(argument: str, value: object, choices: Sequence[str]) -> str:
    """``value`` when it is one of ``choices`` (strings)."""
    if not isinstance(value, str) or value not in choices:
        shown = ", ".join(repr(c) for c in choices)
        raise ArgumentError(argument, f"must be one of {shown}, got {value!r}")
    return value


def as_mode(mode: object, argument: str = "mode") -> Mode:
    """A `Mode` from the enum or its value (``"train"``, ``"evaluate"``, ``"inference"``)."""
    try:
        return Mode(mode)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in Mode)
        raise ArgumentError(argument, f"must be one of {choices}, got {mode!r}") from None


def as_config(cfg: object, argument: str = "cfg") -> LargeEmbeddingsConfig:
    """``cfg`` when it is a `LargeEmbeddingsConfig`."""
    if not isinstance(cfg, LargeEmbeddingsConfig):
        raise ArgumentError(
            argument,
            f"must be a LargeEmbeddingsConfig (see embviz.load_config), got {type(cfg)!r}",
        )
    return cfg
