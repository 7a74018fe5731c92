"""The base class of every error a user can cause, and the one line that is shown for any error.

Raise a subclass of :class:`CxrvizError` for anything a user can get wrong (a file, a folder, a setting, a
run, a class mapping): its ``str()`` is the whole message, one line, shown as ``st.error`` in the app and
as ``error: ...`` (exit code 2) in the CLI. :func:`one_line` turns any exception into such a line;
:func:`squash` and :func:`message` put a text or an exception's own text on one bounded line.
"""
from __future__ import annotations

import sys

MAX_LINE = 400  # characters of one shown line
OUT_OF_MEMORY = "out of memory: try a smaller batch size or image size, or a smaller model"
OUT_OF_HOST_MEMORY = "out of memory (host RAM): try a smaller batch size or image size"


class CxrvizError(ValueError):
    """An error a user can cause; ``str(e)`` is the one line shown to them."""

    def __str__(self) -> str:
        msg = self.args[0] if self.args else ""
        return str(msg).strip().splitlines()[0] if str(msg).strip() else type(self).__name__


def squash(text, limit: int = MAX_LINE) -> str:
    """``text`` on one line (whitespace runs collapsed), cut to ``limit`` characters with "..."."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def message(exc: BaseException, limit: int = MAX_LINE) -> str:
    """An exception's own text on one line (its type's name when it has none)."""
    return squash(exc, limit) or type(exc).__name__


def _is_out_of_memory(exc: BaseException) -> bool:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, getattr(torch, "OutOfMemoryError", ())):
        return True
    return "out of memory" in str(exc).lower() and not isinstance(exc, CxrvizError)


def one_line(exc: BaseException) -> str:
    """One line a user can act on, for any exception: out-of-memory errors say what to try; a ValueError
    (every :class:`CxrvizError` is one) shows its own first line; anything else its type and first line."""
    if _is_out_of_memory(exc):
        return OUT_OF_MEMORY
    if isinstance(exc, MemoryError):
        return OUT_OF_HOST_MEMORY
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(exc, ValueError) and first:
        return first
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
