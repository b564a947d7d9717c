"""The filing gate in a real run (issue 27): a change filed through the run form waits for its requester to confirm
it, in the Resume form or on the CLI, before anything goes to its approvers; someone else's confirmation is
refused and recorded; a filing nobody confirms is cancelled by the sweep; no code stays in Prefect."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from prefect.deployments import run_deployment

from models import Act, ChangeRequest, utcnow
from tests.flows.test_bypass_flows import resume_like_the_ui
from tests.flows.test_flows import ended_as, notifications_for, submit, wait_paused
from tests.helpers import ROUTINE_RISK, backdated, standard_request

pytestmark = pytest.mark.flows


def filed(flow_stack, title: str) -> tuple[str, ChangeRequest]:
    run_id = submit(standard_request(title=title, template="scripted-standard"), confirm=False)
    wait_paused(run_id, "filing-")
    return run_id, flow_stack.wait_for(run_id, lambda c: c.state == "submitted", what="the filing")


def test_someone_elses_confirmation_is_refused_and_the_requesters_own_goes_through_on_the_cli(flow_stack):
    run_id, change = filed(flow_stack, "filed in grace's name")
    # grace is told, with her code for this act; nobody else is asked anything yet.
    told = [(n["recipient"], n["event"]) for n in notifications_for(flow_stack, change.key)]
    assert told == [("grace", "filing_received")]
    # bob types grace's name with his own code, then his own name: each refused, recorded, the gate waits on.
    resume_like_the_ui(run_id, {"requester": "grace", "approval_code": flow_stack.services.approvals.approval_code_for(
        change.key, "bob", Act.file)})
    assert wait_paused(run_id, "filing-2") == "filing-2"
    resume_like_the_ui(run_id, {"requester": "bob", "approval_code": flow_stack.services.approvals.approval_code_for(
        change.key, "bob", Act.file)})
    assert wait_paused(run_id, "filing-3") == "filing-3"
    assert flow_stack.services.changes.get(change.key).state == "submitted"
    refused = [(e.actor, e.data["refusal"]) for e in flow_stack.services.changes.view(change.key).events
               if e.action == "filing_refused"]
    assert refused == [("grace", f"wrong approval code for grace on {change.key} (round 1): a code is good for one "
                                 "kind of act; this needs the one sent to confirm that you filed it"),
                       ("bob", f"only the requester of {change.key} (grace) confirms that they filed it")]
    cli = subprocess.run([str(Path(sys.executable).parent / "changeflow"), "confirm-filing", change.key, "--as",
                          "grace", "--code", flow_stack.services.approvals.approval_code_for(change.key, "grace",
                                                                                             Act.file)],
                         env=flow_stack.stack.env, capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    assert wait_paused(run_id, "approval-").startswith("approval-r1-")
    asked = {n["recipient"] for n in notifications_for(flow_stack, change.key) if n["event"] == "approval_requested"}
    assert asked == {"alice", "frank", "bob", "carol"}
    flow_stack.assert_no_code_kept(run_id, change.key)


def test_a_filing_nobody_confirms_is_cancelled_by_the_sweep_and_its_run_ends(flow_stack):
    from flows.sweep import cancel_unconfirmed_filings

    run_id, change = filed(flow_stack, "filed by someone pretending to be grace")
    assert cancel_unconfirmed_filings() == 0, "within confirm_filing_within (1 day) it waits"
    with backdated(flow_stack.services.db, change.key, created_at=utcnow() - timedelta(days=1, minutes=1)):
        assert cancel_unconfirmed_filings() == 1
    ended_as(run_id, "Cancelled", timeout_s=90)
    cancelled = flow_stack.services.changes.view(change.key)
    assert cancelled.state == "cancelled"
    assert next(e for e in cancelled.events if e.to_state == "cancelled").data["reason"] == \
        "its requester, grace, did not confirm the filing within 1 day, 0:00:00"
    assert not [n for n in notifications_for(flow_stack, change.key) if n["event"] == "approval_requested"]


@pytest.mark.parametrize(("dates", "named"), [
    ({"planned_start": "2027-01-10T03:00:00Z", "planned_end": "2027-01-10T02:00:00Z"},
     "planned_end: must be after planned_start"),
    ({"planned_start": "1999-12-31T02:00:00Z"}, "planned_start: must be between 2000-01-01 and 2100-01-01 UTC"),
    ({"planned_start": "2027-01-10T02:00:00Z", "planned_end": "2027-03-10T02:00:00Z"},
     "planned_end: a change may last at most"),
], ids=["end-before-start", "out-of-bounds", "too-long"])
def test_bad_dates_from_the_run_form_end_refused_naming_the_field_never_failed(flow_stack, dates, named):
    """Issue 30: these failed Prefect's own parameter validation: a red Failed run with a traceback."""
    run = run_deployment("change-request/submit", timeout=90, parameters={"request": standard_request(
        title="bad dates from the form", **dates)})
    assert (run.state.type.value, run.state.name) == ("CANCELLED", "Refused"), run.state
    assert named in run.state.message, run.state.message
    assert flow_stack.services.changes.find_by_idempotency_key(f"flow-run:{run.id}") is None


@pytest.mark.parametrize("question", [None, *ROUTINE_RISK])
def test_the_run_form_refuses_a_request_missing_a_risk_answer_naming_the_question(flow_stack, question):
    """Issue 30: the form came filled with the lowest-risk answers, so a requester who skipped the section filed
    "risk low, tested in staging". Now no answer is filled in. Posted as the UI's Custom run posts it: with the
    section left out, the run ends Refused naming it; with one answer left out, Prefect refuses to create the
    run, naming the question. Nothing is written either way."""
    request = standard_request(title=f"risk unanswered: {question or 'all'}")
    if question is None:
        del request["risk"]
        run = run_deployment("change-request/submit", timeout=90, parameters={"request": request})
        assert (run.state.type.value, run.state.name) == ("CANCELLED", "Refused"), run.state
        assert "risk: answer every risk question" in run.state.message, run.state.message
        assert flow_stack.services.changes.find_by_idempotency_key(f"flow-run:{run.id}") is None
        return
    request["risk"] = {k: v for k, v in ROUTINE_RISK.items() if k != question}
    with httpx.Client(base_url=flow_stack.api_url, timeout=30) as http:
        deployment = http.get("/deployments/name/change-request/submit").json()
        created = http.post(f"/deployments/{deployment['id']}/create_flow_run",
                            json={"parameters": {"request": request}})
        assert created.status_code == 409, created.text
        assert f"'{question}' is a required property" in created.text, created.text
        runs = http.post("/flow_runs/filter", json={"flow_runs": {"deployment_id": {"any_": [deployment["id"]]}},
                                                    "limit": 200}).json()
    assert not [run for run in runs if run["parameters"].get("request", {}).get("title") == request["title"]]
