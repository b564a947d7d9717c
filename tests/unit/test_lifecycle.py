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


def test_a_pipeline_waiting_for_the_start_deploys_only_while_its_change_is_implemented():
    """`wait --until start` (issue 32): approved is not yet "deploy now" (a standard change waits for its window);
    only its run's start of the implementation releases the pipeline, and a change past it has nothing to deploy."""
    from models import ChangeState, GateTarget, GateVerdict, gate_verdict

    def verdict(state: str) -> GateVerdict:
        return gate_verdict(ChangeState(state), GateTarget.start)

    for state in ("submitted", "awaiting_approval", "approved", "scheduled"):
        assert verdict(state) is GateVerdict.pending, state
    assert verdict("implementing") is GateVerdict.proceed
    for state in ("verifying", "completed", "closed", "rolled_back", "failed", "review_pending", "rejected",
                  "expired", "cancelled"):
        assert verdict(state) is GateVerdict.refused, state


def test_a_pipeline_reports_only_on_its_own_change_and_only_where_the_policy_names_the_requester():
    from dataclasses import replace
    from types import SimpleNamespace

    from models import ChangeTypeRules, pipeline_implementer_refusal

    standard = SHIPPED_RULES["standard"]
    own = SimpleNamespace(requester="deploy-pipeline", service="checkout")  # what the rule reads of a change
    assert pipeline_implementer_refusal(standard, own, "deploy-pipeline") is None
    assert "did not file this change" in pipeline_implementer_refusal(standard, own, "maintenance")
    by_a_person: ChangeTypeRules = replace(standard, policy=standard.policy.model_copy(
        update={"implementers": ["owner"]}))
    refusal = pipeline_implementer_refusal(by_a_person, own, "deploy-pipeline")
    assert refusal == ("a standard change's implementers (owner) do not include its requester: a person confirms "
                       "its work")
