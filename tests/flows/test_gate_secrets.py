"""No code in Prefect's storage (issue 27, DESIGN.md "Trust boundaries"): Prefect keeps every resume's input, the
run's parameters, logs and artifacts readable to anyone who reaches its API, after the run has moved on. A path
that records a decision through the services (CLI, approval link, Slack click, the sweep) resumes the run with
nothing in hand; a gate deletes the Resume form it has applied. Each test drives a path to the end and then reads
everything Prefect kept of the run: here the approval gate on every path (Resume form, CLI, approval link, Slack
click, sweep nudge); the other gate kinds' tests end with the same scan (checklist items: form and CLI, manual
work: form and CLI, window: an early start from the form, canary: form and CLI)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows import resume_with_input
from tests.flows.test_flows import act, awaiting, decisions, ended_as, submit, wait_paused
from tests.helpers import standard_request

pytestmark = pytest.mark.flows


def test_a_cli_decision_and_a_resume_form_leave_no_code_in_prefect(flow_stack):
    run_id = submit(standard_request(title="no code kept: cli and form", template="scripted-standard"))
    change = awaiting(flow_stack, run_id)
    cli = subprocess.run([str(Path(sys.executable).parent / "changeflow"), "approve", change.key, "--as", "frank",
                          "--code", flow_stack.services.approvals.approval_code_for(change.key, "frank")],
                         env=flow_stack.stack.env, capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    flow_stack.wait_for(change.key, lambda c: len(decisions(flow_stack, c.key)) == 1, what="frank's approval")
    act(flow_stack, change, "bob")  # bob types his code into the Prefect UI's Resume form
    ended_as(run_id, "Closed", timeout_s=120)
    assert flow_stack.services.changes.get(change.key).state == "closed"
    flow_stack.assert_no_code_kept(run_id, change.key)


def test_decisions_recorded_elsewhere_reach_the_run_through_the_sweep_with_nothing_in_hand(flow_stack):
    """The link page and a Slack click record through the services and then nudge, as the CLI does; when the
    nudge is lost (here: never sent), the sweep resumes the run, with no input either."""
    from flows.sweep import nudge_runs_that_can_continue

    run_id = submit(standard_request(title="no code kept: sweep", template="scripted-standard"))
    change = awaiting(flow_stack, run_id)
    wait_paused(run_id, "approval-")
    for person in ("frank", "bob"):
        flow_stack.services.approvals.decide(change.key, approver=person, decision="approve",
                                             code=flow_stack.services.approvals.approval_code_for(change.key, person))
    assert flow_stack.services.changes.get(change.key).state == "approved"
    assert nudge_runs_that_can_continue() >= 1
    ended_as(run_id, "Closed", timeout_s=120)
    assert flow_stack.services.changes.get(change.key).state == "closed"
    flow_stack.assert_no_code_kept(run_id, change.key)


def test_an_untouched_resume_form_records_nothing_and_the_gate_waits_again(flow_stack):
    """The bare "look again" that every recording path sends is also what anyone can send from the UI: it must
    authorise nothing."""
    run_id = submit(standard_request(title="untouched resume form", template="scripted-standard"))
    change = awaiting(flow_stack, run_id)
    assert wait_paused(run_id, "approval-r1-") == "approval-r1-1"
    asyncio.run(resume_with_input(run_id, {}))
    assert wait_paused(run_id, "approval-r1-2") == "approval-r1-2"
    asyncio.run(resume_with_input(run_id, None))
    assert wait_paused(run_id, "approval-r1-3") == "approval-r1-3"
    assert decisions(flow_stack, change.key) == []
    assert flow_stack.services.changes.get(change.key).state == "awaiting_approval"
    # A name without its code is not bare: refused, on the record, and the gate still waits.
    asyncio.run(resume_with_input(run_id, {"approver": "frank"}))
    assert wait_paused(run_id, "approval-r1-4") == "approval-r1-4"
    assert [d["action"] for d in decisions(flow_stack, change.key)] == ["approval_refused"]
    for person in ("frank", "bob"):
        act(flow_stack, change, person)
    ended_as(run_id, "Closed", timeout_s=120)
    flow_stack.assert_no_code_kept(run_id, change.key)


def test_an_approval_link_and_a_slack_click_through_the_endpoint_leave_no_code_in_prefect(flow_stack):
    """The endpoint as deployed: bob opens his link and approves, alice clicks Approve in Slack; each records
    through the services and nudges the run with nothing in hand."""
    import httpx

    from endpoint import signed_click
    from tests.endpoint.test_approval_endpoint import SLACK_SECRET, Endpoint, form_token_of

    run_id = submit(standard_request(title="no code kept: link and slack", template="scripted-standard"))
    change = awaiting(flow_stack, run_id)
    wait_paused(run_id, "approval-")
    endpoint = Endpoint(flow_stack.services, time.time)
    try:
        link = f"{endpoint.url}/a/{flow_stack.services.links.link_for(change.key, 'bob')}"
        page = httpx.get(link, timeout=30)
        assert httpx.post(link, data={"form_token": form_token_of(page), "decision": "approve"},
                          timeout=30).status_code == 200
        body, headers = signed_click(change.key, change.approval_round, "U01ALICE", SLACK_SECRET)
        clicked = httpx.post(f"{endpoint.url}/slack/actions", content=body, headers=headers, timeout=30)
        assert clicked.status_code == 200, clicked.text
        ended_as(run_id, "Closed", timeout_s=120)
    finally:
        endpoint.stop()
    assert flow_stack.services.changes.get(change.key).state == "closed"
    assert sorted(flow_stack.services.approvals.decided_by(change.key)) == ["alice", "bob"]
    flow_stack.assert_no_code_kept(run_id, change.key)
