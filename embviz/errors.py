"""Typed exceptions: every user-facing error derives from `EmbvizError`.

The CLI turns an `EmbvizError` into its message on stderr and exit code 2; widgets show it inline.
Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["EmbvizError"]


class EmbvizError(Exception):
    """Base of the errors caused by what the user gave (a file, a config, a table name)."""
