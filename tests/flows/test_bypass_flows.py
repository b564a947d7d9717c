"""Walking around the window gate through Prefect, as anyone who reaches the UI could: Resume with an empty
form, with an invented name, with someone else's code, twice; each goes through the same REST call the UI's
Resume button makes. Nothing starts early unless an authorised person says so with their code."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from flows import ResumeRefused, resume_with_input
from models import Act, ChangeRequest, utcnow
from tests.helpers import ROUTINE_RISK, next_shipped_window
from tests.flows.test_flows import act, awaiting, ended_as, final_run_state, submit, wait_paused

pytestmark = pytest.mark.flows


def waiting_for_its_window(flow_stack, service: str) -> tuple[str, ChangeRequest]:
    """A standard change approved by alice and bob, planned three days out: its run suspends at the window gate."""
    start = next_shipped_window("weekly", utcnow() + timedelta(days=1)).starts_at  # days away, in a maintenance window
    run_id = submit({"type": "standard", "title": f"window gate on {service}", "service": service,
                     "requester": "grace", "rollback_plan": "redeploy", "template": "scripted-standard",
                     "planned_start": start.isoformat(),
                     "planned_end": (start + timedelta(hours=1)).isoformat()})
    change = awaiting(flow_stack, run_id)
    for person in ("alice", "bob"):
        act(flow_stack, change, person)
    assert wait_paused(run_id, "window-") == "window-r1-1"
    return run_id, flow_stack.services.changes.get(change.key)


def resume_like_the_ui(run_id: str, run_input: dict) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            asyncio.run(resume_with_input(run_id, run_input))
            return
        except ResumeRefused:
            assert time.monotonic() < deadline, "the run never accepted the resume"
            time.sleep(0.3)


def gate_events(flow_stack, key: str) -> list[tuple[str, str, dict]]:
    return [(e.actor, e.action, e.data) for e in flow_stack.services.changes.view(key).events
            if e.action in ("window_gate_refused", "early_start")]


def test_resume_on_a_run_waiting_for_its_window_starts_nothing(flow_stack):
    run_id, change = waiting_for_its_window(flow_stack, "window-gate-empty")
    resume_like_the_ui(run_id, {})  # the UI's Resume with the form left empty
    assert wait_paused(run_id, "window-r1-2") == "window-r1-2"
    resume_like_the_ui(run_id, {"person": "nobody-at-all", "approval_code": "AAAA-BBBB-CCCC", "reason": "now"})
    assert wait_paused(run_id, "window-r1-3") == "window-r1-3"
    resume_like_the_ui(run_id, {"person": "bob", "reason": "peer reviewers cannot",
                                "approval_code": flow_stack.services.approvals.approval_code_for(change.key, "bob",
                                                                                                 Act.start_early)})
    assert wait_paused(run_id, "window-r1-4") == "window-r1-4"
    after = flow_stack.services.changes.get(change.key)
    assert (after.state, after.implemented_at) == ("scheduled", None)
    events = gate_events(flow_stack, change.key)
    assert [(actor, action) for actor, action, _ in events] == [
        ("unknown (Prefect UI)", "window_gate_refused"), ("nobody-at-all", "window_gate_refused"),
        ("bob", "window_gate_refused")]
    assert "resumed without a name and code" in events[0][2]["refusal"]
    assert "not in the approver directory" in events[1][2]["refusal"]
    assert "does not hold a role that may start a standard change early" in events[2][2]["refusal"]
    # The sweep's nudge authorises nothing either: the window is days away.
    from flows.sweep import nudge_runs_that_can_continue

    nudge_runs_that_can_continue()
    assert flow_stack.services.changes.get(change.key).state == "scheduled"


def test_an_authorised_early_start_runs_the_change_and_names_who_started_it(flow_stack):
    run_id, change = waiting_for_its_window(flow_stack, "window-gate-early")
    resume_like_the_ui(run_id, {"person": "alice", "reason": "customer outage needs the fix now",
                                "approval_code": flow_stack.services.approvals.approval_code_for(change.key, "alice",
                                                                                                 Act.start_early)})
    ended_as(run_id, "Closed", timeout_s=90)
    done = flow_stack.services.changes.get(change.key)
    assert (done.state, done.outcome) == ("closed", "succeeded")
    assert [(actor, action) for actor, action, _ in gate_events(flow_stack, change.key)] == [("alice", "early_start")]
    started = next(e for e in flow_stack.services.changes.view(change.key).events if e.to_state == "implementing")
    assert "started before its window by alice" in started.data["reason"]
    flow_stack.assert_no_code_kept(run_id, change.key)  # issue 27: the window gate, from the form


def cancel_like_the_ui(run_id: str) -> None:
    """The UI's Cancel on a suspended run: Prefect sets the state; no process is there to run a hook."""
    from uuid import UUID

    from prefect import get_client
    from prefect.states import Cancelled

    async def cancel():
        async with get_client() as client:
            await client.set_flow_run_state(UUID(run_id), Cancelled(message="cancelled from the UI"), force=True)

    asyncio.run(cancel())


