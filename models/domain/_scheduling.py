"""Scheduling rules: the window gate's decision, the span a change occupies, and the one overlap rule that
freezes, clashes and the calendar all use (the windows themselves are data: `_windows`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

# A change filed without a planned end is taken to occupy this long (for freezes, clashes and the calendar).
DEFAULT_CHANGE_LENGTH = timedelta(hours=2)
# How far in the past a planned start may be when it is filed and still count as "now" (a maintenance announcement
# whose run started late); submission and the what-if's replay of it allow the same.
START_GRACE = timedelta(minutes=5)


def overlaps(start: datetime, end: datetime, other_start: datetime, other_end: datetime) -> bool:
    """Half-open intervals [start, end) and [other_start, other_end) share a moment."""
    return start < other_end and other_start < end


@dataclass(frozen=True)
class StartCheck:
    """Whether a scheduled change may start at this moment, and if not, why and when its window opens."""

    may_start: bool
    reason: str
    opens_at: datetime | None = None
    frozen: bool = False


def decide_start(*, planned_start: datetime | None, now: datetime, freezes: list[str],
                 started_early_by: str | None, in_window: bool = True, next_window: datetime | None = None,
                 notice_until: datetime | None = None, held_by: str | None = None) -> StartCheck:
    """The window gate's rule, checked at the moment implementation would begin (not when the change was filed):
    no freeze covers now; and either an authorised person started it early, or its notice period is over, its
    planned start has come and a maintenance window is open now (a change filed without a date waits for the
    next one; a run that wakes after its window closed waits for the next; `held_by`: the related change that holds
    the window open now, ahead of this undated one). An early start never lifts a freeze."""
    if freezes:
        return StartCheck(False, "; ".join(freezes), frozen=True)
    if started_early_by:
        return StartCheck(True, f"started before its window by {started_early_by}")
    # A dated change planned after its notice ends is held by its planned start (named below); an undated one by its
    # notice, and then by the first window after it.
    if notice_until is not None and now < notice_until and (planned_start is None or planned_start < notice_until):
        reason = f"its notice period runs until {notice_until:%Y-%m-%d %H:%M} UTC"
        if next_window is not None and next_window > notice_until:
            return StartCheck(False, f"{reason}, and the first window after it opens at "
                              f"{next_window:%Y-%m-%d %H:%M} UTC", next_window)
        return StartCheck(False, reason, notice_until)
    if planned_start is not None and planned_start > now:
        return StartCheck(False, f"its window opens at {planned_start:%Y-%m-%d %H:%M} UTC", planned_start)
    if not in_window:
        when = f" (the next opens at {next_window:%Y-%m-%d %H:%M} UTC)" if next_window else ""
        if held_by:
            return StartCheck(False, f"the window open now is held by {held_by}, ahead of it{when}", next_window)
        return StartCheck(False, f"no maintenance window is open now{when}", next_window)
    return StartCheck(True, "its window is open")


def inside_a_window(windows: "Iterable[WindowSpec]", start: datetime, end: datetime) -> bool:
    """The span [start, end) lies wholly inside one of the windows: where a dated change may be planned."""
    return any(w.starts_at <= start and end <= w.ends_at for w in windows)


def freezes_hit(freezes: "Iterable[WindowSpec]", start: datetime, end: datetime) -> list[str]:
    """Each freeze the planned span [start, end) falls in, said as submission refuses it (and the what-if replays
    it): a type whose policy `overrides_freeze` records these as overridden instead."""
    return [f"planned window falls in the freeze '{f.title or 'freeze'}' "
            f"({f.starts_at:%Y-%m-%d %H:%M} to {f.ends_at:%Y-%m-%d %H:%M} UTC)"
            for f in freezes if f.freeze and f.overlaps(start, end)]


def planned_span(start: datetime, end: datetime | None) -> tuple[datetime, datetime]:
    """The interval a planned change occupies: its end, or the default length when it names none."""
    return start, end or start + DEFAULT_CHANGE_LENGTH


@dataclass(frozen=True)
class WindowSpec:
    kind: str
    starts_at: datetime
    ends_at: datetime
    title: str = ""
    service: str | None = None
    freeze: bool = False

    def overlaps(self, start: datetime, end: datetime) -> bool:
        return overlaps(self.starts_at, self.ends_at, start, end)
