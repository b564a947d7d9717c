"""The post-implementation review is recorded only by the people its type's policy names (`reviewers`; issue 27):
never the requester of a standard or major change (the shipped policies), never a role the policy does not name,
each refusal recorded; the requester of an emergency (who fixed the incident) may."""

from __future__ import annotations

import pytest

from models import Act, ChangeState, PolicyViolation
from tests.helpers import approve, emergency_request
from tests.integration.test_bypass import T0, actions, code, implementing  # noqa: F401 (T0: clock)


def rolled_back(services, clock):
    """A standard change (requested by grace, approved by alice and bob) rolled back at its window: review due."""
    change = implementing(services, clock)
    services.changes.transition(change.key, ChangeState.rolled_back, actor="changeflow", reason="step 1 failed")
    services.changes.transition(change.key, ChangeState.review_pending, actor="changeflow", reason="review due")
    assert services.changes.get(change.key).state == ChangeState.review_pending.value
    return change


@pytest.mark.parametrize(("person", "message"), [
    ("grace", "grace requested this change and its policy does not name the requester as a reviewer "
              "(its reviewers: alice, frank)"),
    ("bob", "bob may not review this standard change (its reviewers: alice, frank)"),
], ids=["the-requester", "a-role-the-policy-does-not-name"])
def test_a_standard_change_is_reviewed_by_its_named_reviewers_only(at_t0, clock, person, message):
    change = rolled_back(at_t0, clock)
    with pytest.raises(PolicyViolation, match=message.replace("(", r"\(").replace(")", r"\)")):
        at_t0.reviews.record(change.key, actor=person, code=code(at_t0, change.key, person, Act.review),
                             summary="it was fine really", root_cause="none")
    assert at_t0.changes.get(change.key).state == ChangeState.review_pending.value
    assert actions(at_t0, change.key)[-1] == (person, "confirmation_refused")
    closed = at_t0.reviews.record(change.key, actor="alice", code=code(at_t0, change.key, "alice", Act.review),
                                  summary="added to the template", root_cause="cache warm-up missing")
    assert closed.state == ChangeState.closed.value


def test_the_requester_of_an_emergency_may_record_its_review(at_t0):
    change = at_t0.approvals.request_approval(at_t0.changes.submit(emergency_request()).key)
    approve(at_t0, change.key, "erin")
    for target in (ChangeState.implementing, ChangeState.verifying, ChangeState.completed,
                   ChangeState.review_pending):
        at_t0.changes.transition(change.key, target, actor="erin", reason="hotfix")
    closed = at_t0.reviews.record(change.key, actor="bob", code=code(at_t0, change.key, "bob", Act.review),
                                  summary="pool exhausted by a retry storm")
    assert closed.state == ChangeState.closed.value
