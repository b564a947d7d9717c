"""Writes checklist results idempotently (a resumed flow must never run or record an item twice)."""

from __future__ import annotations

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session

from ._tables import ChecklistResult
from ._types import utcnow

_TABLE = ChecklistResult.__table__


def insert_result(session: Session, change_key: str, phase: str, step: int, item, outcome, actor: str) -> bool:
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(_TABLE).values(
        change_key=change_key, phase=phase, step=step, item_id=item.id, title=item.title, kind=item.kind,
        required=item.required, passed=outcome.passed, detail=outcome.detail[:2000], evidence=outcome.evidence,
        actor=actor, recorded_at=utcnow(),
    ).on_conflict_do_nothing(index_elements=["change_key", "phase", "step", "item_id"])
    return session.execute(statement).rowcount == 1
