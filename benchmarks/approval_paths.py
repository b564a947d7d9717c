"""How fast an approver's action takes effect on each path (issues 17 and 27): the Prefect UI's Resume dialog (the
API call it makes), a Slack button click signed like Slack signs it, and the e-mail link's form; each with the gate
hot (waiting in its run's process: the shipped standard policy's `hot_gate`, 2 min) and cold (suspended: the same
policy with `hot_gate: 0s`, as a copy of the type). For each change: alice approves (not timed), then bob's
approval is timed from his action to (a) the decision recorded in the change database and (b) the run past its
gate (the change leaves `approved`). One stack for every path and mode, as `changeflow up` runs it (Prefect
server, deployments, approval endpoint, process worker, 0.5 s polling), so they are measured side by side; then
the same again with a plain `prefect worker start` (every run a new interpreter) in place of `changeflow worker`
(every run forked warm from its launcher, flows/_launcher.py). Last, the memory a worker holds when every slot
waits at a hot gate, for each worker.

    python benchmarks/approval_paths.py --changes 20 [--workers warm,cold]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
import yaml  # noqa: E402

from cli.dev import (  # noqa: E402
    FAST_POLLING,
    Stack,
    create_pool_and_deploy,
    free_port,
    prefect_env,
    start_endpoint,
    start_server,
    start_worker,
    WORK_POOL,
)
from endpoint import signed_click  # noqa: E402
from models import Database, Services, Settings, load_org  # noqa: E402
from tests.helpers import ROUTINE_RISK  # noqa: E402

SECRET = "approval-paths-benchmark"
SLACK_SECRET = "approval-paths-slack-secret"
PATHS = ("Resume dialog (Prefect API)", "Slack click (endpoint)", "e-mail link (endpoint)")
# Change type per mode: the shipped standard policy, and a copy of it that suspends at once.
MODES = {"hot": "standard", "cold": "standard-cold"}


def add_cold_type(config: Path) -> None:
    policies = yaml.safe_load((config / "policies.yaml").read_text())
    policies["types"]["standard-cold"] = {**policies["types"]["standard"], "hot_gate": "0s"}
    (config / "policies.yaml").write_text(yaml.safe_dump(policies, sort_keys=False))


WORKERS = {
    # `changeflow worker`: each run forked from the worker's launcher with Prefect and the flows imported.
    "warm": lambda stack, logs: start_worker(stack, logs),
    # `prefect worker start`: each run a new interpreter (the pool's command falls back to `python -m prefect.engine`).
    "cold": lambda stack, logs: stack.spawn([str(Path(sys.executable).parent / "prefect"), "worker", "start",
                                             "--pool", WORK_POOL, "--limit", "8"], logs / "worker-cold.log",
                                            name="worker"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=20, help="changes per path")
    parser.add_argument("--workers", default="warm,cold", help="which workers to measure, one after the other: "
                        "warm (`changeflow worker`), cold (`prefect worker start`)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="changeflow-paths-"))
    port, endpoint_port = free_port(), free_port()
    api_url, approval_url = f"http://127.0.0.1:{port}/api", f"http://127.0.0.1:{endpoint_port}"
    home = root / "home"
    stack = Stack(api_url, prefect_env(api_url, root / "prefect", {
        **FAST_POLLING, "CHANGEFLOW_HOME": str(home), "CHANGEFLOW_SECRET": SECRET,
        "CHANGEFLOW_APPROVAL_URL": approval_url, "CHANGEFLOW_SLACK_SIGNING_SECRET": SLACK_SECRET}))
    assert stack.run([sys.executable, "-m", "cli", "init"]).returncode == 0
    add_cold_type(home / "config")
    results: dict[str, dict[str, list[tuple[float, float]]]] = {}
    memory: dict[str, tuple[float, int]] = {}
    try:
        start_server(stack, port, root / "logs")
        create_pool_and_deploy(stack)
        start_endpoint(stack, endpoint_port, root / "logs")
        from prefect.settings import PREFECT_API_URL, temporary_settings

        for kind in args.workers.split(","):
            worker = WORKERS[kind](stack, root / "logs")
            with temporary_settings(updates={PREFECT_API_URL: api_url}):
                results[kind] = measure(home, approval_url, args.changes, label=kind)
                settings = Settings(home=home, secret=SECRET)
                services = Services.build(Database.from_settings(settings), load_org(settings.config_dir),
                                          SECRET.encode())
                memory[kind] = memory_with_every_slot_hot(services, api_url, worker.pid)
            stop_worker(stack, worker)
    finally:
        stack.stop()
    print(f"\n{'worker':<7} {'path':<30} {'gate':<5} {'decision recorded (median)':>28} "
          f"{'run past the gate (median)':>28}   n")
    for kind, by_path in results.items():
        for path in PATHS:
            for mode in MODES:
                recorded, past = zip(*by_path[f"{path}|{mode}"])
                print(f"{kind:<7} {path:<30} {mode:<5} {statistics.median(recorded):>26.2f} s "
                      f"{statistics.median(past):>26.2f} s   {len(recorded)}")
    print("\nmemory of the worker and its flow-run processes with every slot holding a hot gate (PSS: a page "
          "shared by forked processes counted once, split among them)")
    for kind, (worker_mb, gates) in memory.items():
        print(f"{kind:<7} {gates} hot gates: {worker_mb:.0f} MB ({worker_mb / max(gates, 1):.0f} MB a gate, the "
              "worker included)")


def stop_worker(stack: Stack, worker) -> None:
    """End one worker, its launcher and its runs (one process group), before the next kind starts."""
    import os
    import signal

    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(timeout=30)
    stack.processes.remove(worker)
    stack.named.pop("worker", None)


def proportional_mb(pids: list[int]) -> float:
    """Proportional set size: each page divided among the processes that share it. Resident size (RSS) would count
    a page the launcher's forks share once per fork."""
    total = 0
    for pid in pids:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        total += int(next(line.split()[1] for line in rollup.splitlines() if line.startswith("Pss:")))
    return total / 1024


