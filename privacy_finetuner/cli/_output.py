"""Shared console helpers so every command reports results and errors the same way."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape

console = Console()
error_console = Console(stderr=True)


def print_json(data: dict[str, Any]) -> None:
    """One JSON object on one line on stdout, for scripts (no rich markup)."""
    sys.stdout.write(json.dumps(data, sort_keys=True) + "\n")
    sys.stdout.flush()


def print_error(message: str) -> None:
    """One line on stderr, prefixed so it is easy to grep in logs."""
    # escape(): messages quote user input such as "messages[0]" that rich would read as markup;
    # soft_wrap: one line even when stderr is not a terminal (logs, CI).
    error_console.print(
        f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True, soft_wrap=True
    )
