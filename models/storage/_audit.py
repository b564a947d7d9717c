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

from sqlalchemy import String, bindparam, cast, func, insert, select, update
from sqlmodel import Session

from ..domain import control_character
from ._tables import AuditEvent, AuditHead

GENESIS_HASH = "0" * 64


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _iso(at: datetime) -> str:
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# Scheme 1 joined the fields with \x1f, unescaped: a name holding \x1f let bytes move between fields without
# changing the hash (issue 28). Scheme 2 gives each field its length (None apart from ""), under a tag naming
# the scheme, so the encoding splits one way only. Events hashed under scheme 1 still verify: a chain switches
# once, at the first event a scheme-2 writer appended, and nothing after that switch verifies under scheme 1.
HASH_SCHEME = 2
_SCHEME_TAG = "changeflow-audit/2;"
_LEGACY_SEPARATOR = "\x1f"


def _sized(value: str | None) -> str:
    return "~" if value is None else f"{len(value)}:{value}"


def event_hash(
    seq: int,
    change_key: str | None,
    occurred_at: datetime | str,
    actor: str,
    action: str,
    from_state: str | None,
    to_state: str | None,
    data: str,
    prev_hash: str,
    scheme: int = HASH_SCHEME,
) -> str:
    """`occurred_at` as a datetime, or already in the canonical form YYYY-MM-DDTHH:MM:SS.ffffffZ."""
    when = occurred_at if isinstance(occurred_at, str) else _iso(occurred_at)
    if scheme == 1:
        encoded = _LEGACY_SEPARATOR.join(
            (str(seq), change_key or "", when, actor, action, from_state or "", to_state or "", data, prev_hash))
    else:
        encoded = (f"{_SCHEME_TAG}{len(str(seq))}:{seq}{_sized(change_key)}{len(when)}:{when}{_sized(actor)}"
                   f"{_sized(action)}{_sized(from_state)}{_sized(to_state)}{_sized(data)}{_sized(prev_hash)}")
    return hashlib.sha256(encoded.encode()).hexdigest()


def _legacy_hash_holds(seq: int, change_key: str | None, occurred_at: datetime | str, actor: str, action: str,
                       from_state: str | None, to_state: str | None, data: str, prev_hash: str, digest: str) -> str:
    """Why an event that does not verify under scheme 2 is not a good scheme-1 event either ("" when it is)."""
    if event_hash(seq, change_key, occurred_at, actor, action, from_state, to_state, data, prev_hash,
                  scheme=1) != digest:
        return f"event {seq} was altered (its hash does not match its content)"
    if any(_LEGACY_SEPARATOR in (field or "") for field in (change_key, actor, action, from_state, to_state, data)):
        # Under scheme 1 such an event's bytes can be moved between its fields without changing its hash.
        return (f"event {seq} is hashed under scheme 1 and a field holds its separator \\x1f: what its fields "
                "say cannot be told from the hash")
    return ""


