"""Rendering helpers: Rich for people, JSON for scripts."""

from __future__ import annotations

import functools
import json
import os
import sys
from datetime import datetime
from typing import Any, Callable

import typer
from rich.console import Console
from rich.text import Text

from models import ChangeflowError

# Piped output (make, CI logs) gets 120 columns instead of Rich's 80 so tables stay readable.
_PIPED_WIDTH = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 120
console = Console(width=_PIPED_WIDTH)
err_console = Console(stderr=True, width=_PIPED_WIDTH)


def fmt_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


def print_error(message: str) -> None:
    err_console.print(Text("error: ", style="bold red") + Text(message), soft_wrap=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def exits_cleanly(command: Callable) -> Callable:
    """The one place that maps changeflow errors to exit codes: 0 ok, 1 check failed, 2 bad input."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ChangeflowError as exc:
            print_error(str(exc))
            raise typer.Exit(exc.exit_code) from None

    return wrapper
