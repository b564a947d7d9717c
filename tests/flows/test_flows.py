"""The change-request flow against a real Prefect server: submitted through the deployment, approved and
rejected through the same resume API the UI's Resume button calls."""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import timedelta
from uuid import UUID

import pytest
from prefect import get_client
from prefect.deployments import run_deployment
from sqlalchemy import text

from flows import ResumeRefused, paused_key, resume_with_input
from models import Act, ChangeRequest, Notification
from models import utcnow
from tests.flow_stack import ended_as, final_run_state, wait_paused  # noqa: F401 - other flow tests import them from here
from tests.helpers import ROUTINE_RISK, backdated, emergency_request, major_request, standard_request
from tests.stack_readback import console_lines_of, runbook_artifact

pytestmark = pytest.mark.flows

DECISION_ACTIONS = {"approval", "rejection", "approval_refused"}


def submit(request: dict, *, confirm: bool = True) -> str:
    """The run form, as a requester submits it; then (unless `confirm=False`) the requester confirms the filing
    with the code sent to them, in the run's Resume form."""
    from cli.dev import confirm_filing_in_form
    from tests.flow_stack import SHARED

    run_id = str(run_deployment("change-request/submit", parameters={"request": request}, timeout=0).id)
    if confirm:
        assert SHARED.stack is not None, "submit() runs under the flow_stack fixture"
        confirm_filing_in_form(SHARED.stack.services, SHARED.stack.api_url, run_id)
    return run_id


def awaiting(flow_stack, run_id: str) -> ChangeRequest:
    """The run's change once it awaits its approvals (its requester confirms the filing first, when it waits for
    that: a run started by other means than `submit`)."""
    from cli.dev import confirm_filing_in_form

    confirm_filing_in_form(flow_stack.services, flow_stack.api_url, run_id)
    return flow_stack.wait_for(run_id, lambda c: c.state == "awaiting_approval", what="awaiting_approval")


def decisions(flow_stack, key: str) -> list[dict]:
    view = flow_stack.services.changes.view(key)
    return [{"actor": e.actor, "action": e.action, **e.data} for e in view.events if e.action in DECISION_ACTIONS]


def act(flow_stack, change: ChangeRequest, approver: str, *, code: str | None = None, decision: str = "approve",
        comment: str = "") -> dict:
    """Resume the gate like the UI does, then wait until the flow has processed the input."""
    before = len(decisions(flow_stack, change.key))
    code = code or flow_stack.services.approvals.approval_code_for(change.key, approver)
    deadline = time.monotonic() + 60
    while True:
        key = asyncio.run(paused_key(change.flow_run_id))
        if key and key.startswith("approval-"):
            try:
                asyncio.run(resume_with_input(change.flow_run_id, {
                    "approver": approver, "decision": decision, "approval_code": code, "comment": comment}))
                break
            except ResumeRefused:
                pass
        assert time.monotonic() < deadline, "the gate never suspended"
        time.sleep(0.2)
    flow_stack.wait_for(change.key, lambda c: len(decisions(flow_stack, c.key)) > before, what="decision recorded")
    return decisions(flow_stack, change.key)[-1]


def notifications_for(flow_stack, key: str) -> list[Notification]:
    with flow_stack.services.db.read() as session:
        return list(session.execute(
            text("SELECT * FROM notifications WHERE change_key = :k ORDER BY id"), {"k": key}).mappings())