def _canonical_time_sql(dialect: str):
    """The event time rendered canonically by the database itself: verify then skips a datetime object per row."""
    column = AuditEvent.__table__.c.occurred_at
    if dialect == "postgresql":
        return func.to_char(column, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
    if dialect == "sqlite":
        # Stored by SQLAlchemy as 'YYYY-MM-DD HH:MM:SS.ffffff' (naive UTC, always six digits).
        return func.replace(cast(column, String), " ", "T") + "Z"
    return None


_HEAD = AuditHead.__table__
_EVENTS = AuditEvent.__table__
# Built once: statement construction, not SQL, dominated the cost of an append.
_INSERT_EVENT = insert(_EVENTS)
_MOVE_HEAD = update(_HEAD).where(_HEAD.c.id == 1).values(seq=bindparam("new_seq"), hash=bindparam("new_hash"))
_READ_HEAD = select(_HEAD.c.seq, _HEAD.c.hash).where(_HEAD.c.id == 1)
_READ_HEAD_LOCKED = _READ_HEAD.with_for_update()


@dataclass(frozen=True)
class AppendedEvent:
    seq: int
    hash: str


def lock_chain(session: Session) -> tuple[int, str]:
    """Take the append lock and return the chain head (seq, hash).

    SQLite writers already hold the database lock (BEGIN IMMEDIATE); on PostgreSQL the head row is locked
    FOR UPDATE so concurrent appenders queue instead of forking the chain.
    """
    locked = session.get_bind().dialect.name == "postgresql"
    head = session.execute(_READ_HEAD_LOCKED if locked else _READ_HEAD).first()
    if head is None:
        raise RuntimeError("audit_head row missing: run `changeflow db upgrade`")
    return head[0], head[1]


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
) -> AppendedEvent:
    """Append one event in the caller's transaction (so it commits or rolls back with what it records).

    Core statements rather than ORM objects: this runs in every write and the ORM unit of work tripled its cost.
    """
    for field, value in (("actor", actor), ("action", action), ("change_key", change_key),
                         ("from_state", from_state), ("to_state", to_state)):
        found = control_character(value or "")
        if found:
            # The services refuse such a name at input; this is the last line, so no event ever carries one.
            raise ValueError(f"audit event {field}: contains a control character ({found})")
    head_seq, head_hash = lock_chain(session)
    occurred_at = (at or datetime.now(timezone.utc)).astimezone(timezone.utc)
    encoded = canonical_json(data or {})
    seq = head_seq + 1
    digest = event_hash(seq, change_key, occurred_at, actor, action, from_state, to_state, encoded, head_hash)
    session.execute(
        _INSERT_EVENT,
        {
            "seq": seq,
            "change_key": change_key,
            "occurred_at": occurred_at,
            "actor": actor,
            "action": action,
            "from_state": from_state,
            "to_state": to_state,
            "data": encoded,
            "prev_hash": head_hash,
            "hash": digest,
        },
    )
    session.execute(_MOVE_HEAD, {"new_seq": seq, "new_hash": digest})
    return AppendedEvent(seq, digest)


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    count: int
    first_broken_seq: int | None = None
    reason: str = ""
    legacy_events: int = 0  # events before the switch to HASH_SCHEME, verified under scheme 1


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


def verify_rows(rows: Iterable[tuple], head: tuple[int, str] | None,
                start: tuple[int, str] = (0, GENESIS_HASH)) -> VerifyResult:
    """Recompute the chain over rows ordered by seq, from the event after `start` (seq, hash); name the first
    event that does not link. `count` is the seq of the last event that verified."""
    expected_seq, prev = start[0] + 1, start[1]
    count = start[0]
    # Once an event verified under the current scheme, every later one must: a scheme-1 hash after the switch is
    # an event written by something else than changeflow.
    switched, legacy = False, 0
    for seq, change_key, occurred_at, actor, action, from_state, to_state, data, prev_hash, digest in rows:
        if seq != expected_seq:
            return VerifyResult(False, count, expected_seq, f"event {expected_seq} is missing (next stored is {seq})")
        if prev_hash != prev:
            return VerifyResult(False, count, seq, f"event {seq} does not link to event {seq - 1}")
        if event_hash(seq, change_key, occurred_at, actor, action, from_state, to_state, data, prev_hash) == digest:
            switched = True
        else:
            problem = ("" if not switched else f"event {seq} was altered (its hash does not match its content)") \
                or _legacy_hash_holds(seq, change_key, occurred_at, actor, action, from_state, to_state, data,
                                      prev_hash, digest)
            if problem:
                return VerifyResult(False, count, seq, problem)
            legacy += 1
        prev, expected_seq, count = digest, seq + 1, count + 1
    if head is not None and tuple(head) != (count, prev):
        # Name the first event that is wrong: past the head when events were appended behind its back, the
        # first missing one when the tail was cut, the last one when it was replaced.
        first_wrong = head[0] + 1 if count > head[0] else count + 1 if count < head[0] else count
        return VerifyResult(
            False, count, first_wrong, f"the chain ends at event {count} but the head records event {head[0]}"
            + (" with another hash" if count == head[0] else "")
        )
    return VerifyResult(True, count, legacy_events=legacy)


