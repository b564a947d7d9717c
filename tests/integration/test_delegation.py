"""Delegation (issue 27): a person names a delegate for a period and every gate honours it, within the period
only, never for the requester of their own change, and a person and their delegate are one party. Recording
one is an operator's act, refused and recorded otherwise; bad fields are refused naming each, writing nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from models import Act, AuditEvent, ChangeState, Delegation, InputError, PolicyViolation
from tests.helpers import approve, major_request, standard_request
from tests.integration.test_bypass import T0, actions, code  # noqa: F401 (T0: clock)
from tests.integration.test_reviews import rolled_back


def alice_away(services, *, days: int = 7, starts: timedelta = timedelta(0), to: str = "erin"):
    """alice (team lead, CAB member, owner of payments) hands her authority to `to` from T0 + `starts`."""
    return services.delegations.record(
        Delegation("alice", to, T0 + starts, T0 + starts + timedelta(days=days), "annual leave"), operator="dave")


def awaiting(services, request: dict | None = None):
    return services.approvals.request_approval(services.changes.submit(request or standard_request()).key)


def approvals_of(services, key: str) -> list[tuple[str, str, str | None]]:
    return [(a.approver, a.role, a.on_behalf_of) for a in services.changes.view(key).approvals]


def test_a_delegate_approves_for_their_delegator_within_the_period_and_is_asked_and_shown(at_t0, tmp_path):
    from models import Settings
    from notifications import Notifier
    from tests.helpers import SECRET

    alice_away(at_t0)
    change = awaiting(at_t0)
    asked = Notifier(at_t0, Settings(home=tmp_path, secret=SECRET.decode())).approvers_to_ask(change)
    assert asked["erin"] == "team_lead", "the delegate is asked in the delegator's role"
    assert "erin for alice until 2026-12-08 12:00 UTC (annual leave)" in at_t0.briefs.of(change).text("Standing in")
    approve(at_t0, change.key, "erin")
    assert approvals_of(at_t0, change.key) == [("erin", "team_lead", "alice")]
    assert at_t0.briefs.of(change).text("Decided so far") == "erin approved as team_lead for alice"
    approve(at_t0, change.key, "bob")
    assert at_t0.changes.get(change.key).state == ChangeState.approved.value


@pytest.mark.parametrize(("starts", "message"), [
    (timedelta(days=1), "alice's delegation to erin runs 2026-12-02 12:00 UTC to 2026-12-09 12:00 UTC, not now"),
    (timedelta(days=-8), "alice's delegation to erin runs 2026-11-23 12:00 UTC to 2026-11-30 12:00 UTC, not now"),
], ids=["before-it-starts", "after-it-ended"])
def test_a_delegate_outside_the_period_is_refused_naming_it_and_recorded(db, org, clock, starts, message):
    from models import Services
    from tests.helpers import SECRET

    clock.at = T0 + starts  # a delegation is recorded before it ends: record it then, act at T0
    services = Services.build(db, org, SECRET, clock=clock)
    alice_away(services, starts=starts)
    clock.at = T0
    change = awaiting(services)
    with pytest.raises(PolicyViolation, match=message):
        approve(services, change.key, "erin")
    assert actions(services, change.key)[-1] == ("erin", "approval_refused")
    assert approvals_of(services, change.key) == []


def test_an_ended_delegation_no_longer_counts(at_t0, clock):
    delegation = alice_away(at_t0)
    change = awaiting(at_t0)
    clock.at = T0 + timedelta(hours=1)
    at_t0.delegations.revoke(delegation.id, operator="dave")
    with pytest.raises(PolicyViolation, match="alice's delegation to erin ended 2026-12-01 13:00 UTC"):
        approve(at_t0, change.key, "erin")


def test_nobody_stands_in_for_the_requester_on_their_own_change(at_t0):
    """frank (team lead) files a change and hands his authority to erin: erin approving it as team lead would be
    frank approving his own change."""
    at_t0.delegations.record(Delegation("frank", "erin", T0, T0 + timedelta(days=3), "conference"), operator="dave")
    change = awaiting(at_t0, standard_request(requester="frank", service="checkout"))
    with pytest.raises(PolicyViolation, match="erin holds none of the roles this change needs"):
        approve(at_t0, change.key, "erin")
    assert "frank" not in at_t0.briefs.of(change).text("Standing in")


def test_a_person_and_their_delegate_fill_one_role_per_change(at_t0):
    """A major change needs a CAB majority (3 of alice, carol, dave, frank): alice and erin standing in for her are
    one vote, in either order."""
    alice_away(at_t0)
    change = awaiting(at_t0, major_request())
    approve(at_t0, change.key, "alice")
    with pytest.raises(PolicyViolation, match="alice, for whom erin stands in as cab_member, has already acted"):
        approve(at_t0, change.key, "erin")
    other = awaiting(at_t0, major_request(title="second migration"))
    approve(at_t0, other.key, "erin")
    with pytest.raises(PolicyViolation, match=r"alice already acted on this change as cab_member \(through erin"):
        approve(at_t0, other.key, "alice")
    assert approvals_of(at_t0, other.key) == [("erin", "cab_member", "alice")]


def test_the_review_gate_honours_a_delegation_too(at_t0, clock):
    """bob may not review a standard change (its reviewers: the owner and team leads); standing in for alice, he
    may, with his own code."""
    change = rolled_back(at_t0, clock)
    at_t0.delegations.record(Delegation("alice", "bob", clock.at, clock.at + timedelta(days=1), "on call swap"),
                             operator="dave")
    closed = at_t0.reviews.record(change.key, actor="bob", code=code(at_t0, change.key, "bob", Act.review),
                                  summary="warm-up added", root_cause="cache warm-up missing")
    assert closed.state == ChangeState.closed.value


def test_recording_a_delegation_is_an_operators_act_refused_and_recorded_otherwise(at_t0):
    with pytest.raises(PolicyViolation, match="'alice' holds none of the roles that may record a delegation"):
        at_t0.delegations.record(Delegation("alice", "erin", T0, T0 + timedelta(days=1), "leave"), operator="alice")
    assert at_t0.delegations.listed() == []
    with at_t0.db.read() as session:
        refused = session.execute(select(AuditEvent.actor).where(AuditEvent.action == "delegation_refused")).all()
    assert [actor for actor, in refused] == ["alice"]


@pytest.mark.parametrize(("delegation", "field", "problem"), [
    (Delegation("alice", "alice", T0, T0 + timedelta(days=1), "leave"), "delegate", "cannot delegate to themselves"),
    (Delegation("alice", "zoe", T0, T0 + timedelta(days=1), "leave"), "delegate", "'zoe' is not a person"),
    (Delegation("maintenance", "erin", T0, T0 + timedelta(days=1), "x"), "delegator", "'maintenance' is not a person"),
    (Delegation("alice", "erin", T0, T0 - timedelta(days=1), "leave"), "until", "must end after it starts"),
    (Delegation("alice", "erin", T0 - timedelta(days=3), T0 - timedelta(days=1), "leave"), "until", "already over"),
    (Delegation("alice", "erin", T0, T0 + timedelta(days=40), "leave"), "until", "lasts at most 31 days"),
    (Delegation("alice", "erin", T0, T0 + timedelta(days=1), "  "), "reason", "say why"),
], ids=["to-oneself", "unknown-delegate", "automation-delegator", "ends-before-start", "past", "too-long",
        "no-reason"])
def test_a_bad_delegation_is_refused_naming_the_field_and_nothing_is_written(at_t0, delegation, field, problem):
    with pytest.raises(InputError, match=problem) as refused:
        at_t0.delegations.record(delegation, operator="dave")
    assert field in [name for name, _ in refused.value.problems]
    assert at_t0.delegations.listed(include_ended=True) == []
