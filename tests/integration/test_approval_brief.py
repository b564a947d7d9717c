"""Approvers see what they approve (issue 27): real changes (a canary release from a template, and an emergency
dated into another change's window on its service) rendered as their approval request on every personal channel's body
and on the approval link's page carry the same brief: when, risk answers, evidence, template commands, canary
steps and thresholds, the clash, and who has decided so far."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from endpoint import create_app
from models import CanaryConfig, CanaryPlan, Services
from starlette.testclient import TestClient
from tests.helpers import ROUTINE_RISK, approve, emergency_request, standard_request
from tests.integration.test_notifications import make_notifier

WINDOW = datetime(2027, 1, 3, 2, tzinfo=timezone.utc)  # a Sunday maintenance window
CANARY = {"stable_version": "v1", "canary_version": "v2", "interval_s": 5,
          "steps": [{"weight": 10, "bake_s": 60}, {"weight": 100, "bake_s": 120}]}


def with_router(org):
    return org.model_copy(update={"canary": CanaryConfig.model_validate(
        {"services": {"payments": {"router": {"kind": "http", "url": "http://127.0.0.1:1/w"},
                                   "canary_url": "http://127.0.0.1:1"}}})})


def awaiting(services: Services, request=None, **fields):
    change = services.changes.submit(request or standard_request(**fields))
    services.changes.attach_flow_run(change.key, "6f1c0d0e-0000-4000-8000-000000000002")
    return services.approvals.request_approval(change.key)


def test_a_canary_release_and_a_clashing_change_show_their_brief_in_the_request_and_on_the_link_page(tmp_path, org):
    notifier, services = make_notifier(tmp_path, with_router(org))
    canary = awaiting(services, title="Release payments v2", template="restart-service",
                      risk={**ROUTINE_RISK, "users_affected": "many",
                            "complexity": "medium"}, test_evidence="staging run #4411",
                      canary=CANARY)
    approve(services, canary.key, "alice")
    dated = {"planned_start": WINDOW.isoformat(), "planned_end": (WINDOW + timedelta(hours=1)).isoformat()}
    first = awaiting(services, title="Rotate the payments key", **dated)
    # An emergency may run into another change's window (its policy records the clash instead of refusing it):
    # its approver must see the clash.
    clashing = awaiting(services, emergency_request(title="Resize the payments pool", service="payments", **dated))

    brief = services.briefs.of(services.changes.get(canary.key))
    template = services.org.templates["restart-service"]
    assert "users affected: many" in brief.text("Risk") and "complexity: medium" in brief.text("Risk")
    assert brief.text("Test evidence") == "staging run #4411"
    assert brief.text("Depends on it") == "checkout (owners: frank)"  # directory.yaml `depends_on`
    assert services.org.directory.dependents("platform") == ["checkout", "payments"]  # through payments
    assert brief.text("Runs") == " ; ".join(template.implementation_commands)
    plan = CanaryPlan.model_validate(CANARY)  # the default analysis: every metric's rule is shown
    assert brief.text("Canary").startswith("10 % for 60 s -> 100 % for 120 s; rolls back when ")
    for metric in plan.metrics:
        assert f"{metric.name} {metric.operator} {metric.threshold:g} ({metric.failure_limit} times)" in \
            brief.text("Canary")
    assert brief.text("Decided so far") == "alice approved as team_lead"
    assert brief.text("When").startswith("no date given: the first window nobody related holds, Weekly maintenance")
    clash = services.briefs.of(services.changes.get(clashing.key))
    assert clash.text("When") == "Sun 2027-01-03 02:00-03:00 UTC"
    assert first.key in clash.text("Clashes with")

    # The same brief in the message an approver receives (its text, Markdown and HTML bodies) ...
    assert notifier.request_approvals(services.changes.get(clashing.key)) >= 1
    with services.db.read() as session:
        from sqlalchemy import text

        bodies = session.execute(text("SELECT body_text, body_markdown, body_html FROM notifications "
                                      "WHERE change_key = :k AND event = 'approval_requested'"),
                                 {"k": clashing.key}).all()
    assert bodies
    for body in (part for row in bodies for part in row):
        assert first.key in body and "2027-01-03 02:00" in body and "nobody yet" in body

    # ... and on the approval link's page (GET: nothing is written).
    client = TestClient(create_app(services, slack_signing_secret=None, public_url="http://testserver",
                                   nudge=lambda run_id: False))
    page = client.get(f"/a/{services.links.link_for(canary.key, 'bob')}")
    assert page.status_code == 200
    for shown in ("staging run #4411", "checkout (owners: frank)", "10 % for 60 s -&gt; 100 % for 120 s",
                  "alice approved as team_lead",
                  "users affected: many"):
        assert shown in page.text, shown
