"""Writes checklist results idempotently (a resumed flow must never run or record an item twice)."""

from __future__ import annotations

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session

from ..domain import utcnow
from ._tables import ChecklistResult

_TABLE = ChecklistResult.__table__


def insert_result(session: Session, change_key: str, phase: str, step: int, item, outcome, actor: str) -> bool:
    """Insert one result unless (change, phase, step, item) has one; True when this call wrote it.

    RETURNING, not rowcount: with ON CONFLICT DO NOTHING psycopg reports rowcount -1 on PostgreSQL, which lost
    the audit event of every manual confirmation there."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(_TABLE).values(
        change_key=change_key, phase=phase, step=step, item_id=item.id, title=item.title, kind=item.kind,
        required=item.required, passed=outcome.passed, detail=outcome.detail[:2000], evidence=outcome.evidence,
        actor=actor, recorded_at=utcnow(),
    ).on_conflict_do_nothing(index_elements=["change_key", "phase", "step", "item_id"]).returning(_TABLE.c.id)
    return session.execute(statement).scalar_one_or_none() is not None
