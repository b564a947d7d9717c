"""Options and argument parsing shared by the commands: every problem is an InputError naming the option."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import typer

from models import ChangeFilter, InputError, Settings, parse_duration, parse_yaml, within_range

MAX_REQUEST_FILE_BYTES = 5 * 1024 * 1024

JsonOption = typer.Option(False, "--json", help="Print JSON instead of a table.")


class OutputFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


def parse_time(value: Optional[str], name: str) -> Optional[datetime]:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
        parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
        parsed.astimezone(timezone.utc)  # year 1 at +14:00 overflows here
    except (ValueError, OverflowError):
        raise InputError(f"--{name}: {value[:60]!r} is not a date or time like 2026-11-01 or 2026-11-01T14:00",
                         [(name, "not a date")]) from None
    try:
        return within_range(parsed)  # the same bounds as a request's dates
    except ValueError as exc:
        raise InputError(f"--{name}: {exc}", [(name, "out of range")]) from None


def required_time(value: str, name: str) -> datetime:
    parsed = parse_time(value, name)
    assert parsed is not None
    return parsed


def read_request_file(path: Path) -> dict:
    """Read a change request from YAML or JSON; every problem is an InputError naming the file."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    if size > MAX_REQUEST_FILE_BYTES:
        raise InputError(f"{path}: {size} bytes is larger than the {MAX_REQUEST_FILE_BYTES} bytes a request may be")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    data = parse_yaml(text, str(path), InputError)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of change-request fields at the top level")
    return data


def build_filter(**fields: Any) -> ChangeFilter:
    from pydantic import ValidationError

    try:
        return ChangeFilter(**fields)
    except ValidationError as exc:
        problems = [(".".join(str(p) for p in e["loc"]), e["msg"]) for e in exc.errors()]
        raise InputError("; ".join(f"--{f.replace('_', '-')}: {m}" for f, m in problems), problems) from None


def checked_settings() -> Settings:
    """The settings from the environment, or a clean exit 2 naming each bad `CHANGEFLOW_` variable."""
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        problems = [("CHANGEFLOW_" + "_".join(str(p) for p in e["loc"]).upper() if e["loc"] else "settings",
                     e["msg"].removeprefix("Value error, ")) for e in exc.errors()]
        raise InputError("; ".join(f"{field}: {message}" for field, message in problems), problems) from None


def positive_duration(value: str, name: str) -> timedelta:
    """The option `--name` as a positive duration (90s, 30m, 2h, 90d); anything else is exit 2 naming it."""
    try:
        parsed = parse_duration(value)
    except ValueError as exc:
        raise InputError(f"--{name}: {exc}", [(name, str(exc))]) from None
    if not isinstance(parsed, timedelta) or parsed <= timedelta(0):
        raise InputError(f"--{name}: {value!r} must be a positive duration like 90s, 30m or 2h",
                         [(name, "not positive")])
    return parsed
