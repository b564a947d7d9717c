"""The outbox: every notification is written first (idempotently), then sent by whoever delivers due rows.

A flow that is resumed or retried enqueues the same key again and nothing happens; a crash between the
write and the send loses nothing because the row stays pending until a sender marks it sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session

from models import Database, Notification
from models._types import utcnow

from ._channels import Channel, DeliveryError, Outbound
from ._templates import Rendered

MAX_ATTEMPTS = 5
LEASE = timedelta(minutes=2)
_TABLE = Notification.__table__


def idempotency_key(change_key: str | None, event: str, recipient: str, round_: int | str) -> str:
    return f"{change_key or '-'}:{event}:{recipient}:{round_}"


def enqueue(
    session: Session,
    *,
    key: str,
    change_key: str | None,
    event: str,
    recipient: str,
    channel: dict,
    rendered: Rendered,
) -> bool:
    """Write a notification unless its key exists; True when it was new."""
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    now = utcnow()
    statement = insert(_TABLE).values(
        idempotency_key=key,
        change_key=change_key,
        event=event,
        recipient=recipient,
        channel=channel,
        subject=rendered.subject[:300],
        body_text=rendered.text,
        body_markdown=rendered.markdown,
        body_html=rendered.html,
        state="pending",
        attempts=0,
        next_attempt_at=now,
        last_error="",
        created_at=now,
    ).on_conflict_do_nothing(index_elements=["idempotency_key"])
    return session.execute(statement).rowcount == 1


@dataclass(frozen=True)
class DeliveryReport:
    sent: int
    failed: int
    retrying: int


class Outbox:
    def __init__(self, db: Database, channels: dict[str, Channel]):
        self.db = db
        self.channels = channels

    def _claim(self, limit: int, change_key: str | None) -> list[Notification]:
        now = utcnow()
        with self.db.write() as session:
            stmt = (
                select(Notification)
                .where(Notification.state.in_(("pending", "sending")), Notification.next_attempt_at <= now)
                .order_by(Notification.next_attempt_at, Notification.id)
                .limit(limit)
            )
            if change_key is not None:
                stmt = stmt.where(Notification.change_key == change_key)
            if self.db.dialect == "postgresql":
                stmt = stmt.with_for_update(skip_locked=True)
            rows = list(session.execute(stmt).scalars())
            if rows:
                # A lease: a sender that dies mid-send leaves the row to be picked up again after it expires.
                session.execute(
                    update(Notification)
                    .where(Notification.id.in_([r.id for r in rows]))
                    .values(state="sending", next_attempt_at=now + LEASE)
                )
            return rows

    def deliver_due(self, *, limit: int = 100, change_key: str | None = None) -> DeliveryReport:
        sent = failed = retrying = 0
        for row in self._claim(limit, change_key):
            outcome = self._send(row)
            sent += outcome == "sent"
            failed += outcome == "failed"
            retrying += outcome == "pending"
        return DeliveryReport(sent, failed, retrying)

    def _send(self, row: Notification) -> str:
        channel_type = row.channel.get("type", "console")
        channel = self.channels.get(channel_type)
        attempts = row.attempts + 1
        try:
            if channel is None:
                raise DeliveryError(f"no sender for channel type {channel_type!r}", permanent=True)
            channel.send(
                Outbound(row.change_key, row.event, row.recipient, row.subject, row.body_text, row.body_markdown,
                         row.body_html),
                row.channel,
            )
        except Exception as exc:  # noqa: BLE001 - every failure is recorded on the row
            permanent = isinstance(exc, DeliveryError) and exc.permanent
            state = "failed" if permanent or attempts >= MAX_ATTEMPTS else "pending"
            backoff = timedelta(seconds=min(2 ** attempts * 5, 900))
            self._finish(row.id, state=state, attempts=attempts, last_error=str(exc)[:2000],
                         next_attempt_at=utcnow() + backoff)
            return state
        self._finish(row.id, state="sent", attempts=attempts, sent_at=utcnow(), last_error="")
        return "sent"

    def _finish(self, notification_id: int, **values) -> None:
        with self.db.write() as session:
            session.execute(update(Notification).where(Notification.id == notification_id).values(**values))

    def list(self, *, state: str | None = None, change_key: str | None = None, limit: int = 100) -> list[Notification]:
        stmt = select(Notification).order_by(Notification.id.desc()).limit(limit)
        if state:
            stmt = stmt.where(Notification.state == state)
        if change_key:
            stmt = stmt.where(Notification.change_key == change_key)
        with self.db.read() as session:
            return list(session.execute(stmt).scalars())
