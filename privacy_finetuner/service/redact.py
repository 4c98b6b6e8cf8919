"""Server paths out of what tenants read: job errors and reports.

A tenant must not learn where the server keeps data (or that a path exists): the trainer's
errors and reports can name the data file, the run directory or a model directory. Everything
that looks like an absolute path, and every configured root, is replaced by ``<path>`` before
a job's error or report is served.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, TypeVar

__all__ = ["redact_paths"]

T = TypeVar("T")

#: An absolute POSIX or Windows path not glued to a preceding word (so ``B/N`` stays).
_ABSOLUTE = re.compile(r"(?<![\w.~\-/])(?:[A-Za-z]:[\\/]|/|~/)[^\s'\"`,;()\[\]{}<>]*")


def _redact_text(text: str, roots: Iterable[str]) -> str:
    for root in sorted({r for r in roots if r and r not in (".", "/")}, key=len, reverse=True):
        text = text.replace(root, "<path>")
    return _ABSOLUTE.sub("<path>", text)


def redact_paths(value: T, roots: Iterable[str] = ()) -> T:
    """``value`` (a string or JSON-like tree) with server paths replaced by ``<path>``."""
    fixed = tuple(roots)
    out: Any
    if isinstance(value, str):
        out = _redact_text(value, fixed)
    elif isinstance(value, dict):
        out = {k: redact_paths(v, fixed) for k, v in value.items()}
    elif isinstance(value, list):
        out = [redact_paths(v, fixed) for v in value]
    else:
        out = value
    return out  # type: ignore[no-any-return]
