"""Field shapes shared by every config and request model: names, durations, strict frozen models."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from ._errors import InputError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$"


def format_key(number: int) -> str:
    """A change's key: CHG-000042."""
    return f"CHG-{number:06d}"


def typed_key(text: str) -> str:
    """The change key a person typed, as stored: `CHG-000042`, `chg-42` and `42` are one change (issue 30:
    `changeflow show 42` found nothing and gave no hint)."""
    raw = text.strip().upper()
    number = raw.removeprefix("CHG-")
    return format_key(int(number)) if number.isdigit() and len(number) <= 9 else raw


def parse_duration(value: object) -> object:
    """'15m', '48h', '7d', '2w' -> timedelta (other forms are left to pydantic)."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"{value!r} is not a duration like 15m, 48h, 7d or 2w")
        return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Name = Annotated[str, Field(pattern=NAME_PATTERN)]


class Strict(BaseModel):
    """Config shapes: unknown keys are typos, and a loaded config never changes under a running flow."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# Moments a change can be planned or searched for: outside these the arithmetic of windows and default lengths
# overflows (a start at 9999-12-31T23:00 plus two hours), and no real change is planned there.
EARLIEST_MOMENT = datetime(2000, 1, 1, tzinfo=timezone.utc)
LATEST_MOMENT = datetime(2100, 1, 1, tzinfo=timezone.utc)
_NUMBER = re.compile(r"^\s*[-+]?\d+(\.\d*)?\s*$")


def refuse_numbers(value: object) -> object:
    """A date must look like one: pydantic would read 1733450400, -1 or 0 as seconds since 1970."""
    if isinstance(value, (int, float)) or (isinstance(value, str) and _NUMBER.match(value)):
        raise ValueError("give a date and time like 2026-12-06T02:00:00Z, not a number")
    return value


def within_range(value: datetime) -> datetime:
    if not EARLIEST_MOMENT <= value < LATEST_MOMENT:
        raise ValueError(f"must be between {EARLIEST_MOMENT:%Y-%m-%d} and {LATEST_MOMENT:%Y-%m-%d} UTC")
    return value


Moment = Annotated[AwareDatetime, BeforeValidator(refuse_numbers), AfterValidator(within_range)]


def control_character(value: str) -> str | None:
    """The first control character in `value`, described (None: there is none). Names and keys are printed in
    terminals and reports and go into the audit trail's hash: none may carry one (issue 28)."""
    for char in value:
        if char < " " or "\x7f" <= char <= "\x9f" or char in "\u2028\u2029":
            return f"U+{ord(char):04X}"
    return None


def name_problem(value: str) -> str | None:
    """Why `value` cannot be a person's or automation's name, as a person typed it (None: it can)."""
    found = control_character(value)
    if found:
        return f"contains a control character ({found})"
    if len(value) > 100:
        return "longer than 100 characters"
    return None


def checked_name(value: str, field: str) -> str:
    """`value` as a name a person typed into `field`; InputError (nothing written) when it cannot be one."""
    problem = name_problem(value)
    if problem:
        raise InputError(f"{field}: {problem}", [(field, problem)])
    return value


# The longest comment, reason, note or summary a person may write, on every path (issue 28: a 10 MB comment became
# a 10 MB audit event and approvals row). Ten pages of text; the Resume forms say the same.
TEXT_LIMIT = 5000


def checked_text(value: str, field: str) -> str:
    """`value` as free text a person wrote into `field`; InputError (nothing written) past TEXT_LIMIT."""
    if len(value) > TEXT_LIMIT:
        problem = f"longer than {TEXT_LIMIT} characters ({len(value)})"
        raise InputError(f"{field}: {problem}", [(field, problem)])
    return value


def plain_text(value: object) -> object:
    """Text is text: no NUL character (PostgreSQL cannot store it) and no bytes (YAML's !!binary)."""
    if isinstance(value, (bytes, bytearray)):
        raise ValueError("Input should be a valid string (not binary data)")
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("contains a NUL character")
    return value
