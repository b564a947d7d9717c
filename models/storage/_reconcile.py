"""The rows outside the chain, checked against it: a change row must be in the state its last recorded
transition put it in and carry the requester who filed it; every approvals row must have its decision event,
and every decision event its row; checklist results and canary measurements must match the digests their phase
verdict and step decision recorded (issue 14). Someone who edits `change_requests` or `approvals` directly (state
to `closed`, a forged approval, a deleted rejection) leaves a row the chain does not explain.

Set-based SQL, so the cost is a few scans on the database's side, not a Python loop over every change."""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, case, exists, func, literal, or_, select, true
from sqlmodel import Session

from ..domain import CLEARED_BY_AMENDMENT, OUTCOME_OF_STATE, STAMPED_BY_TRANSITION
from ._bound_records import approval_row_problems, window_problems
from ._row_bindings import bound_row_problems, content_problems
from ._tables import Approval, AuditEvent, ChangeRequest

# What `audit verify` prints at most per kind (the count says how many more there are).
SHOWN = 5

_EVENT_OF_DECISION = case((Approval.decision == "approve", literal("approval")), else_=literal("rejection"))


def record_problems(session: Session, changes: ColumnElement[bool] | None = None) -> list[str]:
    """`changes`: a condition on ChangeRequest limiting the check to some changes (a report's range);
    default all of them."""
    scope = changes if changes is not None else true()
    problems: list[str] = []
    # Correlated lookups through ix_audit_change_seq (change_key, seq): the cost follows the changes checked, so
    # a report's week costs a week, not the whole table.
    of_change = AuditEvent.change_key == ChangeRequest.key
    last_transition = (select(AuditEvent.to_state).where(of_change, AuditEvent.action == "transition")
                       .order_by(AuditEvent.seq.desc()).limit(1).scalar_subquery())  # type: ignore[attr-defined]
    recorded_state = func.coalesce(last_transition, literal("submitted"))
    wrong_state = session.execute(
        select(ChangeRequest.key, ChangeRequest.state, recorded_state)
        .where(scope, ChangeRequest.state != recorded_state).order_by(ChangeRequest.id)).all()
    problems += [f"change {key}: its row says state {state} but its last recorded transition is to {recorded}"
                 for key, state, recorded in wrong_state[:SHOWN]]
    problems += _more(wrong_state, "change rows in a state the audit trail does not record")

    filed_by = (select(AuditEvent.actor).where(of_change, AuditEvent.action == "submitted")
                .order_by(AuditEvent.seq).limit(1).scalar_subquery())  # type: ignore[attr-defined]
    wrong_requester = session.execute(
        select(ChangeRequest.key, ChangeRequest.requester, filed_by)
        .where(scope, or_(filed_by.is_(None), filed_by != ChangeRequest.requester))
        .order_by(ChangeRequest.id)).all()
    problems += [f"change {key}: its row names requester {requester} but " +
                 (f"its filing event records {actor}" if actor else "no event records it being filed")
                 for key, requester, actor in wrong_requester[:SHOWN]]
    problems += _more(wrong_requester, "change rows whose requester the audit trail does not record")

    unexplained = session.execute(
        select(Approval.id, ChangeRequest.key, Approval.approver, Approval.decision, Approval.round)
        .join(ChangeRequest, ChangeRequest.id == Approval.change_id)
        .where(scope)
        .where(~exists().where(and_(AuditEvent.change_key == ChangeRequest.key,
                                    AuditEvent.actor == Approval.approver,
                                    AuditEvent.action == _EVENT_OF_DECISION)))
        .order_by(Approval.id)).all()
    problems += [f"approvals row {row_id} ({key}: {decision} by {approver}, round {round_}) has no decision event "
                 "in the audit trail: it was written outside changeflow"
                 for row_id, key, approver, decision, round_ in unexplained[:SHOWN]]
    problems += _more(unexplained, "approvals rows without a decision event")

    decision_of_event = case((AuditEvent.action == "approval", literal("approve")), else_=literal("reject"))
    missing_rows = session.execute(
        select(AuditEvent.seq, AuditEvent.change_key, AuditEvent.actor, AuditEvent.action)
        .join(ChangeRequest, ChangeRequest.key == AuditEvent.change_key)
        .where(AuditEvent.action.in_(("approval", "rejection")), scope)  # type: ignore[attr-defined]
        .where(~exists().where(and_(Approval.change_id == ChangeRequest.id, Approval.approver == AuditEvent.actor,
                                    Approval.decision == decision_of_event)))
        .order_by(AuditEvent.seq)).all()
    problems += [f"event {seq} records a {action} of {key} by {actor}, but its approvals row is gone"
                 for seq, key, actor, action in missing_rows[:SHOWN]]
    problems += _more(missing_rows, "decision events whose approvals row is gone")

    problems += _stamp_problems(session, scope, of_change)
    problems += approval_row_problems(session, changes)
    problems += window_problems(session)

    edited = list(content_problems(session, changes))
    problems += edited[:SHOWN] + _more(edited, "changes whose content the audit trail does not record")
    unbound = list(bound_row_problems(session, changes))
    problems += unbound[:SHOWN] + _more(unbound, "checklist results and canary measurements the chain does not "
                                                 "vouch for")
    return problems


