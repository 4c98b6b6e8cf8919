"""Shared console helpers so every command reports results and errors the same way."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

console = Console()
error_console = Console(stderr=True)


def print_json(data: dict[str, Any]) -> None:
    """One JSON object on one line on stdout, for scripts (no rich markup)."""
    sys.stdout.write(json.dumps(data, sort_keys=True) + "\n")
    sys.stdout.flush()


def print_error(message: str) -> None:
    """One line on stderr, prefixed so it is easy to grep in logs."""
    error_console.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
