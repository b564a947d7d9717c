"""Report figures against hand-computed values on a small fixed history, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import update

from models import ChangeRequest, Services, PolicyViolation
from notifications import Notifier
from tests.helpers import SECRET, Clock, emergency_request, lift_guards, major_request, standard_request

UTC = timezone.utc
T0 = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)  # a Sunday, 02:00: inside the weekly window


@pytest.fixture
def history(db, org, tmp_path):
    """
    payments  S1 standard: created T0, approved T0+1h, implemented T0+30m.. completed T0+2h (lead 2 h)  [in window]
              S2 standard: created T0+1d, rolled back T0+1d+3h                                          [outside]
              S3 standard: created T0+2d, completed T0+2d+4h (lead 4 h; restores S2 after 25 h)         [in freeze]
              S4 standard: implemented with no approvals (a bypass written straight into the database)
    checkout  E1 emergency P1: created T0+3d, completed T0+3d+30m (lead 0.5 h), never reviewed
              M1 major: approval took 8 days (SLA 7 d), failed T0+12d+6h, nothing restores it
    """
    clock = Clock(T0)
    services = Services.build(db, org, SECRET, clock=clock)

    def at(delta):
        clock.at = T0 + delta
        return clock.at

    def approve_all(key, people):
        for person in people:
            services.approvals.decide(key, approver=person, decision="approve",
                                      code=services.approvals.approval_code_for(key, person))

    def run(key, steps, windowed=True):
        for state, delta in steps:
            at(delta)
            services.changes.transition(key, state, actor="ops", reason="history")

    at(timedelta(0))
    s1 = services.approvals.request_approval(services.changes.submit(standard_request(title="S1")).key)
    at(timedelta(minutes=10))
    with pytest.raises(PolicyViolation):
        services.approvals.decide(s1.key, approver="grace", decision="approve", code="nope")
    at(timedelta(hours=1))
    approve_all(s1.key, ["alice", "bob"])
    run(s1.key, [("scheduled", timedelta(hours=1)), ("implementing", timedelta(hours=1, minutes=10)),
                 ("verifying", timedelta(hours=1, minutes=50)), ("completed", timedelta(hours=2))])

    at(timedelta(days=1))
    s2 = services.approvals.request_approval(services.changes.submit(standard_request(title="S2")).key)
    with pytest.raises(PolicyViolation):
        services.approvals.decide(s2.key, approver="bob", decision="approve", code="WRONG-CODE")
    approve_all(s2.key, ["frank", "carol"])
    run(s2.key, [("scheduled", timedelta(days=1, hours=1)), ("implementing", timedelta(days=1, hours=2)),
                 ("rolled_back", timedelta(days=1, hours=3))])

    services.scheduling.add_window(starts_at=T0 + timedelta(days=2), ends_at=T0 + timedelta(days=2, hours=6),
                       title="Audit freeze", freeze=True)
    at(timedelta(days=1, hours=5))
    s3 = services.approvals.request_approval(services.changes.submit(standard_request(title="S3")).key)
    approve_all(s3.key, ["alice", "bob"])
    clock.at = T0 + timedelta(days=2)
    with db.write() as session:  # S3 was created at T0+2d (created before the freeze was declared)
        session.execute(update(ChangeRequest).where(ChangeRequest.key == s3.key).values(created_at=clock.at))
    run(s3.key, [("scheduled", timedelta(days=2, hours=1)), ("implementing", timedelta(days=2, hours=2)),
                 ("verifying", timedelta(days=2, hours=3)), ("completed", timedelta(days=2, hours=4))])

    at(timedelta(days=2, hours=8))
    s4 = services.approvals.request_approval(services.changes.submit(standard_request(title="S4 bypass")).key)
    with db.write() as session:
        session.execute(update(ChangeRequest).where(ChangeRequest.key == s4.key).values(
            state="implementing", implemented_at=T0 + timedelta(days=2, hours=9)))

    at(timedelta(days=3))
    e1 = services.approvals.request_approval(services.changes.submit(emergency_request(title="E1")).key)
    approve_all(e1.key, ["erin"])
    run(e1.key, [("implementing", timedelta(days=3, minutes=5)), ("verifying", timedelta(days=3, minutes=20)),
                 ("completed", timedelta(days=3, minutes=30)), ("review_pending", timedelta(days=3, minutes=31))])

    at(timedelta(days=4))
    m1 = services.approvals.request_approval(services.changes.submit(major_request(title="M1", service="checkout")).key)
    at(timedelta(days=12))
    approve_all(m1.key, ["alice", "carol", "dave"])
    run(m1.key, [("scheduled", timedelta(days=12, hours=1)), ("implementing", timedelta(days=12, hours=2)),
                 ("failed", timedelta(days=12, hours=6))])

    settings_home = tmp_path
    from models import Settings

    notifier = Notifier(services, Settings(home=settings_home, secret=SECRET.decode(), notify_max_attempts=1),
                        channels={})
    notifier.announce(services.changes.get(s1.key), "approved", ["alice"])  # no sender for her inbox: fails at once
    notifier.deliver()
    from models import Notification

    with db.write() as session:  # the outbox stamps real time; place the failed message inside the history
        session.execute(update(Notification).values(created_at=T0 + timedelta(hours=3)))
    clock.at = T0 + timedelta(days=20)
    return services, {"S1": s1.key, "S2": s2.key, "S3": s3.key, "S4": s4.key, "E1": e1.key, "M1": m1.key}


def report(services, name, **kw):
    return services.reports.run(name, T0, T0 + timedelta(days=14), **kw).rows


def test_dora_figures(history):
    services, _ = history
    rows = {r["service"]: r for r in report(services, "dora")}
    overall = rows["(all)"]
    # succeeded: S1 (2 h), S3 (4 h... created T0+2d, ended T0+2d+4h), E1 (0.5 h); failed: S2, M1
    assert overall["deployments"] == 3 and overall["deployments_per_day"] == round(3 / 14, 4)
    assert overall["lead_time_median_h"] == 2.0 and overall["lead_time_p90_h"] == 4.0
    assert (overall["implemented"], overall["failed"], overall["change_failure_rate"]) == (5, 2, 0.4)
    # S2 rolled back at T0+1d+3h, S3 succeeded at T0+2d+4h: 25 h; M1 never restored
    assert overall["time_to_restore_median_h"] == 25.0 and overall["unrestored_failures"] == 1
    payments = rows["payments"]
    assert (payments["deployments"], payments["lead_time_median_h"], payments["lead_time_p90_h"]) == (2, 3.0, 4.0)
    assert payments["change_failure_rate"] == round(1 / 3, 4) and payments["time_to_restore_median_h"] == 25.0
    checkout = rows["checkout"]
    assert (checkout["deployments"], checkout["lead_time_median_h"], checkout["change_failure_rate"]) == (1, 0.5, 0.5)
    assert checkout["time_to_restore_median_h"] is None and checkout["unrestored_failures"] == 1
    only = report(services, "dora", on_service="checkout")
    assert [r["service"] for r in only] == ["checkout", "(all)"] and only[1]["implemented"] == 2


def test_compliance_findings(history):
    services, keys = history
    findings = {(f["kind"], f["change"]) for f in report(services, "compliance")}
    assert ("unapproved_implementation", keys["S4"]) in findings
    assert [k for k, c in findings if k == "unapproved_implementation"] == ["unapproved_implementation"]
    assert not {kind for kind, _ in findings} & {"self_approval", "refused_attempt"}, "controls that held"
    assert ("emergency_without_review", keys["E1"]) in findings
    assert ("inside_freeze", keys["S3"]) in findings
    assert ("outside_window", keys["S2"]) in findings and ("outside_window", keys["S1"]) not in findings
    assert ("outside_window", keys["E1"]) not in findings, "emergency changes may run any time"
    assert ("undelivered_notification", keys["S1"]) in findings
    refused = {(r["kind"], r["change"], r["who"]): r["why"] for r in report(services, "refusals")}
    assert refused[("approval", keys["S1"], "grace")].startswith("self-approval: ")
    assert "wrong approval code" in refused[("approval", keys["S2"], "bob")]
    assert not any(kind == "audit_chain_broken" for kind, _ in findings)
    details = {f["kind"]: f["detail"] for f in report(services, "compliance")}
    assert details["unapproved_implementation"] == "missing 1 x peer_reviewer, 1 x team_lead"
    assert "Audit freeze" in details["inside_freeze"]


def test_sla_report(history):
    services, _ = history
    rows = {r["type"]: r for r in report(services, "sla")}
    assert rows["standard"]["requested"] == 4 and rows["standard"]["approved"] == 3
    assert rows["standard"]["breaches"] == 0 and rows["standard"]["sla_h"] == 48.0
    assert rows["major"]["approved"] == 1 and rows["major"]["breaches"] == 1 and rows["major"]["max_h"] == 192.0
    assert rows["emergency"]["median_h"] == 0.0


def test_report_csv_and_json_outputs(history, cli_env_for):
    run = cli_env_for(history[0])
    csv_out = run("report", "dora", "--since", T0.isoformat(), "--until", (T0 + timedelta(days=14)).isoformat(),
                  "--format", "csv")
    assert csv_out.exit_code == 0, csv_out.output
    rows = list(csv.DictReader(io.StringIO(csv_out.stdout)))
    assert rows[-1]["service"] == "(all)" and rows[-1]["change_failure_rate"] == "0.4"
    listed = json.loads(run("log", "--format", "json", "--limit", "3").stdout)
    assert len(listed) == 3 and set(listed[0]) == {"key", "type", "state", "service", "title", "requester",
                                                   "risk_level", "outcome", "created_at", "implemented_at",
                                                   "closed_at"}
    bad = run("report", "velocity")
    assert bad.exit_code == 2 and "not one of dora, compliance, sla" in bad.stderr


def test_compliance_reports_a_broken_audit_chain(history, insider):
    services, _ = history
    with insider.write_engine.connect() as conn:
        lift_guards(conn, insider.dialect)
        conn.exec_driver_sql("UPDATE audit_events SET actor = 'mallory' WHERE seq = 7")
        conn.commit()
    broken = [f for f in report(services, "compliance") if f["kind"] == "audit_chain_broken"]
    assert broken == [{"kind": "audit_chain_broken", "change": None,
                       "detail": "first broken event 7: event 7 was altered (its hash does not match its content)"}]
