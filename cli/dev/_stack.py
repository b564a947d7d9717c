"""Starts and stops the local Prefect pieces: server, work pool, worker or runner. Used by `changeflow up`,
the integration tests and the latency benchmark, so all three run the same way."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from models import load_org, settings_from_env

from ._run_form import narrow_run_form

REPO_ROOT = Path(__file__).resolve().parents[2]
# Our latency default for a `serve()` runner (Prefect's is 10 s); a worker's poll is the setting worker_poll_s.
FAST_POLLING = {"PREFECT_RUNNER_POLL_FREQUENCY": "1"}


# Below Linux's ephemeral range (ip_local_port_range, 32768-60999 by default). A port the kernel hands out for
# bind(0) comes from that range, which every outgoing connection draws its local port from too: on a busy machine
# one took such a port between the choice and the server's bind ("address already in use", a CI run 2026-12-06).
LISTEN_PORTS = range(20000, 32768)


def free_port() -> int:
    """A port on 127.0.0.1 nobody listens on now, outside the range outgoing connections take theirs from."""
    for _ in range(200):
        port = random.choice(LISTEN_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("0.0.0.0", port))  # free on every address: `up --host 0.0.0.0` binds it so
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {LISTEN_PORTS.start}-{LISTEN_PORTS.stop - 1}")


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _bin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


@dataclass
class Stack:
    """Processes started for one local setup; `stop()` ends them all (and only them)."""

    api_url: str
    env: dict[str, str]
    processes: list[subprocess.Popen] = field(default_factory=list)
    # Processes by role ("api-1", "worker-2"): written to stack.json, so an operator (or a kill test) finds them.
    named: dict[str, subprocess.Popen] = field(default_factory=dict)
    _recipes: dict[str, tuple[list[str], Path, Path]] = field(default_factory=dict)

    def spawn(self, args: list[str], log: Path, cwd: Path = REPO_ROOT, name: str | None = None) -> subprocess.Popen:
        log.parent.mkdir(parents=True, exist_ok=True)
        handle = log.open("ab")
        process = subprocess.Popen(args, cwd=cwd, env=self.env, stdout=handle, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.processes.append(process)
        if name is not None:
            self.named[name] = process
            self._recipes[name] = (args, log, cwd)
        return process

    def respawn_exited(self, names: list[str]) -> list[str]:
        """Start again each of the named processes that exited (a supervisor's job); returns their names."""
        restarted = []
        for name in names:
            process = self.named.get(name)
            if process is not None and process.poll() is not None:
                self.processes.remove(process)
                args, log, cwd = self._recipes[name]
                self.spawn(args, log, cwd, name=name)
                restarted.append(name)
        return restarted

    def run(self, args: list[str], cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
        return subprocess.run(args, cwd=cwd, env=self.env, capture_output=True, text=True, check=False)

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for process in reversed(self.processes):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        self.processes.clear()
        self.named.clear()


def prefect_env(api_url: str, prefect_home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "PREFECT_API_URL": api_url,
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE": "false",
        "PREFECT_UI_API_URL": api_url,
        "CHANGEFLOW_REPO": str(REPO_ROOT),
    })
    env.update(extra or {})
    settings = settings_from_env(env)
    # Runs send heartbeats, so the zombie automation (automations.yaml) can mark a silent run Crashed.
    env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] = str(settings.heartbeat_s)
    # A decision should move the change within ~3 s (Prefect's default poll is 10 s).
    env["PREFECT_WORKER_QUERY_SECONDS"] = f"{settings.worker_poll_s:g}"
    from flows import prefect_logging_env  # (imports no Prefect)

    env.update(prefect_logging_env(settings.log_format))  # CHANGEFLOW_LOG_FORMAT=json: one JSON object a line
    return env


def wait_healthy(api_url: str, timeout_s: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the Prefect server exited with code {process.returncode}")
        try:
            if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"no healthy Prefect server at {api_url} after {timeout_s:g} s")


def start_server(stack: Stack, port: int, logs: Path, host: str = "127.0.0.1") -> None:
    # Prefect's server application behind a layer that retries its SQLite 503s (cli/dev/_prefect_server.py).
    process = stack.spawn([sys.executable, "-m", "cli.dev._prefect_server", "--host", host, "--port", str(port)],
                          logs / "prefect-server.log", name="server")
    wait_healthy(stack.api_url, timeout_s=settings_from_env(stack.env).server_start_timeout_s, process=process)


