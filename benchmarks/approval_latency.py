"""Median time from an approval being submitted (Prefect accepts the resume) to the flow recording it in
the change database, with Prefect's default polling and with changeflow's.

Each setting gets its own Prefect server, work pool, `prefect deploy --all` and process worker, as
`changeflow up` runs them. For each of N standard changes: wait until the gate is suspended, resume it as
the team lead through the API the UI's Resume button calls, and time until the approval row appears.

    python benchmarks/approval_latency.py --changes 8
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cli.dev import (  # noqa: E402
    FAST_POLLING,
    Stack,
    create_pool_and_deploy,
    free_port,
    prefect_env,
    start_server,
    start_worker,
)
from models import Services, Database, Settings, load_org  # noqa: E402
from tests.helpers import ROUTINE_RISK  # noqa: E402

SECRET = "latency-benchmark"
READING_TIME_S = 3


def measure(label: str, polling: dict[str, str], changes: int) -> list[float]:
    root = Path(tempfile.mkdtemp(prefix="changeflow-latency-"))
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    home = root / "home"
    stack = Stack(api_url, prefect_env(api_url, root / "prefect", {
        **polling, "CHANGEFLOW_HOME": str(home), "CHANGEFLOW_SECRET": SECRET}))
    init = stack.run([sys.executable, "-m", "cli", "init"])
    assert init.returncode == 0, init.stderr
    try:
        start_server(stack, port, root / "logs")
        create_pool_and_deploy(stack)
        start_worker(stack, root / "logs")
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            return run_approvals(label, home, changes)
    finally:
        stack.stop()


def run_approvals(label: str, home: Path, changes: int) -> list[float]:
    from prefect.deployments import run_deployment

    from prefect.settings import PREFECT_API_URL

    from cli.dev import confirm_filing_in_form
    from flows import ResumeRefused, paused_key, resume_with_input

    settings = Settings(home=home, secret=SECRET)
    services = Services.build(Database.from_settings(settings), load_org(settings.config_dir), SECRET.encode())
    latencies = []
    for i in range(changes):
        run = run_deployment("change-request/submit", timeout=0, parameters={"request": {
            "type": "standard", "title": f"latency {i}", "service": "payments", "requester": "grace",
            "test_evidence": "staging run green",
            "rollback_plan": "redeploy", "risk": ROUTINE_RISK}})
        run_id = str(run.id)
        confirm_filing_in_form(services, PREFECT_API_URL.value(), run_id)  # grace confirms she filed it
        while not (asyncio.run(paused_key(run_id)) or "").startswith("approval-"):
            time.sleep(0.1)
        # A person reads the notification before deciding; the suspended process has exited by then.
        time.sleep(READING_TIME_S)
        change = services.changes.find_by_idempotency_key(f"flow-run:{run_id}")
        code = services.approvals.approval_code_for(change.key, "alice")
        try:
            asyncio.run(resume_with_input(run_id, {"approver": "alice", "decision": "approve",
                                                   "approval_code": code, "comment": ""}))
        except ResumeRefused as exc:
            raise SystemExit(str(exc)) from None
        accepted = time.perf_counter()
        while not services.approvals.decided_by(change.key):
            time.sleep(0.02)
        latencies.append(time.perf_counter() - accepted)
        print(f"  {label}: {change.key} recorded {latencies[-1]:.2f} s after the resume", flush=True)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=8)
    args = parser.parse_args()
    results = {
        "prefect defaults (10 s worker polls)": measure("prefect defaults", {"CHANGEFLOW_WORKER_POLL_S": "10",
                                                                           "CHANGEFLOW_HOT_GATE_YIELD_AFTER_S": "12"},
                                                        args.changes),
        "changeflow (0.5 s worker polls)": measure("changeflow", FAST_POLLING, args.changes),
    }
    for label, values in results.items():
        print(f"{label}: median {statistics.median(values):.2f} s, min {min(values):.2f} s, "
              f"max {max(values):.2f} s over {len(values)} approvals")


if __name__ == "__main__":
    main()
