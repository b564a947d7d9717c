"""The filing gate in a real run (issue 27): a change filed through the run form waits for its requester to confirm
it, in the Resume form or on the CLI, before anything goes to its approvers; someone else's confirmation is
refused and recorded; a filing nobody confirms is cancelled by the sweep; no code stays in Prefect."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from prefect.deployments import run_deployment

from models import Act, ChangeRequest, utcnow
from tests.flows.test_bypass_flows import resume_like_the_ui
from tests.flows.test_flows import final_run_state, notifications_for, submit, wait_paused
from tests.helpers import backdated, standard_request

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
    from flows.escalation import cancel_unconfirmed_filings

    run_id, change = filed(flow_stack, "filed by someone pretending to be grace")
    assert cancel_unconfirmed_filings() == 0, "within confirm_filing_within (1 day) it waits"
    with backdated(flow_stack.services.db, change.key, created_at=utcnow() - timedelta(days=1, minutes=1)):
        assert cancel_unconfirmed_filings() == 1
    assert final_run_state(run_id, timeout_s=90).is_completed()
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
    assert (run.state.type.value, run.state.name) == ("COMPLETED", "Refused"), run.state
    assert named in run.state.message, run.state.message
    assert flow_stack.services.changes.find_by_idempotency_key(f"flow-run:{run.id}") is None