def _stamp_problems(session: Session, scope: ColumnElement[bool], of_change: ColumnElement[bool]) -> list[str]:
    """The outcome and the time columns a report reads (lead time, failure rate, time to restore, approval wait),
    each derived again from the events that set it: one pass over the changes, a lookup per column."""
    def last_into(states, column=AuditEvent.occurred_at):
        into = AuditEvent.to_state.in_(sorted(s.value for s in states))  # type: ignore[union-attr]
        return (select(column).where(of_change, AuditEvent.action == "transition", into)
                .order_by(AuditEvent.seq.desc()).limit(1).scalar_subquery())  # type: ignore[attr-defined]

    filed_at = (select(AuditEvent.occurred_at).where(of_change, AuditEvent.action == "submitted")
                .order_by(AuditEvent.seq).limit(1).scalar_subquery())  # type: ignore[attr-defined]
    amended = (select(func.max(AuditEvent.seq)).where(of_change, AuditEvent.action == "change_amended")
               .scalar_subquery())

    def stamped(column: str, states) -> ColumnElement:
        if column not in CLEARED_BY_AMENDMENT:
            return last_into(states)
        # Cleared by an amendment after the transition that set it.
        return case((func.coalesce(amended, 0) > func.coalesce(last_into(states, AuditEvent.seq), 0), None),
                    else_=last_into(states))

    recorded = {"created_at": filed_at,
                **{column: stamped(column, states) for column, states in STAMPED_BY_TRANSITION.items()},
                "outcome": case({state.value: outcome for state, outcome in OUTCOME_OF_STATE.items()},
                                value=last_into(OUTCOME_OF_STATE, AuditEvent.to_state))}
    columns = list(recorded)
    rows = session.execute(
        select(ChangeRequest.key, *(getattr(ChangeRequest, c) for c in columns), *recorded.values())
        .where(scope, or_(*(getattr(ChangeRequest, c).is_distinct_from(recorded[c]) for c in columns)))
        .order_by(ChangeRequest.id)).all()
    found = []
    for key, *values in rows:
        stored, derived = values[:len(columns)], values[len(columns):]
        for column, value, expected in zip(columns, stored, derived):
            if value != expected:
                found.append(f"change {key}: its row says {column} {_shown(value)} but its events record "
                             f"{_shown(expected)}: it was edited outside changeflow")
    return found[:SHOWN] + _more(found, "change columns the audit trail does not record")


def _shown(value: object) -> str:
    if value is None:
        return "nothing"
    return value.strftime("%Y-%m-%d %H:%M:%S.%f UTC") if hasattr(value, "strftime") else str(value)


def _more(rows: list, what: str) -> list[str]:
    return [f"... {len(rows) - SHOWN} more {what}"] if len(rows) > SHOWN else []
