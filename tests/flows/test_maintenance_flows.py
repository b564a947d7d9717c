"""A weekly maintenance run end to end on the embedded default, with a compressed clock: announcement ->
approvals -> window -> activities wrapped in the checklist -> closed, stopping what does not fit."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

import pytest
from prefect import get_client
from prefect.deployments import run_deployment

from flows import ResumeRefused, paused_key, resume_with_input
from models import Act
from tests.flow_stack import final_run_state
from tests.flows.test_checklist_flows import waiting_in_pending
from tests.flows.test_flows import notifications_for

pytestmark = pytest.mark.flows


def test_weekly_maintenance_end_to_end_in_a_compressed_window(flow_stack):
    services = flow_stack.services
    start = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=15)
    window = {"kind": "weekly", "window_start": start.isoformat(), "window_minutes": 0.5}
    announced = run_deployment("maintenance-announcement/weekly", parameters=window, timeout=120)
    assert announced.state.is_completed()
    change = services.changes.find_by_idempotency_key(f"maintenance:weekly:{start.isoformat()}")
    key = change.key
    assert change.state == "awaiting_approval" and change.requester == "maintenance"
    assert change.planned_start == start and change.checklist == "automated-maintenance"
    events = {n["event"]: n for n in notifications_for(flow_stack, key)}
    assert {"approval_requested", "maintenance_announced"} <= set(events)
    for person in ("alice", "bob"):
        services.approvals.decide(key, approver=person, decision="approve",
                                  code=services.approvals.approval_code_for(key, person))
    assert services.changes.get(key).state == "approved"

    run = run_deployment("maintenance/weekly", parameters=window, timeout=180)
    # The run is its window's change, named and ended for it (issue 30).
    assert (run.state.name, run.state.type.value) == ("Closed", "COMPLETED"), run.state
    assert run.name.startswith(f"{key} Weekly maintenance"), run.name
    change = services.changes.get(key)
    assert change.state == "closed", services.changes.view(key).events[-1]
    steps = services.checklists.done_steps(key)
    assert steps[1]["ok"] and steps[2]["ok"] and steps[2]["sql"] == "VACUUM; ANALYZE"
    assert steps[3]["timed_out"] and steps[3]["stopped"] == "stopped at the end of the window"
    assert steps[4]["skipped"] == "window closed before it could start"
    finished = max(e.occurred_at for e in services.changes.view(key).events)
    assert finished <= start + timedelta(seconds=45), "the run must end with its window"
    results = {(r.phase, r.step, r.item_id): r.passed for r in services.checklists.check_results(key)}
    assert results[("pre", 0, "backup-fresh")] and results[("post", 0, "smoke")]
    assert results[("during", 1, "platform-healthy")] and results[("during", 3, "platform-healthy")]
    sent = {n["event"] for n in notifications_for(flow_stack, key)}
    assert {"maintenance_started", "maintenance_completed"} <= sent
    report = next(n for n in notifications_for(flow_stack, key) if n["event"] == "maintenance_completed")
    assert "Not done (reported): long-job, after-long." in report["body_text"]


def test_unapproved_window_does_not_run(flow_stack):
    start = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=30)
    window = {"kind": "weekly", "window_start": start.isoformat(), "window_minutes": 1}
    assert run_deployment("maintenance-announcement/weekly", parameters=window, timeout=120).state.is_completed()
    key = flow_stack.services.changes.find_by_idempotency_key(f"maintenance:weekly:{start.isoformat()}").key
    unapproved = run_deployment("maintenance/weekly", parameters=window, timeout=120).state
    assert (unapproved.name, unapproved.type.value) == ("Cancelled", "CANCELLED"), unapproved
    assert flow_stack.services.changes.get(key).state == "cancelled"
    assert flow_stack.services.checklists.done_steps(key) == {}


def _finished(run_id) -> bool:
    async def read():
        async with get_client() as client:
            return (await client.read_flow_run(run_id)).state.is_final()
    return asyncio.run(read())


def test_the_shipped_monthly_window_runs_to_closed_on_this_machine_in_a_compressed_window(flow_stack):
    """Issue 31: the default window cancelled itself on a fresh machine (its backup check looked for
    /var/backups/*.dump, its health checks at a fixed :8080) or passed a smoke test of `true`. The shipped monthly
    window, its shipped `maintenance` checklist and activities, compressed to minutes: changeflow's own backup is
    taken and proved, every activity runs, the platform's health URL from the directory is probed after each
    step and as the smoke test, and the manual items are ticked by the platform's owner with her code."""
    services = flow_stack.services
    start = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=15)
    window = {"kind": "monthly", "window_start": start.isoformat(), "window_minutes": 4}
    assert run_deployment("maintenance-announcement/monthly", parameters=window, timeout=120).state.is_completed()
    key = services.changes.find_by_idempotency_key(f"maintenance:monthly:{start.isoformat()}").key
    for person in ("frank", "bob"):  # not alice: she owns platform and ticks its items (approvers may not)
        services.approvals.decide(key, approver=person, decision="approve",
                                  code=services.approvals.approval_code_for(key, person))
    run = run_deployment("maintenance/monthly", parameters=window, timeout=0)
    ticked: list[str] = []
    deadline = time.monotonic() + 400
    while not _finished(run.id):
        assert time.monotonic() < deadline, services.changes.view(key).events[-1]
        gate = asyncio.run(paused_key(str(run.id)))
        waiting = waiting_in_pending(flow_stack, key) if gate and gate.startswith("checklist-") else None
        if waiting is None or not waiting[0].startswith("checklist"):
            time.sleep(0.5)
            continue
        items = waiting[0].split(": confirm ", 1)[1].split(", ")
        assert "alice" in waiting[1], waiting
        try:
            asyncio.run(resume_with_input(str(run.id), {
                **{item.replace("-", "_"): True for item in items}, "confirmed_by": "alice", "note": "done",
                "approval_code": services.approvals.approval_code_for(key, "alice", Act.confirm_check)}))
        except ResumeRefused:  # pressed as the gate paused, before its form was stored: press again
            continue
        ticked += items
        while asyncio.run(paused_key(str(run.id))) == gate:
            time.sleep(0.2)
    state = final_run_state(str(run.id))
    assert (state.name, services.changes.get(key).state) == ("Closed", "closed"), services.changes.view(key).events
    results = {(r.phase, r.item_id): r for r in services.checklists.check_results(key)}
    assert results[("pre", "backup-verified")].passed, results[("pre", "backup-verified")].detail
    assert results[("post", "smoke-tests")].passed and results[("post", "smoke-tests")].detail.startswith(
        "platform: HTTP 200")
    assert all(r.passed for (phase, item), r in results.items() if phase == "during" and item == "function-verified")
    assert {"stakeholders-notified", "oncall-coordinated", "error-rates-watched", "window-closed"} <= set(ticked)
    report = next(n for n in notifications_for(flow_stack, key) if n["event"] == "maintenance_completed")
    assert "Not done" not in report["body_text"], report["body_text"]
