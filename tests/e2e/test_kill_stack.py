"""Issue 16: the stack's own processes killed under a running change, in the layout `changeflow up` runs (Prefect
server, work pool, process worker, the sweep on its schedule): the worker alone (its flow-run processes live
on), and the Prefect server (restarted on its port and database) in a step and at a gate. Nobody presses Retry:
each change ends in a named state, no side effect finished runs twice, and the audit trail verifies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import yaml

from cli.dev import FAST_POLLING, Stack, create_pool_and_deploy, free_port, prefect_env, start_server, start_worker
from models import Database, Services, Settings, load_org, record_problems, utcnow, verify_chain
from tests.flow_stack import prepare_home, wait_for_change
from tests.helpers import SECRET, standard_request
from tests.receivers import start_health_server

pytestmark = pytest.mark.slow

SERVICES = ("kill-worker", "kill-server-step", "kill-server-gate", "kill-worker-pre", "kill-server-post",
            "kill-worker-gate", "kill-server-pre")


@dataclass
class KillStack:
    stack: Stack
    port: int
    root: Path
    home: Path
    services: Services
    worker: subprocess.Popen
    health: object = None
    logs: Path = field(init=False)

    def __post_init__(self) -> None:
        self.logs = self.root / "logs"

    def submit(self, request: dict) -> str:
        """As the run form does: create a run of the submit deployment over HTTP."""
        deployment = httpx.get(f"{self.stack.api_url}/deployments/name/change-request/submit", timeout=10).json()
        created = httpx.post(f"{self.stack.api_url}/deployments/{deployment['id']}/create_flow_run",
                             json={"parameters": {"request": request}}, timeout=30)
        assert created.status_code == 201, created.text
        return created.json()["id"]

    def wait_for(self, run_or_key: str, predicate, timeout_s: float, what: str):
        return wait_for_change(self.services, run_or_key, predicate, timeout_s, what)

    def steps_run(self, service: str) -> list[str]:
        log = self.home / f"steps-{service}.log"
        return log.read_text().split() if log.exists() else []

    def changeflow(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(Path(sys.executable).parent / "changeflow"), *args], env=self.stack.env,
                              capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def kill_stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill-stack")
    health = start_health_server()
    home = root / "changeflow"
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    changeflow_env = prepare_home(home, health.url)
    # The services of these tests, in the directory: the run form here is narrowed to it, as under `up`.
    directory = yaml.safe_load((home / "config" / "directory.yaml").read_text())
    directory["services"].update({service: {"owners": ["alice"]} for service in SERVICES})
    (home / "config" / "directory.yaml").write_text(yaml.safe_dump(directory, sort_keys=False))
    stack = Stack(api_url, prefect_env(api_url, root / "prefect", {
        **changeflow_env, **FAST_POLLING, "CHANGEFLOW_PREFECT_UI_URL": api_url.removesuffix("/api")}))
    try:
        start_server(stack, port, root / "logs")
        create_pool_and_deploy(stack)
        worker = start_worker(stack, root / "logs")
        settings = Settings(home=home, secret=SECRET.decode())
        services = Services.build(Database.from_settings(settings), load_org(settings.config_dir), SECRET)
        now = utcnow()  # changes without a date start in the next window: the module runs inside an ad hoc one
        services.scheduling.add_window(starts_at=now - timedelta(hours=1), ends_at=now + timedelta(days=1),
                                       title="Release window for the kill tests", actor="alice")
        yield KillStack(stack, port, root, home, services, worker, health)
    finally:
        stack.stop()
        health.stop()


def assert_the_record_holds(kill_stack: KillStack) -> None:
    with kill_stack.services.db.read() as session:
        assert verify_chain(session).ok
        assert record_problems(session) == []


def slow_step(service: str, **extra) -> dict:
    return standard_request(**{"title": f"kill test: {service}", "service": service, "template": "slow-step",
                               "implementation_plan": "", "rollback_plan": "", **extra})


def test_the_worker_killed_alone_mid_step_is_found_and_its_step_put_to_a_person(kill_stack):
    """Killing the worker takes its flow-run process down too (its output pipe breaks: "aborted by Python system
    exit call"), so Prefect marks the run Crashed. The sweep on its schedule records the crash and restarts the
    run; the interrupted step is not run again blindly: `changeflow pending` names it, its implementer answers."""
    run_id = kill_stack.submit(slow_step("kill-worker"))
    change = kill_stack.wait_for(run_id, lambda c: c.state == "implementing", 120, "implementation")
    kill_stack.wait_for(change.key, lambda c: kill_stack.steps_run("kill-worker"), 60, "the step to start")
    kill_the_worker_alone(kill_stack)
    row = wait_listed_as_pending(kill_stack, change.key, "step 1 was interrupted by a crash")
    assert "grace" in row["waiting_on"]
    code = kill_stack.services.approvals.approval_code_for(change.key, "grace")
    answered = kill_stack.changeflow("work", change.key, "implemented", "--step", "1", "--as", "grace", "--code",
                                     code, "--note", "the step had gone through before the worker died")
    assert answered.returncode == 0, answered.stdout + answered.stderr
    done = kill_stack.wait_for(change.key, lambda c: c.state == "closed", 180, "the change to close")
    assert done.outcome == "succeeded"
    assert kill_stack.steps_run("kill-worker") == ["started"], "the step ran again"
    assert kill_stack.services.recovery.crashes(change.key) == 1
    assert_the_record_holds(kill_stack)


def checks_run(kill_stack: KillStack, checklist: str) -> list[str]:
    log = kill_stack.home / f"checks-{checklist}.log"
    return log.read_text().split() if log.exists() else []


def kill_the_worker_alone(kill_stack: KillStack) -> None:
    os.kill(kill_stack.worker.pid, signal.SIGKILL)  # the worker only, not its process group
    kill_stack.worker.wait(timeout=10)
    kill_stack.worker = start_worker(kill_stack.stack, kill_stack.logs)  # what a supervisor does


def wait_listed_as_pending(kill_stack: KillStack, key: str, reason: str, timeout_s: float = 240) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        listed = kill_stack.changeflow("pending", "--json")
        row = next((r for r in json.loads(listed.stdout or "[]") if r["key"] == key), None)
        if row and reason in row["waiting_for"]:
            return row
        assert time.monotonic() < deadline, f"never listed as waiting for a person: {listed.stdout[-500:]}"
        time.sleep(2)


def test_the_worker_killed_alone_mid_pre_check_is_found_and_the_check_put_to_a_person(kill_stack):
    run_id = kill_stack.submit(slow_step("kill-worker-pre", template="with-slow-pre"))
    kill_stack.wait_for(run_id, lambda c: checks_run(kill_stack, "slow-pre"), 120, "the pre-check to start")
    change = kill_stack.services.changes.find_by_flow_run(run_id)
    kill_the_worker_alone(kill_stack)
    row = wait_listed_as_pending(kill_stack, change.key, "pre-check slow-check was interrupted by a crash")
    assert row["waiting_on"], row
    code = kill_stack.services.approvals.approval_code_for(change.key, "grace")
    confirmed = kill_stack.changeflow("confirm", change.key, "slow-check", "--as", "grace", "--code", code,
                                      "--note", "the check had passed before the worker died")
    assert confirmed.returncode == 0, confirmed.stdout + confirmed.stderr
    done = kill_stack.wait_for(change.key, lambda c: c.state == "closed", 180, "the change to close")
    assert done.outcome == "succeeded"
    assert checks_run(kill_stack, "slow-pre") == ["started"], "the interrupted check ran again"
    assert kill_stack.services.recovery.crashes(change.key) == 1
    assert kill_stack.services.recovery.needs_a_person(change.key) == []
    assert_the_record_holds(kill_stack)


def kill_and_restart_the_server(kill_stack: KillStack, down_s: float = 3) -> None:
    server = next(p for p in kill_stack.stack.processes if "cli.dev._prefect_server" in " ".join(p.args))
    os.kill(server.pid, signal.SIGKILL)
    server.wait(timeout=10)
    kill_stack.stack.processes.remove(server)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{kill_stack.stack.api_url}/health", timeout=2)
    time.sleep(down_s)
    start_server(kill_stack.stack, kill_stack.port, kill_stack.logs)  # same port, same database


def test_the_prefect_server_killed_mid_step_loses_nothing_and_repeats_nothing(kill_stack):
    run_id = kill_stack.submit(slow_step("kill-server-step"))
    change = kill_stack.wait_for(run_id, lambda c: c.state == "implementing", 120, "implementation")
    kill_stack.wait_for(change.key, lambda c: kill_stack.steps_run("kill-server-step"), 60, "the step to start")
    kill_and_restart_the_server(kill_stack)
    done = kill_stack.wait_for(change.key, lambda c: c.state == "closed", 240, "the change to close")
    assert done.outcome == "succeeded"
    assert kill_stack.steps_run("kill-server-step") == ["started"], "the step ran again"
    assert_the_record_holds(kill_stack)


@pytest.mark.parametrize("killed", ["server", "worker"])
def test_the_server_or_the_worker_killed_while_a_change_waits_at_its_gate(kill_stack, killed):
    """A run suspended at its gate holds no process: a server killed and restarted, or the worker killed alone and
    replaced, loses nothing, and the approvals given afterwards move the run on."""
    service = f"kill-{killed}-gate"
    # Its own plan takes it through the normal gate (a pre-approved template covers only its recipe).
    run_id = kill_stack.submit(slow_step(service, implementation_plan="the recipe, then a look"))
    change = kill_stack.wait_for(run_id, lambda c: c.state == "awaiting_approval", 120, "the approval request")
    if killed == "server":
        kill_and_restart_the_server(kill_stack)
    else:
        kill_the_worker_alone(kill_stack)
    for person in ("alice", "bob"):
        code = kill_stack.services.approvals.approval_code_for(change.key, person)
        approved = kill_stack.changeflow("approve", change.key, "--as", person, "--code", code)
        assert approved.returncode == 0, approved.stdout + approved.stderr
    done = kill_stack.wait_for(change.key, lambda c: c.state == "closed", 240, "the change to close")
    assert done.outcome == "succeeded"
    assert kill_stack.steps_run(service) == ["started"]
    assert kill_stack.services.recovery.crashes(change.key) == 0, "nothing had crashed"
    assert_the_record_holds(kill_stack)


def test_the_prefect_server_killed_mid_post_check_loses_nothing_and_repeats_nothing(kill_stack):
    """The check's command runs in the flow-run process, which outlives a server that is down for a few
    seconds: the check finishes once, its result is stored, and the change closes."""
    run_id = kill_stack.submit(slow_step("kill-server-post", template="with-slow-post"))
    kill_stack.wait_for(run_id, lambda c: checks_run(kill_stack, "slow-post"), 180, "the post-check to start")
    kill_and_restart_the_server(kill_stack)
    change = kill_stack.services.changes.find_by_flow_run(run_id)
    done = kill_stack.wait_for(change.key, lambda c: c.state == "closed", 240, "the change to close")
    assert done.outcome == "succeeded"
    assert checks_run(kill_stack, "slow-post") == ["started"], "the check ran again"
    (result,) = kill_stack.services.checklists.check_results(change.key, phase="post")
    assert (result.item_id, result.passed) == ("slow-check", True)
    assert_the_record_holds(kill_stack)


def test_the_prefect_server_killed_mid_pre_check_loses_nothing_and_repeats_nothing(kill_stack):
    # Its check declares itself idempotent: had the run died, it would run again; it must not, as nothing died.
    run_id = kill_stack.submit(slow_step("kill-server-pre", template="with-slow-pre-idempotent"))
    kill_stack.wait_for(run_id, lambda c: checks_run(kill_stack, "slow-pre-idempotent"), 120,
                        "the pre-check to start")
    kill_and_restart_the_server(kill_stack)
    change = kill_stack.services.changes.find_by_flow_run(run_id)
    done = kill_stack.wait_for(change.key, lambda c: c.state == "closed", 240, "the change to close")
    assert done.outcome == "succeeded"
    assert checks_run(kill_stack, "slow-pre-idempotent") == ["started"], "the check ran again"
    assert "check_retried" not in [e.action for e in kill_stack.services.changes.view(change.key).events]
    assert_the_record_holds(kill_stack)
