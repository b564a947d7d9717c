"""`changeflow up` brings up server, work pool, deployments, approval endpoint and worker, and prints each person's
inbox; a change submitted the way the UI form submits it is confirmed by its requester with the command in her inbox,
reaches awaiting_approval with its notifications written, is approved from the link in the approver's inbox and a
Slack click, and its run continues at once; Ctrl-C stops everything."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from cli.dev import free_port
from endpoint import signed_click
from models import Services, Database, Settings, load_org
from notifications import Outbox
from tests.helpers import ROUTINE_RISK, wait_until

pytestmark = pytest.mark.flows


def next_run_times(base: str, flow: str, deployment: str, n: int):
    """The next n run times of a deployed schedule, computed by Prefect's own server schema."""
    import asyncio
    from datetime import datetime, timezone

    from prefect.server.schemas.schedules import CronSchedule

    body = httpx.get(f"{base}/api/deployments/name/{flow}/{deployment}", timeout=10).json()
    (schedule,) = [s["schedule"] for s in body["schedules"]]
    cron = CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"], day_or=schedule["day_or"])
    return asyncio.run(cron.get_dates(n=n, start=datetime(2026, 11, 27, tzinfo=timezone.utc)))


def assert_maintenance_schedules(base: str) -> None:
    """The deployed window schedules (Prefect's server) fire at the openings of policies.yaml's windows: weekly,
    monthly and quarterly (tests/unit/test_windows.py checks prefect.yaml itself)."""
    from datetime import datetime, timedelta, timezone

    from models import DEFAULTS_DIR, scheduled_windows

    windows = load_org(DEFAULTS_DIR).policies.windows
    start = datetime(2026, 11, 27, tzinfo=timezone.utc)
    for kind, count in (("weekly", 12), ("monthly", 24), ("quarterly", 8)):
        openings = [w.starts_at for w in scheduled_windows(windows, start, start + timedelta(days=800))
                    if w.kind == kind][:count]
        assert next_run_times(base, "maintenance", kind, count) == openings, kind
    monthly = next_run_times(base, "maintenance", "monthly", 24)
    assert len({(m.year, m.month) for m in monthly}) == 24, "exactly one run a month"
    announce = next_run_times(base, "maintenance-announcement", "weekly", 4)
    assert all((m.weekday(), m.hour) == (4, 2) for m in announce), "Friday 02:00: 48 h before the window"
    quarterly = next_run_times(base, "maintenance-announcement", "quarterly", 4)
    assert [m.date().isoformat() for m in quarterly] == ["2027-01-03", "2027-04-04", "2027-07-04", "2027-10-03"], \
        "two weeks before each quarterly window"


SLACK_SECRET = "up-test-slack-signing-secret"


def wait_for_message(inbox: Path, event: str, pattern: str, timeout_s: float = 60) -> str:
    """What `pattern` matches in the newest `event` message of a person's inbox (one JSON object a line)."""
    deadline = time.monotonic() + timeout_s
    while True:
        messages = [json.loads(line) for line in inbox.read_text().splitlines()] if inbox.exists() else []
        found = [re.search(pattern, m["text"]) for m in messages if m["event"] == event]
        if found and found[-1]:
            return found[-1].group(0)
        assert time.monotonic() < deadline, f"no {event} message in {inbox}: {messages}"
        time.sleep(0.3)


def stack_processes(home: Path) -> dict[str, int]:
    """The process id of each role `up` runs, as its stack file says (rewritten when it starts one again)."""
    return json.loads((home / "stack.json").read_text())["processes"]


