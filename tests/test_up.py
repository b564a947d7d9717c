"""`changeflow up` brings up server, work pool, deployments and worker; a change submitted the way the UI
form submits it reaches awaiting_approval with its notifications written; Ctrl-C stops everything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from cli._stack import free_port
from models import ChangeService, Database, Settings, load_org
from notifications import Outbox

pytestmark = pytest.mark.flows


def test_up_serves_the_ui_and_runs_a_submitted_change(tmp_path):
    port = free_port()
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CHANGEFLOW_"))}
    env.update(CHANGEFLOW_HOME=str(home), PREFECT_HOME=str(tmp_path / "prefect-client"))
    changeflow = str(Path(sys.executable).parent / "changeflow")
    log = (tmp_path / "up.log").open("w")
    up = subprocess.Popen([changeflow, "up", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                          start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while "changeflow is up" not in (tmp_path / "up.log").read_text():
            assert up.poll() is None, (tmp_path / "up.log").read_text()
            assert time.monotonic() < deadline, "changeflow up did not come up"
            time.sleep(0.5)
        assert "<html" in httpx.get(base + "/", timeout=10).text.lower()
        deployment = httpx.get(f"{base}/api/deployments/name/change-request/submit", timeout=10).json()
        # What the UI's "Custom run" form posts.
        created = httpx.post(f"{base}/api/deployments/{deployment['id']}/create_flow_run", timeout=10, json={
            "parameters": {"request": {"type": "standard", "title": "From the form", "service": "payments",
                                       "requester": "grace", "rollback_plan": "redeploy"}},
        })
        assert created.status_code == 201, created.text
        run_id = created.json()["id"]
        settings = Settings(home=home)
        service = ChangeService(Database.from_settings(settings), load_org(settings.config_dir),
                                settings.secret_bytes())
        deadline = time.monotonic() + 60
        while True:
            change = service.find_by_idempotency_key(f"flow-run:{run_id}")
            if change is not None and change.state == "awaiting_approval" and change.flow_run_id == run_id:
                break
            assert time.monotonic() < deadline, "the submitted change never reached awaiting_approval"
            time.sleep(0.5)
        notified = {n.recipient for n in Outbox(service.db, {}).list(change_key=change.key)}
        assert notified == {"alice", "bob", "carol", "frank"}
        assert "Approval needed: " + change.key in (home / "logs" / "worker.log").read_text()
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=60)
        log.close()
    assert up.returncode == 0
    with pytest.raises(httpx.HTTPError):
        httpx.get(base + "/api/health", timeout=2)
