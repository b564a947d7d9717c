"""Notifications through every channel to real servers on 127.0.0.1, and the outbox's failure handling."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import text

from cli.dev import free_port
from models import DEFAULTS_DIR, Services, Database, Directory, Org, Settings, load_org, verify_chain
from models import events_for
from notifications import Notifier, TemplateRenderer
from notifications import DELIVERY_HEADER, SIGNATURE_HEADER, verify_signature
from tests.helpers import SECRET, emergency_request, major_request, standard_request
from tests.receivers import SmtpSink, start_http_receiver


@pytest.fixture
def receiver():
    server = start_http_receiver()
    yield server
    server.stop()


@pytest.fixture
def smtp():
    sink = SmtpSink(free_port())
    yield sink
    sink.stop()


def org_with_channels(channels: dict[str, list[dict]]) -> Org:
    """The example org with the given people's channels replaced."""
    base = load_org(DEFAULTS_DIR)
    people = base.directory.model_dump()["people"]
    for person, person_channels in channels.items():
        people[person]["channels"] = person_channels
    directory = Directory.model_validate({"people": people, "services": base.directory.model_dump()["services"]})
    return Org(directory=directory, policies=base.policies, templates=base.templates, runbooks=base.runbooks)


def make_notifier(tmp_path, org, smtp_port=25, **settings_overrides):
    settings = Settings(home=tmp_path, secret=SECRET.decode(), smtp_port=smtp_port, notify_backoff_s=0.05,
                        http_timeout_s=2, prefect_ui_url="http://127.0.0.1:4200", **settings_overrides)
    services = Services.build(Database(f"sqlite:///{tmp_path / 'cf.db'}"), org, SECRET)
    return Notifier(services, settings), services


def awaiting_change(services, request=None):
    change = services.changes.submit(request or standard_request())
    change = services.changes.attach_flow_run(change.key, "6f1c0d0e-0000-4000-8000-000000000001")
    return services.approvals.request_approval(change.key)


def deliver_until_settled(notifier, timeout_s=15):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        notifier.deliver()
        pending = [n for n in notifier.outbox.list(limit=1000) if n.state in ("pending", "sending")]
        if not pending:
            return
        time.sleep(0.05)
    raise AssertionError("notifications still pending")


def test_every_channel_delivers_the_request_and_only_personal_ones_carry_a_secret(tmp_path, receiver, smtp):
    """Issue 17: a code or link in a channel post lets everyone in the channel approve as that person. Slack gets
    Approve / Reject buttons (Slack signs each click with who clicked); Teams and webhooks get a pointer; the
    e-mail gets the person's code and their own link; the stored rows hold neither."""
    org = org_with_channels({
        "alice": [{"type": "slack", "url": f"{receiver.url}/slack/T000/B000/XXXXSECRET"}],
        "frank": [{"type": "teams", "url": f"{receiver.url}/teams/webhookb2/SECRET"}],
        "bob": [{"type": "webhook", "url": f"{receiver.url}/hook"}],
        "carol": [{"type": "email", "address": "carol@example.org"}],
    })
    notifier, services = make_notifier(tmp_path, org, smtp_port=smtp.port, approval_url="https://approve.example.org")
    change = awaiting_change(services)
    assert notifier.request_approvals(change) == 4
    deliver_until_settled(notifier)
    link = f"http://127.0.0.1:4200/runs/flow-run/{change.flow_run_id}"
    codes = {person: services.approvals.approval_code_for(change.key, person) for person in org.directory.people}

    slack = json.loads(receiver.delivered("/slack/T000/B000/XXXXSECRET")[0].body)
    assert change.key in slack["text"] and link in slack["text"]
    buttons = slack["blocks"][-1]["elements"]
    assert [(b["action_id"], b["value"]) for b in buttons] == [("approve", f"{change.key}|1"), ("reject",
                                                                                                f"{change.key}|1")]

    teams = json.loads(receiver.delivered("/teams/webhookb2/SECRET")[0].body)
    card = teams["attachments"][0]["content"]
    assert card["type"] == "AdaptiveCard" and link in card["body"][1]["text"]

    hook = receiver.delivered("/hook")[0]
    assert verify_signature(SECRET, hook.headers[SIGNATURE_HEADER], hook.body)
    assert not verify_signature(SECRET, hook.headers[SIGNATURE_HEADER], hook.body + b" ")
    assert not verify_signature(SECRET, hook.headers[SIGNATURE_HEADER], hook.body, now=time.time() + 301)
    assert json.loads(hook.body)["change"] == change.key
    for shared in receiver.delivered():
        body = shared.body.decode()
        assert "see your e-mail" in body and "/a/" not in body
        assert not any(code in body for code in codes.values()), shared.path

    (rcpts, mail), = smtp.messages
    assert rcpts == ["carol@example.org"] and change.key in mail["Subject"]
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    carol_link = f"https://approve.example.org/a/{services.links.link_for(change.key, 'carol')}"
    assert codes["carol"] in text and link in text and carol_link in text
    assert codes["carol"] in html and f'href="{link}"' in html and f'href="{carol_link}"' in html

    for row in notifier.outbox.list():
        stored = row.subject + row.body_text + row.body_markdown + row.body_html
        assert not any(code in stored for code in codes.values()) and "/a/" not in stored


