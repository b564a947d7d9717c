"""A personal code is good for one kind of act (issue 27): the code a person was sent to approve does not start
the change early, confirm its work, answer its canary, review, withdraw or amend it, and the other way round.
Each act is tried with the person's own code for every other act: refused, naming the act it needs, and nothing
written but the refusal; then the right code works."""

from __future__ import annotations

from datetime import timedelta

import pytest

from models import Act, ChangeState, PolicyViolation
from tests.helpers import approve, standard_request
from tests.integration.test_bypass import T0, WINDOW, actions, code, implementing, scheduled  # noqa: F401 (T0: clock)


def others(act: Act) -> list[Act]:
    return [other for other in Act if other is not act]


def test_an_approval_takes_only_the_code_sent_to_approve(at_t0):
    key = at_t0.approvals.request_approval(at_t0.changes.submit(standard_request()).key).key
    for other in others(Act.approve):
        with pytest.raises(PolicyViolation, match="this needs the one sent to approve or reject"):
            at_t0.approvals.decide(key, approver="alice", decision="approve", code=code(at_t0, key, "alice", other))
    assert at_t0.approvals.decided_by(key) == []
    assert [a for _, a in actions(at_t0, key)].count("approval_refused") == len(Act) - 1
    approve(at_t0, key, "alice")
    assert at_t0.approvals.decided_by(key) == ["alice"]


def test_an_early_start_takes_only_the_code_sent_to_start_early(at_t0):
    change = scheduled(at_t0)
    for other in others(Act.start_early):
        refusal = at_t0.scheduling.answer_window_gate(change.key, person="alice", reason="now",
                                                      code=code(at_t0, change.key, "alice", other),
                                                      attempt_id=f"window-{other.value}")
        assert refusal is not None and "this needs the one sent to start it early" in refusal
    assert at_t0.scheduling.answer_window_gate(change.key, person="alice", reason="now", attempt_id="window-ok",
                                               code=code(at_t0, change.key, "alice", Act.start_early)) is None


def test_work_a_withdrawal_and_an_amendment_each_take_only_their_own_code(at_t0, clock):
    change = implementing(at_t0, clock)
    for other in others(Act.confirm_work):
        with pytest.raises(PolicyViolation, match="this needs the one sent to confirm the work"):
            at_t0.work.confirm(change.key, stage="implemented", person="grace",
                               code=code(at_t0, change.key, "grace", other))
    assert at_t0.work.confirmation(change.key, "implemented", None) is None
    assert at_t0.work.confirm(change.key, stage="implemented", person="grace",
                              code=code(at_t0, change.key, "grace", Act.confirm_work)).done

    waiting = scheduled(at_t0, standard_request(title="another", service="checkout",
                                                planned_start=(WINDOW + timedelta(days=7)).isoformat(),
                                                planned_end=(WINDOW + timedelta(days=7, hours=1)).isoformat()))
    for act, attempt in ((Act.amend, lambda c: at_t0.amendments.amend(
                              waiting.key, {"implementation_plan": "another plan"}, person="grace", code=c,
                              reason="changed")),
                         (Act.withdraw, lambda c: at_t0.amendments.withdraw(waiting.key, person="grace", code=c,
                                                                          reason="no longer"))):
        for other in others(act):
            with pytest.raises(PolicyViolation, match="a code is good for one kind of act"):
                attempt(code(at_t0, waiting.key, "grace", other))
        assert at_t0.changes.get(waiting.key).state == ChangeState.scheduled.value
    at_t0.amendments.withdraw(waiting.key, person="grace", code=code(at_t0, waiting.key, "grace", Act.withdraw),
                              reason="no longer")
    assert at_t0.changes.get(waiting.key).state == ChangeState.cancelled.value


def test_a_canary_answer_takes_only_the_code_sent_to_answer_a_canary_gate(at_t0):
    key = at_t0.changes.submit(standard_request()).key
    for other in others(Act.answer_canary):
        with pytest.raises(PolicyViolation, match="this needs the one sent to answer a canary gate"):
            at_t0.canary.confirm(key, person="alice", code=code(at_t0, key, "alice", other), action="proceed",
                                 comment="", gate="canary-confirm-s1")
    assert at_t0.canary.gate_answer(key, "canary-confirm-s1") is None
    answer = at_t0.canary.confirm(key, person="alice", code=code(at_t0, key, "alice", Act.answer_canary),
                                  action="proceed", comment="", gate="canary-confirm-s1")
    assert answer["answer"] == "proceed"


def test_a_canary_gate_is_answered_only_by_the_people_canary_yaml_names(at_t0):
    key = at_t0.changes.submit(standard_request()).key  # requested by grace; alice and frank are team leads
    # carol (peer reviewer, CAB, second on call) holds none of the shipped gate_answerers' roles.
    with pytest.raises(PolicyViolation, match=r"carol may not answer a canary gate of .* \(canary.yaml gate_answerers: "
                                              r"requester, owner, team_lead, oncall_primary"):
        at_t0.canary.confirm(key, person="carol", code=code(at_t0, key, "carol", Act.answer_canary),
                             action="proceed", comment="", gate="canary-confirm-s2")
    assert at_t0.canary.gate_answer(key, "canary-confirm-s2") is None
    for person in ("grace", "bob"):  # the requester; the first rung of on call
        at_t0.canary.confirm(key, person=person, code=code(at_t0, key, person, Act.answer_canary),
                             action="roll_back", comment="", gate=f"canary-confirm-{person}")
        assert at_t0.canary.gate_answer(key, f"canary-confirm-{person}") == "roll_back"
