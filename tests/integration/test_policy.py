"""Approval policies and segregation of duties: every refusal is explained and recorded."""

from __future__ import annotations

import json

import pytest

from models import Act, AuditAction, ChangeState, PolicyViolation, approval_code
from models import events_for
from tests.helpers import ROUTINE_RISK, SECRET, approve, emergency_request, major_request, standard_request


@pytest.mark.parametrize(
    ("approver", "role", "use_code_of", "message"),
    [
        ("grace", None, "grace", "grace requested this change and cannot approve or reject it (self-approval)"),
        ("dave", "team_lead", "dave", "dave does not hold the role 'team_lead'"),
        ("alice", None, "bob", "wrong approval code for alice"),
        ("mallory", None, "alice", "'mallory' is not in the approver directory"),
        ("alice", "executive", "alice", "role 'executive' is not needed for this change"),
    ],
    ids=["self-approval", "approver-without-role", "wrong-code", "unknown-person", "unneeded-role"],
)
def test_refused_attempts_are_explained_and_recorded(services, approver, role, use_code_of, message):
    change = services.approvals.request_approval(services.changes.submit(standard_request()).key)
    code = approval_code(SECRET, change.key, use_code_of, change.approval_round, Act.approve)
    with pytest.raises(PolicyViolation, match=message.replace("(", r"\(").replace(")", r"\)")):
        services.approvals.decide(change.key, approver=approver, decision="approve", code=code, role=role)
    refused = _refused_events(services, change.key)
    assert len(refused) == 1 and refused[0]["actor"] == approver and message in refused[0]["reason"]
    assert services.changes.get(change.key).version == change.version, "a refused attempt must not touch the change"


def test_one_person_fills_one_role_per_change(services):
    # alice is team lead and CAB member; on a high-risk standard change she may fill only one of them.
    change = services.changes.submit(standard_request(risk={**ROUTINE_RISK, "users_affected": "all",
                                                            "complexity": "high",
                                                   "backout_difficulty": "hard"}))
    assert change.risk_level == "high"
    services.approvals.request_approval(change.key)
    approve(services, change.key, "alice", role="team_lead")
    with pytest.raises(PolicyViolation, match="alice already acted on this change as team_lead"):
        approve(services, change.key, "alice", role="cab_member")
    assert _refused_events(services, change.key)[0]["reason"].startswith("alice already acted")


def test_major_change_waits_for_cab_quorum(services):
    change = services.approvals.request_approval(services.changes.submit(major_request()).key)
    assert approve(services, change.key, "alice").change.state == ChangeState.awaiting_approval.value
    assert approve(services, change.key, "carol").change.state == ChangeState.awaiting_approval.value
    result = approve(services, change.key, "dave")
    assert result.change.state == ChangeState.approved.value and result.evaluation.satisfied
    with pytest.raises(PolicyViolation, match="not awaiting approval"):
        approve(services, change.key, "frank")


def test_a_rejection_rejects_the_change(services):
    change = services.approvals.request_approval(services.changes.submit(major_request()).key)
    approve(services, change.key, "alice")
    result = services.approvals.decide(change.key, approver="carol", decision="reject",
                            code=services.approvals.approval_code_for(change.key, "carol"), comment="no UAT evidence")
    assert result.change.state == ChangeState.rejected.value and result.change.closed_at is not None


def test_emergency_change_is_approved_by_the_incident_commander_alone(services):
    change = services.approvals.request_approval(services.changes.submit(emergency_request()).key)
    with pytest.raises(PolicyViolation, match="holds none of the roles"):
        approve(services, change.key, "alice")
    assert approve(services, change.key, "erin").change.state == ChangeState.approved.value


def test_change_records_the_policy_version_that_governed_it(services, org):
    change = services.changes.submit(standard_request())
    assert change.policy_version == org.policies.version and len(change.policy_version) == 64


def _refused_events(services, key):
    with services.db.read() as session:
        return [json.loads(e.data) | {"actor": e.actor} for e in events_for(session, key)
                if e.action == AuditAction.approval_refused.value]
