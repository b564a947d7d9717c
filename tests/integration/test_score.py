"""The change success score (issue 33) against a hand-computed history, on SQLite and PostgreSQL: per service, per
team and for all, over 30 and 90 days, with the targets each misses; the weekly trend; and a score rule used both
ways (a service under 80 % needs the CAB for standard changes, one above it or with too few changes does not), read
as of each change's filing so waiting for better days does not lift it, and replayed by the what-if."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from sqlmodel import Session

from models import ChangeRequest, Services
from tests.helpers import SECRET, approve, standard_request

T0 = datetime(2026, 11, 1, 12, tzinfo=timezone.utc)
CAB_RULE = {"below": 0.8, "min_changes": 10, "types": ["standard"],
            "approvals": [{"role": "cab_member", "quorum": "majority"}]}


def _ended(session: Session, n: int, service: str, outcome: str, *, days_ago: float, type_: str = "standard",
           hours: float = 3, severity: str | None = None, review: bool = False, rolls_back: str | None = None) -> str:
    """A change of `service` that ended `days_ago` before T0, filed `hours` before it ended."""
    ended = T0 - timedelta(days=days_ago)
    key = f"CHG-9{n:05d}"
    session.add(ChangeRequest(
        key=key, type=type_, state="closed", title=f"history {n}", service=service, requester="grace",
        risk_level="low", risk_score=1, policy_version="0" * 64, created_at=ended - timedelta(hours=hours),
        ended_at=ended, closed_at=ended, outcome=outcome, incident_severity=severity, rolls_back=rolls_back,
        incident_id=f"INC-{n}" if severity else None, review_due_at=ended + timedelta(days=2) if review else None))
    return key


def _history(insider) -> None:
    """payments, last 30 days: 6 standard succeeded, 1 failed (reviewed), 1 rolled back (review due, not done),
    a P1 emergency fixed 2 h after filing, and a completed change undone by a P2 rollback (1 h): 11 ended, 8
    succeeded (the undone one counts rolled back). 60 days ago: 1 more failed. checkout: 4 succeeded."""
    with Session(insider.write_engine) as session:
        n = iter(range(1, 100))
        for _ in range(6):
            _ended(session, next(n), "payments", "succeeded", days_ago=5)
        _ended(session, next(n), "payments", "failed", days_ago=4, review=True)
        _ended(session, next(n), "payments", "rolled_back", days_ago=3, review=True)
        _ended(session, next(n), "payments", "succeeded", days_ago=2, type_="emergency", hours=2, severity="P1")
        undone = _ended(session, next(n), "payments", "succeeded", days_ago=1.5)
        _ended(session, next(n), "payments", "succeeded", days_ago=1, type_="emergency", hours=1, severity="P2",
               rolls_back=undone)
        _ended(session, next(n), "payments", "failed", days_ago=60)
        for _ in range(4):
            _ended(session, next(n), "checkout", "succeeded", days_ago=10)
        session.commit()
    with Session(insider.write_engine) as session:  # the first failure's review, as the service records it
        from models import append_event

        append_event(session, actor="alice", action="review_recorded", change_key="CHG-900007", at=T0, data={})
        session.commit()


def test_the_score_matches_a_hand_computed_history_per_service_team_and_all(databases, org, cli_env):
    _history(databases.insider)
    services = Services.build(databases.app, org, SECRET)
    rows = services.reports.run("score", until=T0).rows
    found = {(r["scope"], r["name"], r["days"]): r for r in rows}
    payments = found[("service", "payments", 30)]
    assert {k: payments[k] for k in ("changes", "succeeded", "success_rate", "change_failure_rate", "rollback_rate",
                                     "emergency_share", "review_completion", "restore_p1_h", "restore_p2_h")} == {
        "changes": 11, "succeeded": 8, "success_rate": 0.7273, "change_failure_rate": 0.2727,
        "rollback_rate": 0.1818, "emergency_share": 0.1818, "review_completion": 0.5, "restore_p1_h": 2.0,
        "restore_p2_h": 1.0}
    assert payments["flags"] == ("change failure rate 27.3% (target < 5%); rollback rate 18.2% (target < 2%); "
                                 "time to restore P1 2 h (target < 1 h)")
    assert (found[("service", "payments", 90)]["changes"], found[("service", "payments", 90)]["success_rate"]) == (
        12, 0.6667)
    assert (found[("service", "checkout", 30)]["success_rate"], found[("service", "checkout", 30)]["flags"]) == (
        1.0, "")
    assert (found[("team", "commerce", 30)]["changes"], found[("team", "commerce", 30)]["success_rate"]) == (15, 0.8)
    assert found[("all", "(all)", 30)]["changes"] == 15
    trend = services.reports.run("score-trend", since=T0 - timedelta(days=14), until=T0).rows
    assert [(w["week"], w["changes"]) for w in trend] == [("2026-10-19", 4), ("2026-10-26", 11)]
    shown = cli_env("report", "score", "--until", T0.isoformat(), "--service", "checkout", "--format", "json")
    assert shown.exit_code == 0, shown.output
    assert {(r["scope"], r["name"], r["days"]) for r in json.loads(shown.stdout)} == {
        ("service", "checkout", 30), ("service", "checkout", 90), ("team", "commerce", 30), ("team", "commerce", 90)}


@pytest.fixture
def with_cab_rule(databases, org, clock):
    """The services under policies with the CAB rule, on the test's clock, over the history."""
    _history(databases.insider)
    data = org.policies.model_dump(by_alias=True, exclude={"version"})
    data["score"]["rules"] = [CAB_RULE]
    ruled = org.model_copy(update={"policies": org.policies.model_validate(data).model_copy(
        update={"version": "c" * 64})})
    return Services.build(databases.app, ruled, SECRET, clock=clock)


