"""How changes ended, as the change success score reads them (issue 33): one `Ended` per change whose outcome was
recorded in a range (a completed change that a rollback of its own reverted carrying when that rollback succeeded),
for a service's standing; and the same counted by the database, for the score reports."""

from __future__ import annotations

from datetime import datetime

from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import and_, case, exists, false, func, select, text
from sqlmodel import Session

from ..domain import AuditAction, Ended, Tally
from ._tables import AuditEvent, ChangeRequest


def ended_changes(session: Session, since: datetime, until: datetime, service: str | None = None) -> list[Ended]:
    """The changes that ended in [since, until) (of `service`), oldest first."""
    t = ChangeRequest.__table__.c  # type: ignore[attr-defined]
    reverts = _reverted()
    query = (select(t.service, t.type, t.outcome, t.created_at, t.ended_at, t.incident_severity, reverts.c.at)
             .outerjoin(reverts, reverts.c.key == t.key)
             .where(t.ended_at >= since, t.ended_at < until, t.outcome.is_not(None)))
    if service is not None:
        query = query.where(t.service == service)
    return [Ended(row.service, row.type, row.outcome, row.created_at, row.ended_at, row.incident_severity,
                  reverted_at=row.at) for row in session.execute(query.order_by(t.ended_at, t.id))]


def ended_tallies(session: Session, since: datetime, until: datetime, emergency_types: Sequence[str], *,
                  by: str = "service", service: str | None = None,
                  recent_from: datetime | None = None) -> dict[tuple[str, bool], Tally]:
    """The changes that ended in [since, until) counted per service (`by="service"`) or per day (`by="day"`,
    YYYY-MM-DD) and whether they ended at or after `recent_from` (one pass for a 90-day and a 30-day score), by the
    database (a year of the 1M history is 330,000 changes): outcome as it reads now (a completed change undone by a
    rollback of its own counts rolled back), emergency or not, review due and recorded; and, for the emergency fixes
    that succeeded, the hours from filing to success per incident severity."""
    t = ChangeRequest.__table__.c  # type: ignore[attr-defined]
    reverted = _reverted()
    outcome = case((and_(t.outcome == "succeeded", reverted.c.key.is_not(None)), "rolled_back"), else_=t.outcome)
    group = t.service if by == "service" else func.date(t.ended_at)
    recent = t.ended_at >= recent_from if recent_from is not None else false()
    due = t.review_due_at.is_not(None)
    # Only a change whose review was due is looked up in the trail (CASE evaluates its branch on demand).
    reviewed = case((due, exists().where(AuditEvent.change_key == t.key,
                                         AuditEvent.action == AuditAction.review_recorded.value)), else_=false())
    without_jit(session)
    scope = [t.ended_at >= since, t.ended_at < until, t.outcome.is_not(None)]
    if service is not None:
        scope.append(t.service == service)
    tallies: dict[tuple[str, bool], Tally] = defaultdict(Tally)
    urgent = set(emergency_types)
    counted = select(group.label("g"), recent.label("recent"), t.type, outcome.label("outcome"), due.label("due"),
                     reviewed.label("done"), func.count().label("n")
                     ).outerjoin(reverted, reverted.c.key == t.key).where(*scope)
    # (A constant in GROUP BY is a column's position to SQLite: the split is grouped only where there is one.)
    split = [recent] if recent_from is not None else []
    for row in session.execute(counted.group_by(group, *split, t.type, outcome, due, reviewed)):
        tallies[str(row.g)[:10], bool(row.recent)].add(int(row.n), outcome=row.outcome, emergency=row.type in urgent,
                                                       review_due=bool(row.due), review_done=bool(row.done))
    fixes = (select(group.label("g"), recent.label("recent"), t.incident_severity, t.created_at, t.ended_at)
             .outerjoin(reverted, reverted.c.key == t.key)
             .where(*scope, t.type.in_(list(urgent)), outcome == "succeeded", t.incident_severity.is_not(None)))
    for row in session.execute(fixes):
        tallies[str(row.g)[:10], bool(row.recent)].restore.setdefault(row.incident_severity, []).append(
            (row.ended_at - row.created_at).total_seconds() / 3600)
    return dict(tallies)


def _reverted():
    """(key, at): each completed change a rollback of its own undid, and when the first such rollback succeeded."""
    t = ChangeRequest.__table__.c  # type: ignore[attr-defined]
    return (select(t.rolls_back.label("key"), func.min(t.ended_at).label("at"))
            .where(t.rolls_back.is_not(None), t.outcome == "succeeded").group_by(t.rolls_back).subquery())


def without_jit(session: Session) -> None:
    """PostgreSQL's JIT compiles a large aggregate before running it: 1.5 s of compiling for a 0.1 s query over a
    year of the 1M history (EXPLAIN ANALYZE). Off for this transaction only; nothing on SQLite."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL jit = off"))
