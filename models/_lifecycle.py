"""The change lifecycle as data, and the one function that moves a change along it.

submitted -> awaiting_approval -> approved -> scheduled -> implementing -> verifying -> completed -> closed
emergency changes skip `scheduled` (any time is their window) and must pass `review_pending`
(post-implementation review within 48 h) before they close.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ._enums import ChangeState as S
from ._enums import ChangeType
from ._errors import IllegalTransition

_COMMON: dict[S, frozenset[S]] = {
    S.submitted: frozenset({S.awaiting_approval, S.rejected, S.cancelled}),
    S.awaiting_approval: frozenset({S.approved, S.rejected, S.expired, S.cancelled}),
    S.implementing: frozenset({S.verifying, S.failed, S.rolled_back}),
    S.verifying: frozenset({S.completed, S.failed, S.rolled_back}),
    S.failed: frozenset({S.review_pending}),
    S.rolled_back: frozenset({S.review_pending}),
    S.review_pending: frozenset({S.closed}),
}

TRANSITIONS: dict[ChangeType, dict[S, frozenset[S]]] = {
    ChangeType.standard: {
        **_COMMON,
        S.approved: frozenset({S.scheduled, S.cancelled}),
        S.scheduled: frozenset({S.implementing, S.cancelled}),
        S.completed: frozenset({S.closed, S.review_pending}),
    },
    ChangeType.emergency: {
        **_COMMON,
        S.approved: frozenset({S.implementing, S.cancelled}),
        # An emergency change is documented after the fact: it always goes through review.
        S.completed: frozenset({S.review_pending}),
    },
}
TRANSITIONS[ChangeType.major] = dict(TRANSITIONS[ChangeType.standard])

TERMINAL_STATES = frozenset({S.closed, S.rejected, S.expired, S.cancelled})
INITIAL_STATE = S.submitted


def allowed_targets(change_type: ChangeType, state: S) -> frozenset[S]:
    return TRANSITIONS[ChangeType(change_type)].get(S(state), frozenset())


def is_allowed(change_type: ChangeType, source: S, target: S) -> bool:
    return S(target) in allowed_targets(change_type, source)


@dataclass(frozen=True)
class Transition:
    """One applied move: what the audit event of a transition records."""

    source: S
    target: S
    actor: str
    reason: str
    at: datetime


def plan_transition(
    change_type: ChangeType, source: S, target: S, *, actor: str, reason: str, at: datetime
) -> Transition:
    """Check a move against the lifecycle; raise IllegalTransition (and decide nothing) when it is not allowed."""
    if not actor or not actor.strip():
        raise IllegalTransition("a transition needs an actor (who is doing this?)")
    if not is_allowed(change_type, source, target):
        allowed = ", ".join(sorted(t.value for t in allowed_targets(change_type, source))) or "none"
        raise IllegalTransition(
            f"a {ChangeType(change_type).value} change cannot move from {S(source).value} to "
            f"{S(target).value} (allowed from {S(source).value}: {allowed})"
        )
    return Transition(S(source), S(target), actor.strip(), reason, at)
