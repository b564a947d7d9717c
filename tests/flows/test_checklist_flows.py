"""Checklists drive the change flow on a real Prefect server: a failed pre-item stops the change before
anything is touched, a failed post-item rolls it back, advisory failures are only recorded, and manual items
are confirmed through the Resume form or `changeflow confirm`, or time out."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prefect.deployments import run_deployment

from flows import resume_with_input
from models import Act
from tests.flows.test_flows import ended_as, notifications_for, submit, wait_paused

pytestmark = pytest.mark.flows


def templated(name: str, title: str) -> str:
    return submit({"type": "standard", "title": title, "service": "payments", "requester": "grace",
                   "template": f"with-{name}"})


def results(flow_stack, key):
    return {(r.phase, r.step, r.item_id): r for r in flow_stack.services.checklists.check_results(key)}


def waiting_in_pending(flow_stack, key: str) -> tuple[str, list[str]] | None:
    """What `changeflow pending --json` says the change waits for, and on whom."""
    listed = subprocess.run([str(Path(sys.executable).parent / "changeflow"), "pending", "--json"],
                            env=flow_stack.stack.env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    rows = [row for row in json.loads(listed.stdout) if row["key"] == key]
    return (rows[0]["waiting_for"], sorted(rows[0]["waiting_on"])) if rows else None


def change_of(flow_stack, run_id):
    return flow_stack.services.changes.find_by_idempotency_key(f"flow-run:{run_id}")


def test_failed_pre_item_stops_the_change_before_anything_is_touched(flow_stack):
    run_id = templated("pre-fails", "pre fails")
    ended_as(run_id, "Cancelled")
    change = change_of(flow_stack, run_id)
    assert change.state == "cancelled" and change.implemented_at is None
    result = results(flow_stack, change.key)[("pre", 0, "svc-healthy")]
    assert not result.passed and result.evidence["status"] == 503 and result.detail == "HTTP 503, expected 200"
    assert flow_stack.services.checklists.done_steps(change.key) == {}


def test_a_failed_required_check_stops_the_phase_before_anyone_is_asked_to_tick(flow_stack):
    """Issue 30: the dialog asked for manual ticks after a required automated check had failed, without saying
    so, then cancelled the change anyway."""
    run_id = templated("fails-before-the-manual", "fails before the manual item")
    ended_as(run_id, "Cancelled", timeout_s=90)
    change = change_of(flow_stack, run_id)
    assert change.state == "cancelled" and change.implemented_at is None
    stored = results(flow_stack, change.key)
    assert not stored[("pre", 0, "svc-healthy")].passed
    manual = stored[("pre", 0, "oncall-ready")]
    assert not manual.passed and manual.detail == "not asked: the required check svc-healthy had failed already"
    asked = [n for n in notifications_for(flow_stack, change.key) if n["event"] == "checklist_item_needs_person"]
    assert asked == [], asked


def test_failed_post_item_rolls_the_change_back(flow_stack):
    run_id = templated("post-fails", "post fails")
    ended_as(run_id, "Rolled back")
    change = change_of(flow_stack, run_id)
    assert change.state == "review_pending" and change.outcome == "rolled_back"
    stored = results(flow_stack, change.key)
    assert stored[("pre", 0, "backup-fresh")].passed
    assert not stored[("post", 0, "smoke")].passed
    view = flow_stack.services.changes.view(change.key)
    rolled = next(e for e in view.events if e.to_state == "rolled_back")
    assert rolled.data["reason"] == "post-checklist failed: smoke"
    assert rolled.data["rollback"][0]["output"].strip() == "undone"


def test_advisory_failure_is_recorded_and_the_change_completes(flow_stack):
    run_id = templated("advisory", "advisory")
    ended_as(run_id, "Closed")
    change = change_of(flow_stack, run_id)
    assert change.state == "closed" and change.outcome == "succeeded"
    stored = results(flow_stack, change.key)
    assert not stored[("pre", 0, "status-page")].passed and not stored[("pre", 0, "status-page")].required
    # The during-checklist ran after each of the two implementation steps.
    assert stored[("during", 1, "still-healthy")].passed and stored[("during", 2, "still-healthy")].passed
    phases = [e.data for e in flow_stack.services.changes.view(change.key).events if e.action == "checklist_phase"]
    assert phases[0]["status"] == "advisory_failed" and phases[0]["failed_advisory"] == ["status-page"]



def test_manual_items_confirmed_in_the_form_and_on_the_cli(flow_stack):
    run_id = templated("manual", "manual")
    assert wait_paused(run_id, "checklist-pre-0-") == "checklist-pre-0-1"
    change = change_of(flow_stack, run_id)
    # `pending` names what the gate waits for and who may answer (issue 30).
    assert waiting_in_pending(flow_stack, change.key) == (
        "checklist pre: confirm oncall-ready, rollback-ready", ["alice", "grace"])
    # A typed name proves nothing: ticking an item without the person's code confirms nothing, and says so.
    asyncio.run(resume_with_input(run_id, {"oncall_ready": True, "confirmed_by": "nobody-at-all", "note": "trust me"}))
    assert wait_paused(run_id, "checklist-pre-0-2") == "checklist-pre-0-2"
    asyncio.run(resume_with_input(run_id, {"oncall_ready": True, "rollback_ready": False, "confirmed_by": "alice",
                                           "approval_code": flow_stack.services.approvals.approval_code_for(
                                               change.key, "alice", Act.confirm_check), "note": "bob is on call"}))
    flow_stack.wait_for(run_id, lambda c: ("pre", 0, "oncall-ready") in results(flow_stack, c.key),
                        what="form confirmation")
    wait_paused(run_id, "checklist-pre-0-")
    assert waiting_in_pending(flow_stack, change.key) == ("checklist pre: confirm rollback-ready", ["alice", "grace"])
    changeflow = [str(Path(sys.executable).parent / "changeflow"), "confirm", change.key, "rollback-ready", "--as",
                  "frank", "--note", "read it", "--code"]
    wrong = subprocess.run([*changeflow, "AAAA-BBBB-CCCC"], env=flow_stack.stack.env, capture_output=True, text=True)
    assert wrong.returncode == 1 and "wrong approval code for frank" in wrong.stderr
    cli = subprocess.run([*changeflow, flow_stack.services.approvals.approval_code_for(change.key, "frank",
                                                                                       Act.confirm_check)],
                         env=flow_stack.stack.env, capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    ended_as(run_id, "Closed")
    change = change_of(flow_stack, run_id)
    stored = results(flow_stack, change.key)
    assert (stored[("pre", 0, "oncall-ready")].actor, stored[("pre", 0, "oncall-ready")].detail) == (
        "alice", "bob is on call")
    assert stored[("pre", 0, "rollback-ready")].actor == "frank"
    assert change.state == "closed"
    events = flow_stack.services.changes.view(change.key).events
    assert sorted(e.actor for e in events if e.action == "checklist_confirmed") == ["alice", "frank"]
    refused = [(e.actor, e.data["refusal"]) for e in events if e.action == "confirmation_refused"]
    assert refused == [("nobody-at-all", "'nobody-at-all' is not in the approver directory"),
                       ("frank", "wrong approval code for frank on " + change.key + " (round 1): a code is good "
                                 "for one kind of act; this needs the one sent to confirm a checklist item")]
    flow_stack.assert_no_code_kept(run_id, change.key)  # issue 27: the checklist gate, form and CLI


def test_unconfirmed_manual_item_past_its_timeout_fails_the_phase(flow_stack):
    run_id = templated("manual-timeout", "manual timeout")
    wait_paused(run_id, "checklist-pre-0-")
    time.sleep(1.5)
    assert run_deployment("approval-escalation/every-minute", timeout=90).state.is_completed()
    ended_as(run_id, "Cancelled")
    change = change_of(flow_stack, run_id)
    result = results(flow_stack, change.key)[("pre", 0, "nobody-answers")]
    assert not result.passed and result.detail == "not confirmed within 1 s"
    assert change.state == "cancelled"
