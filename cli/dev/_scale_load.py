"""Many changes through a stack `changeflow up` started, as its users would drive it (issue 15): submitted over
Prefect's HTTP API in parallel (through any API replica), approved by scripted approvers clicking Slack buttons
at the approval endpoint, each implemented by one two-second step. Shared by benchmarks/scale_out.py and
tests/e2e/test_distributed.py, so the test proves what the benchmark measures.

The HTTP client counts every 5xx it sees and retries it (as Prefect's own client does), and fails over to the
next replica when one refuses connections, so "a 5xx no client retried" is a number, not an impression."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
import yaml

from models import DEFAULTS_DIR, TERMINAL_STATES, Act, ChangeRequest, Services, install_runbooks, utcnow

from ._compressed_time import compress_notice

STEP_TEMPLATE = "two-second-step"
# The step's answers to every risk question, as the form and the template must give them (issue 30).
STEP_RISK = {"users_affected": "few", "complexity": "low", "backout_difficulty": "easy", "tested_in_staging": "yes",
             "touches_data": "no"}
SLACK_SECRET = "scale-out-slack-signing-secret"
# Standard changes: a team lead and a peer reviewer approve (policies.yaml); both click in Slack.
APPROVERS = {"alice": "U01ALICE", "bob": "U02BOB"}
# A change has ended once it is terminal, or waits only for its post-implementation review (a failed one).
DONE = {state.value for state in TERMINAL_STATES} | {"review_pending"}


def scale_service(number: int) -> str:
    return f"scale-{number:05d}"


def write_scale_config(home: Path, changes: int) -> None:
    """The default organisation, plus one service per change (a change per service, so no two compete for a
    slot) and the template whose one step writes its service's name to HOME/steps.log and sleeps 2 s."""
    config = home / "config"
    config.mkdir(parents=True, exist_ok=True)
    directory = yaml.safe_load((DEFAULTS_DIR / "directory.yaml").read_text())
    owners = directory["services"]["payments"]
    directory["services"].update({scale_service(n): dict(owners) for n in range(changes)})
    (config / "directory.yaml").write_text(yaml.safe_dump(directory, sort_keys=False))
    templates = yaml.safe_load((DEFAULTS_DIR / "templates.yaml").read_text())
    templates[STEP_TEMPLATE] = {
        "type": "standard", "title": "One two-second step", "rollback_plan": "undo the step",
        "implementation_plan": "run the step", "test_evidence": "benchmark",
        "implementation_commands": ['echo {service} >> "$CHANGEFLOW_HOME/steps.log"; sleep 2'],
        "rollback_commands": ["echo undone {service}"], "command_timeout_s": 60, "risk": STEP_RISK}
    (config / "templates.yaml").write_text(yaml.safe_dump(templates, sort_keys=False))
    for name in ("policies.yaml", "checklists.yaml", "maintenance.yaml"):
        (config / name).write_text((DEFAULTS_DIR / name).read_text())
    compress_notice(config)  # the run's changes go in the release window open now
    install_runbooks(config)  # (its templates name them)


def open_release_window(services: Services) -> None:
    """Standard changes wait for a maintenance window: one open now, for the length of the run."""
    now = utcnow()
    services.scheduling.add_window(starts_at=now - timedelta(hours=1), ends_at=now + timedelta(days=1),
                                   title="Release window of the scale-out run", actor="alice")


def steps_run(home: Path) -> list[str]:
    log = home / "steps.log"
    return log.read_text().split() if log.exists() else []


@dataclass
class Tally:
    """What the clients saw: requests, 5xx answers (each retried), refused connections (failed over), and the
    5xx or failures that were still there after the last attempt."""

    requests: int = 0
    server_errors: int = 0
    failovers: int = 0
    unretried: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