def test_standard_change_needs_two_different_people_and_refusals_keep_the_gate_waiting(flow_stack):
    run_id = submit(standard_request(title="flow: standard", template="scripted-standard"))
    change = awaiting(flow_stack, run_id)
    assert change.flow_run_id == run_id

    assert act(flow_stack, change, "alice")["action"] == "approval"
    refused = act(flow_stack, change, "dave")
    assert refused["action"] == "approval_refused" and "holds none of the roles" in refused["reason"]
    refused = act(flow_stack, change, "bob", code="AAAA-BBBB-CCCC")
    assert refused["action"] == "approval_refused" and "wrong approval code" in refused["reason"]
    refused = act(flow_stack, change, "grace")
    assert refused["action"] == "approval_refused" and "self-approval" in refused["reason"]
    assert flow_stack.services.changes.get(change.key).state == "awaiting_approval"

    act(flow_stack, change, "bob", comment="lgtm")
    ended_as(run_id, "Closed")
    view = flow_stack.services.changes.view(change.key)
    assert view.state == "closed"
    assert [(a.approver, a.role) for a in view.approvals] == [("alice", "team_lead"), ("bob", "peer_reviewer")]
    # Each input processed exactly once although every resume replays the earlier gate keys.
    assert [d["action"] for d in decisions(flow_stack, change.key)] == [
        "approval", "approval_refused", "approval_refused", "approval_refused", "approval"]
    # ... and its run log tells each refusal once (issue 30: four resumes had written four copies of one).
    logs = flow_stack.run_logs_once_they_hold(run_id, "Finished in state Closed")
    told = [line for line in logs.splitlines() if " refused: " in line]
    assert len(told) == 3 and len(set(told)) == 3, told
    transitions = [(e.from_state, e.to_state) for e in view.events if e.action == "transition"]
    assert transitions == [("submitted", "awaiting_approval"), ("awaiting_approval", "approved"),
                           ("approved", "scheduled"), ("scheduled", "implementing"), ("implementing", "verifying"),
                           ("verifying", "completed"), ("completed", "closed")]
    sent = notifications_for(flow_stack, change.key)
    requested = sorted(n["recipient"] for n in sent if n["event"] == "approval_requested")
    assert requested == ["alice", "bob", "carol", "frank"]
    assert all(n["state"] == "sent" for n in sent)
    # Each person whose decision was refused is told on their own channel, not only in the form.
    assert sorted(n["recipient"] for n in sent if n["event"] == "decision_refused") == ["bob", "dave", "grace"]
    alice_mail = next(n for n in sent if n["event"] == "approval_requested" and n["recipient"] == "alice")
    # The stored row holds a placeholder; her own inbox file (her e-mail here) holds the code.
    code = flow_stack.services.approvals.approval_code_for(change.key, "alice")
    assert code not in alice_mail["body_text"] and code in (flow_stack.home / "inbox" / "alice.txt").read_text()
    assert f"/runs/flow-run/{run_id}" in alice_mail["body_text"]


def test_major_change_waits_for_the_cab_quorum(flow_stack):
    run_id = submit(major_request(title="flow: major", requester="alice"))
    change = awaiting(flow_stack, run_id)
    assert act(flow_stack, change, "alice")["reason"].endswith("(self-approval)")
    for person in ("carol", "dave"):
        act(flow_stack, change, person)
        assert flow_stack.services.changes.get(change.key).state == "awaiting_approval"
    act(flow_stack, change, "frank")
    view = flow_stack.services.changes.view(change.key)
    assert sorted(a.approver for a in view.approvals) == ["carol", "dave", "frank"]
    # Approved is not "go": a major change serves its 14 days' notice even when a window is open now, and its
    # policy allows nobody to start it early.
    assert wait_paused(run_id, "window-") == "window-r1-1"
    assert flow_stack.services.changes.get(change.key).state == "scheduled"
    assert flow_stack.services.scheduling.start_check(change.key).reason.startswith("its notice period runs until")


def test_emergency_change_goes_to_review_due_in_48h(flow_stack):
    run_id = submit(emergency_request(title="flow: emergency", template="scripted-emergency"))
    change = awaiting(flow_stack, run_id)
    act(flow_stack, change, "erin", comment="P1, go")
    ended_as(run_id, "Review pending")
    done = flow_stack.services.changes.get(change.key)
    assert done.state == "review_pending"
    assert timedelta(hours=47, minutes=59) < done.review_due_at - done.implemented_at < timedelta(hours=48, minutes=1)
    transitions = [e.to_state for e in flow_stack.services.changes.view(change.key).events if e.action == "transition"]
    assert "scheduled" not in transitions


