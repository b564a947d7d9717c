"""Issue 16: the stack's own processes killed under running work, in the layout `changeflow up` runs (Prefect
server, work pool, process worker, the sweep on its schedule). One stack per test module; the kill helpers and
the checks every kill test ends with."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest
import yaml

from cli.dev import (FAST_POLLING, Stack, confirm_filing_in_form, create_pool_and_deploy, free_port,
                     install_automations, prefect_env, start_server, start_worker)
from models import (Act, Database, Services, Settings, load_org, record_problems, settings_from_env, utcnow,
                    verify_chain)
from tests.flow_stack import wait_for_change
from tests.flow_stack_config import prepare_home
from tests.helpers import SECRET, standard_request, wait_until
from tests.prefect_db import start_seeded_server
from tests.processes import kill_as_one, with_descendants
from tests.receivers import start_health_server


HOT_GATE = "10s"
# The act each CLI command that takes `--code` performs: a code works for its own act only.
ACT_OF_COMMAND = {"approve": Act.approve, "reject": Act.approve, "work": Act.confirm_work,
                  "confirm": Act.confirm_check, "canary": Act.answer_canary, "review": Act.review}


@dataclass
class KillStack:
    stack: Stack
    port: int
    root: Path
    home: Path
    services: Services
    worker: subprocess.Popen
    health: object = None
    settings: Settings | None = None  # what the stack's processes read: the crash-detection timings
    logs: Path = field(init=False)

    def __post_init__(self) -> None:
        self.logs = self.root / "logs"

    def submit(self, request: dict, *, confirm_once_suspended: bool = False) -> str:
        """As the run form does: create a run of the submit deployment over HTTP; then its requester confirms the
        filing in the run's Resume form (`confirm_once_suspended`: after the gate has suspended its run)."""
        run_id = self.run_deployment("change-request/submit", {"request": request})
        confirm_filing_in_form(self.services, self.stack.api_url, run_id, timeout_s=240,
                               once_suspended=confirm_once_suspended)
        return run_id

    def run_deployment(self, name: str, parameters: dict | None = None) -> str:
        deployment = httpx.get(f"{self.stack.api_url}/deployments/name/{name}", timeout=10).json()
        created = httpx.post(f"{self.stack.api_url}/deployments/{deployment['id']}/create_flow_run",
                             json={"parameters": parameters or {}}, timeout=30)
        assert created.status_code == 201, created.text
        return created.json()["id"]

    def run_state(self, run_id: str) -> str:
        run = httpx.get(f"{self.stack.api_url}/flow_runs/{run_id}", timeout=10).json()
        return (run.get("state") or {}).get("type", "")

    def run_state_name(self, run_id: str) -> str:
        """`Paused` while its gate waits hot (the process kept), `Suspended` once it waits without a process."""
        run = httpx.get(f"{self.stack.api_url}/flow_runs/{run_id}", timeout=10).json()
        return (run.get("state") or {}).get("name", "")

    def wait_for(self, run_or_key: str, predicate, timeout_s: float, what: str):
        return wait_for_change(self.services, run_or_key, predicate, timeout_s, what)

    def lines(self, name: str) -> list[str]:
        """What the test templates' commands wrote (`steps-SERVICE.log`, `checks-CHECKLIST.log`) in CHANGEFLOW_HOME."""
        log = self.home / f"{name}.log"
        return log.read_text().split() if log.exists() else []

    def forget(self, name: str) -> None:
        """Start a log afresh: tests of one module share a checklist's log (`checks-slow-post`)."""
        (self.home / f"{name}.log").unlink(missing_ok=True)

    def changeflow(self, *args: str) -> subprocess.CompletedProcess:
        # A hang, not a figure, is what the bound catches: with the whole suite beside it (a load average of 13 on
        # two cores) a CLI process took 10-13 s to start and `approve` / `work` passed 120 s twice (runs 28, 29).
        return subprocess.run([str(Path(sys.executable).parent / "changeflow"), *args], env=self.stack.env,
                              capture_output=True, text=True, timeout=300)

    def answer_as(self, person: str, command: str, key: str, *args: str) -> None:
        """`changeflow COMMAND KEY ARGS --as PERSON --code CODE`, with the person's own code; it must succeed."""
        code = self.services.approvals.approval_code_for(key, person, ACT_OF_COMMAND[command])
        answered = self.changeflow(command, key, *args, "--as", person, "--code", code)
        assert answered.returncode == 0, answered.stdout + answered.stderr

    def approve(self, key: str, *people: str) -> None:
        for person in people:
            self.answer_as(person, "approve", key)

    # ---- the kills ----------------------------------------------------------------------------------------
    def kill_the_worker_alone(self) -> None:
        os.kill(self.worker.pid, signal.SIGKILL)  # the worker only, not its process group
        self.worker.wait(timeout=10)
        self.worker = start_worker(self.stack, self.logs)  # what a supervisor does

    def kill_the_worker_and_its_runs(self) -> int:
        """kill -9 of the worker and every process it started, as one (a machine's or a container's death): no
        process is left to tell Prefect, only the missing heartbeats do."""
        killed = kill_as_one(with_descendants([self.worker.pid]))
        self.worker.wait(timeout=10)
        self.worker = start_worker(self.stack, self.logs)
        return killed

    def kill_and_restart_the_server(self, down_s: float = 3, while_down: Callable[[], None] | None = None) -> float:
        """kill -9 of the Prefect server, `while_down()` once it no longer answers, and the server started again
        `down_s` later on its port and database: the seconds it did not answer, from the kill to its health."""
        server = next(p for p in self.stack.processes if "cli.dev._prefect_server" in " ".join(map(str, p.args)))
        # A server down longer than the zombie window less a heartbeat (20 - 5 s by default) has live runs marked
        # Crashed: their heartbeats were lost while it was down (docs/crash-safety.md). A restart on this loaded
        # two-core machine can take that long, and these tests prove what a server's death costs otherwise, so
        # the window is widened first; a test of the detection itself sets it back (`zombie_window`).
        self.zombie_window(SERVER_RESTART_ZOMBIE_S)
        killed_at = time.monotonic()
        os.kill(server.pid, signal.SIGKILL)
        server.wait(timeout=10)
        self.stack.processes.remove(server)
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{self.stack.api_url}/health", timeout=2)
        if while_down is not None:
            while_down()
        time.sleep(down_s)
        start_server(self.stack, self.port, self.logs)  # same port, same database
        return time.monotonic() - killed_at

    def zombie_window(self, seconds: int) -> None:
        """The zombie automation installed again with this window (the stack starts with its settings')."""
        install_automations(self.stack, seconds)

    # ---- what every kill test ends with -------------------------------------------------------------------
    def wait_listed_as_pending(self, key: str, reason: str, timeout_s: float = 240) -> dict:
        """`changeflow pending --json`'s row for the change once it names `reason`. Waited for in this process
        first, on what the command reads (`RecoveryService.needs_a_person`): a command started every 2 s costs a
        Python start-up each (a second of CPU), and the suite runs on two cores."""
        deadline = time.monotonic() + timeout_s
        wait_until(lambda: any(reason in r for r in self.services.recovery.needs_a_person(key)), timeout_s,
                   f"{key} to wait for a person: {reason}")
        while True:
            listed = self.changeflow("pending", "--json")
            row = next((r for r in json.loads(listed.stdout or "[]") if r["key"] == key), None)
            if row and reason in row["waiting_for"]:
                return row
            assert time.monotonic() < deadline, f"never listed as waiting for a person: {listed.stdout[-500:]}"
            time.sleep(2)

    def assert_the_record_holds(self) -> None:
        with self.services.db.read() as session:
            assert verify_chain(session).ok
            assert record_problems(session) == []


