"""Fault injection: the process running a change's flow is killed with SIGKILL in the middle of a step. Nobody
presses Retry: Prefect marks the run Crashed, the escalation sweep records the crash, tells the people on call and
restarts the run, and the restarted run never repeats a side effect blindly (issue 16)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from models import Act, verify_chain
from tests.flows.test_bypass_flows import resume_like_the_ui
from tests.flows.test_flows import ended_as, submit, wait_paused
from tests.helpers import standard_request, wait_until
from tests.processes import kill_run

pytestmark = [pytest.mark.flows, pytest.mark.slow]


def run_state_name(run_id: str) -> str:
    import asyncio

    from flows import run_state

    return asyncio.run(run_state(run_id)) or ""


def reconciled(done, what: str = "the crash to settle and be handled") -> dict:
    """The summary of `reconcile_crashed_runs` once `done(summary)` holds: a dead run is acted on only after its
    state has settled (CHANGEFLOW_CRASH_SETTLE_S, 1 s on the flow stack), and a sweep run may get there first."""
    from flows.sweep import reconcile_crashed_runs

    return wait_until(lambda: (lambda summary: summary if done(summary) else None)(reconcile_crashed_runs()), 60, what)


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
    from flows.sweep import reconcile_crashed_runs

    # Handled exactly once, by this call (or by a sweep run of the stack that got there first).
    summary = reconciled(lambda s: s["restarted"] >= 1 or flow_stack.services.recovery.crashes(change.key) == 1)
    crashes = flow_stack.services.recovery.crashes(change.key)
    assert summary["restarted"] >= 1 or crashes == 1, (
        f"{summary}; run {run_state_name(run_id)}, change {flow_stack.services.changes.get(change.key).state}, "
        f"{crashes} crash(es) recorded")
    assert reconcile_crashed_runs()["restarted"] == 0, "one crash is handled once"
    assert flow_stack.services.recovery.crashes(change.key) == 1
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
                                "approval_code": flow_stack.services.approvals.approval_code_for(change.key, "grace",
                                                                                                 Act.confirm_work)})
    ended_as(run_id, "Closed", timeout_s=120)
    done = flow_stack.services.changes.view(change.key)
    assert (done.state, done.outcome) == ("closed", "succeeded")
    assert steps_run(flow_stack, "crash-at-most-once") == ["started"], "the interrupted step ran again"
    with flow_stack.services.db.read() as session:
        assert verify_chain(session).ok


def test_a_step_of_a_live_run_is_not_asked_about_and_an_answer_about_it_is_refused(flow_stack):
    """Issue 28: `pending` listed every started step as interrupted while its run was running it, and `changeflow
    work --step --failed` was accepted for a step that then succeeded."""
    import json
    import subprocess
    import sys

    service = "live-step"
    run_id = submit(standard_request(title="a long step", service=service, template="gated-step",
                                     implementation_plan="", rollback_plan=""))
    change = flow_stack.wait_for(run_id, lambda c: c.state == "implementing", timeout_s=90, what="implementing")
    wait_until(lambda: steps_run(flow_stack, service), 60, "the step to start")
    changeflow = str(Path(sys.executable).parent / "changeflow")
    listed = subprocess.run([changeflow, "pending", "--json"], env=flow_stack.stack.env, capture_output=True,
                            text=True)
    assert listed.returncode == 0, listed.stderr
    assert not [r for r in json.loads(listed.stdout) if r["key"] == change.key and "step" in r["waiting_for"]]
    code = flow_stack.services.approvals.approval_code_for(change.key, "grace", Act.confirm_work)
    answer = subprocess.run([changeflow, "work", change.key, "implemented", "--step", "1", "--failed", "--note",
                             "it did not work", "--as", "grace", "--code", code],
                            env=flow_stack.stack.env, capture_output=True, text=True)
    assert answer.returncode == 1 and "is not waiting for anyone" in answer.stdout + answer.stderr, answer
    (flow_stack.home / f"finish-{service}").touch()
    ended_as(run_id, "Closed", timeout_s=120)
    done = flow_stack.services.changes.view(change.key)
    assert (done.state, done.outcome) == ("closed", "succeeded")
    assert not [e for e in done.events if e.action == "work_confirmed"]


def test_an_idempotent_step_killed_mid_way_runs_again_by_itself(flow_stack):
    run_id, change = crash_mid_step(flow_stack, "slow-idempotent-step", "crash-at-least-once")
    ended_as(run_id, "Closed", timeout_s=150)
    done = flow_stack.services.changes.view(change.key)
    assert (done.state, done.outcome) == ("closed", "succeeded")
    assert steps_run(flow_stack, "crash-at-least-once") == ["started", "started"]
    retried = [e.data for e in done.events if e.action == "step_retried"]
    assert [d["step"] for d in retried] == [1]


def checks_run(flow_stack, checklist: str) -> list[str]:
    log = flow_stack.home / f"checks-{checklist}.log"
    return log.read_text().split() if log.exists() else []


def crash_mid_check(flow_stack, checklist: str):
    run_id = submit(standard_request(title=f"crash in {checklist}", service=f"crash-{checklist}",
                                     template=f"with-{checklist}", implementation_plan="", rollback_plan=""))
    wait_until(lambda: checks_run(flow_stack, checklist), 90, "the pre-check to start")
    kill_run(run_id)
    wait_until(lambda: run_state_name(run_id) in ("CRASHED", "FAILED"), 120, "Prefect to mark the run crashed")
    reconciled(lambda summary: summary["restarted"] >= 1)
    return run_id, flow_stack.services.changes.find_by_flow_run(run_id)


def test_a_pre_check_command_killed_mid_way_is_put_to_a_person_not_run_again(flow_stack):
    run_id, change = crash_mid_check(flow_stack, "slow-pre")
    assert wait_paused(run_id, "checklist-pre-0-") == "checklist-pre-0-1"
    # The question is the interrupted item; `changeflow pending` names it, a person answers it with their code,
    # as for any manual item.
    import json
    import subprocess
    import sys

    listed = subprocess.run([str(Path(sys.executable).parent / "changeflow"), "pending", "--json"],
                            env=flow_stack.stack.env, capture_output=True, text=True)
    row = next(r for r in json.loads(listed.stdout) if r["key"] == change.key)
    assert "pre-check slow-check was interrupted by a crash: did it pass?" in row["waiting_for"], row
    code = flow_stack.services.approvals.approval_code_for(change.key, "grace", Act.confirm_check)
    confirmed = subprocess.run([str(Path(sys.executable).parent / "changeflow"), "confirm", change.key, "slow-check",
                                "--as", "grace", "--code", code, "--note", "the check had passed before the crash"],
                               env=flow_stack.stack.env, capture_output=True, text=True)
    assert confirmed.returncode == 0, confirmed.stdout + confirmed.stderr
    ended_as(run_id, "Closed", timeout_s=120)
    done = flow_stack.services.changes.view(change.key)
    assert (done.state, done.outcome) == ("closed", "succeeded")
    assert checks_run(flow_stack, "slow-pre") == ["started"], "the interrupted check ran again"
    actions = [e.action for e in done.events]
    assert actions.count("check_started") == 1 and actions.count("run_crashed") == 1
    assert "check_retried" not in actions
    (result,) = flow_stack.services.checklists.check_results(change.key, phase="pre")
    assert (result.item_id, result.passed, result.actor) == ("slow-check", True, "grace")


def test_an_idempotent_pre_check_killed_mid_way_runs_again_by_itself(flow_stack):
    run_id, change = crash_mid_check(flow_stack, "slow-pre-idempotent")
    ended_as(run_id, "Closed", timeout_s=150)
    done = flow_stack.services.changes.view(change.key)
    assert (done.state, done.outcome) == ("closed", "succeeded")
    assert checks_run(flow_stack, "slow-pre-idempotent") == ["started", "started"]
    assert flow_stack.services.recovery.needs_a_person(change.key) == [], "an idempotent check asks nobody"
    assert [e.data["item"] for e in done.events if e.action == "check_retried"] == ["slow-check"]


def test_a_run_that_died_at_its_approval_gate_waits_there_again(flow_stack):
    """The zombie automation marks a silent run Crashed wherever it was; one that had suspended at its gate
    is restarted by the sweep and waits at the gate again, under a new key, and an approval then moves it."""
    import asyncio

    from prefect import get_client
    from prefect.states import Crashed

    from tests.flows.test_flows import act, awaiting

    run_id = submit(standard_request(title="dies at the gate", service="crash-at-gate", template="scripted-standard"))
    change = awaiting(flow_stack, run_id)
    assert wait_paused(run_id, "approval-") == "approval-r1-1"

    async def crash() -> None:
        async with get_client() as client:
            await client.set_flow_run_state(run_id, Crashed(message="no heartbeat for 90 s"), force=True)

    asyncio.run(crash())
    reconciled(lambda summary: summary["restarted"] >= 1)
    assert wait_paused(run_id, "approval-r1-2") == "approval-r1-2"
    for person in ("alice", "bob"):
        act(flow_stack, flow_stack.services.changes.get(change.key), person)
    ended_as(run_id, "Closed", timeout_s=120)
    done = flow_stack.services.changes.view(change.key)
    assert done.state == "closed"
    assert [e.action for e in done.events].count("run_crashed") == 1


def test_runs_left_pending_by_a_dead_worker_are_replaced(flow_stack):
    """A worker killed while it picked a run up leaves it Pending for ever: the sweep cancels a stuck sweep run
    (the next sweep does its work) and starts a stuck change run again."""
    import asyncio
    from datetime import timedelta

    from prefect import get_client
    from prefect.states import Pending

    from flows.sweep import replace_stuck_runs
    from tests.flows.test_flows import awaiting

    async def stuck(deployment: str, parameters: dict) -> str:
        async with get_client() as client:
            found = await client.read_deployment_by_name(deployment)
            run = await client.create_flow_run_from_deployment(found.id, parameters=parameters, state=Pending())
            return str(run.id)

    sweep = asyncio.run(stuck("approval-escalation/every-minute", {}))
    change_run = asyncio.run(stuck("change-request/submit", {"request": standard_request(
        title="picked up by a worker that died", service="stuck-pending", template="scripted-standard")}))
    time.sleep(3)
    summary = replace_stuck_runs(stuck_after=timedelta(seconds=2))
    assert summary["stuck_sweeps_cancelled"] >= 1 and summary["stuck_runs_restarted"] >= 1, summary
    assert run_state_name(sweep) == "CANCELLED"
    assert awaiting(flow_stack, change_run).flow_run_id == change_run


def test_a_change_run_that_died_before_filing_its_change_is_started_again_a_bounded_number_of_times(flow_stack):
    """A worker killed while a change's run started leaves it Crashed before it filed anything (CI found 7 such
    runs lost in tests/e2e/test_distributed.py): nothing in changeflow knows the request, so the sweep starts the
    run again and it files its change once. A run changeflow already started again MAX_AUTOMATIC_RESTARTS times is
    left for a person, and a dead run of another flow (a sweep) is not started again."""
    import asyncio
    from datetime import timedelta

    from prefect import get_client
    from prefect.states import Crashed, Scheduled

    from flows._recovery import RESTART_MESSAGE
    from flows.sweep import reconcile_crashed_runs
    from models import MAX_AUTOMATIC_RESTARTS, utcnow
    from tests.flows.test_flows import awaiting

    # Scheduled a day ahead until it is crashed: no worker picks it up meanwhile.
    later = utcnow() + timedelta(days=1)

    async def dead_run(deployment: str, parameters: dict, restarts: int = 0) -> str:
        async with get_client() as client:
            found = await client.read_deployment_by_name(deployment)
            run = await client.create_flow_run_from_deployment(found.id, parameters=parameters,
                                                                state=Scheduled(scheduled_time=later))
            for _ in range(restarts):
                await client.set_flow_run_state(run.id, Scheduled(scheduled_time=later, message=RESTART_MESSAGE),
                                                force=True)
            await client.set_flow_run_state(run.id, Crashed(message="its worker was killed"), force=True)
            return str(run.id)

    def request(title: str) -> dict:
        return {"request": standard_request(title=title, service="unfiled", template="scripted-standard")}

    lost = asyncio.run(dead_run("change-request/submit", request("its worker died as it started")))
    exhausted = asyncio.run(dead_run("change-request/submit", request("crashed again and again"),
                                     restarts=MAX_AUTOMATIC_RESTARTS))
    sweep = asyncio.run(dead_run("approval-escalation/every-minute", {}))
    # (Or a sweep run of the stack got there first: either restarts it once.)
    reconciled(lambda summary: summary["unfiled_runs_restarted"] >= 1
               or flow_stack.services.changes.find_by_idempotency_key(f"flow-run:{lost}") is not None)
    change = awaiting(flow_stack, lost)
    assert change.flow_run_id == lost and change.title == "its worker died as it started"
    assert reconcile_crashed_runs()["unfiled_runs_restarted"] == 0
    assert run_state_name(exhausted) == "CRASHED" and run_state_name(sweep) == "CRASHED"
    assert flow_stack.services.changes.find_by_idempotency_key(f"flow-run:{exhausted}") is None


def test_a_rollback_killed_mid_way_is_put_to_a_person_not_run_again(flow_stack):
    service = "crash-in-rollback"
    rollbacks = flow_stack.home / f"rollbacks-{service}.log"
    run_id = submit(standard_request(title="its rollback dies", service=service, template="slow-rollback",
                                     implementation_plan="", rollback_plan=""))
    wait_until(rollbacks.exists, 90, "the rollback to start")
    kill_run(run_id)
    wait_until(lambda: run_state_name(run_id) in ("CRASHED", "FAILED"), 120, "Prefect to mark the run crashed")
    reconciled(lambda summary: summary["restarted"] >= 1)
    # The failed step is not run again (its failure was recorded); the interrupted rollback is put to a person.
    assert wait_paused(run_id, "work-rolled-back-") == "work-rolled-back-1"
    change = flow_stack.services.changes.find_by_flow_run(run_id)
    assert any("the rollback was interrupted by a crash" in reason
               for reason in flow_stack.services.recovery.needs_a_person(change.key))
    resume_like_the_ui(run_id, {"person": "grace", "note": "checked: the undo had completed",
                                "approval_code": flow_stack.services.approvals.approval_code_for(change.key, "grace",
                                                                                                 Act.confirm_work)})
    ended_as(run_id, "Rolled back", timeout_s=120)
    done = flow_stack.services.changes.view(change.key)
    assert done.state == "review_pending" and done.outcome == "rolled_back"
    assert rollbacks.read_text().split() == ["started"], "the interrupted rollback ran again"
    actions = [e.action for e in done.events]
    assert actions.count("rollback_started") == 1 and actions.count("implementation_step") == 1
    assert "rollback_retried" not in actions


def test_a_post_check_command_killed_mid_way_is_put_to_a_person_after_the_change_took_effect(flow_stack):
    run_id, change = crash_mid_check(flow_stack, "slow-post")
    assert wait_paused(run_id, "checklist-post-0-") == "checklist-post-0-1"
    code = flow_stack.services.approvals.approval_code_for(change.key, "grace", Act.confirm_check)
    resume_like_the_ui(run_id, {"slow_check": True, "confirmed_by": "grace", "approval_code": code,
                                "note": "smoke test had passed"})
    ended_as(run_id, "Closed", timeout_s=120)
    done = flow_stack.services.changes.view(change.key)
    assert (done.state, done.outcome) == ("closed", "succeeded")
    assert checks_run(flow_stack, "slow-post") == ["started"], "the interrupted check ran again"
    # The implementation steps before it finished once and were not run again by the restarted run.
    assert [e.action for e in done.events].count("implementation_step") == 2


def test_a_maintenance_activity_killed_mid_way_is_not_run_again_and_the_window_goes_on(flow_stack):
    """Maintenance windows do not wait for a person: an activity a crash interrupted is reported as not done
    (unless it declares itself idempotent), and the restarted run carries on with the rest of the window."""
    from datetime import datetime, timedelta, timezone

    from prefect.deployments import run_deployment

    services = flow_stack.services
    start = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=10)
    window = {"kind": "weekly", "window_start": start.isoformat(), "window_minutes": 2}
    assert run_deployment("maintenance-announcement/weekly", parameters=window, timeout=120).state.is_completed()
    key = services.changes.find_by_idempotency_key(f"maintenance:weekly:{start.isoformat()}").key
    for person in ("alice", "bob"):
        services.approvals.decide(key, approver=person, decision="approve",
                                  code=services.approvals.approval_code_for(key, person))
    run_id = str(run_deployment("maintenance/weekly", parameters=window, timeout=0).id)

    def long_job_started():
        return any(e.action == "step_started" and e.data.get("step") == 3 for e in services.changes.view(key).events)

    wait_until(long_job_started, 120, "the long activity to start")
    kill_run(run_id)
    wait_until(lambda: run_state_name(run_id) in ("CRASHED", "FAILED"), 120, "Prefect to mark the run crashed")
    reconciled(lambda summary: summary["restarted"] >= 1 or services.recovery.crashes(key) == 1)
    wait_until(lambda: services.changes.get(key).state in ("closed", "failed", "review_pending"), 180,
               "the window to finish")
    steps = services.checklists.done_steps(key)
    assert steps[1]["ok"] and steps[2]["ok"]
    assert steps[3]["skipped"].startswith("interrupted by a crash; not run again")
    assert steps[4]["ok"], steps[4]  # the rest of the window went on
    started = [e for e in services.changes.view(key).events if e.action == "step_started" and e.data["step"] == 3]
    assert len(started) == 1, "the interrupted activity ran again"
    assert services.changes.get(key).state == "closed"
    with services.db.read() as session:
        assert verify_chain(session).ok

