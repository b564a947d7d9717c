"""Scheduling: maintenance windows and freezes, and the clashes a planned change has with them and with other
changes on the same service (checked at submit and again when the change is scheduled)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import select
from sqlmodel import Session

from ..domain import AuditAction, ChangeState, InputError, overlaps, planned_span
from ..storage import ChangeRequest, MaintenanceWindow, append_event
from ._unit_of_work import UnitOfWork

# States in which a change still holds its slot on the calendar.
ACTIVE_STATES = (ChangeState.submitted, ChangeState.awaiting_approval, ChangeState.approved, ChangeState.scheduled,
                 ChangeState.implementing, ChangeState.verifying)


class Planned(Protocol):
    service: str
    planned_start: datetime | None
    planned_end: datetime | None


class SchedulingService:
    def __init__(self, uow: UnitOfWork):
        self._uow = uow

    def clashes(self, session: Session, request: Planned, exclude: str | None = None) -> list[str]:
        """Freezes and other active changes on the same service that the planned window overlaps."""
        if request.planned_start is None:
            return []
        start, end = planned_span(request.planned_start, request.planned_end)
        clashes = []
        freezes = session.execute(
            select(MaintenanceWindow).where(
                MaintenanceWindow.freeze.is_(True),
                MaintenanceWindow.starts_at < end, MaintenanceWindow.ends_at > start,
                (MaintenanceWindow.service.is_(None)) | (MaintenanceWindow.service == request.service),
            )
        ).scalars()
        for freeze in freezes:
            clashes.append(f"planned window falls in the freeze '{freeze.title or 'freeze'}' "
                           f"({freeze.starts_at:%Y-%m-%d %H:%M} to {freeze.ends_at:%Y-%m-%d %H:%M} UTC)")
        others = session.execute(
            select(ChangeRequest).where(
                ChangeRequest.service == request.service,
                ChangeRequest.state.in_([s.value for s in ACTIVE_STATES]),
                ChangeRequest.planned_start.is_not(None), ChangeRequest.planned_start < end,
            )
        ).scalars()
        for other in others:
            if other.key == exclude or other.planned_start is None:
                continue
            other_start, other_end = planned_span(other.planned_start, other.planned_end)
            if overlaps(start, end, other_start, other_end):
                clashes.append(f"conflicts with {other.key} ({other.title}) on {other.service}, planned "
                               f"{other_start:%Y-%m-%d %H:%M} to {other_end:%H:%M} UTC")
        return clashes

    def schedule_clashes(self, key: str) -> list[str]:
        """For a recorded change: the freezes and other changes its window now overlaps (checked again when
        it is scheduled, since a freeze may have been declared after it was submitted)."""
        with self._uow.read() as session:
            change = self._uow.load(session, key)
            return self.clashes(session, change, exclude=change.key)

    def add_window(self, *, starts_at: datetime, ends_at: datetime, kind: str = "ad_hoc", title: str = "",
                   service: str | None = None, freeze: bool = False, actor: str = "changeflow") -> MaintenanceWindow:
        if ends_at <= starts_at:
            raise InputError("end: must be after start", [("end", "before start")])
        with self._uow.write() as session:
            window = MaintenanceWindow(starts_at=starts_at, ends_at=ends_at, kind=kind, title=title,
                                       service=service, freeze=freeze)
            session.add(window)
            session.flush()
            append_event(session, actor=actor, action=AuditAction.policy_decision.value, at=self._uow.clock(),
                         data={"window": window.id, "freeze": freeze, "title": title, "service": service,
                               "starts_at": starts_at.isoformat(), "ends_at": ends_at.isoformat()})
            return window

    def windows_between(self, start: datetime, end: datetime) -> list[MaintenanceWindow]:
        with self._uow.read() as session:
            return list(session.execute(
                select(MaintenanceWindow).where(MaintenanceWindow.starts_at < end,
                                                MaintenanceWindow.ends_at > start)
                .order_by(MaintenanceWindow.starts_at)).scalars())

    def changes_planned_between(self, start: datetime, end: datetime) -> list[ChangeRequest]:
        with self._uow.read() as session:
            return list(session.execute(
                select(ChangeRequest).where(ChangeRequest.planned_start < end,
                                            ChangeRequest.planned_start >= start - timedelta(days=1))
                .order_by(ChangeRequest.planned_start)).scalars())