def serves(url: str | None) -> bool:
    if url is None:
        return True
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_up_serves_the_ui_and_runs_a_submitted_change(tmp_path):
    port = free_port()
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CHANGEFLOW_"))}
    env.update(CHANGEFLOW_HOME=str(home), PREFECT_HOME=str(tmp_path / "prefect-client"))
    changeflow = str(Path(sys.executable).parent / "changeflow")
    log = (tmp_path / "up.log").open("w")
    endpoint_port = free_port()
    env["CHANGEFLOW_SLACK_SIGNING_SECRET"] = SLACK_SECRET
    up = subprocess.Popen([changeflow, "up", "--port", str(port), "--endpoint-port", str(endpoint_port)], env=env,
                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while "changeflow is up" not in (tmp_path / "up.log").read_text():
            assert up.poll() is None, (tmp_path / "up.log").read_text()
            assert time.monotonic() < deadline, "changeflow up did not come up"
            time.sleep(0.5)
        assert "<html" in httpx.get(base + "/", timeout=10).text.lower()
        assert_maintenance_schedules(base)
        deployment = httpx.get(f"{base}/api/deployments/name/change-request/submit", timeout=10).json()
        # The run form offers the config's people, services, templates and checklists, and nothing else passes.
        form = deployment["parameter_openapi_schema"]["definitions"]["ChangeRequestForm"]["properties"]
        assert "grace" in form["requester"]["enum"] and "payments" in form["service"]["enum"]
        assert "restart-service" in form["template"]["anyOf"][0]["enum"]
        stranger = httpx.post(f"{base}/api/deployments/{deployment['id']}/create_flow_run", timeout=10, json={
            "parameters": {"request": {"type": "standard", "title": "From a stranger", "service": "payments",
                                       "test_evidence": "staging run green",
                                       "requester": "zoe", "rollback_plan": "redeploy",
                                       "risk": ROUTINE_RISK}}})
        assert stranger.status_code in (409, 422), stranger.text
        # What the UI's "Custom run" form posts.
        created = httpx.post(f"{base}/api/deployments/{deployment['id']}/create_flow_run", timeout=10, json={
            "parameters": {"request": {"type": "standard", "title": "From the form", "service": "payments",
                                       "test_evidence": "staging run green", "environment": "development",
                                       "requester": "grace", "rollback_plan": "redeploy",
                                       "risk": ROUTINE_RISK}},
        })
        assert created.status_code == 201, created.text
        run_id = created.json()["id"]
        # The secret `up` created in HOME: not CHANGEFLOW_SECRET, which another test's stack may have set here.
        settings = Settings(home=home, secret=None)
        services = Services.build(Database.from_settings(settings), load_org(settings.config_dir),
                                settings.secret_bytes())
        # Issue 31: on the shipped directory, `up` prints where each person's codes and links arrive, and a
        # newcomer acts from there. grace confirms her filing with the command her inbox gives her.
        printed = dict(re.findall(r"^ {4}(\w+) +(\S+inbox\S+\.txt)$", (tmp_path / "up.log").read_text(), re.M))
        assert printed.get("grace") == str(home / "inbox" / "grace.txt"), (tmp_path / "up.log").read_text()
        confirm = wait_for_message(Path(printed["grace"]), "filing_received", r"changeflow confirm-filing .+")
        key = confirm.split()[2]
        confirmed = subprocess.run([changeflow, *confirm.split()[1:]], env=env, capture_output=True, text=True,
                                   timeout=60)
        assert confirmed.returncode == 0, confirmed.stderr
        assert oct(Path(printed["grace"]).stat().st_mode & 0o777) == "0o600"
        deadline = time.monotonic() + 60
        while True:
            change = services.changes.get(key)
            if change.state == "awaiting_approval" and change.flow_run_id == run_id:
                break
            assert time.monotonic() < deadline, "the confirmed change never reached awaiting_approval"
            time.sleep(0.5)
        outbox = Outbox(services.db, {})
        deadline = time.monotonic() + 30
        while {n.recipient for n in outbox.list(change_key=change.key)
               if n.state == "sent" and n.event == "approval_requested"} != {"alice", "bob", "carol", "frank"}:
            assert time.monotonic() < deadline, [(n.recipient, n.state) for n in outbox.list(change_key=change.key)]
            time.sleep(0.3)
        # Issue 28: `up` supervises what it started. kill -9 of the endpoint, the worker and the server: each is
        # started again and serves, and the change waiting at its gate goes on below, through all three. (Within
        # a few seconds on a quiet machine; the Prefect server's start took more than 10 s under CI's full load.)
        approvals = f"http://127.0.0.1:{endpoint_port}"
        for name, answers in (("endpoint", f"{approvals}/livez"), ("worker", None), ("server", f"{base}/api/health")):
            killed = stack_processes(home)[name]
            os.kill(killed, signal.SIGKILL)
            wait_until(lambda: stack_processes(home).get(name, killed) != killed and serves(answers), 90,
                       f"the {name} to be started again")
            assert up.poll() is None, (tmp_path / "up.log").read_text()
        # Each of the three was started again, the worker possibly twice: with its server gone long under CI's load
        # it exits on its own (CI, stop 40), and `up` starting it again is the supervision this test asks for.
        restarted = set(re.findall(r"(\w+) exited: started again", (tmp_path / "up.log").read_text()))
        assert restarted == {"endpoint", "worker", "server"}, (tmp_path / "up.log").read_text()
        # Issue 28: Prefect's database and the logs were 0644 (inside a 0700 HOME): now its owner's alone.
        shared = {str(p): oct(p.stat().st_mode & 0o777) for folder in ("logs", "prefect")
                  for p in (home / folder).rglob("*") if p.is_file() and p.stat().st_mode & 0o077}
        assert shared == {}, shared
        code = services.approvals.approval_code_for(change.key, "alice")
        assert code in Path(printed["alice"]).read_text()  # her own channel: her code
        assert code not in (home / "logs" / "worker.log").read_text()  # the console, which everyone reads: never
        # Alice approves from the link in her inbox, Bob with a click Slack signed; the run continues past its gate.
        link = wait_for_message(Path(printed["alice"]), "approval_requested", re.escape(approvals) + r"/a/\S+")
        form_token = re.search(r'name="form_token" value="([^"]+)"', httpx.get(link, timeout=10).text).group(1)
        decided = httpx.post(link, data={"form_token": form_token, "decision": "approve"}, timeout=30)
        assert decided.status_code == 200 and "approved by Alice Moreau" in decided.text, decided.text
        body, headers = signed_click(change.key, 1, "U02BOB", SLACK_SECRET)
        clicked = httpx.post(f"{approvals}/slack/actions", content=body, headers=headers, timeout=30)
        assert clicked.json()["text"].startswith(":white_check_mark: Approved by Bob Okafor"), clicked.text
        deadline = time.monotonic() + 45  # the sweep would take up to 60 s: this proves the endpoint resumed it
        while services.changes.get(change.key).state in ("awaiting_approval", "approved"):
            assert time.monotonic() < deadline, services.changes.get(change.key).state
            time.sleep(0.3)
        # Issue 31: the README's walk-through change closes. In development (continuous, no notice) it runs once
        # approved; without automation its work waits for a person, and grace's inbox gives her the command.
        for stage in ("implemented", "verified"):
            command = wait_for_message(Path(printed["grace"]), "work_needed",
                                       rf"changeflow work {change.key} {stage} --as grace --code \S+")
            done = subprocess.run([changeflow, *command.split()[1:]], env=env, capture_output=True, text=True,
                                  timeout=60)
            assert done.returncode == 0, done.stdout + done.stderr
        wait_until(lambda: services.changes.get(change.key).state == "closed", 60, "the walk-through change to close")
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=60)
        log.close()
    assert up.returncode == 0
    with pytest.raises(httpx.HTTPError):
        httpx.get(base + "/api/health", timeout=2)


