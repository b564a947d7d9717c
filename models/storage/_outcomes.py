"""How changes ended, as the change success score reads them (issue 33): one `Ended` per change whose outcome was
recorded in a range, a completed change that a rollback of its own reverted (`changeflow rollback`) carrying when
that rollback succeeded, and whether a review due was recorded."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlmodel import Session

from ..domain import AuditAction, Ended
from ._tables import AuditEvent, ChangeRequest


def ended_changes(session: Session, since: datetime, until: datetime, service: str | None = None,
                  services: list[str] | None = None) -> list[Ended]:
    """The changes that ended in [since, until) (of `service`, or of `services`), oldest first."""
    t = ChangeRequest.__table__.c  # type: ignore[attr-defined]
    reverts = (select(t.rolls_back.label("key"), func.min(t.ended_at).label("at"))
               .where(t.rolls_back.is_not(None), t.outcome == "succeeded").group_by(t.rolls_back).subquery())
    query = (select(t.key, t.service, t.type, t.outcome, t.created_at, t.ended_at, t.incident_severity,
                    t.review_due_at, reverts.c.at)
             .outerjoin(reverts, reverts.c.key == t.key)
             .where(t.ended_at >= since, t.ended_at < until, t.outcome.is_not(None)))
    if service is not None:
        query = query.where(t.service == service)
    if services is not None:
        query = query.where(t.service.in_(services))
    rows = session.execute(query.order_by(t.ended_at, t.id)).all()
    due = [row.key for row in rows if row.review_due_at is not None]
    reviewed: set[str] = set()
    for chunk in range(0, len(due), 500):
        reviewed.update(session.execute(select(AuditEvent.change_key).where(
            AuditEvent.change_key.in_(due[chunk:chunk + 500]),
            AuditEvent.action == AuditAction.review_recorded.value)).scalars())
    return [Ended(row.service, row.type, row.outcome, row.created_at, row.ended_at, row.incident_severity,
                  row.review_due_at is not None, row.key in reviewed, reverted_at=row.at) for row in rows]