def test_a_score_rule_adds_the_cab_under_80_percent_and_not_above_it_or_with_few_changes(with_cab_rule, clock, org):
    services = with_cab_rule
    under = services.approvals.request_approval(services.changes.submit(standard_request()).key).key  # payments
    few = services.approvals.request_approval(services.changes.submit(standard_request(service="checkout")).key).key
    for person in ("alice", "bob"):
        approve(services, under, person)
        approve(services, few, person)
    assert services.changes.get(few).state == "approved", "4 changes: under min_changes, no rule"
    assert services.changes.get(under).state == "awaiting_approval", "67 % over 90 days: the CAB too"
    # Better days after its filing do not lift it: the standing is the one it was filed with.
    with Session(services.db.write_engine) as session:
        for n in range(50, 70):
            _ended(session, n, "payments", "succeeded", days_ago=-0.5, hours=13)  # 12 h after its filing
        session.commit()
    clock.at = T0 + timedelta(days=1)
    for person in ("carol", "dave"):
        approve(services, under, person, role="cab_member")
    assert services.changes.get(under).state == "awaiting_approval", "alice counts once: carol, dave, 1 more"
    approve(services, under, "frank", role="cab_member")
    assert services.changes.get(under).state == "approved"
    # Filed now, after 20 more successes (32 of 36 over 90 days: 89 %), a payments change needs no CAB.
    above = services.approvals.request_approval(services.changes.submit(standard_request()).key).key
    for person in ("alice", "bob"):
        approve(services, above, person)
    assert services.changes.get(above).state == "approved"
    # The what-if: the shipped policy (no rule) against the ruled one names the rule for the first change only,
    # and the ruled policy replays its own record without a difference.
    report = services.what_if.compare(services.org.policies, org.directory, T0 - timedelta(minutes=30),
                                      T0 + timedelta(days=2))
    assert report.rows == [], "the policy against itself"
    shipped = Services.build(services.db, org, SECRET, clock=clock).what_if.compare(
        services.org.policies, org.directory, T0 - timedelta(minutes=30), T0 + timedelta(days=2))
    found = {r.key: r.differences for r in shipped.rows}
    assert set(found) == {under} and shipped.score_rules == 1, found
    assert "score rule: payments succeeded in 67% of 12 changes over 90 d, under 80%" in found[under], found
    assert services.what_if.replay(T0 - timedelta(minutes=30), T0 + timedelta(days=2)).differences == []


def test_pre_approval_is_earned_by_a_services_record_and_the_what_if_names_the_ones_it_withholds(databases, org,
                                                                                                  clock):
    """`score.pre_approval: {above: 0.95, min_changes: 10}`: the restart template's change skips the gate on a
    service with 12 of 12 succeeded (platform), not on payments (8 of 12) nor on checkout (4 changes: no record
    yet), each withheld one saying why on its policy decision; the what-if names the ones a new rule withholds."""
    from models import ChangeState

    _history(databases.insider)
    with Session(databases.insider.write_engine) as session:
        for n in range(30, 42):
            _ended(session, n, "platform", "succeeded", days_ago=20)
        session.commit()
    data = org.policies.model_dump(by_alias=True, exclude={"version"})
    data["score"]["pre_approval"] = {"above": 0.95, "min_changes": 10}
    earned = org.model_copy(update={"policies": org.policies.model_validate(data).model_copy(
        update={"version": "e" * 64})})
    services = Services.build(databases.app, earned, SECRET, clock=clock)
    restart = {"template": "restart-service", "rollback_plan": "", "implementation_plan": "", "risk": None}
    keys = {service: services.approvals.request_approval(services.changes.submit(standard_request(
        service=service, **restart)).key).key for service in ("platform", "payments", "checkout")}
    states = {service: services.changes.get(key).state for service, key in keys.items()}
    assert states == {"platform": ChangeState.approved.value, "payments": "awaiting_approval",
                      "checkout": "awaiting_approval"}, states
    payments = services.changes.view(keys["payments"])
    decision = next(e.data for e in payments.events if e.action == "policy_decision")
    assert decision["pre_approval_withheld"] == ("its service succeeded in 67% of 12 changes over 90 d; pre-approval "
                                                 "needs more than 95% of at least 10"), decision
    shipped = Services.build(databases.app, org, SECRET, clock=clock)
    report = shipped.what_if.compare(earned.policies, org.directory, T0 - timedelta(minutes=30),
                                     T0 + timedelta(minutes=30))
    found = {r.key: r.differences for r in report.rows}
    assert set(found) == {keys["payments"], keys["checkout"]}, found
    assert found[keys["checkout"]] == ("no longer pre-approved: its service succeeded in 100% of 4 changes over 90 d; "
                                       "pre-approval needs more than 95% of at least 10",), found
