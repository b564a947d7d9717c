"""The calendar: an environment's windows and freezes over a range, each with the changes planned in it and the
undated changes that will take it (issue 32). Read only; the rules it shows are the scheduling service's."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlmodel import Session

from ..domain import WindowSpec, change_type, overlaps, planned_span, scheduled_windows
from ..storage import ChangeRequest, MaintenanceWindow
from ._scheduling import ACTIVE_STATES, SchedulingService
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
        refused it. An active change filed without a date is shown in its next allowed window."""
        environment, _ = self._uow.org.policies.environment(environment)
        scheduling = self._scheduling
        spans: list[tuple[str, str, str | None, bool, datetime, datetime]] = [
            (w.kind, w.title, None, False, w.starts_at, w.ends_at)
            for w in scheduled_windows(self._uow.org.policies.windows_in(environment), start, end)]
        with self._uow.read() as session:
            spans += [("freeze" if w.freeze else w.kind, w.title, w.service, w.freeze, w.starts_at, w.ends_at)
                      for w in session.execute(select(MaintenanceWindow).where(
                          MaintenanceWindow.starts_at < end, MaintenanceWindow.ends_at > start,
                          scheduling.holds_in(environment)).order_by(MaintenanceWindow.starts_at)).scalars()]
            changes = list(session.execute(select(ChangeRequest).where(
                ChangeRequest.planned_start < end, ChangeRequest.planned_start >= start - timedelta(days=1),
                scheduling.runs_in(environment)).order_by(ChangeRequest.planned_start)).scalars())
            waiting = [(change, window) for change in self._undated(session, environment)
                       if (window := self._next_allowed_window(session, change)) is not None
                       and window.starts_at < end and window.ends_at > start]
        entries = [CalendarEntry(kind, title, service, freeze, starts_at, ends_at, tuple(
            c.key for c in changes if c.planned_start is not None
            and overlaps(*planned_span(c.planned_start, c.planned_end), starts_at, ends_at)
            and service in (None, c.service)), tuple(
            c.key for c, w in waiting if not freeze and (w.kind, w.starts_at, w.service) == (kind, starts_at, service)))
            for kind, title, service, freeze, starts_at, ends_at in spans]
        return Calendar(start, end, sorted(entries, key=lambda e: e.starts_at), changes, [c for c, _ in waiting],
                        environment)

    def _undated(self, session: Session, environment: str) -> list[ChangeRequest]:
        """Active changes of the environment without a date, of the types that wait for a window there."""
        policies = self._uow.org.policies
        scheduled_types = [name for name in policies.types if change_type(policies, name, environment).scheduled]
        return list(session.execute(select(ChangeRequest).where(
            ChangeRequest.planned_start.is_(None), ChangeRequest.type.in_(scheduled_types),
            self._scheduling.runs_in(environment),
            ChangeRequest.state.in_([s.value for s in ACTIVE_STATES])).order_by(ChangeRequest.id)).scalars())

    def _next_allowed_window(self, session: Session, change: ChangeRequest) -> WindowSpec | None:
        """The first window of the change's service that opens once its notice is served and that no freeze of
        its service overlaps: where the window gate will let it start."""
        rules = self._uow.rules(change)
        after = max(self._uow.clock(), change.created_at + rules.policy.notice)
        horizon = after + timedelta(days=100)
        freezes = [(w.starts_at, w.ends_at) for w in session.execute(select(MaintenanceWindow).where(
            MaintenanceWindow.freeze.is_(True), MaintenanceWindow.starts_at < horizon,
            MaintenanceWindow.ends_at > after,
            self._scheduling.holds_in(change.environment, change.service))).scalars()]
        return next((w for w in sorted(self._scheduling.windows(session, change.service, change.environment, after,
                                                                horizon), key=lambda w: w.starts_at)
                     if w.ends_at > after and not any(overlaps(w.starts_at, w.ends_at, *f) for f in freezes)), None)
