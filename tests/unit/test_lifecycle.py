"""The change lifecycle: allowed moves as data, illegal ones refused with nothing written."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from models import ChangeState as S, IllegalTransition, allowed_targets, plan_transition
from tests.helpers import SHIPPED_RULES

NOW = datetime(2026, 11, 27, tzinfo=timezone.utc)


def test_standard_change_follows_the_documented_path():
    path = [S.submitted, S.awaiting_approval, S.approved, S.scheduled, S.implementing, S.verifying, S.completed,
            S.closed]
    planned = [plan_transition(SHIPPED_RULES["standard"], source, target, actor=" ops ", reason="", at=NOW)
               for source, target in zip(path, path[1:])]
    assert [(t.source, t.target) for t in planned] == list(zip(path, path[1:]))
    assert {(t.actor, t.at) for t in planned} == {("ops", NOW)}  # who, trimmed, and when: what the audit records
    # ... and no step of it may be skipped: straight from approval to implementation is an emergency's path.
    with pytest.raises(IllegalTransition, match="standard change cannot move from approved to implementing"):
        plan_transition(SHIPPED_RULES["standard"], S.approved, S.implementing, actor="ops", reason="", at=NOW)


def test_emergency_change_skips_scheduling_and_cannot_close_without_review():
    assert S.implementing in allowed_targets(SHIPPED_RULES["emergency"], S.approved)
    assert S.scheduled not in allowed_targets(SHIPPED_RULES["emergency"], S.approved)
    with pytest.raises(IllegalTransition, match="emergency change cannot move from completed to closed"):
        plan_transition(SHIPPED_RULES["emergency"], S.completed, S.closed, actor="ops", reason="", at=NOW)


def test_terminal_states_allow_nothing():
    for rules in SHIPPED_RULES.values():
        for state in (S.closed, S.rejected, S.expired, S.cancelled):
            assert allowed_targets(rules, state) == frozenset()


def test_transition_needs_an_actor():
    with pytest.raises(IllegalTransition, match="actor"):
        plan_transition(SHIPPED_RULES["standard"], S.submitted, S.awaiting_approval, actor=" ", reason="", at=NOW)


def test_a_waiting_pipeline_may_proceed_once_approved_and_never_once_stopped():
    """`changeflow wait` (issue 32): approval releases it and every later state keeps it released; a change
    stopped after its approval (withdrawn, called off at its window) is refused; an amendment's new round (back to
    awaiting_approval) holds it again."""
    from models import ChangeState, GateVerdict, gate_verdict

    assert gate_verdict(ChangeState.submitted) is GateVerdict.pending
    assert gate_verdict(ChangeState.awaiting_approval) is GateVerdict.pending
    for state in ("approved", "scheduled", "implementing", "verifying", "completed", "closed", "rolled_back",
                  "failed", "review_pending"):
        assert gate_verdict(ChangeState(state)) is GateVerdict.proceed, state
    for state in ("rejected", "expired", "cancelled"):
        assert gate_verdict(ChangeState(state)) is GateVerdict.refused
    assert {gate_verdict(state) for state in ChangeState} == set(GateVerdict), "every state has a verdict"