def test_up_refuses_to_listen_beyond_loopback_without_basic_auth_and_enforces_it_when_asked(tmp_path):
    """Issue 17: the Prefect server has no users of its own; whoever reaches it can start, resume, retry or
    cancel runs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CHANGEFLOW_"))}
    env.update(CHANGEFLOW_HOME=str(tmp_path / "home"), PREFECT_HOME=str(tmp_path / "prefect-client"))
    changeflow = str(Path(sys.executable).parent / "changeflow")
    refused = subprocess.run([changeflow, "up", "--host", "0.0.0.0"], env=env, capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode == 2 and "--host: 0.0.0.0 would let anyone" in refused.stderr + refused.stdout
    assert "Traceback" not in refused.stderr

    port = free_port()
    log_path = tmp_path / "up.log"
    up = subprocess.Popen([changeflow, "up", "--host", "0.0.0.0", "--basic-auth", "--port", str(port),
                           "--endpoint-port", str(free_port())], env=env, stdout=log_path.open("w"),
                          stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while "changeflow is up" not in log_path.read_text():
            assert up.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "changeflow up did not come up"
            time.sleep(0.5)
        auth_file = tmp_path / "home" / "prefect-auth"
        assert oct(auth_file.stat().st_mode & 0o777) == "0o600"
        user, password = auth_file.read_text().strip().split(":", 1)
        assert httpx.post(f"{base}/api/flow_runs/filter", json={}, timeout=10).status_code == 401
        assert httpx.post(f"{base}/api/flow_runs/filter", json={}, timeout=10,
                          auth=(user, "wrong")).status_code == 401
        assert httpx.post(f"{base}/api/flow_runs/filter", json={}, timeout=10, auth=(user, password)).status_code == 200
        assert httpx.get(f"{base}/ui-settings", timeout=10).json()["auth"] == "BASIC"  # the UI asks to log in
        # The deployments were made, and the run form narrowed, through the same credentials.
        deployment = httpx.get(f"{base}/api/deployments/name/change-request/submit", auth=(user, password),
                               timeout=10).json()
        assert "grace" in deployment["parameter_openapi_schema"]["definitions"]["ChangeRequestForm"][
            "properties"]["requester"]["enum"]
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=60)
    assert up.returncode == 0
