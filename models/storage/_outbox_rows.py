"""The outbox's rows: written once per idempotency key, claimed under a lease, updated as they are sent, and a
message that failed for good recorded in the audit trail. The SQL only; when to retry, where to fall back and how
to send is `notifications/_outbox.py`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from ..domain import AuditAction
from ._audit import append_event
from ._tables import Notification

_TABLE = Notification.__table__
SUBJECT_LIMIT = 300
ERROR_LIMIT = 2000


def insert_notification_once(session: Session, *, key: str, change_key: str | None, event: str, recipient: str,
                             channel: dict[str, Any], subject: str, text: str, markdown: str, html: str,
                             now: datetime) -> bool:
    """Write a pending notification unless one with its idempotency key exists; True when it was new."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(_TABLE).values(
        idempotency_key=key, change_key=change_key, event=event, recipient=recipient, channel=channel,
        subject=subject[:SUBJECT_LIMIT], body_text=text, body_markdown=markdown, body_html=html, state="pending",
        attempts=0, next_attempt_at=now, last_error="", created_at=now,
    ).on_conflict_do_nothing(index_elements=["idempotency_key"]).returning(_TABLE.c.id)
    # RETURNING, not rowcount: psycopg reports -1 for ON CONFLICT DO NOTHING on PostgreSQL.
    return session.execute(statement).first() is not None


def claim_due_notifications(session: Session, *, now: datetime, lease_until: datetime, limit: int,
                            change_key: str | None = None) -> list[Notification]:
    """The due rows (pending, or sending under a lease that ran out), oldest first, each leased until
    `lease_until`: a sender that dies mid-send leaves its rows to be picked up again after that."""
    query = (select(Notification)
             .where(col(Notification.state).in_(("pending", "sending")), col(Notification.next_attempt_at) <= now)
             .order_by(col(Notification.next_attempt_at), col(Notification.id))
             .limit(limit))
    if change_key is not None:
        query = query.where(Notification.change_key == change_key)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)  # two senders never claim one row
    rows = list(session.exec(query))
    if rows:
        session.execute(update(Notification).where(col(Notification.id).in_([row.id for row in rows]))
                        .values(state="sending", next_attempt_at=lease_until))
    return rows


def update_notification(session: Session, notification_id: int, **values: Any) -> None:
    if "last_error" in values:
        values["last_error"] = values["last_error"][:ERROR_LIMIT]
    session.execute(update(Notification).where(col(Notification.id) == notification_id).values(**values))


def record_notification_failed(session: Session, row: Notification, *, attempts: int, error: str,
                               channel: str, fallback: str | None) -> None:
    """Failed for good: the row says so and the audit trail records it (`channel`, `fallback`: described
    without their secrets)."""
    update_notification(session, row.id, state="failed", attempts=attempts, last_error=error)
    append_event(session, actor="notifications", action=AuditAction.notification_failed.value,
                 change_key=row.change_key, data={
                     "notification": row.id, "event": row.event, "recipient": row.recipient, "channel": channel,
                     "attempts": attempts, "error": error[:500], "fallback": fallback})


def list_notifications(session: Session, *, state: str | None = None, change_key: str | None = None,
                       limit: int = 100) -> list[Notification]:
    query = select(Notification).order_by(col(Notification.id).desc()).limit(limit)
    if state:
        query = query.where(Notification.state == state)
    if change_key:
        query = query.where(Notification.change_key == change_key)
    return list(session.exec(query))
