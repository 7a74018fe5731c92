"""The base class of every error a user can cause, and the one line that is shown for any error.

Raise a subclass of :class:`CxrvizError` for anything a user can get wrong (a file, a folder, a setting, a
run, a class mapping): its ``str()`` is the whole message, one line, shown as ``st.error`` in the app and
as ``error: ...`` (exit code 2) in the CLI. :func:`one_line` turns any exception into such a line.
"""
from __future__ import annotations


class CxrvizError(ValueError):
    """An error a user can cause; ``str(e)`` is the one line shown to them."""

    def __str__(self) -> str:
        msg = self.args[0] if self.args else ""
        return str(msg).strip().splitlines()[0] if str(msg).strip() else type(self).__name__


def one_line(exc: BaseException) -> str:
    """One line a user can act on, for any exception (a user error's own message; otherwise its type and
    first line; out-of-memory errors say what to try)."""
    text = str(exc).strip()
    if isinstance(exc, MemoryError):
        return "out of memory (host RAM): try a smaller batch size or image size"
    if "out of memory" in text.lower() and not isinstance(exc, CxrvizError):
        return "out of memory: try a smaller batch size or image size, or a smaller model"
    first = text.splitlines()[0] if text else ""
    if isinstance(exc, CxrvizError):
        return first
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
