"""The outbox: every notification is written first (idempotently), then sent by whoever delivers due rows.

A flow that is resumed or retried enqueues the same key again and nothing happens; a crash between the
write and the send loses nothing because the row stays pending until a sender marks it sent.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable

from sqlmodel import Session

from models import (Database, Notification, NotFound, claim_due_notifications, insert_notification_once,
                    list_notifications, record_notification_failed, update_notification, utcnow)

from ._channels import Channel, DeliveryError, Outbound, describe_target
from ._templates import Rendered

DEFAULT_LEASE = timedelta(minutes=2)
MAX_BACKOFF_S = 900.0


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
    return insert_notification_once(session, key=key, change_key=change_key, event=event, recipient=recipient,
                                    channel=channel, subject=rendered.subject, text=rendered.text,
                                    markdown=rendered.markdown, html=rendered.html, now=utcnow())


@dataclass(frozen=True)
class DeliveryReport:
    sent: int
    failed: int
    retrying: int


def retry_delay(attempts: int, base_s: float, retry_after_s: float | None) -> float:
    """Exponential backoff with jitter (half to full of the doubled delay); never sooner than Retry-After."""
    ceiling = min(base_s * 2 ** (attempts - 1), MAX_BACKOFF_S)
    delay = random.uniform(ceiling / 2, ceiling)
    return max(delay, retry_after_s or 0.0)


NextChannel = Callable[[str, dict], "tuple[int, dict] | None"]
# Puts the recipient's secrets into a message as it is sent, for the channel it goes to (PersonalSecrets.fill).
FillSecrets = Callable[[Outbound, str], Outbound]


class Outbox:
    def __init__(
        self,
        db: Database,
        channels: dict[str, Channel],
        *,
        max_attempts: int = 5,
        backoff_s: float = 5.0,
        next_channel: NextChannel | None = None,
        fill_secrets: FillSecrets | None = None,
        lease: timedelta = DEFAULT_LEASE,
    ):
        self.db = db
        self.channels = channels
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        # Given a recipient and the channel that failed for good: (index, channel) of the one to try next.
        self.next_channel = next_channel
        self.fill_secrets = fill_secrets
        self.lease = lease

    def _claim(self, limit: int, change_key: str | None) -> list[Notification]:
        now = utcnow()
        with self.db.write() as session:
            return claim_due_notifications(session, now=now, lease_until=now + self.lease, limit=limit,
                                           change_key=change_key)

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
                raise DeliveryError(f"no sender configured for channel type {channel_type!r}", permanent=True)
            message = Outbound(row.change_key, row.event, row.recipient, row.subject, row.body_text,
                               row.body_markdown, row.body_html, delivery_id=row.idempotency_key)
            if self.fill_secrets is not None:
                message = self.fill_secrets(message, channel_type)
            channel.send(message, row.channel)
        except Exception as exc:  # noqa: BLE001 - every failure is recorded on the row
            if isinstance(exc, DeliveryError):
                error, permanent, retry_after = str(exc), exc.permanent, exc.retry_after_s
            else:
                # Not our error type: its text may quote a URL; keep only the kind of failure.
                # An address that cannot be parsed (a port out of range) will not parse on a retry either.
                error, permanent, retry_after = (f"{describe_target(row.channel)}: {type(exc).__name__}",
                                                 isinstance(exc, ValueError), None)
            if permanent or attempts >= self.max_attempts:
                self._fail(row, attempts, error)
                return "failed"
            self._finish(row.id, state="pending", attempts=attempts, last_error=error,
                         next_attempt_at=utcnow() + timedelta(seconds=retry_delay(attempts, self.backoff_s,
                                                                                    retry_after)))
            return "pending"
        self._finish(row.id, state="sent", attempts=attempts, sent_at=utcnow(), last_error="")
        return "sent"

    def _fail(self, row: Notification, attempts: int, error: str) -> None:
        """Mark failed, record it in the audit trail, and queue the message on the person's next channel."""
        fallback = self.next_channel(row.recipient, row.channel) if self.next_channel else None
        with self.db.write() as session:
            record_notification_failed(session, row, attempts=attempts, error=error,
                                       channel=describe_target(row.channel),
                                       fallback=describe_target(fallback[1]) if fallback else None)
            if fallback is not None:
                index, channel = fallback
                enqueue(session, key=f"{row.idempotency_key}#channel{index}", change_key=row.change_key,
                        event=row.event, recipient=row.recipient, channel=channel,
                        rendered=Rendered(row.subject, row.body_text, row.body_markdown, row.body_html))

    def retry(self, notification_id: int) -> Notification:
        """Put a failed notification back in the queue, due now, with a fresh attempt budget."""
        with self.db.write() as session:
            row = session.get(Notification, notification_id)
            if row is None:
                raise NotFound(f"no notification {notification_id}")
            update_notification(session, notification_id, state="pending", attempts=0, next_attempt_at=utcnow())
        return row

    def _finish(self, notification_id: int, **values) -> None:
        with self.db.write() as session:
            update_notification(session, notification_id, **values)

    def list(self, *, state: str | None = None, change_key: str | None = None, limit: int = 100) -> list[Notification]:
        with self.db.read() as session:
            return list_notifications(session, state=state, change_key=change_key, limit=limit)