def test_rejection_ends_the_flow_with_the_change_rejected(flow_stack):
    run_id = submit(standard_request(title="flow: rejected"))
    change = awaiting(flow_stack, run_id)
    act(flow_stack, change, "frank")
    act(flow_stack, change, "carol", decision="reject", comment="no load test")
    ended_as(run_id, "Rejected")
    logs = flow_stack.run_logs_once_they_hold(run_id, "Finished in state Rejected")
    assert "Traceback" not in logs and "unexpected exception" not in logs, logs[-3000:]
    (page,) = flow_stack.change_pages(run_id, change.key)  # one page, current (issue 30)
    assert "**State:** rejected" in page and re.search(r"carol \(\w+, reject\)", page), page
    change = flow_stack.services.changes.get(change.key)
    assert change.state == "rejected" and change.implemented_at is None
    announced = {n["recipient"] for n in notifications_for(flow_stack, change.key) if n["event"] == "rejected"}
    # requester, the two approvers, and payments' owner (alice) and stakeholder (dave)
    assert announced == {"grace", "frank", "carol", "alice", "dave"}


def test_expired_gate_ends_as_expired(flow_stack):
    run_id = submit(emergency_request(title="flow: expires"))
    change = awaiting(flow_stack, run_id)
    # Travel in time: the approval was requested two hours ago (the emergency SLA is one hour).
    with _backdate(flow_stack, change.key, timedelta(hours=2)):
        sweep = run_deployment("approval-escalation/every-minute", timeout=90)
    assert sweep.state.is_completed()
    assert flow_stack.services.changes.get(change.key).state == "expired"
    ended_as(run_id, "Expired")  # cancelled by the sweep, named for its change (issue 30)
    # The sweep wrote the change's page: its run, cancelled while it waited, could not (issue 30).
    (page,) = flow_stack.change_pages(run_id, change.key)
    assert "**State:** expired" in page and "Still needed" not in page, page
    expired_notices = {n["recipient"] for n in notifications_for(flow_stack, change.key) if n["event"] == "expired"}
    assert expired_notices == {"bob", "erin"}


def _backdate(flow_stack, key: str, waited: timedelta):
    # The sweep's schedule travels too: due now, it recomputes the next moment itself.
    return backdated(flow_stack.services.db, key, approval_requested_at=utcnow() - waited,
                     escalation_due_at=utcnow() - waited)


def test_unanswered_gate_escalates_up_the_ladder_once_per_rung(flow_stack):
    run_id = submit(emergency_request(title="flow: escalates", requester="grace"))
    change = awaiting(flow_stack, run_id)
    with _backdate(flow_stack, change.key, timedelta(minutes=35)):
        assert run_deployment("approval-escalation/every-minute", timeout=90).state.is_completed()
    reminders = [n for n in notifications_for(flow_stack, change.key) if n["event"] == "approval_reminder"]
    assert sorted((n["recipient"], n["idempotency_key"].rsplit(":", 1)[1]) for n in reminders) == [
        ("bob", "1-L1-oncall_primary"), ("carol", "1-L2-oncall_secondary")]
    assert "has waited 35 min for approval" in reminders[0]["subject"]
    with _backdate(flow_stack, change.key, timedelta(minutes=125)):
        assert run_deployment("approval-escalation/every-minute", timeout=90).state.is_completed()
    rungs = {n["idempotency_key"].rsplit(":", 1)[1] for n in notifications_for(flow_stack, change.key)
             if n["event"] == "approval_reminder"}
    # P1 emergency: the executive rung applies; every rung was written exactly once (the key is unique).
    assert rungs == {"1-L1-oncall_primary", "1-L2-oncall_secondary", "1-L3-management", "1-L4-executive"}
    assert flow_stack.services.changes.get(change.key).state == "expired"
    ended_as(run_id, "Expired", timeout_s=90)  # the sweep wakes the run, which ends named for it (issue 30)