def test_server_errors_are_retried_and_delivered_once(tmp_path, receiver):
    org = org_with_channels({"alice": [{"type": "webhook", "url": f"{receiver.url}/hook"}]})
    notifier, services = make_notifier(tmp_path, org)
    change = awaiting_change(services, emergency_request(incident_severity="P1", requester="bob"))
    receiver.answer((500, {}), (500, {}))
    notifier.announce(change, "approved", ["alice"])
    deliver_until_settled(notifier)
    assert [r.status for r in receiver.requests] == [500, 500, 200]
    (row,) = notifier.outbox.list()
    assert row.state == "sent" and row.attempts == 3 and len(receiver.delivered()) == 1
    # Every attempt carries the same delivery id (in the signed body too): a receiver drops a repeat by it.
    assert {r.headers[DELIVERY_HEADER] for r in receiver.requests} == {row.idempotency_key}
    assert json.loads(receiver.requests[-1].body)["delivery"] == row.idempotency_key


def test_429_waits_for_retry_after(tmp_path, receiver):
    org = org_with_channels({"alice": [{"type": "slack", "url": f"{receiver.url}/slack"}]})
    notifier, services = make_notifier(tmp_path, org)
    change = awaiting_change(services)
    receiver.answer((429, {"Retry-After": "2"}))
    notifier.announce(change, "approved", ["alice"])
    deliver_until_settled(notifier)
    first, second = receiver.requests
    assert first.status == 429 and second.status == 200
    assert second.at - first.at >= 2.0


def test_client_error_fails_at_once_is_audited_and_falls_back(tmp_path, receiver):
    fallback = tmp_path / "alice.jsonl"
    org = org_with_channels({"alice": [{"type": "teams", "url": f"{receiver.url}/teams/SECRETPATH"},
                                       {"type": "file", "path": str(fallback)}]})
    notifier, services = make_notifier(tmp_path, org)
    change = awaiting_change(services)
    receiver.answer((400, {}))
    notifier.announce(change, "approved", ["alice"])
    deliver_until_settled(notifier)
    assert len(receiver.requests) == 1, "a 400 must not be retried"
    failed, resent = sorted(notifier.outbox.list(), key=lambda n: n.id)
    assert failed.state == "failed" and failed.attempts == 1 and "HTTP 400" in failed.last_error
    assert "SECRETPATH" not in failed.last_error
    assert resent.state == "sent" and resent.channel["type"] == "file"
    assert json.loads(fallback.read_text())["subject"] == failed.subject
    with services.db.read() as session:
        (audit,) = [e for e in events_for(session, change.key) if e.action == "notification_failed"]
        assert verify_chain(session).ok
    data = json.loads(audit.data)
    assert data["channel"].startswith("teams http://127.0.0.1:") and "SECRETPATH" not in audit.data
    assert data["fallback"] == f"file {fallback}"


def test_receiver_down_is_retried_until_it_comes_back(tmp_path):
    port = free_port()
    org = org_with_channels({"alice": [{"type": "webhook", "url": f"http://127.0.0.1:{port}/hook"}]})
    notifier, services = make_notifier(tmp_path, org, notify_max_attempts=50)
    change = awaiting_change(services)
    notifier.announce(change, "approved", ["alice"])
    for _ in range(3):
        notifier.deliver()
        time.sleep(0.3)
    (row,) = notifier.outbox.list()
    assert row.state == "pending" and row.attempts >= 2 and "ConnectError" in row.last_error
    receiver = start_http_receiver(port)
    try:
        deliver_until_settled(notifier, timeout_s=30)
        assert len(receiver.delivered()) == 1
    finally:
        receiver.stop()


