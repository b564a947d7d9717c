"""Fault injection: the process running a change's flow is killed with SIGKILL in the middle of a step. Nobody
presses Retry: Prefect marks the run Crashed, the escalation sweep records the crash, tells the people on call and
restarts the run, and the restarted run never repeats a side effect blindly (issue 16)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from models import verify_chain
from tests.flows.test_bypass_flows import resume_like_the_ui
from tests.flows.test_flows import final_run_state, submit, wait_paused
from tests.helpers import standard_request

pytestmark = [pytest.mark.flows, pytest.mark.slow]


def processes_of_run(run_id: str) -> list[int]:
    """The flow-run process (its environment names the run) and everything it started."""
    roots = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if f"PREFECT__FLOW_RUN_ID={run_id}".encode() in (entry / "environ").read_bytes():
                roots.append(int(entry.name))
        except OSError:
            continue
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.append(pid)
            todo += children.get(pid, [])
    return found


def kill_run(run_id: str) -> int:
    pids = processes_of_run(run_id)
    assert pids, "no process runs this flow run"
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(pids)


def wait_until(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def run_state_name(run_id: str) -> str:
    import asyncio

    from flows import run_state

    return asyncio.run(run_state(run_id)) or ""


def steps_run(flow_stack, service: str) -> list[str]:
    log = flow_stack.home / f"steps-{service}.log"
    return log.read_text().split() if log.exists() else []


def crash_mid_step(flow_stack, template: str, service: str):
    run_id = submit(standard_request(title=f"crash: {template}", service=service, template=template,
                                     implementation_plan="", rollback_plan=""))  # the recipe as is: pre-approved
    change = flow_stack.wait_for(run_id, lambda c: c.state == "implementing", timeout_s=90, what="implementing")
    wait_until(lambda: steps_run(flow_stack, service), 60, "the step to start")
    kill_run(run_id)
    wait_until(lambda: run_state_name(run_id) in ("CRASHED", "FAILED"), 120, "Prefect to mark the run crashed")
    from flows.escalation import reconcile_crashed_runs

    summary = reconcile_crashed_runs()
    assert summary["restarted"] >= 1, summary
    assert reconcile_crashed_runs()["restarted"] == 0, "one crash is handled once"
    return run_id, flow_stack.services.changes.get(change.key)


def test_a_step_killed_mid_way_is_never_run_again_blindly_a_person_says_whether_it_took_effect(flow_stack):
    run_id, change = crash_mid_step(flow_stack, "slow-step", "crash-at-most-once")
    assert wait_paused(run_id, "work-implemented-s1-") == "work-implemented-s1-1"
    view = flow_stack.services.changes.view(change.key)
    assert [e.action for e in view.events].count("run_crashed") == 1
    assert {n["recipient"] for n in view.notifications if n["event"] == "run_crashed"} >= {"grace", "bob"}
    # `changeflow pending` lists it as waiting for a person, with the reason.
    import json
    import subprocess
    import sys

    listed = subprocess.run([str(Path(sys.executable).parent / "changeflow"), "pending", "--json"],
                            env=flow_stack.stack.env, capture_output=True, text=True)
    row = next(r for r in json.loads(listed.stdout) if r["key"] == change.key)
    assert "step 1 was interrupted by a crash" in row["waiting_for"] and "grace" in row["waiting_on"]
    resume_like_the_ui(run_id, {"person": "grace", "note": "the restart had gone through",
                                "approval_code": flow_stack.services.approvals.approval_code_for(change.key, "grace")})
    assert final_run_state(run_id, timeout_s=120).is_completed()
    done = flow_stack.services.changes.view(change.key)
    assert (done.state, done.outcome) == ("closed", "succeeded")
    assert steps_run(flow_stack, "crash-at-most-once") == ["started"], "the interrupted step ran again"
    with flow_stack.services.db.read() as session:
        assert verify_chain(session).ok


def test_an_idempotent_step_killed_mid_way_runs_again_by_itself(flow_stack):
    run_id, change = crash_mid_step(flow_stack, "slow-idempotent-step", "crash-at-least-once")
    assert final_run_state(run_id, timeout_s=150).is_completed()
    done = flow_stack.services.changes.view(change.key)
    assert (done.state, done.outcome) == ("closed", "succeeded")
    assert steps_run(flow_stack, "crash-at-least-once") == ["started", "started"]
    retried = [e.data for e in done.events if e.action == "step_retried"]
    assert [d["step"] for d in retried] == [1]