def wait_for_deployments(api_url: str, names: list[str], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = 0
        for name in names:
            flow_name, deployment = name.split("/")
            response = httpx.get(f"{api_url}/deployments/name/{flow_name}/{deployment}", timeout=5)
            found += response.status_code == 200
        if found == len(names):
            return
        time.sleep(0.5)
    raise RuntimeError(f"deployments {names} did not appear at {api_url}")


WORK_POOL = "changeflow"


def engine_job_template() -> dict:
    """Prefect's process-pool job template with the flow-run command set to this interpreter's engine.

    Why: with no command configured, Prefect 3.9's process worker starts each flow run as a workspace supervisor,
    which starts an interpreter and imports Prefect only to prepare a workspace we do not use (prefect.yaml's pull
    step sets the directory, and the engine runs it), then execs the engine, which starts and imports it all
    again. With the command set, the worker starts the engine directly. Measured over the test suite: a run under
    the worker cost 3.6 CPU-s with the supervisor and costs 2.5 without (197 such runs: about 220 CPU-s).

    The command is `flows/_engine_client.py` run with `python -S` (milliseconds to start): under `changeflow worker`
    it has the worker's launcher fork an engine with everything imported, elsewhere it execs the same engine as
    before (`python -m prefect.engine`)."""
    from prefect.workers.process import ProcessWorker

    from flows import ENGINE_CLIENT

    template = ProcessWorker.get_default_base_job_template()
    template["variables"]["properties"]["command"]["default"] = f"{sys.executable} -S {ENGINE_CLIENT}"
    return template


def create_pool_and_deploy(stack: Stack, narrow_form: bool = True) -> None:
    """Create (or bring up to date) the process work pool and deploy prefect.yaml from the checkout.

    `narrow_form=False` leaves the run form as the model declares it (the flow tests file each change for a
    service of its own, a name no directory holds, so that no two tests' changes conflict)."""
    create_work_pool(stack)
    deploy = stack.run([_bin("prefect"), "--no-prompt", "deploy", "--all"])
    if deploy.returncode != 0:
        raise RuntimeError(f"`prefect deploy --all` failed:\n{deploy.stdout}{deploy.stderr}")
    settings = settings_from_env(stack.env)
    if narrow_form and "CHANGEFLOW_HOME" in stack.env:
        # The run form's choices from the config this stack runs with (regenerated on every deploy).
        narrow_run_form(stack.api_url, load_org(settings.config_dir), stack.env.get("PREFECT_API_AUTH_STRING"))
    set_sweep_interval(stack, settings.sweep_interval_s)
    install_automations(stack, settings.zombie_after_s)


def stack_api(stack: Stack) -> httpx.Client:
    """Prefect's REST API of this stack, with its basic auth. (Not Prefect's client: this process's Prefect
    settings may name another server. Not Prefect's CLI either: each call is a new interpreter, ~1.7 CPU-s.)"""
    auth_string = stack.env.get("PREFECT_API_AUTH_STRING")
    auth = httpx.BasicAuth(*auth_string.split(":", 1)) if auth_string else None
    return httpx.Client(base_url=stack.api_url, timeout=30, auth=auth)


def create_work_pool(stack: Stack) -> None:
    """The process pool with the engine command (`prefect work-pool create --overwrite`, over the API)."""
    template = engine_job_template()
    with stack_api(stack) as api:
        created = api.post("/work_pools/", json={"name": WORK_POOL, "type": "process",
                                                 "base_job_template": template})
        if created.status_code == 409:  # kept from an earlier `up`: brought up to date
            created = api.patch(f"/work_pools/{WORK_POOL}", json={"base_job_template": template})
        if created.is_error:
            raise RuntimeError(f"could not create work pool {WORK_POOL}: {created.status_code} {created.text}")


SWEEP_DEPLOYMENT = "approval-escalation/every-minute"


def set_sweep_interval(stack: Stack, interval_s: int) -> None:
    """The sweep's schedule from CHANGEFLOW_SWEEP_INTERVAL_S (prefect.yaml names the production default, 60 s).
    Prefect drops the runs it had already scheduled at the old interval when a schedule changes."""
    with stack_api(stack) as api:
        deployment = api.get(f"/deployments/name/{SWEEP_DEPLOYMENT}")
        deployment.raise_for_status()
        for schedule in deployment.json()["schedules"]:
            if schedule["schedule"].get("interval") != interval_s:
                api.patch(f"/deployments/{deployment.json()['id']}/schedules/{schedule['id']}",
                          json={"schedule": {"interval": interval_s}}).raise_for_status()


ZOMBIE_AUTOMATION = "changeflow-crash-zombie-runs"


def zombie_automations(zombie_after_s: int) -> str:
    """automations.yaml with the zombie window of CHANGEFLOW_ZOMBIE_AFTER_S (the file holds the default)."""
    automations = yaml.safe_load((REPO_ROOT / "automations.yaml").read_text())
    for automation in automations["automations"]:
        if automation["name"] == ZOMBIE_AUTOMATION:
            automation["trigger"]["within"] = zombie_after_s
            for action in automation["actions"]:
                action["message"] = (f"No heartbeat for {zombie_after_s} s: the run's process or machine died "
                                     "(changeflow zombie detection).")
    return yaml.safe_dump(automations, sort_keys=False)


def install_automations(stack: Stack, zombie_after_s: int) -> None:
    """The automations of automations.yaml (zombie-run detection), replaced on every start: a server kept
    from an earlier `changeflow up` gets the current definition, not the one it was first given."""
    from prefect.events.schemas.automations import AutomationCore

    automations = yaml.safe_load(zombie_automations(zombie_after_s))["automations"]
    with stack_api(stack) as api:
        for automation in automations:
            # Validated as `prefect automation create` validates a file, then sent as its client sends it.
            body = AutomationCore.model_validate(automation).model_dump(mode="json")
            found = api.post("/automations/filter", json={"automations": {"name": {"any_": [body["name"]]}}})
            found.raise_for_status()
            for existing in found.json():
                api.delete(f"/automations/{existing['id']}").raise_for_status()
            created = api.post("/automations/", json=body)
            if created.is_error:
                raise RuntimeError(f"could not create the automation {body['name']}: {created.text}")


def start_endpoint(stack: Stack, port: int, logs: Path, timeout_s: float = 30) -> subprocess.Popen:
    """The approval endpoint (`changeflow endpoint`) on 127.0.0.1:port, once it answers."""
    process = stack.spawn([_bin("changeflow"), "endpoint", "--port", str(port)], logs / "endpoint.log",
                          name="endpoint")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the approval endpoint exited; see {logs / 'endpoint.log'}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/livez", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the approval endpoint did not answer on port {port} within {timeout_s:g} s")


def start_worker(stack: Stack, logs: Path) -> subprocess.Popen:
    return stack.spawn([_bin("changeflow"), "worker", "--pool", WORK_POOL, "--limit", "8"], logs / "worker.log",
                       name="worker")