def test_crash_between_write_and_send_loses_nothing(tmp_path, receiver):
    org = org_with_channels({"alice": [{"type": "webhook", "url": f"{receiver.url}/hook"}]})
    notifier, services = make_notifier(tmp_path, org)
    change = awaiting_change(services)
    # Another process writes the notification and is killed before it sends anything.
    script = f"""
import os, signal
from tests.integration.test_notifications import make_notifier, org_with_channels
from pathlib import Path
channels = {{"alice": [{{"type": "webhook", "url": {receiver.url + '/hook'!r}}}]}}
notifier, services = make_notifier(Path({str(tmp_path)!r}), org_with_channels(channels))
notifier.announce(services.changes.get({change.key!r}), "approved", ["alice"])
os.kill(os.getpid(), signal.SIGKILL)
"""
    killed = subprocess.run([sys.executable, "-c", script], cwd=os.getcwd(), capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert receiver.requests == []
    notifier.deliver()
    notifier.deliver()
    assert len(receiver.delivered()) == 1
    notifier.announce(change, "approved", ["alice"])  # a resumed flow writes it again: no second message
    notifier.deliver()
    assert len(receiver.delivered()) == 1


def test_cli_lists_and_retries_failed_notifications(tmp_path, receiver, monkeypatch):
    from typer.testing import CliRunner

    from cli import app

    home = tmp_path / "home"
    monkeypatch.setenv("CHANGEFLOW_HOME", str(home))
    monkeypatch.setenv("CHANGEFLOW_SECRET", SECRET.decode())
    runner = CliRunner()
    assert runner.invoke(app, ["init"]).exit_code == 0
    directory = home / "config" / "directory.yaml"
    shipped = directory.read_text()
    directory.write_text(shipped.replace(
        "    roles: [team_lead, cab_member]\n    channels:\n      - type: file\n        path: inbox/alice.txt\n"
        "      - type: console\n  bob:",
        "    roles: [team_lead, cab_member]\n    channels:\n"
        f"      - type: webhook\n        url: {receiver.url}/hook/SECRETTOKEN\n  bob:", 1))
    assert directory.read_text() != shipped, "alice's channels were not replaced: the shipped directory changed"
    settings = Settings()
    services = Services.build(Database.from_settings(settings), load_org(settings.config_dir), SECRET)
    notifier = Notifier(services, settings)
    change = services.changes.submit(standard_request())
    receiver.answer((403, {}))
    notifier.announce(change, "approved", ["alice"])
    notifier.deliver()
    listed = json.loads(runner.invoke(app, ["notifications", "--state", "failed", "--json"]).stdout)
    assert [(n["recipient"], n["state"]) for n in listed] == [("alice", "failed")]
    assert "SECRETTOKEN" not in json.dumps(listed)
    retried = runner.invoke(app, ["notifications", "retry", str(listed[0]["id"])])
    assert retried.exit_code == 0 and "sent" in retried.stdout
    assert len(receiver.delivered("/hook/SECRETTOKEN")) == 1
    assert runner.invoke(app, ["notifications", "--state", "bogus"]).exit_code == 2


SAMPLE_EXTRAS = {
    "person": "alice", "person_name": "Alice Moreau", "role": "team_lead", "code": "ABCD-EFGH-IJKL",
    "approve_link": "https://approve.example.org/a/x.y",
    "cli_approve": "changeflow approve ...", "cli_reject": "changeflow reject ...", "missing": "1 x team_lead",
    "deadline": "2026-12-01 10:00 UTC", "ui_url": "http://127.0.0.1:4200/runs/flow-run/x", "reason": "because",
    "level": "L1-oncall_primary", "waited": "20 min", "waiting_on": ["alice"],
    "number": 1, "what": "alert on pool exhaustion", "owner": "alice", "rung": 1, "reviewers": "bob",
    "asked_at": "2026-12-01 09:00 UTC", "implementers": "grace, alice",
    "measurements": [{"metric": "error_rate", "value": 0.09, "limit": 0.05, "weight": 50}], "verdict": "breached",
    "window": {"service": "payments", "kind": "weekly", "title": "Weekly", "starts_at": "2026-12-06 02:00",
               "ends_at": "2026-12-06 04:00"},
    "item": {"id": "backup-verified", "title": "Backup verified", "phase": "pre",
             "runbook": "runbook restart-service (0123456789ab), step 2: drain the instance"},
    "gate": "canary-confirm-s2",
    "stage": "implemented",
    # A lockdown's messages (issue 32): they concern no change.
    "by": "erin", "by_name": "Erin Walsh", "since": "2026-12-01 10:00 UTC", "admitted": "emergency",
    "aborted": ["CHG-000009"], "hold": False, "lockdown_on": True, "next_act": "lift it",
}


@pytest.mark.parametrize("request_builder", [standard_request, major_request, emergency_request],
                         ids=["standard", "major", "emergency"])
def test_every_template_renders_for_every_change_type(tmp_path, request_builder):
    services = Services.build(Database(f"sqlite:///{tmp_path / 'cf.db'}"), load_org(DEFAULTS_DIR), SECRET)
    change = services.approvals.request_approval(services.changes.submit(request_builder()).key)
    renderer = TemplateRenderer()
    events = renderer.events()
    assert {"approval_requested", "approval_reminder", "approved", "rejected", "expired", "change_started",
            "change_completed", "change_failed", "canary_rolled_back", "maintenance_announced",
            "maintenance_started", "maintenance_completed", "checklist_item_needs_person", "review_due",
            "canary_gate_waiting", "work_needed", "lockdown_declared", "lockdown_lifted",
            "lockdown_code", "action_item_due", "review_overdue", "work_overdue", "watch_breached"} <= set(events)
    for event in events:
        rendered = renderer.render(event, {"change": change, "brief": services.briefs.of(change), **SAMPLE_EXTRAS})
        assert rendered.subject and rendered.text.strip() and rendered.markdown.strip()
        assert rendered.html.lstrip().startswith("<!doctype html>")


def test_html_in_a_title_is_escaped_in_the_email(tmp_path, smtp):
    org = org_with_channels({"carol": [{"type": "email", "address": "carol@example.org"}]})
    notifier, services = make_notifier(tmp_path, org, smtp_port=smtp.port)
    change = awaiting_change(services, standard_request(title='<script>alert("x")</script> & <b>bold</b>'))
    notifier.request_approvals(change)
    deliver_until_settled(notifier)
    (_, mail), = [m for m in smtp.messages if m[0] == ["carol@example.org"]]
    html = mail.get_body(("html",)).get_content()
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;b&gt;bold&lt;/b&gt;" in html


def test_templates_can_be_overridden_from_the_config_dir(tmp_path):
    override = tmp_path / "templates"
    override.mkdir()
    (override / "approved.subject.j2").write_text("APPROVED {{ change.key }}")
    services = Services.build(Database(f"sqlite:///{tmp_path / 'cf.db'}"), load_org(DEFAULTS_DIR), SECRET)
    change = services.changes.submit(standard_request())
    rendered = TemplateRenderer(override).render("approved", {"change": change, **SAMPLE_EXTRAS})
    assert rendered.subject == f"APPROVED {change.key}"
    assert change.key in rendered.text  # the rest still comes from the package


def test_a_channel_url_with_an_invalid_port_is_refused_when_the_directory_loads():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="url: not a usable URL"):
        org_with_channels({"erin": [{"type": "teams", "url": "http://127.0.0.1:99999/x"}]})


