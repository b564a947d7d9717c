"""The calendar: an environment's windows and freezes over a range, each with the changes planned in it and the
undated changes that will take it (issue 32). Read only; the rules it shows are the scheduling service's."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select

from ..domain import overlaps, planned_span, scheduled_windows
from ..storage import ChangeRequest, MaintenanceWindow
from ._scheduling import SchedulingService
from ._unit_of_work import UnitOfWork


@dataclass(frozen=True)
class CalendarEntry:
    """A window or freeze in the calendar, with the changes planned in it."""

    kind: str  # a window of policies.yaml (weekly, monthly, ...), ad_hoc or freeze
    title: str
    service: str | None  # None: every service
    freeze: bool
    starts_at: datetime
    ends_at: datetime
    changes: tuple[str, ...]
    # Active changes filed without a date whose next allowed window this is (after their notice, clear of a
    # freeze of their service): where they will run unless someone dates them (issue 32).
    undated: tuple[str, ...] = ()


@dataclass(frozen=True)
class Calendar:
    start: datetime
    end: datetime
    entries: list[CalendarEntry]  # by start
    changes: list[ChangeRequest]  # planned in the range, by planned start
    undated: list[ChangeRequest] = field(default_factory=list)  # waiting for their next window, in the range
    environment: str = ""


class CalendarService:
    def __init__(self, uow: UnitOfWork, scheduling: SchedulingService):
        self._uow = uow
        self._scheduling = scheduling

    def calendar(self, start: datetime, end: datetime, environment: str | None = None) -> Calendar:
        """The windows and freezes of `environment` (None: the default one) between `start` and `end`, each with
        the changes planned in it: by the same span and overlap rule as the freeze and clash checks (a change
        without an end takes the default length), so the calendar never shows a change outside a window that
        refused it. An active change filed without a date is shown in the window it holds: the first allowed one that
        no related change holds before it."""
        environment, _ = self._uow.org.policies.environment(environment)
        slots = self._scheduling.slots
        spans: list[tuple[str, str, str | None, bool, datetime, datetime]] = [
            (w.kind, w.title, None, False, w.starts_at, w.ends_at)
            for w in scheduled_windows(self._uow.org.policies.windows_in(environment), start, end)]
        with self._uow.read() as session:
            spans += [("freeze" if w.freeze else w.kind, w.title, w.service, w.freeze, w.starts_at, w.ends_at)
                      for w in session.execute(select(MaintenanceWindow).where(
                          MaintenanceWindow.starts_at < end, MaintenanceWindow.ends_at > start,
                          slots.holds_in(environment)).order_by(MaintenanceWindow.starts_at)).scalars()]
            changes = list(session.execute(select(ChangeRequest).where(
                ChangeRequest.planned_start < end, ChangeRequest.planned_start >= start - timedelta(days=1),
                slots.runs_in(environment)).order_by(ChangeRequest.planned_start)).scalars())
            # Undated changes where they queue: each in the first window no related change holds before it.
            taken = {h.key: h.slot.window for h in slots.held(session, environment)
                     if h.slot.window is not None and h.slot.starts_at < end and h.slot.ends_at > start}
            waiting = [(change, taken[change.key]) for change in session.execute(select(ChangeRequest).where(
                ChangeRequest.key.in_(list(taken))).order_by(ChangeRequest.id)).scalars()]
        entries = [CalendarEntry(kind, title, service, freeze, starts_at, ends_at, tuple(
            c.key for c in changes if c.planned_start is not None
            and overlaps(*planned_span(c.planned_start, c.planned_end), starts_at, ends_at)
            and service in (None, c.service)), tuple(
            c.key for c, w in waiting if not freeze and (w.kind, w.starts_at, w.service) == (kind, starts_at, service)))
            for kind, title, service, freeze, starts_at, ends_at in spans]
        return Calendar(start, end, sorted(entries, key=lambda e: e.starts_at), changes, [c for c, _ in waiting],
                        environment)
