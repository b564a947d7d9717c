"""Where each change sits on the calendar (issue 32): a dated change holds its planned span; an undated one of a type
that waits for a window holds the whole of the first allowed window that no related change holds before it. Read
by the clash check at submit, the window gate and the calendar, so all three tell the same story."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import ColumnElement, select
from sqlmodel import Session

from ..domain import ChangeState, WindowSpec, change_type, overlaps, planned_span, scheduled_windows
from ..storage import ChangeRequest, MaintenanceWindow, in_environment
from ._unit_of_work import UnitOfWork

# States in which a change still holds its slot on the calendar.
ACTIVE_STATES = (ChangeState.submitted, ChangeState.awaiting_approval, ChangeState.approved, ChangeState.scheduled,
                 ChangeState.implementing, ChangeState.verifying)
_RUNNING = (ChangeState.implementing.value, ChangeState.verifying.value)
# How far ahead an undated change looks for a window.
_HORIZON = timedelta(days=100)


class Planned(Protocol):
    type: str
    service: str
    environment: str | None
    planned_start: datetime | None
    planned_end: datetime | None


@dataclass(frozen=True)
class Slot:
    """The span a change holds on the calendar; `window` is the one an undated change will take."""

    starts_at: datetime
    ends_at: datetime
    window: WindowSpec | None = None

    def covers(self, moment: datetime) -> bool:
        return self.starts_at <= moment < self.ends_at


def describe_window(window: WindowSpec) -> str:
    return f"{window.title or window.kind} {window.starts_at:%a %Y-%m-%d %H:%M}-{window.ends_at:%H:%M} UTC"


@dataclass(frozen=True)
class Holding:
    """An active change and the slot it holds."""

    key: str
    service: str
    slot: Slot


def _queue_order(change: ChangeRequest) -> tuple:
    """Undated changes take windows: running ones first (they are using theirs), then approved ones in the order
    they were approved, then the rest in filing order. Approval entitles a change to a window, so an approved change
    is never pushed back by one approved after it, and a filing nobody approves holds up no approved change."""
    if change.state in _RUNNING:
        return (0, change.id)
    if change.approved_at is not None:
        return (1, change.approved_at, change.id)
    return (2, change.id)


class Slots:
    def __init__(self, uow: UnitOfWork):
        self._uow = uow

    def runs_in(self, environment: str | None) -> ColumnElement[bool]:
        """Changes that run in `environment` (None: the default one, which also holds changes filed before
        environments existed)."""
        policies = self._uow.org.policies
        return in_environment(policies.environment(environment)[0], policies.default_environment)

    def holds_in(self, environment: str | None, service: str | None = None) -> ColumnElement[bool]:
        """Ad hoc windows and freezes that hold in `environment` (its own and every environment's) and, given a
        service, for it (its own and every service's)."""
        name, _ = self._uow.org.policies.environment(environment)
        held = MaintenanceWindow.environment.is_(None) | (MaintenanceWindow.environment == name)  # type: ignore
        if service is None:
            return held
        return held & (MaintenanceWindow.service.is_(None) | (MaintenanceWindow.service == service))  # type: ignore

    def windows(self, session: Session, service: str, environment: str | None, start: datetime,
                end: datetime) -> list[WindowSpec]:
        """The recurring windows of the environment and the ad hoc ones of the service there, between the two."""
        generated = scheduled_windows(self._uow.org.policies.windows_in(environment), start, end)
        ad_hoc = [WindowSpec(w.kind, w.starts_at, w.ends_at, w.title, w.service)
                  for w in session.execute(select(MaintenanceWindow).where(
                      MaintenanceWindow.freeze.is_(False), MaintenanceWindow.starts_at < end + timedelta(days=1),
                      MaintenanceWindow.ends_at > start - timedelta(days=1),
                      self.holds_in(environment, service))).scalars()]
        return generated + ad_hoc

    def next_window(self, session: Session, service: str, environment: str | None, after: datetime,
                    length: timedelta) -> str | None:
        """The first window starting at or after `after` that a change of this length fits in, described."""
        fitting = sorted((w for w in self.windows(session, service, environment, after, after + timedelta(days=100))
                          if w.starts_at >= after and w.ends_at - w.starts_at >= length), key=lambda w: w.starts_at)
        return describe_window(fitting[0]) if fitting else None

    def held(self, session: Session, environment: str | None, exclude: str | None = None) -> list[Holding]:
        """What every active change of the environment holds: dated ones their planned span; undated ones, in the
        queue's order, the first allowed window nobody related holds before them."""
        active = [c for c in session.execute(select(ChangeRequest).where(
            self.runs_in(environment), ChangeRequest.state.in_([s.value for s in ACTIVE_STATES]))
            .order_by(ChangeRequest.id)).scalars() if c.key != exclude]
        held = [Holding(c.key, c.service, Slot(*planned_span(c.planned_start, c.planned_end)))
                for c in active if c.planned_start is not None]
        for change in sorted((c for c in active if c.planned_start is None), key=_queue_order):
            slot = self.first_free(session, change, change.created_at, held)
            if slot is not None:
                held.append(Holding(change.key, change.service, slot))
        return held

    def slot_of(self, session: Session, change: Planned, filed_at: datetime, key: str | None = None) -> Slot | None:
        """The span `change` holds (a recorded one: pass its key) or would hold if it were filed now; None for an
        undated change that runs when approved (`window: any`) or finds no window within 100 days."""
        if change.planned_start is not None:
            return Slot(*planned_span(change.planned_start, change.planned_end))
        if key is not None:
            return next((h.slot for h in self.held(session, change.environment) if h.key == key), None)
        return self.first_free(session, change, filed_at, self.held(session, change.environment))

    def related(self, service: str) -> dict[str, list[str]]:
        """The services whose changes clash with one on `service` (policies.yaml `conflict_depth` directory.yaml
        `depends_on` steps, either way), each with its path from `service`."""
        return self._uow.org.directory.related(service, self._uow.org.policies.conflict_depth)

    def first_free(self, session: Session, change: Planned, filed_at: datetime, held: list[Holding]) -> Slot | None:
        """The first window of the change's service that opens once its notice is served, that no freeze of its
        service overlaps and that no change on a related service holds (None: its type does not wait for one)."""
        rules = change_type(self._uow.org.policies, change.type, change.environment)
        if not rules.scheduled:
            return None
        after = max(self._uow.clock(), filed_at + rules.policy.notice)
        horizon = after + _HORIZON
        related = self.related(change.service)
        taken = [(h.slot.starts_at, h.slot.ends_at) for h in held if h.service in related]
        taken += [(w.starts_at, w.ends_at) for w in session.execute(select(MaintenanceWindow).where(
            MaintenanceWindow.freeze.is_(True), MaintenanceWindow.starts_at < horizon,
            MaintenanceWindow.ends_at > after, self.holds_in(change.environment, change.service))).scalars()]
        window = next((w for w in sorted(self.windows(session, change.service, change.environment, after, horizon),
                                         key=lambda w: w.starts_at)
                       if w.ends_at > after and not any(overlaps(w.starts_at, w.ends_at, *t) for t in taken)), None)
        return Slot(window.starts_at, window.ends_at, window) if window is not None else None