def test_a_queued_message_to_an_unusable_url_fails_that_channel_and_falls_back(tmp_path, receiver):
    """A row queued before the directory was fixed (or edited in the database) must not stick in `sending`."""
    fallback = tmp_path / "erin.jsonl"
    org = org_with_channels({"erin": [{"type": "teams", "url": f"{receiver.url}/teams/x"},
                                      {"type": "file", "path": str(fallback)}]})
    notifier, services = make_notifier(tmp_path, org)
    change = awaiting_change(services, emergency_request())
    notifier.announce(change, "approved", ["erin"])
    with services.db.write() as session:
        session.execute(text("UPDATE notifications SET channel = :c"),
                        {"c": json.dumps({"type": "teams", "url": "http://127.0.0.1:99999/x"})})
    deliver_until_settled(notifier)
    failed, resent = sorted(notifier.outbox.list(), key=lambda n: n.id)
    assert (failed.state, failed.attempts) == ("failed", 1), "an unparsable address is not retried"
    assert "invalid URL" in failed.last_error
    # Not one of erin's channels any more: the message goes to her current first channel.
    assert resent.state == "sent" and resent.channel["type"] == "teams" and len(receiver.requests) == 1


def test_enqueue_reports_whether_it_wrote_on_every_backend(db):
    from notifications import Rendered, enqueue

    rendered = Rendered("s", "t", "m", "<p>h</p>")
    with db.write() as session:
        first = enqueue(session, key="k-1", change_key=None, event="e", recipient="erin",
                        channel={"type": "console"}, rendered=rendered)
    with db.write() as session:
        again = enqueue(session, key="k-1", change_key=None, event="e", recipient="erin",
                        channel={"type": "console"}, rendered=rendered)
    assert (first, again) == (True, False)
