"""Helpers shared by the training-side commands: quiet third-party output, warnings as one line."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from typing import Any

from privacy_finetuner.cli._output import error_console

__all__ = ["quiet_runtime"]


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    error_console.print(f"[yellow]warning:[/] {message}", highlight=False, markup=True)


@contextlib.contextmanager
def quiet_runtime() -> Iterator[None]:
    """Warnings become one line on stderr; transformers/absl progress bars and logs are muted."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("absl").setLevel(logging.ERROR)
    with contextlib.suppress(ImportError):
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.showwarning = _show_warning
        yield