class ReplicaClient:
    """Plain HTTP to the Prefect API replicas, with the retry policy Prefect's client has (5xx, refused)."""

    def __init__(self, api_urls: list[str], tally: Tally, attempts: int = 6) -> None:
        self.api_urls, self.tally, self.attempts = api_urls, tally, attempts

    def request(self, method: str, path: str, prefer: int = 0, **kwargs) -> httpx.Response:
        delay, last = 0.2, ""
        for attempt in range(self.attempts):
            url = self.api_urls[(prefer + attempt) % len(self.api_urls)]
            try:
                response = httpx.request(method, url + path, timeout=30, **kwargs)
            except httpx.TransportError as exc:
                self.tally.add(requests=1, failovers=1)
                last = f"{type(exc).__name__} from {url}"
                continue  # the next replica (the request never reached this one, or its answer was lost)
            self.tally.add(requests=1)
            if response.status_code < 500:
                return response
            self.tally.add(server_errors=1)
            last = f"{response.status_code} from {url}{path}"
            time.sleep(delay)
            delay = min(delay * 2, 3)
        with self.tally.lock:
            self.tally.unretried.append(f"{method} {path}: {last}")
        raise RuntimeError(f"{method} {path} failed after {self.attempts} attempts: {last}")


def submit_changes(client: ReplicaClient, count: int, parallel: int = 16, first: int = 0) -> list[str]:
    """`count` standard changes of the two-second template (numbers from `first`), as the run form submits
    them, spread over the replicas; returns the flow run ids."""
    deployment = client.request("GET", "/deployments/name/change-request/submit").json()

    def submit(number: int) -> str:
        request = {"type": "standard", "title": f"Scale-out change {number}", "service": scale_service(number),
                   "requester": "grace", "template": STEP_TEMPLATE, "rollback_plan": "undo the step",
                   "risk": STEP_RISK}
        created = client.request("POST", f"/deployments/{deployment['id']}/create_flow_run", prefer=number,
                                 json={"parameters": {"request": request}})
        if created.status_code != 201:
            raise RuntimeError(f"change {number} was not submitted: {created.status_code} {created.text[:200]}")
        return created.json()["id"]

    with ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(submit, range(first, first + count)))


def approve_by_slack(endpoint_url: str, change: ChangeRequest, tally: Tally) -> None:
    from endpoint import signed_click

    for slack_user in APPROVERS.values():
        body, headers = signed_click(change.key, change.approval_round, slack_user, SLACK_SECRET)
        for attempt in range(5):
            tally.add(requests=1)
            clicked = httpx.post(f"{endpoint_url}/slack/actions", content=body, headers=headers, timeout=60)
            if clicked.status_code < 500:
                break
            tally.add(server_errors=1)
            time.sleep(0.5 * (attempt + 1))
        else:
            with tally.lock:
                tally.unretried.append(f"slack click on {change.key}: {clicked.status_code}")


# A CLI command that takes longer has hung: a bound, not a figure. Under a whole test suite on two cores (a load
# average of 13) `changeflow pending` passed 120 s with a Prefect replica just killed (clean-clone run 29).
CLI_BOUND_S = 300


def answer_interrupted_steps(services: Services, cli_env: dict[str, str], answered: set[str]) -> None:
    """A step interrupted by a crash waits for a person (its outcome is unknown); the requester, who implements,
    looks at the step log and answers with `changeflow work`, as docs/controls.md tells a person to."""
    changeflow = str(Path(sys.executable).parent / "changeflow")
    listed = subprocess.run([changeflow, "pending", "--json"], env=cli_env, capture_output=True, text=True,
                            timeout=CLI_BOUND_S)
    for row in json.loads(listed.stdout or "[]"):
        if "step 1 was interrupted by a crash" not in row.get("waiting_for", "") or row["key"] in answered:
            continue
        change = services.changes.get(row["key"])
        started = change.service in steps_run(Path(cli_env["CHANGEFLOW_HOME"]))
        code = services.approvals.approval_code_for(change.key, change.requester, Act.confirm_work)
        done = subprocess.run([changeflow, "work", change.key, "implemented" if started else "failed",
                               "--step", "1", "--as", change.requester, "--code", code, "--note",
                               "checked the step log after the crash"], env=cli_env, capture_output=True, text=True,
                              timeout=CLI_BOUND_S)
        if done.returncode == 0:
            answered.add(change.key)


