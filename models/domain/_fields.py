"""Field shapes shared by every config and request model: names, durations, strict frozen models."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$"


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
