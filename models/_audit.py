"""The tamper-evident audit trail: a hash chain of append-only events.

Each event's hash covers a canonical encoding of the event and the previous event's hash, so editing,
deleting or reordering any row breaks the chain from that row on; `audit_head` holds the last link so a
deleted tail is caught too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable

from sqlalchemy import select
from sqlmodel import Session

from ._tables import AuditEvent, AuditHead

GENESIS_HASH = "0" * 64


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _iso(at: datetime) -> str:
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_hash(
    seq: int,
    change_key: str | None,
    occurred_at: datetime,
    actor: str,
    action: str,
    from_state: str | None,
    to_state: str | None,
    data: str,
    prev_hash: str,
) -> str:
    encoded = "\x1f".join(
        (str(seq), change_key or "", _iso(occurred_at), actor, action, from_state or "", to_state or "", data, prev_hash)
    )
    return hashlib.sha256(encoded.encode()).hexdigest()


def lock_chain(session: Session) -> AuditHead:
    """Take the append lock and return the chain head.

    SQLite writers already hold the database lock (BEGIN IMMEDIATE); on PostgreSQL the head row is locked
    FOR UPDATE so concurrent appenders queue instead of forking the chain.
    """
    stmt = select(AuditHead).where(AuditHead.id == 1)
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    head = session.execute(stmt).scalar_one_or_none()
    if head is None:
        raise RuntimeError("audit_head row missing: run `changeflow db upgrade`")
    return head


def append_event(
    session: Session,
    *,
    actor: str,
    action: str,
    change_key: str | None = None,
    from_state: str | None = None,
    to_state: str | None = None,
    data: dict | None = None,
    at: datetime | None = None,
) -> AuditEvent:
    """Append one event in the caller's transaction (so it commits or rolls back with what it records)."""
    head = lock_chain(session)
    occurred_at = (at or datetime.now(timezone.utc)).astimezone(timezone.utc)
    encoded = canonical_json(data or {})
    seq = head.seq + 1
    digest = event_hash(seq, change_key, occurred_at, actor, action, from_state, to_state, encoded, head.hash)
    event = AuditEvent(
        seq=seq,
        change_key=change_key,
        occurred_at=occurred_at,
        actor=actor,
        action=action,
        from_state=from_state,
        to_state=to_state,
        data=encoded,
        prev_hash=head.hash,
        hash=digest,
    )
    session.add(event)
    head.seq, head.hash = seq, digest
    session.add(head)
    session.flush()
    return event


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    count: int
    first_broken_seq: int | None = None
    reason: str = ""


_VERIFY_COLUMNS = (
    AuditEvent.seq,
    AuditEvent.change_key,
    AuditEvent.occurred_at,
    AuditEvent.actor,
    AuditEvent.action,
    AuditEvent.from_state,
    AuditEvent.to_state,
    AuditEvent.data,
    AuditEvent.prev_hash,
    AuditEvent.hash,
)


def verify_rows(rows: Iterable[tuple], head: tuple[int, str] | None) -> VerifyResult:
    """Recompute the chain over rows ordered by seq; name the first event that does not link."""
    expected_seq, prev = 1, GENESIS_HASH
    count = 0
    for seq, change_key, occurred_at, actor, action, from_state, to_state, data, prev_hash, digest in rows:
        if seq != expected_seq:
            return VerifyResult(False, count, expected_seq, f"event {expected_seq} is missing (next stored is {seq})")
        if prev_hash != prev:
            return VerifyResult(False, count, seq, f"event {seq} does not link to event {seq - 1}")
        if event_hash(seq, change_key, occurred_at, actor, action, from_state, to_state, data, prev_hash) != digest:
            return VerifyResult(False, count, seq, f"event {seq} was altered (its hash does not match its content)")
        prev, expected_seq, count = digest, seq + 1, count + 1
    if head is not None and tuple(head) != (count, prev):
        return VerifyResult(
            False, count, count + 1, f"the chain ends at event {count} but the head records event {head[0]}"
        )
    return VerifyResult(True, count)


def verify_chain(session: Session) -> VerifyResult:
    head_row = session.execute(select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1)).first()
    rows = session.execute(
        select(*_VERIFY_COLUMNS).order_by(AuditEvent.seq).execution_options(yield_per=10_000)
    )
    return verify_rows(rows, tuple(head_row) if head_row else None)


def events_for(session: Session, change_key: str) -> list[AuditEvent]:
    return list(
        session.execute(select(AuditEvent).where(AuditEvent.change_key == change_key).order_by(AuditEvent.seq))
        .scalars()
        .all()
    )


def decode_data(event: AuditEvent) -> dict:
    return json.loads(event.data)


__all__ = ["append_event", "verify_chain", "VerifyResult", "events_for", "canonical_json", "GENESIS_HASH"]