def _chain_columns(session: Session) -> list:
    """The columns verify reads, in verify_rows' order; the time rendered canonically where the database can."""
    table = AuditEvent.__table__.c
    when = _canonical_time_sql(session.get_bind().dialect.name)
    return [table.seq, table.change_key, when if when is not None else table.occurred_at, table.actor,
            table.action, table.from_state, table.to_state, table.data, table.prev_hash, table.hash]


def chain_rows(session: Session, first_seq: int, last_seq: int) -> Iterable[tuple]:
    """Events first_seq..last_seq as verify reads them (time already canonical): what an export writes."""
    table = AuditEvent.__table__.c
    query = (select(*_chain_columns(session)).where(table.seq >= first_seq, table.seq <= last_seq)
             .order_by(table.seq))
    for row in session.execute(query.execution_options(yield_per=20_000)):
        yield (row[0], row[1], row[2] if isinstance(row[2], str) else _iso(row[2]), *row[3:])


def verify_chain(session: Session, after: tuple[int, str] | None = None) -> VerifyResult:
    """Recompute the whole chain, or (`after` = a signed checkpoint's seq and hash) only the events after it,
    once the stored event at that seq still carries the signed hash. The incremental form trusts the prefix as
    it was when the checkpoint was signed and verified: a rewrite of it that recomputes the hashes is caught
    (the hash at the checkpoint changes), an edit that leaves the hashes alone only by the full form."""
    head_row = session.execute(select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1)).first()
    table = AuditEvent.__table__.c
    query = select(*_chain_columns(session)).order_by(table.seq)
    start = (0, GENESIS_HASH)
    if after is not None and after[0] > 0:
        stored = session.execute(select(table.hash).where(table.seq == after[0])).scalar_one_or_none()
        if stored != after[1]:
            return VerifyResult(False, 0, after[0], f"event {after[0]} no longer carries the hash of its signed "
                                                    "checkpoint: the events up to it were rewritten")
        query, start = query.where(table.seq > after[0]), after
    return verify_rows(_driver_rows(session, query), tuple(head_row) if head_row else None, start)


def _driver_rows(session: Session, query) -> Iterable[tuple]:
    """The query's rows as the database driver's own tuples, streamed: SQLAlchemy's Row objects cost as much as
    the hashing itself at millions of events. The query holds no parameters (literal integers only)."""
    connection = session.connection()
    sql = str(query.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True}))
    driver = connection.connection.driver_connection
    if connection.dialect.name == "postgresql":
        cursor = driver.cursor(name="changeflow_verify")  # server-side: rows arrive in batches, not all at once
        cursor.itersize = 20_000
    else:
        cursor = driver.cursor()
        cursor.arraysize = 20_000
    cursor.execute(sql)
    try:
        yield from cursor
    finally:
        cursor.close()


def events_for(session: Session, change_key: str) -> list[AuditEvent]:
    return list(
        session.execute(select(AuditEvent).where(AuditEvent.change_key == change_key).order_by(AuditEvent.seq))
        .scalars()
        .all()
    )


def latest_event_of(session: Session, actions: Iterable[str]) -> AuditEvent | None:
    """The chain's latest event of one of `actions` (by `ix_audit_action_seq`), or None."""
    return session.execute(select(AuditEvent).where(AuditEvent.action.in_(list(actions)))
                           .order_by(AuditEvent.seq.desc()).limit(1)).scalars().first()


def decode_data(event: AuditEvent) -> dict:
    return json.loads(event.data)


__all__ = ["append_event", "verify_chain", "VerifyResult", "events_for", "canonical_json", "GENESIS_HASH"]
