"""Recurring maintenance windows as data (policies.yaml `windows:`): when each opens, for how long, and how far
ahead its maintenance is announced. The defaults are the operations specification's: weekly Sunday 02:00-04:00
UTC, monthly the first Sunday 01:00-06:00 UTC, quarterly with two weeks' notice."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime, time, timedelta, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ._fields import Duration
from ._scheduling import WindowSpec

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
# The first month of each calendar quarter: a quarterly window falls in January, April, July and October.
QUARTER_MONTHS = (1, 4, 7, 10)
# How far ahead `next_window` looks: past the longest period (a quarter) with room for a window in progress.
_HORIZON = timedelta(days=400)


class WindowSchedule(BaseModel):
    """One recurring window: `every` day, week (on `weekday`), month or quarter (on the `week`-th `weekday` of the
    month), opening `at` (UTC) for `hours`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str = Field(min_length=1, max_length=100)
    every: Literal["day", "week", "month", "quarter"]
    weekday: Weekday | None = Field(default=None, description="For week, month and quarter")
    week: int = Field(default=1, ge=1, le=4, description="For month and quarter: 1 = the first such weekday")
    at: time = Field(description="When it opens, HH:MM UTC")
    hours: float = Field(gt=0, le=24)
    notice: Duration = Field(default=timedelta(hours=48),
                             description="How far ahead its maintenance is announced and asks for approval")

    @field_validator("at", mode="before")
    @classmethod
    def _quoted_time(cls, value: object) -> object:
        # YAML reads an unquoted 02:00 as the number 120, which would pass as 00:02.
        if isinstance(value, time):
            return value  # (a model dumped and read again)
        if not (isinstance(value, str) and len(value) == 5 and value[2] == ":"):
            raise ValueError('give the opening time as a quoted "HH:MM" (UTC)')
        return value

    @model_validator(mode="after")
    def _weekday_where_needed(self) -> "WindowSchedule":
        if self.every != "day" and self.weekday is None:
            raise ValueError(f"weekday: a window every {self.every} names its weekday")
        if self.every == "day" and self.weekday is not None:
            raise ValueError("weekday: a daily window opens every day (leave weekday out)")
        return self

    @property
    def length(self) -> timedelta:
        return timedelta(hours=self.hours)

    def falls_on(self, day: datetime) -> bool:
        if self.every == "day":
            return True
        if day.weekday() != WEEKDAYS.index(self.weekday or ""):
            return False
        if self.every == "week":
            return True
        in_month = (day.day - 1) // 7 + 1 == self.week
        return in_month and (self.every == "month" or day.month in QUARTER_MONTHS)

    def starts(self, start: datetime, end: datetime) -> Iterator[datetime]:
        """Each opening of a window that is still open after `start` and opens before `end`."""
        day = (start - self.length).astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
        while day < end:
            opens = day.replace(hour=self.at.hour, minute=self.at.minute)
            if self.falls_on(day) and opens + self.length > start and opens < end:
                yield opens
            day += timedelta(days=1)

    def cron(self) -> tuple[str, bool]:
        """The cron expression (and Prefect's `day_or`) that fires at each opening: what the window's deployment in
        prefect.yaml must say. `day_or` false: the day-of-month range AND the weekday (cron ORs them otherwise)."""
        minute_hour = f"{self.at.minute} {self.at.hour}"
        weekday = (WEEKDAYS.index(self.weekday) + 1) % 7 if self.weekday else None  # cron: 0 is Sunday
        if self.every == "day":
            return f"{minute_hour} * * *", True
        if self.every == "week":
            return f"{minute_hour} * * {weekday}", True
        days = f"{(self.week - 1) * 7 + 1}-{self.week * 7}"
        months = "*" if self.every == "month" else ",".join(map(str, QUARTER_MONTHS))
        return f"{minute_hour} {days} {months} {weekday}", False


def scheduled_windows(schedules: Mapping[str, WindowSchedule], start: datetime, end: datetime) -> list[WindowSpec]:
    """Every window of every schedule that is open at some moment of [start, end), by opening."""
    return sorted((WindowSpec(kind, opens, opens + schedule.length, schedule.title)
                   for kind, schedule in schedules.items() for opens in schedule.starts(start, end)),
                  key=lambda w: (w.starts_at, w.kind))


def next_window(schedules: Mapping[str, WindowSchedule], kind: str, after: datetime) -> WindowSpec:
    """The first `kind` window opening at or after `after`."""
    schedule = schedules[kind]
    opens = next(s for s in schedule.starts(after, after + _HORIZON) if s >= after)
    return WindowSpec(kind, opens, opens + schedule.length, schedule.title)


def superseded(window: WindowSpec, schedules: Mapping[str, WindowSchedule]) -> WindowSpec | None:
    """The longer window of another kind that this one lies inside, if any: that window's maintenance covers the
    day (a weekly window on a first Sunday is inside the monthly one; two changes on one service in one slot would
    clash), so this one's is not filed."""
    return next((other for other in scheduled_windows(schedules, window.starts_at, window.ends_at)
                 if other.kind != window.kind and other.starts_at <= window.starts_at
                 and window.ends_at <= other.ends_at and other.ends_at - other.starts_at
                 > window.ends_at - window.starts_at), None)
