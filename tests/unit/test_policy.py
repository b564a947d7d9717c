"""Approval policies and segregation of duties: every refusal is explained and recorded."""

from __future__ import annotations

from models import (
    Act,
    Decision,
    GivenApproval,
    RequiredApproval,
    RiskLevel,
    approval_code,
    evaluate,
    required_approvals,
    verify_code,
)
from tests.helpers import SECRET


def test_each_type_needs_the_approvers_of_the_policy_table(org):
    def needs(change_type, risk="low"):
        return {(r.role, r.count) for r in required_approvals(change_type, risk, org.policies, org.directory)}

    assert needs("emergency") == {("incident_commander", 1)}
    assert needs("standard") == {("team_lead", 1), ("peer_reviewer", 1)}
    # Four CAB members in the example directory: a majority is three.
    assert needs("major") == {("cab_member", 3)}
    assert needs("standard", RiskLevel.high) == {("team_lead", 1), ("peer_reviewer", 1), ("cab_member", 3)}


def test_standard_change_needs_two_different_people():
    required = [RequiredApproval("team_lead", 1), RequiredApproval("peer_reviewer", 1)]
    one = [GivenApproval("alice", "team_lead", Decision.approve)]
    assert evaluate(required, one).missing == {"peer_reviewer": 1}
    both = one + [GivenApproval("bob", "peer_reviewer", Decision.approve)]
    assert evaluate(required, both).satisfied


def test_any_rejection_rejects_unless_configured_otherwise():
    required = [RequiredApproval("cab_member", 2)]
    given = [GivenApproval("alice", "cab_member", Decision.approve), GivenApproval("dave", "cab_member",
                                                                                   Decision.reject)]
    assert evaluate(required, given).rejected
    assert not evaluate(required, given, reject_on_any_rejection=False).rejected


def test_approval_codes_are_personal_per_change_round_and_act():
    approve = Act.approve
    code = approval_code(SECRET, "CHG-000001", "alice", 1, approve)
    assert verify_code(SECRET, "CHG-000001", "alice", 1, approve, code)
    assert verify_code(SECRET, "CHG-000001", "alice", 1, approve, code.lower().replace("-", " "))
    assert not verify_code(SECRET, "CHG-000001", "bob", 1, approve, code)
    assert not verify_code(SECRET, "CHG-000002", "alice", 1, approve, code)
    assert not verify_code(SECRET, "CHG-000001", "alice", 2, approve, code)
    assert not verify_code(b"other-secret", "CHG-000001", "alice", 1, approve, code)
    assert not verify_code(SECRET, "CHG-000001", "alice", 1, approve, "")
    # A code sent for one act is worth nothing for any other (issue 27).
    codes = {act: approval_code(SECRET, "CHG-000001", "alice", 1, act) for act in Act}
    assert len(set(codes.values())) == len(Act)
    for act in Act:
        assert [other for other in Act if verify_code(SECRET, "CHG-000001", "alice", 1, other, codes[act])] == [act]


def test_an_approval_code_encodes_its_fields_unambiguously():
    # Joined with a separator, ("CHG-1|alice", "x") and ("CHG-1", "alice|x") would make one message.
    assert approval_code(SECRET, "CHG-1|alice", "x", 1, Act.approve) != approval_code(SECRET, "CHG-1", "alice|x", 1,
                                                                                       Act.approve)


def test_each_type_has_the_escalation_ladder_its_policy_gives(org):
    from models import change_type

    ladder = {name: [(s.after.total_seconds(), s.role) for s in change_type(org.policies, name).ladder]
              for name in ("emergency", "standard", "major")}
    assert ladder["emergency"][0] == (15 * 60, "oncall_primary"), "the shared (incident) ladder"
    assert ladder["emergency"] == [(s.after.total_seconds(), s.role) for s in org.policies.escalation], \
        "types without a ladder of their own use the shared one"
    # Issue 31: a standard change's 48 h SLA reminds its team leads first, and never on-call at 15 minutes.
    assert ladder["standard"] == [(24 * 3600, "team_lead"), (36 * 3600, "management")]
    assert ladder["major"] == [(86400, "management"), (3 * 86400, "executive")]
    assert org.policies.on_call_role == "oncall_primary", "a crash or a waiting canary goes to on-call, any type"


def test_a_type_is_filed_only_for_the_severities_its_policy_names_and_the_refusal_names_the_way_instead(org):
    """Issue 31 (the specification: P3 and P4 incidents take the standard workflow, not the emergency one). The
    rule is data: a type added in YAML with its own severities behaves the same, and one without any takes all."""
    from types import SimpleNamespace

    from models import PolicySet, change_type

    policies = org.policies.model_dump()
    policies["types"]["hotfix"] = {**policies["types"]["emergency"], "severities": ["P1"],
                                   "other_severities_as": "major"}
    policies["types"]["anything"] = {**policies["types"]["emergency"], "severities": [],
                                     "other_severities_as": None}
    policy_set = PolicySet.model_validate(policies)

    def problems(type_name: str, severity: str) -> list[str]:
        request = SimpleNamespace(type=type_name, incident_id="INC-1", incident_severity=severity)
        return [f"{p.field}: {p.message}" for p in change_type(policy_set, type_name).request_problems(request)]

    assert problems("emergency", "P1") == problems("emergency", "P2") == []
    assert problems("emergency", "P3") == ["incident_severity: an emergency change is only for P1 or P2 incidents, "
                                           "not P3: file the fix of a P3 incident as a standard change"]
    assert problems("hotfix", "P2") == ["incident_severity: a hotfix change is only for P1 incidents, not P2: file "
                                        "the fix of a P2 incident as a major change"]
    assert problems("anything", "P4") == []