def memory_with_every_slot_hot(services: Services, api_url: str, worker_pid: int, slots: int = 8) -> tuple[float, int]:
    """The trade-off of a hot gate: fill every slot of the worker with a standard change waiting hot at its approval
    gate (nothing else due, so none gives its slot up), then add up the memory of the worker's tree (PSS). Also
    `benchmarks/scale_out.py`'s, after its load."""
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from cli.dev import confirm_filing_in_form
    from flows import paused_key
    from tests.processes import with_descendants

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        runs = [str(run_deployment("change-request/submit", timeout=0, parameters={"request": {
            "type": "standard", "title": f"hot {n}", "service": "payments", "requester": "grace",
            "test_evidence": "staging run green",
            "rollback_plan": "redeploy", "risk": ROUTINE_RISK}}).id) for n in range(slots)]
        for run_id in runs:
            confirm_filing_in_form(services, api_url, run_id)
        deadline = time.monotonic() + 300
        while sum(1 for run_id in runs if (asyncio.run(paused_key(run_id)) or "").startswith("approval-")) < slots:
            assert time.monotonic() < deadline, "the runs did not all reach their gate"
            time.sleep(0.5)
        return proportional_mb(with_descendants([worker_pid])), slots


def measure(home: Path, approval_url: str, changes: int, label: str) -> dict[str, list[tuple[float, float]]]:
    from prefect.deployments import run_deployment

    from prefect.settings import PREFECT_API_URL

    from cli.dev import confirm_filing_in_form
    from flows import paused_key, resume_with_input

    settings = Settings(home=home, secret=SECRET)
    services = Services.build(Database.from_settings(settings), load_org(settings.config_dir), SECRET.encode())
    results: dict[str, list[tuple[float, float]]] = {f"{path}|{mode}": [] for path in PATHS for mode in MODES}

    def at_gate(run_id: str) -> None:
        while not (asyncio.run(paused_key(run_id)) or "").startswith("approval-"):
            time.sleep(0.05)

    def act(path: str, key: str, run_id: str, person: str) -> None:
        if path == PATHS[0]:
            asyncio.run(resume_with_input(run_id, {"approver": person, "decision": "approve", "comment": "",
                                                   "approval_code": services.approvals.approval_code_for(key, person)}))
        elif path == PATHS[1]:
            slack_user = services.org.directory.people[person].slack_user_id
            body, headers = signed_click(key, services.changes.get(key).approval_round, slack_user, SLACK_SECRET)
            assert httpx.post(f"{approval_url}/slack/actions", content=body, headers=headers,
                              timeout=30).status_code == 200
        else:
            link = f"{approval_url}/a/{services.links.link_for(key, person)}"
            token = re.search(r'name="form_token" value="([^"]+)"', httpx.get(link, timeout=10).text).group(1)
            assert httpx.post(link, data={"form_token": token, "decision": "approve"}, timeout=30).status_code == 200

    for i in range(changes * len(PATHS) * len(MODES)):
        path, mode = PATHS[i % len(PATHS)], list(MODES)[(i // len(PATHS)) % len(MODES)]
        run_id = str(run_deployment("change-request/submit", timeout=0, parameters={"request": {
            "type": MODES[mode], "title": f"paths {label} {i}", "service": "payments", "requester": "grace",
            "rollback_plan": "redeploy", "risk": ROUTINE_RISK}}).id)
        confirm_filing_in_form(services, PREFECT_API_URL.value(), run_id)  # grace confirms she filed it
        at_gate(run_id)
        key = services.changes.find_by_idempotency_key(f"flow-run:{run_id}").key
        act(path, key, run_id, "alice")
        while "alice" not in services.approvals.decided_by(key):
            time.sleep(0.02)
        at_gate(run_id)  # the run is waiting for the second approval again
        started = time.perf_counter()
        act(path, key, run_id, "bob")
        while "bob" not in services.approvals.decided_by(key):
            time.sleep(0.02)
        recorded = time.perf_counter() - started
        while services.changes.get(key).state in ("awaiting_approval", "approved"):
            time.sleep(0.02)
        results[f"{path}|{mode}"].append((recorded, time.perf_counter() - started))
        print(f"  {label} worker, {path} ({mode}): {key} recorded {recorded:.2f} s, run past the gate "
              f"{results[f'{path}|{mode}'][-1][1]:.2f} s", flush=True)
    return results


if __name__ == "__main__":
    main()
