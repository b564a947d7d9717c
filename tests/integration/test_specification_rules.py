"""Policy that says what the specifications say (issue 31), each rule read from policies.yaml and refused naming the
field: the evidence each type requires (test evidence; a major change's UAT sign-off and documentation link), a
change's category, the 48 h notice of a standard change and each environment's own notice, and escalation ladders
per type (a standard change reminds its team leads, never on-call at 15 minutes)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from models import Act, InputError, responsible_and_on_call
from tests.helpers import approve, emergency_request, major_request, standard_request

UTC = timezone.utc
T0 = datetime(2026, 12, 1, 12, tzinfo=UTC)  # a Tuesday
REQUESTS = {"standard": standard_request, "emergency": emergency_request, "major": major_request}
CHOICES = {"incident_severity", "category"}  # drop-downs: left out, never typed empty


def _required(org) -> list[tuple[str, str]]:
    """Every (type, field) the shipped policies.yaml requires: the test follows the data, not a list of its own."""
    return [(name, field) for name, policy in org.policies.types.items() for field in policy.requires]


def test_the_shipped_policy_requires_the_specifications_evidence(org):
    """The change control table: standard is tested in staging, major by the full suite and UAT, documented
    before the change (comprehensive)."""
    required = set(_required(org))
    assert {("standard", "test_evidence"), ("major", "test_evidence"), ("major", "uat_signoff"),
            ("major", "documentation_link")} <= required


@pytest.mark.parametrize("index", range(8))
def test_each_required_field_left_out_is_refused_naming_it_and_nothing_is_written(at_t0, org, index):
    pairs = _required(org)
    if index >= len(pairs):
        pytest.skip(f"the shipped policy requires {len(pairs)} fields")
    change_type, field = pairs[index]
    # Left out of a request file, or (a text field) left empty in the run form.
    for left in ("out", "empty") if field not in CHOICES else ("out",):
        request = REQUESTS[change_type]()
        if left == "out":
            request.pop(field, None)
        else:
            request[field] = ""
        with pytest.raises(InputError) as refused:
            at_t0.changes.submit(request)
        assert [p.field for p in refused.value.problems] == [field], refused.value
        assert f"{change_type} change" in str(refused.value), "the refusal names the type whose policy asks"
    assert at_t0.changes.list_changes() == []


def test_a_documentation_link_must_be_a_link_and_a_category_one_of_four(at_t0):
    with pytest.raises(InputError) as refused:
        at_t0.changes.submit(major_request(documentation_link="the wiki page"))
    assert [p.field for p in refused.value.problems] == ["documentation_link"]
    with pytest.raises(InputError) as refused:
        at_t0.changes.submit(standard_request(category="cosmetic"))
    assert [p.field for p in refused.value.problems] == ["category"]
    assert "corrective" in str(refused.value), "the refusal lists the categories"
    assert at_t0.changes.list_changes() == []


def test_evidence_and_category_are_recorded_shown_to_approvers_and_bound_to_the_filing(at_t0):
    change = at_t0.changes.submit(major_request(category="adaptive"))
    view = at_t0.changes.view(change.key)
    assert (view.category.value, view.uat_signoff, view.documentation_link) == (
        "adaptive", "UAT-88, signed off by the payments product owner", "https://wiki.example.com/payments/pg16")
    brief = {line.label: line.text for line in at_t0.briefs.of(at_t0.changes.get(change.key)).lines}
    assert brief["UAT sign-off"].startswith("UAT-88") and brief["Category"] == "adaptive"
    assert brief["Documentation"] == "https://wiki.example.com/payments/pg16"
    # A template's category fills a request that gives none; the request's own wins.
    from_template = at_t0.changes.submit(standard_request(template="rotate-certificate", title="rotate"))
    assert from_template.category == "preventive"
    own = at_t0.changes.submit(standard_request(template="rotate-certificate", title="own", category="corrective"))
    assert own.category == "corrective"


def test_amending_the_evidence_sends_the_change_back_to_approval(at_t0):
    def code(services, key, person, act):
        return services.approvals.approval_code_for(key, person, Act(act))

    change = at_t0.approvals.request_approval(at_t0.changes.submit(standard_request()).key)
    amended = at_t0.amendments.amend(change.key, {"test_evidence": "staging run 813 green", "category": "perfective"},
                                     person="grace", code=code(at_t0, change.key, "grace", "amend"),
                                     reason="re-ran staging")
    assert (amended.approval_round, amended.test_evidence, amended.category) == (2, "staging run 813 green",
                                                                                 "perfective")
    with pytest.raises(InputError) as refused:
        at_t0.amendments.amend(change.key, {"test_evidence": ""}, person="grace",
                               code=code(at_t0, change.key, "grace", "amend"), reason="drop it")
    assert [p.field for p in refused.value.problems] == ["test_evidence"], "the type still requires it"


def test_notice_is_the_types_unless_the_environment_sets_its_own(at_t0, org):
    """Standard: 48 h ("notify stakeholders 48 hours in advance"); the specification's environments: staging
    24 h, development none. An undated standard change in development starts as soon as it is approved."""
    notices = {(name, env): at_t0.rules(at_t0.changes.submit(standard_request(
        title=f"{name} in {env}", environment=env, service=f"svc-{env}"))).policy.notice
        for name in ("standard",) for env in org.policies.environments}
    assert notices == {("standard", "production"): timedelta(hours=48), ("standard", "staging"): timedelta(hours=24),
                       ("standard", "development"): timedelta(0)}
    development = next(c for c in at_t0.changes.list_changes() if c.environment == "development")
    at_t0.approvals.request_approval(development.key)
    approve(at_t0, development.key, "alice")
    approve(at_t0, development.key, "bob")
    assert at_t0.scheduling.start_check(development.key).may_start


def test_a_standard_change_reminds_its_team_leads_after_a_day_never_on_call_at_15_minutes(at_t0, org):
    change = at_t0.approvals.request_approval(at_t0.changes.submit(standard_request()).key)
    requested = change.approval_requested_at
    assert at_t0.approvals.due_for_escalation(requested + timedelta(minutes=15)) == []
    assert at_t0.approvals.due_for_escalation(requested + timedelta(hours=23, minutes=59)) == []
    assert [c.key for c in at_t0.approvals.due_for_escalation(requested + timedelta(hours=24))] == [change.key]
    assert at_t0.rules(change).ladder[0].role == "team_lead"
    emergency = at_t0.approvals.request_approval(at_t0.changes.submit(emergency_request()).key)
    assert [c.key for c in at_t0.approvals.due_for_escalation(requested + timedelta(minutes=15))] == [emergency.key]


def test_a_crash_or_a_waiting_canary_still_reaches_on_call_whatever_the_type(at_t0, org):
    """The people told when a run crashes are policies.yaml `on_call`'s, not the type's first rung (for a standard
    change, its team leads): checkout is frank's, bob is first on call."""
    change = at_t0.changes.submit(standard_request(service="checkout"))
    told = responsible_and_on_call(change, org.directory, org.policies.on_call_role)
    assert told == ["bob", "frank", "grace"]
