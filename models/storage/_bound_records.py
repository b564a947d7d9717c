"""Approvals rows and maintenance windows, checked field by field against the events that wrote them (issue 28).

The compliance report counts roles from approvals rows and the window gate reads freezes from
`maintenance_windows`: a role edited from peer_reviewer to team_lead, a second row for the role still missing, a
moved date or a deleted freeze would change what a gate decided or a report says, while the chain itself stays
intact. Each decision event records the row it wrote (approver, role, round, comment, the person acted for, its
moment) and each window event its window, so a row is explained by exactly one event or it is named."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone

from sqlalchemy import ColumnElement, select
from sqlmodel import Session

from ..domain import CLEARED_BY_AMENDMENT, OUTCOME_OF_STATE, STAMPED_BY_TRANSITION
from ._tables import Approval, AuditEvent, ChangeRequest, MaintenanceWindow

_DECISION = {"approve": "approval", "reject": "rejection"}
# What `audit verify` prints at most per kind.
_SHOWN = 5


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def approval_row_problems(session: Session, scope: ColumnElement[bool] | None) -> list[str]:
    """Each approvals row whose role, round, comment, delegator or moment differs from its decision event, or that
    is a second row for one decision. (A row with no decision event by its approver at all, or an event whose row
    is gone, is the record check's finding.)"""
    events = select(AuditEvent.seq, AuditEvent.change_key, AuditEvent.actor, AuditEvent.action,
                    AuditEvent.occurred_at, AuditEvent.data).where(
        AuditEvent.action.in_(tuple(_DECISION.values())))  # type: ignore[attr-defined]
    rows = select(Approval.id, ChangeRequest.key, Approval.approver, Approval.decision, Approval.round,
                  Approval.role, Approval.comment, Approval.on_behalf_of, Approval.decided_at).join(
        ChangeRequest, ChangeRequest.id == Approval.change_id)
    if scope is not None:
        events = events.join(ChangeRequest, ChangeRequest.key == AuditEvent.change_key).where(scope)
        rows = rows.where(scope)
    recorded: dict[tuple, list[tuple[int, dict, datetime]]] = defaultdict(list)
    for seq, key, actor, action, at, raw in session.execute(events.order_by(AuditEvent.seq)):
        recorded[(key, actor, action)].append((seq, json.loads(raw), _utc(at)))
    found = list(approval_mismatches(session.execute(rows.order_by(Approval.id)).all(), recorded))
    return found[:_SHOWN] + ([f"... {len(found) - _SHOWN} more approvals rows that differ from their decision "
                              "events"] if len(found) > _SHOWN else [])


def approval_mismatches(rows, recorded: dict[tuple, list[tuple[int, dict, datetime]]]) -> Iterator[str]:
    """`rows`: (id, change key, approver, decision, round, role, comment, on_behalf_of, decided_at); `recorded`:
    the decision events by (change key, actor, action), each (seq, data, moment). From the database or a bundle."""
    used: set[int] = set()
    for row_id, key, approver, decision, round_, role, comment, on_behalf_of, decided_at in rows:
        candidates = recorded.get((key, approver, _DECISION.get(decision, decision)))
        if not candidates:
            continue  # no decision by this person at all: named by the record check
        label = f"approvals row {row_id} ({key}: {decision} by {approver}"
        fields = {"role": role, "round": round_, "comment": comment, "for": on_behalf_of}
        differences: list[str] = []
        for seq, data, at in candidates:
            if seq in used:
                continue
            differences = [f"{name} {fields[name]!r} where event {seq} records {data.get(name)!r}"
                           for name in fields if name in data or fields[name] is not None
                           if data.get(name) != fields[name]]
            if _utc(decided_at) != at:
                differences.append(f"decided_at {_utc(decided_at):%Y-%m-%d %H:%M:%S.%f} where event {seq} records "
                                   f"{at:%Y-%m-%d %H:%M:%S.%f}")
            if not differences:
                used.add(seq)
                break
        else:
            if differences:
                yield f"{label}) says {'; '.join(differences)}: it was edited outside changeflow"
            else:
                yield (f"{label}, round {round_}) is a second row for a decision the audit trail records once: it "
                       "was written outside changeflow")


def _window_fields(row: MaintenanceWindow) -> dict[str, object]:
    return {"title": row.title, "service": row.service, "freeze": bool(row.freeze), "kind": row.kind,
            "starts_at": _utc(row.starts_at), "ends_at": _utc(row.ends_at)}


def _recorded_window(data: dict) -> dict[str, object]:
    recorded = {name: data[name] for name in ("title", "service", "freeze", "kind") if name in data}
    for name in ("starts_at", "ends_at"):
        if name in data:
            recorded[name] = datetime.fromisoformat(data[name]).astimezone(timezone.utc)
    return recorded


def window_problems(session: Session) -> list[str]:
    """Each maintenance window or freeze that differs from the event that added it, has no such event, or whose
    event's window is gone (windows are never removed by changeflow)."""
    events = session.execute(select(AuditEvent.seq, AuditEvent.data).where(
        AuditEvent.action == "policy_decision",
        AuditEvent.change_key.is_(None),  # type: ignore[union-attr]
        AuditEvent.data.contains('"window"'))  # type: ignore[attr-defined]
        .order_by(AuditEvent.seq)).all()
    rows = session.execute(select(MaintenanceWindow).order_by(MaintenanceWindow.id)).scalars()
    found = list(window_mismatches(events, rows, every_event=True))
    return found[:_SHOWN] + ([f"... {len(found) - _SHOWN} more maintenance windows the audit trail does not "
                              "record"] if len(found) > _SHOWN else [])


def window_mismatches(events: Iterable[tuple[int, str]], rows: Iterable[MaintenanceWindow], *,
                      every_event: bool) -> Iterator[str]:
    """`events`: (seq, data) of the policy decisions that may add windows. `every_event`: they are the whole
    chain's, so a row without one was written outside changeflow (an offline bundle holds only a part)."""
    added: dict[int, tuple[int, dict]] = {}
    for seq, raw in events:
        data = json.loads(raw)
        if isinstance(data.get("window"), int):
            added.setdefault(data["window"], (seq, data))
    for row in rows:
        kind = "freeze" if row.freeze else "window"
        event = added.pop(row.id, None)  # type: ignore[arg-type]
        if event is None:
            if every_event:
                yield (f"{kind} {row.id} ({row.title or row.kind}) has no event that added it: it was written "
                       "outside changeflow")
            continue
        seq, data = event
        actual, recorded = _window_fields(row), _recorded_window(data)
        differences = [f"{name} {actual[name]} where event {seq} records {recorded[name]}"
                       for name in recorded if recorded[name] != actual[name]]
        if differences:
            yield (f"{kind} {row.id} ({row.title or row.kind}) says {'; '.join(differences)}: it was edited "
                   "outside changeflow")
    for window_id, (seq, data) in sorted(added.items()):
        kind = "freeze" if data.get("freeze") else "window"
        yield (f"{kind} {window_id} ({data.get('title') or data.get('kind') or 'untitled'}) that event {seq} "
               "added is gone: it was deleted outside changeflow")


STAMP_COLUMNS = ("created_at", *STAMPED_BY_TRANSITION, "outcome")


def derived_columns(events: Iterable[tuple[str | None, str, str | None, str]]) -> dict[str, dict[str, str | None]]:
    """The outcome and time columns of each change filed among `events` (change key, action, to_state, canonical
    time; in chain order), as its transitions set them: what an offline bundle checks its change rows against."""
    derived: dict[str, dict[str, str | None]] = {}
    for key, action, to_state, at in events:
        if key is None:
            continue
        if action == "submitted" and key not in derived:
            derived[key] = {column: None for column in STAMP_COLUMNS} | {"created_at": at}
        elif action == "change_amended" and key in derived:
            derived[key] |= {column: None for column in CLEARED_BY_AMENDMENT}
        elif action == "transition" and key in derived and to_state is not None:
            columns = derived[key]
            for column, states in STAMPED_BY_TRANSITION.items():
                if to_state in {state.value for state in states}:
                    columns[column] = at
            if to_state in {state.value for state in OUTCOME_OF_STATE}:
                columns["outcome"] = OUTCOME_OF_STATE[to_state]  # type: ignore[index]
    return derived