def test_cancelling_the_run_in_the_ui_cancels_the_change_and_frees_its_slot(flow_stack):
    from flows.sweep import cancel_changes_of_cancelled_runs

    run_id, change = waiting_for_its_window(flow_stack, "window-gate-cancel")
    cancel_like_the_ui(run_id)
    assert cancel_changes_of_cancelled_runs() >= 1
    cancelled = flow_stack.services.changes.view(change.key)
    assert cancelled.state == "cancelled"
    assert next(e for e in cancelled.events if e.to_state == "cancelled").data["reason"] == \
        "its Prefect flow run was cancelled"
    # The slot is free again: the same window on the same service is accepted.
    again = flow_stack.services.changes.submit({
        "type": "standard", "title": "the same slot", "service": "window-gate-cancel", "requester": "grace",
        "test_evidence": "staging run green",
        "rollback_plan": "redeploy", "risk": ROUTINE_RISK, "planned_start": change.planned_start.isoformat(),
        "planned_end": change.planned_end.isoformat()})
    assert again.state == "submitted"


def test_changeflow_cancel_withdraws_the_change_and_stops_its_run(flow_stack):
    import subprocess
    import sys
    from pathlib import Path

    run_id, change = waiting_for_its_window(flow_stack, "window-gate-withdraw")
    changeflow = [str(Path(sys.executable).parent / "changeflow"), "cancel", change.key, "--reason", "superseded"]
    refused = subprocess.run([*changeflow, "--as", "dave", "--code",
                              flow_stack.services.approvals.approval_code_for(change.key, "dave", Act.withdraw)],
                             env=flow_stack.stack.env, capture_output=True, text=True)
    assert refused.returncode == 1 and "dave neither requested" in refused.stderr
    done = subprocess.run([*changeflow, "--as", "grace", "--code",
                           flow_stack.services.approvals.approval_code_for(change.key, "grace", Act.withdraw)],
                          env=flow_stack.stack.env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "cancelled; its flow run is cancelled" in done.stdout
    assert final_run_state(run_id).is_cancelled()
    assert flow_stack.services.changes.get(change.key).state == "cancelled"


# ---- manual work: nobody's change completes itself ---------------------------------------------------------

def work_events(flow_stack, key: str) -> list[tuple[str, str, dict]]:
    return [(e.actor, e.action, e.data) for e in flow_stack.services.changes.view(key).events
            if e.action in ("work_confirmed", "confirmation_refused")]


def test_a_change_without_automation_is_done_verified_and_rolled_back_only_by_its_implementer(flow_stack):
    import subprocess
    import sys
    from pathlib import Path

    from tests.helpers import emergency_request

    run_id = submit(emergency_request(title="manual: pool size", implementation_plan="set POOL_SIZE=200",
                                      rollback_plan="set POOL_SIZE=50"))
    change = awaiting(flow_stack, run_id)
    act(flow_stack, change, "erin", comment="go")
    assert wait_paused(run_id, "work-implemented-") == "work-implemented-1"
    assert flow_stack.services.changes.get(change.key).state == "implementing"
    from tests.flows.test_checklist_flows import waiting_in_pending

    assert waiting_in_pending(flow_stack, change.key) == (
        "manual work: confirm implemented", sorted(flow_stack.services.work.implementers(change.key)))
    bob = flow_stack.services.approvals.approval_code_for(change.key, "bob", Act.confirm_work)

    resume_like_the_ui(run_id, {})  # Resume with the form left empty
    assert wait_paused(run_id, "work-implemented-2") == "work-implemented-2"
    resume_like_the_ui(run_id, {"person": "erin", "outcome": "done", "approval_code":
                                flow_stack.services.approvals.approval_code_for(change.key, "erin", Act.confirm_work)})
    assert wait_paused(run_id, "work-implemented-3") == "work-implemented-3"
    assert flow_stack.services.changes.get(change.key).state == "implementing"
    resume_like_the_ui(run_id, {"person": "bob", "approval_code": bob, "note": "pool raised, pods restarted"})

    # Verification fails, said on the CLI; the manual rollback is confirmed in the UI.
    assert wait_paused(run_id, "work-verified-") == "work-verified-1"
    changeflow = str(Path(sys.executable).parent / "changeflow")
    failed = subprocess.run([changeflow, "work", change.key, "verified", "--as", "bob", "--code", bob, "--failed",
                             "--note", "error rate still 4 %"], env=flow_stack.stack.env, capture_output=True,
                            text=True)
    assert failed.returncode == 0, failed.stderr
    assert wait_paused(run_id, "work-rolled-back-") == "work-rolled-back-1"
    resume_like_the_ui(run_id, {"person": "bob", "approval_code": bob, "note": "POOL_SIZE=50 again"})
    ended_as(run_id, "Rolled back", timeout_s=90)

    done = flow_stack.services.changes.view(change.key)
    assert (done.state, done.outcome) == ("review_pending", "rolled_back")
    events = work_events(flow_stack, change.key)
    assert [(actor, action) for actor, action, _ in events] == [
        ("unknown (Prefect UI)", "confirmation_refused"), ("erin", "confirmation_refused"),
        ("bob", "work_confirmed"), ("bob", "work_confirmed"), ("bob", "work_confirmed")]
    assert "no name given" in events[0][2]["refusal"] and "erin may not confirm the work" in events[1][2]["refusal"]
    assert [(d["stage"], d["outcome"]) for _, a, d in events if a == "work_confirmed"] == [
        ("implemented", "done"), ("verified", "failed"), ("rolled_back", "done")]
    rolled = next(e for e in done.events if e.to_state == "rolled_back")
    assert rolled.data["rollback"] == [{"manual": "POOL_SIZE=50 again", "confirmed_by": "bob", "ok": True}]
    # The people who may do the work were asked, each with their own code.
    asked = {n["recipient"] for n in done.notifications if n["event"] == "work_needed"}
    assert asked == {"bob", "frank"}
    flow_stack.assert_no_code_kept(run_id, change.key)  # issue 27: the work gate, form and CLI


def test_amending_a_scheduled_change_sends_it_back_to_approval_and_its_old_codes_stop_working(flow_stack):
    import subprocess
    import sys
    from pathlib import Path

    run_id, change = waiting_for_its_window(flow_stack, "window-gate-amend")
    old_alice = flow_stack.services.approvals.approval_code_for(change.key, "alice")
    changeflow = str(Path(sys.executable).parent / "changeflow")
    amended = subprocess.run([changeflow, "amend", change.key, "--as", "grace", "--code",
                              flow_stack.services.approvals.approval_code_for(change.key, "grace", Act.amend),
                              "--plan", "deploy 2.5 instead", "--reason", "2.4 has a known bug"],
                             env=flow_stack.stack.env, capture_output=True, text=True)
    assert amended.returncode == 0, amended.stderr
    assert "awaiting_approval, approval round 2" in amended.stdout
    assert wait_paused(run_id, "approval-r2-") == "approval-r2-1"
    refused = act(flow_stack, flow_stack.services.changes.get(change.key), "alice", code=old_alice)
    assert refused["action"] == "approval_refused" and "(round 2)" in refused["reason"]
    for person in ("alice", "bob"):
        act(flow_stack, flow_stack.services.changes.get(change.key), person)
    assert wait_paused(run_id, "window-r2-") == "window-r2-1"
    again = flow_stack.services.changes.get(change.key)
    assert (again.state, again.approval_round, again.implementation_plan) == ("scheduled", 2, "deploy 2.5 instead")