def test_pre_approved_template_skips_the_gate_and_records_why(flow_stack):
    run_id = submit({"type": "standard", "title": "Restart payments", "service": "payments",
                     "requester": "grace", "template": "restart-service"})
    ended_as(run_id, "Closed")
    change = flow_stack.services.changes.find_by_idempotency_key(f"flow-run:{run_id}")
    view = flow_stack.services.changes.view(change.key)
    assert view.state == "closed" and view.approvals == []
    decision = next(e for e in view.events if e.action == "policy_decision")
    assert decision.data["pre_approved_template"] == "restart-service"
    assert decision.data["policy_version"] == view.policy_version
    steps = next(e for e in view.events if e.to_state == "verifying").data["steps"]
    assert steps[0]["output"].strip() == "restarting payments" and steps[0]["exit_code"] == 0
    # JSON logs (issue 31): the worker's console holds the run's records as JSON lines, traced to the change.
    # (Traced from the moment the run knows its change: the engine's first lines come before it is recorded.)
    lines = console_lines_of(flow_stack, run_id, change.key)
    assert any(line["message"].startswith("Beginning flow run") for line in lines), lines
    assert all({"at", "level", "logger", "message"} <= set(line) for line in lines)
    # The runbook it followed, as filed, beside its page (issue 33).
    runbook = runbook_artifact(flow_stack, change.key)
    assert "follows the runbook `restart-service`" in runbook and "3. Restart the instance" in runbook, runbook


def test_failed_implementation_rolls_back(flow_stack):
    run_id = submit({"type": "standard", "title": "Broken deploy", "service": "checkout",
                     "requester": "grace", "template": "failing-deploy"})
    ended_as(run_id, "Rolled back")
    logs = flow_stack.run_logs_once_they_hold(run_id, "Finished in state Rolled back")
    assert "Traceback" not in logs and "unexpected exception" not in logs, logs[-3000:]
    changes = flow_stack.services.changes
    view = changes.view(changes.find_by_idempotency_key(f"flow-run:{run_id}").key)
    assert view.state == "review_pending"
    rolled = next(e for e in view.events if e.to_state == "rolled_back")
    assert rolled.data["evidence"][-1]["exit_code"] == 3
    assert rolled.data["rollback"][0]["output"].strip() == "rolled back checkout"


def test_a_rollback_whose_command_fails_is_not_recorded_as_rolled_back(flow_stack):
    run_id = submit({"type": "standard", "title": "Broken deploy, broken undo", "service": "checkout",
                     "requester": "grace", "template": "failing-rollback"})
    ended_as(run_id, "Failed")
    changes = flow_stack.services.changes
    view = changes.view(changes.find_by_idempotency_key(f"flow-run:{run_id}").key)
    assert (view.state, view.outcome) == ("review_pending", "failed")
    assert not any(e.to_state == "rolled_back" for e in view.events)
    failed = next(e for e in view.events if e.to_state == "failed")
    assert failed.data["reason"] == "implementation step 1 failed; the rollback failed: `echo undoing; exit 4` (exit 4)"
    assert [r["exit_code"] for r in failed.data["evidence"]] == [3, 4]


def test_rerunning_a_finished_run_duplicates_nothing(flow_stack):
    run_id = submit(standard_request(title="flow: rerun", template="scripted-standard"))
    change = awaiting(flow_stack, run_id)
    act(flow_stack, change, "alice")
    act(flow_stack, change, "carol")
    ended_as(run_id, "Closed")
    before = (flow_stack.services.changes.view(change.key).model_dump_json(), len(notifications_for(flow_stack,
                                                                                                    change.key)))

    async def rerun():
        from prefect.states import Scheduled
        async with get_client() as client:
            await client.set_flow_run_state(UUID(run_id), Scheduled(), force=True)

    asyncio.run(rerun())
    time.sleep(1)
    ended_as(run_id, "Closed")
    after = (flow_stack.services.changes.view(change.key).model_dump_json(), len(notifications_for(flow_stack,
                                                                                                   change.key)))
    assert after == before
    with flow_stack.services.db.read() as session:
        assert session.execute(text("SELECT COUNT(*) FROM change_requests WHERE idempotency_key = :k"),
                               {"k": f"flow-run:{run_id}"}).scalar_one() == 1


