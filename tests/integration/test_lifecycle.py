"""The change lifecycle: allowed moves as data, illegal ones refused with nothing written."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from models import Act, ChangeState as S, IllegalTransition, PolicyViolation, verify_chain
from tests.helpers import approve, emergency_request, standard_request

NOW = datetime(2026, 11, 27, tzinfo=timezone.utc)


def test_illegal_transition_writes_nothing(services):
    change = services.changes.submit(standard_request())
    with services.db.read() as session:
        before = verify_chain(session).count
    with pytest.raises(IllegalTransition, match="cannot move from submitted to implementing"):
        services.changes.transition(change.key, S.implementing, actor="ops", reason="skip the queue")
    after = services.changes.get(change.key)
    assert after.state == S.submitted.value and after.version == change.version
    with services.db.read() as session:
        assert verify_chain(session).count == before


def test_an_outcome_and_its_review_are_one_write_a_crash_cannot_split(services):
    """A run killed between `failed` and `review_pending` left the change failed with nothing to take it on: the
    two moves are one transaction, both or neither (an illegal follow-up writes nothing at all)."""
    change = services.approvals.request_approval(services.changes.submit(emergency_request()).key)
    approve(services, change.key, "erin")
    services.changes.transition(change.key, S.implementing, actor="changeflow", reason="started")
    with services.db.read() as session:
        before = verify_chain(session).count
    with pytest.raises(IllegalTransition, match="cannot move from failed to closed"):
        services.changes.transition(change.key, S.failed, actor="changeflow", reason="step 1 failed",
                                    then=(S.closed, "skip the review"))
    assert services.changes.get(change.key).state == S.implementing.value
    with services.db.read() as session:
        assert verify_chain(session).count == before
    done = services.changes.transition(change.key, S.failed, actor="changeflow", reason="step 1 failed",
                                       then=(S.review_pending, "failed: review due"))
    assert done.state == S.review_pending.value and done.outcome == "failed" and done.review_due_at is not None
    moves = [(e.from_state, e.to_state) for e in services.changes.view(change.key).events if e.action == "transition"]
    assert moves[-2:] == [("implementing", "failed"), ("failed", "review_pending")]
    with services.db.read() as session:
        assert verify_chain(session).count == before + 2


def test_approved_needs_the_policy_satisfied(services):
    change = services.approvals.request_approval(services.changes.submit(standard_request()).key)
    with pytest.raises(PolicyViolation, match="still needs 1 x peer_reviewer, 1 x team_lead"):
        services.changes.transition(change.key, S.approved, actor="ops", reason="trust me")
    assert services.changes.get(change.key).state == S.awaiting_approval.value


def test_emergency_change_runs_to_review_with_a_48h_deadline(services):
    change = services.approvals.request_approval(services.changes.submit(emergency_request()).key)
    result = approve(services, change.key, "erin")
    assert result.change.state == S.approved.value
    for target in (S.implementing, S.verifying, S.completed, S.review_pending):
        done = services.changes.transition(change.key, target, actor="erin", reason="hotfix")
    assert (done.review_due_at - done.updated_at).total_seconds() == 48 * 3600
    closed = services.reviews.record(change.key, actor="erin", summary="root cause: bad config push",
                                            code=services.approvals.approval_code_for(change.key, "erin", Act.review))
    assert closed.state == S.closed.value and closed.closed_at is not None
