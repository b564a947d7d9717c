"""The change lifecycle as data, and the one function that moves a change along it.

submitted -> awaiting_approval -> approved -> scheduled -> implementing -> verifying -> completed -> closed

The graph a change type walks is derived from its rules, never from its name: a type whose window is `any`
skips `scheduled` (emergencies: any time is their window), and a type that is always reviewed must pass
`review_pending` (the post-implementation review) before it closes. An amended change that was approved goes back
to `awaiting_approval` (a new approval round): what was approved is not what would run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from functools import lru_cache

from ._change_types import ChangeTypeRules, article
from ._enums import ChangeState as S
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


@lru_cache(maxsize=None)
def _graph(scheduled: bool, always_reviewed: bool) -> dict[S, frozenset[S]]:
    graph = dict(_COMMON)
    if scheduled:
        graph[S.approved] = frozenset({S.scheduled, S.cancelled, S.awaiting_approval})
        graph[S.scheduled] = frozenset({S.implementing, S.cancelled, S.awaiting_approval})
    else:
        graph[S.approved] = frozenset({S.implementing, S.cancelled, S.awaiting_approval})
    # A type documented after the fact always goes through review; the others close or are reviewed.
    graph[S.completed] = frozenset({S.review_pending}) if always_reviewed else frozenset({S.closed, S.review_pending})
    return graph


def transitions_for(rules: ChangeTypeRules) -> dict[S, frozenset[S]]:
    """The lifecycle graph of one change type."""
    return _graph(rules.scheduled, rules.always_reviewed)


TERMINAL_STATES = frozenset({S.closed, S.rejected, S.expired, S.cancelled})
INITIAL_STATE = S.submitted

# The outcome of an implementation, by the state that records it (what the DORA figures count).
OUTCOME_OF_STATE = {S.completed: "succeeded", S.failed: "failed", S.rolled_back: "rolled_back"}
# Past its implementation with the outcome final (review_pending follows a failure as well as a success).
_IMPLEMENTED = frozenset({S.completed.value, S.review_pending.value, S.closed.value})


def implemented_successfully(state: str, outcome: str | None) -> bool:
    """Its implementation is over and succeeded: it proves its release (staging first), and it may be rolled back
    after the fact; a change still running has proven nothing, one that failed has nothing left to undo."""
    return state in _IMPLEMENTED and outcome == OUTCOME_OF_STATE[S.completed]

# The change's time columns, each stamped with the moment of its latest transition into one of these states: the
# transition writes them and `audit verify` derives them again from the transition events (issue 28), so a moved
# `implemented_at` or `ended_at` (a report's lead time) is caught.
STAMPED_BY_TRANSITION: dict[str, frozenset[S]] = {
    "approval_requested_at": frozenset({S.awaiting_approval}),
    "approved_at": frozenset({S.approved}),
    "implemented_at": frozenset({S.implementing}),
    "ended_at": frozenset(OUTCOME_OF_STATE),
    "closed_at": TERMINAL_STATES,
}


# ... except these, which an amendment clears (what was approved is not what will run: it is approved again).
CLEARED_BY_AMENDMENT = frozenset({"approved_at"})


def stamps_of(target: S) -> list[str]:
    """The time columns a transition into `target` stamps with its moment."""
    return [column for column, states in STAMPED_BY_TRANSITION.items() if S(target) in states]


def allowed_targets(rules: ChangeTypeRules, state: S) -> frozenset[S]:
    return transitions_for(rules).get(S(state), frozenset())


def is_allowed(rules: ChangeTypeRules, source: S, target: S) -> bool:
    return S(target) in allowed_targets(rules, source)


@dataclass(frozen=True)
class Transition:
    """One applied move: what the audit event of a transition records."""

    source: S
    target: S
    actor: str
    reason: str
    at: datetime


def plan_transition(
    rules: ChangeTypeRules, source: S, target: S, *, actor: str, reason: str, at: datetime
) -> Transition:
    """Check a move against the lifecycle; raise IllegalTransition (and decide nothing) when it is not allowed."""
    if not actor or not actor.strip():
        raise IllegalTransition("a transition needs an actor (who is doing this?)")
    if not is_allowed(rules, source, target):
        allowed = ", ".join(sorted(t.value for t in allowed_targets(rules, source))) or "none"
        raise IllegalTransition(
            f"{article(rules.name)} {rules.name} change cannot move from {S(source).value} to "
            f"{S(target).value} (allowed from {S(source).value}: {allowed})"
        )
    return Transition(S(source), S(target), actor.strip(), reason, at)


class GateVerdict(str, Enum):
    """What a pipeline waiting on a change's approval gate is told (`changeflow wait`, `submit --wait`)."""

    proceed = "proceed"  # approved: the change may go ahead (in its window, where its type has one)
    refused = "refused"  # rejected, expired or cancelled: it will not go ahead as filed
    pending = "pending"  # still waiting for its requester or its approvers


# Stopped: it will not go ahead as filed, whatever came before (an approved change withdrawn or called off at its
# window ends `cancelled`). Undecided: before approval, and again after an amendment opened a new round.
_STOPPED = frozenset({S.rejected, S.expired, S.cancelled})
_UNDECIDED = frozenset({S.submitted, S.awaiting_approval})


class GateTarget(str, Enum):
    """What a pipeline waits for (`changeflow wait --until`, the pipeline API's `until`)."""

    approval = "approval"  # approved: it may go ahead, in its window where its type has one
    start = "start"  # its window opened and its run began the implementation: the pipeline deploys now


_BEFORE_START = frozenset({*_UNDECIDED, S.approved, S.scheduled})


def gate_verdict(state: S, until: GateTarget = GateTarget.approval) -> GateVerdict:
    """Until approval: every state past approval (scheduled, implementing, ... closed) keeps a change released.
    Until its start: released only while it is being implemented; a change already past that (verified, rolled
    back, closed) has nothing left for a pipeline to deploy."""
    if S(state) in _STOPPED:
        return GateVerdict.refused
    if until is GateTarget.approval:
        return GateVerdict.pending if S(state) in _UNDECIDED else GateVerdict.proceed
    if S(state) in _BEFORE_START:
        return GateVerdict.pending
    return GateVerdict.proceed if S(state) is S.implementing else GateVerdict.refused