def confirm_filing_on_cli(services: Services, change: ChangeRequest, cli_env: dict[str, str]) -> None:
    """The requester confirms their filing with `changeflow confirm-filing` and the code sent to them (it
    records, then nudges the run; a nudge the run missed is the sweep's)."""
    code = services.approvals.approval_code_for(change.key, change.requester, Act.file)
    subprocess.run([str(Path(sys.executable).parent / "changeflow"), "confirm-filing", change.key, "--as",
                    change.requester, "--code", code], env=cli_env, capture_output=True, text=True, timeout=CLI_BOUND_S)


def drive_to_the_end(services: Services, run_ids: list[str], endpoint_url: str, tally: Tally, timeout_s: float,
                     cli_env: dict[str, str], parallel: int = 8) -> dict[str, ChangeRequest]:
    """Confirm each filing (its requester, on the CLI) and approve each change as it reaches its gate, until every
    one has ended; the changes by run id. Steps a crash interrupted are answered by their implementer through the
    CLI. `run_ids` may grow
    while this runs (changes submitted later, from another thread)."""
    approved: set[str] = set()
    confirmed: set[str] = set()
    answered: set[str] = set()
    changes: dict[str, ChangeRequest] = {}
    deadline = time.monotonic() + timeout_s
    last_look = time.monotonic()
    with ThreadPoolExecutor(parallel) as pool:
        while True:
            if time.monotonic() - last_look > 5:
                answer_interrupted_steps(services, cli_env, answered)
                last_look = time.monotonic()
            for run_id in list(run_ids):
                change = services.changes.find_by_idempotency_key(f"flow-run:{run_id}")
                if change is None:
                    continue
                changes[run_id] = change
                if change.state == "submitted" and change.key not in confirmed:
                    confirmed.add(change.key)
                    pool.submit(confirm_filing_on_cli, services, change, cli_env)
                if change.state == "awaiting_approval" and change.key not in approved:
                    approved.add(change.key)
                    pool.submit(approve_by_slack, endpoint_url, change, tally)
            if len(changes) == len(run_ids) and all(c.state in DONE for c in changes.values()):
                return changes
            if time.monotonic() > deadline:
                states = sorted(f"{c.key}:{c.state}" for c in changes.values() if c.state not in DONE)
                raise TimeoutError(f"{len(run_ids) - len(changes)} never filed, not ended: {states[:20]}")
            time.sleep(0.5)


@dataclass
class UpProcess:
    """`changeflow up` (with its options) run as a user runs it, until stop()."""

    home: Path
    process: subprocess.Popen
    log: Path

    @classmethod
    def start(cls, home: Path, args: list[str], env: dict[str, str], timeout_s: float = 240) -> "UpProcess":
        log = home.parent / f"{home.name}-up.log"
        changeflow = str(Path(sys.executable).parent / "changeflow")
        process = subprocess.Popen([changeflow, "up", *args], env=env, stdout=log.open("w"),
                                   stderr=subprocess.STDOUT, start_new_session=True)
        up = cls(home, process, log)
        deadline = time.monotonic() + timeout_s
        while "changeflow is up" not in log.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                up.stop()
                raise RuntimeError(f"changeflow up did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        return up

    @property
    def stack(self) -> dict:
        return json.loads((self.home / "stack.json").read_text())

    def kill(self, role: str) -> None:
        """kill -9 of one process of the stack (`api-1`, `worker-2`), not of its children."""
        os.kill(self.stack["processes"][role], signal.SIGKILL)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)


def up_environment(home: Path, **extra: str) -> dict[str, str]:
    """A clean environment for `changeflow up`: nothing of this process's Prefect or changeflow settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CHANGEFLOW_"))}
    env.update(CHANGEFLOW_HOME=str(home), PREFECT_HOME=str(home / "prefect-client"),
               CHANGEFLOW_SLACK_SIGNING_SECRET=SLACK_SECRET, **extra)
    return env