# The sweep that reconciles a crashed run turned down from its production default (60 s) to 30 s: each sweep is a
# flow-run process (about 3 s of CPU), so every 20 s cost the two-core suite more than the waits it saved. The
# zombie window is its default (20 s; changeflow's own heartbeat every 5 s) but while a test kills the server:
# at a window 15 s longer than the heartbeat, a Prefect server killed and restarted on a loaded machine lost the
# heartbeats of a live run, and the automation marked that run Crashed (found by the clean-clone CI run with
# Prefect's 30 s heartbeat and a 45 s window: test_kill_stack_canary.py, the server killed mid-bake).
SERVER_RESTART_ZOMBIE_S = 90
CRASH_DETECTION = {"CHANGEFLOW_SWEEP_INTERVAL_S": "30"}


def client_retries_outlast(outage_s: float) -> bool:
    """Whether a flow-run process's Prefect client, retrying a refused connection with exponential back-off
    (PREFECT_CLIENT_MAX_RETRIES, 5: 2 + 4 + ... + 32 s, jittered by up to a fifth), outlasts a server outage of
    `outage_s`. A run that makes an API call through a longer one fails at it and is reconciled as a crash (the
    canary test failed on CI 2026-12-07 for one: a restart there takes far longer than here)."""
    from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, PREFECT_CLIENT_RETRY_JITTER_FACTOR

    backoff_s = sum(2 ** attempt for attempt in range(1, PREFECT_CLIENT_MAX_RETRIES.value() + 1))
    return outage_s < backoff_s * (1 - PREFECT_CLIENT_RETRY_JITTER_FACTOR.value())


@contextmanager
def running_kill_stack(root: Path, services: tuple[str, ...], *, people: dict | None = None,
                       env: dict[str, str] | None = None) -> Iterator[KillStack]:
    """A module's stack: `services` join the directory (the run form is narrowed to it, as under `up`),
    `people` update entries of its people (their channels), `env` adds CHANGEFLOW_ settings."""
    health = start_health_server()
    home = root / "changeflow"
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    # Gates cool down (suspend) after 10 s here: the kill tests take a gate's run both hot and suspended.
    changeflow_env = prepare_home(home, health.url, hot_gate=HOT_GATE)
    directory = yaml.safe_load((home / "config" / "directory.yaml").read_text())
    directory["services"].update({service: {"owners": ["alice"]} for service in services})
    for person, changes in (people or {}).items():
        directory["people"][person].update(changes)
    (home / "config" / "directory.yaml").write_text(yaml.safe_dump(directory, sort_keys=False))
    stack = Stack(api_url, prefect_env(api_url, root / "prefect", {
        **changeflow_env, **FAST_POLLING, **CRASH_DETECTION, "CHANGEFLOW_PREFECT_UI_URL": api_url.removesuffix("/api"),
        **(env or {})}))
    try:
        start_seeded_server(stack, port, root / "logs")
        create_pool_and_deploy(stack)
        worker = start_worker(stack, root / "logs")
        settings = Settings(home=home, secret=SECRET.decode())
        services_ = Services.build(Database.from_settings(settings), load_org(settings.config_dir), SECRET)
        now = utcnow()  # changes without a date start in the next window: the module runs inside an ad hoc one
        services_.scheduling.add_window(starts_at=now - timedelta(hours=1), ends_at=now + timedelta(days=1),
                                        title="Release window for the kill tests", actor="alice")
        yield KillStack(stack, port, root, home, services_, worker, health, settings_from_env(stack.env))
    finally:
        stack.stop()
        health.stop()


def slow_step(service: str, **extra) -> dict:
    return standard_request(**{"title": f"kill test: {service}", "service": service, "template": "slow-step",
                               "implementation_plan": "", "rollback_plan": "", **extra})