def test_cli_decisions_move_the_same_suspended_run(flow_stack):
    """Two approvers on the CLI at the same moment: both recorded, the run resumes and finishes."""
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    changeflow = str(Path(sys.executable).parent / "changeflow")
    run_id = submit(standard_request(title="flow: cli", template="scripted-standard"))
    change = awaiting(flow_stack, run_id)

    def cli(*args):
        return subprocess.run([changeflow, *args], env=flow_stack.stack.env, capture_output=True, text=True)

    def approve(person):
        return cli("approve", change.key, "--as", person, "--code",
                   flow_stack.services.approvals.approval_code_for(change.key, person), "--json")

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(approve, ["frank", "bob"]))
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    ended_as(run_id, "Closed", timeout_s=90)
    view = flow_stack.services.changes.view(change.key)
    assert view.state == "closed" and sorted(a.approver for a in view.approvals) == ["bob", "frank"]
    assert [d["action"] for d in decisions(flow_stack, change.key)] == ["approval", "approval"]

    pending = json.loads(cli("pending", "--json").stdout)
    assert change.key not in [p["key"] for p in pending]


def test_submit_form_is_the_change_request_model(flow_stack):
    import httpx

    deployment = httpx.get(f"{flow_stack.api_url}/deployments/name/change-request/submit").json()
    schema = deployment["parameter_openapi_schema"]
    request = schema["definitions"]["ChangeRequestForm"]
    assert request["properties"]["rollback_plan"]["description"].startswith("How to undo the change")
    # The change types are the config's (the flow stack's policies.yaml adds `normal` to the shipped three).
    assert request["properties"]["type"]["enum"] == list(flow_stack.services.org.policies.types)
    assert request["properties"]["type"]["enum"][:3] == ["emergency", "standard", "major"]
    # Where it runs, the same way: production (the first, the strictest) chosen for a requester who skips it.
    environment = request["properties"]["environment"]
    assert (environment["enum"], environment["default"]) == (["production", "staging", "development"], "production")
    assert request["additionalProperties"] is False


def test_a_change_type_added_in_yaml_runs_through_the_flow(flow_stack):
    """`normal` exists only in the stack's policies.yaml (tests/flow_stack.py): filed from the run form, approved by
    the one team lead its policy names, implemented and closed without a review (its policy's lifecycle)."""
    run_id = submit(standard_request(type="normal", title="Raise the payments log level", template="scripted-normal",
                                     test_evidence="staging run 4711"))
    change = awaiting(flow_stack, run_id)
    assert [(r.role, r.count) for r in flow_stack.services.approvals.required_for(change)] == [("team_lead", 1)]
    assert act(flow_stack, change, "alice")["action"] == "approval"
    # Its policy's three days' notice holds it at the window gate; its policy lets a team lead start it early.
    assert wait_paused(run_id, "window-") == "window-r1-1"
    asyncio.run(resume_with_input(run_id, {"person": "frank", "reason": "routine, agreed with the team",
                                           "approval_code": flow_stack.services.approvals.approval_code_for(
                                               change.key, "frank", Act.start_early)}))
    ended_as(run_id, "Closed", timeout_s=90)
    done = flow_stack.services.changes.get(change.key)
    assert (done.type, done.state, done.outcome) == ("normal", "closed", "succeeded")


def test_a_bad_request_from_the_run_form_ends_with_the_field_named_reason_and_writes_nothing(flow_stack):
    """Issue 17: a standard change without a rollback plan became a Failed run with a Python traceback."""
    run = run_deployment("change-request/submit", timeout=90, parameters={"request": {
        "type": "standard", "title": "no rollback plan", "service": "payments", "requester": "grace",
        "test_evidence": "staging run green",
        "risk": ROUTINE_RISK}})
    assert run.state.name == "Refused"
    assert "rollback_plan: a standard change needs a rollback plan" in run.state.message
    assert flow_stack.services.changes.find_by_idempotency_key(f"flow-run:{run.id}") is None

    async def logs():
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

        async with get_client() as client:
            return await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))

    # A run's logs reach the server in batches, after its state: wait for them (up to 30 s under load).
    deadline = time.monotonic() + 30
    while True:
        messages = [entry.message for entry in asyncio.run(logs())]
        if any("change request refused" in m for m in messages):
            break
        assert time.monotonic() < deadline, messages
        time.sleep(0.5)
    assert not any("Traceback" in m for m in messages), [m for m in messages if "Traceback" in m][0][:3000]
