"""Warm flow-run processes (flows/_launcher.py, issue 27): under `changeflow worker` a run's engine is forked from
the worker's launcher with Prefect and the flows imported; it still lives and dies with the run process the worker
holds, and a run the launcher cannot serve starts cold."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from cli.dev import confirm_filing_in_form
from tests.e2e.kill_stack import running_kill_stack
from tests.helpers import standard_request, wait_until
from tests.processes import processes_of_run

pytestmark = pytest.mark.slow

SERVICES = ("warm-engine", "cold-engine", "own-settings")


@pytest.fixture(scope="module")
def kill_stack(tmp_path_factory):
    with running_kill_stack(tmp_path_factory.mktemp("warm-engines"), SERVICES) as stack:
        yield stack


def _comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _at_its_gate(kill_stack, service: str, job_variables: dict | None = None) -> str:
    request = standard_request(title=f"{service} run", service=service)
    if job_variables is None:
        run_id = kill_stack.submit(request)
    else:
        api = kill_stack.stack.api_url
        deployment = httpx.get(f"{api}/deployments/name/change-request/submit", timeout=10).json()
        created = httpx.post(f"{api}/deployments/{deployment['id']}/create_flow_run", timeout=30, json={
            "parameters": {"request": request}, "job_variables": job_variables})
        assert created.status_code == 201, created.text
        run_id = created.json()["id"]
        confirm_filing_in_form(kill_stack.services, api, run_id, timeout_s=240)
    wait_until(lambda: kill_stack.run_state_name(run_id) == "Paused", 120, "the run to wait hot at its approval gate")
    return run_id


def test_a_run_is_forked_warm_from_its_workers_launcher_and_dies_with_the_process_the_worker_holds(kill_stack):
    run_id = _at_its_gate(kill_stack, "warm-engine")
    engines = [pid for pid in processes_of_run(run_id) if _comm(pid).startswith("engine-")]
    assert len(engines) == 1, "the run's engine should be a warm fork"
    engine = engines[0]
    launcher = _parent(engine)
    assert _comm(launcher) == "launcher" and _parent(launcher) == kill_stack.worker.pid
    client = int(_comm(engine).removeprefix("engine-"))
    assert _parent(client) == kill_stack.worker.pid
    assert f"PREFECT__FLOW_RUN_ID={run_id}".encode() in Path(f"/proc/{client}/environ").read_bytes()
    # The walk-around: kill -9 of the run process the worker holds, not of the engine. An engine left running
    # would go on with a run its worker reports as ended.
    os.kill(client, signal.SIGKILL)
    wait_until(lambda: not _alive(engine), 15, "the engine to die with its run process")


def test_a_run_the_launcher_cannot_serve_starts_cold_and_still_runs(kill_stack):
    launcher = next(pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
                    if _alive(pid) and _comm(pid) == "launcher" and _parent(pid) == kill_stack.worker.pid)
    os.kill(launcher, signal.SIGKILL)
    try:
        run_id = _at_its_gate(kill_stack, "cold-engine")
        run_processes = processes_of_run(run_id)
        assert not [pid for pid in run_processes if _comm(pid).startswith("engine-")]
        assert any(b"prefect.engine" in Path(f"/proc/{pid}/cmdline").read_bytes() for pid in run_processes)
    finally:
        kill_stack.kill_the_worker_alone()  # a new worker, with a launcher


def test_a_run_whose_prefect_settings_differ_from_the_launchers_starts_cold(kill_stack):
    """Prefect read its settings when the launcher imported it: a fork would run this run with the launcher's
    (here, its logging level) instead of its own."""
    run_id = _at_its_gate(kill_stack, "own-settings", {"env": {"PREFECT_LOGGING_LEVEL": "DEBUG"}})
    run_processes = processes_of_run(run_id)
    assert not [pid for pid in run_processes if _comm(pid).startswith("engine-")]
    engine = next(pid for pid in run_processes if b"prefect.engine" in Path(f"/proc/{pid}/cmdline").read_bytes())
    assert b"PREFECT_LOGGING_LEVEL=DEBUG" in Path(f"/proc/{engine}/environ").read_bytes()


# An engine given an invalid run id needs no server: pointed at none (port 1, refused at once) rather than at the
# session's address, which is reserved when the session starts but served only from its first flows test on, so
# another worker's stack may hold that port meanwhile. (Clean-clone run 30: the launch below passed its 120 s bound
# once, under the whole suite; alone it takes 3-10 s, and a server that never answers did not make it hang. The
# cause is not known: on a timeout the test now shows what was still running.)
NO_SERVER = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:1/api"}


def _left_running() -> str:
    """The launchers and engines alive now (each holds the test's pipes while it lives), with what they wait in."""
    ps = subprocess.run(["ps", "-eo", "pid,ppid,stat,etimes,wchan:24,comm"], capture_output=True, text=True).stdout
    return "\n".join(line for line in ps.splitlines()[1:] if line.split()[-1].startswith(("launcher", "engine-")))


def test_the_engine_client_without_a_launcher_becomes_the_engine_itself(tmp_path):
    """No launcher named, or none listening: the pool's command runs Prefect's engine in its own process."""
    from flows import ENGINE_CLIENT

    for launcher in ("", str(tmp_path / "no-such.sock")):
        env = {**NO_SERVER, "CHANGEFLOW_ENGINE_LAUNCHER": launcher, "PREFECT__FLOW_RUN_ID": "not-a-run-id"}
        ran = subprocess.run([sys.executable, "-S", ENGINE_CLIENT], env=env, capture_output=True, text=True,
                             timeout=120)
        assert ran.returncode == 1 and "Invalid flow run id" in ran.stderr + ran.stdout, ran.stderr[-2000:]


# A process that forks a launcher, then runs the pool's command through it. Exit handlers registered before the fork
# are every engine's too: they leave a mark when an engine runs them (threading's first, where Prefect drains its
# log and event queues; then atexit's).
LAUNCH_ONE_ENGINE = """
import atexit, os, subprocess, sys, threading
from pathlib import Path
from flows import ENGINE_CLIENT, LAUNCHER_ENV, start_launcher

def mark(what, path=sys.argv[1]):  # (an engine's sys.argv is its own)
    if Path(f"/proc/{os.getpid()}/comm").read_text().startswith("engine-"):
        with open(path, "a") as marks:
            marks.write(what + chr(10))

threading._register_atexit(mark, "threads drained")
atexit.register(mark, "atexit ran")
os.environ[LAUNCHER_ENV] = start_launcher()
sys.exit(subprocess.run([sys.executable, "-S", ENGINE_CLIENT, "not-a-run-id"]).returncode)
"""


def test_a_warm_engine_ends_as_its_interpreter_would_exit_handlers_run_and_its_status_reported(tmp_path):
    """Fifth session's flaw, found when the flow stack moved onto the warm worker: an engine's exit unwound into
    the launcher's `os._exit(0)`, which skips the interpreter's shutdown. Prefect drains its log queue there, so a
    short run's logs never reached the API, and the client reported 137 (killed) for every run."""
    marks = tmp_path / "marks"
    try:
        ran = subprocess.run([sys.executable, "-c", LAUNCH_ONE_ENGINE, str(marks)], capture_output=True, text=True,
                             timeout=120, cwd=Path(__file__).parents[2], env=NO_SERVER)
    except subprocess.TimeoutExpired as hung:
        raise AssertionError(f"the launch did not end within 120 s; still running:\n{_left_running()}\n"
                             f"marks: {marks.read_text() if marks.exists() else '(none)'}\n"
                             f"stderr: {(hung.stderr or b'')[-2000:]!r}") from None
    assert "Invalid flow run id" in ran.stderr + ran.stdout, ran.stderr[-2000:]
    assert ran.returncode == 1, ran.stderr[-2000:]  # the engine's own status: `exit(1)`, an invalid run id
    assert marks.exists() and marks.read_text().splitlines() == ["threads drained", "atexit ran"]
