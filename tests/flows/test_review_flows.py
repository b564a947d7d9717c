"""The post-implementation review from the Prefect UI (issue 30): the `change-review/record` deployment, run with
a change's key, waits for a reviewer the change's policy names to resume it with their name, their code for the
review act and a summary. Everyone else is refused on the record and the run waits again."""

from __future__ import annotations

import asyncio
import time

import pytest
from prefect.deployments import run_deployment

from flows import paused_key
from models import Act, ChangeState
from tests.flows.test_bypass_flows import resume_like_the_ui
from tests.flows.test_checklist_flows import waiting_in_pending
from tests.flows.test_flows import ended_as, wait_paused
from tests.helpers import awaiting_review, emergency_request

pytestmark = pytest.mark.flows

REVIEW = "change-review/record"


def review_pending(flow_stack, service: str):
    """An emergency change, fixed by its requester (bob) and waiting for its review, on a service of its own."""
    return awaiting_review(flow_stack.services, title=f"review: {service}", service=service)


def attempt(key: str) -> int:
    return int(key.rsplit("-", 1)[1])


def waiting_again_after(run_id: str, seen: str, run_input: dict, timeout_s: float = 90) -> str:
    """Resume the run as the UI does, then the key it waits at next (a later attempt of its review gate)."""
    resume_like_the_ui(run_id, run_input)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        key = asyncio.run(paused_key(run_id))
        if key and key.startswith("review-post-") and attempt(key) > attempt(seen):
            return key
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not wait again after {seen}")


def refusals(flow_stack, key: str) -> list[tuple[str, str]]:
    return [(e.actor, e.data["refusal"]) for e in flow_stack.services.changes.view(key).events
            if e.action == "confirmation_refused" and e.data.get("review")]


def test_a_reviewer_closes_the_change_from_the_ui_and_everyone_else_is_refused_on_the_record(flow_stack):
    change = review_pending(flow_stack, "review-ui")
    # `changeflow pending` lists it, waiting on its reviewers: its requester may (an emergency's fixer), frank not.
    waiting_for, waiting_on = waiting_in_pending(flow_stack, change.key)
    assert waiting_for == "its post-implementation review" and "bob" in waiting_on and "frank" not in waiting_on
    code = flow_stack.services.approvals.approval_code_for
    run_id = str(run_deployment(REVIEW, parameters={"change": change.key}, timeout=0).id)
    key = wait_paused(run_id, "review-post-")

    attempts = [
        {},  # Resume with the form left empty
        {"reviewer": "frank", "approval_code": code(change.key, "frank", Act.review), "summary": "fine"},
        {"reviewer": "bob", "approval_code": code(change.key, "bob", Act.approve), "summary": "fine"},  # other act
        {"reviewer": "bob", "approval_code": code(change.key, "erin", Act.review), "summary": "fine"},  # erin's
        {"reviewer": "bob", "approval_code": code(change.key, "bob", Act.review)},  # no summary
    ]
    for run_input in attempts:
        key = waiting_again_after(run_id, key, run_input)
        assert flow_stack.services.changes.get(change.key).state == ChangeState.review_pending
    refused = refusals(flow_stack, change.key)
    assert [actor for actor, _ in refused] == ["unknown", "frank", "bob", "bob"], refused
    assert "frank may not review" in refused[1][1]

    resume_like_the_ui(run_id, {"reviewer": "bob", "approval_code": code(change.key, "bob", Act.review),
                                "summary": "root cause: pool exhausted; alert added"})
    ended_as(run_id, "Closed", timeout_s=90)
    closed = flow_stack.services.changes.view(change.key)
    assert closed.state == ChangeState.closed
    assert [e.data["summary"] for e in closed.events if e.action == "review_recorded"] == [
        "root cause: pool exhausted; alert added"]
    flow_stack.assert_no_code_kept(run_id, change.key)  # the form's input was deleted once applied
    assert waiting_in_pending(flow_stack, change.key) is None


def test_a_review_run_for_a_change_whose_review_is_not_due_ends_refused_and_records_nothing(flow_stack):
    services = flow_stack.services
    change = services.changes.submit(emergency_request(title="review: not due", service="review-not-due"))
    before = len(services.changes.view(change.key).events)
    for given, why in ((change.key, "is submitted; only a change whose review is due"),
                       ("CHG-999999", "CHG-999999")):
        run = run_deployment(REVIEW, parameters={"change": given}, timeout=120)
        assert (run.state.name, run.state.type.value) == ("Refused", "CANCELLED"), run.state
        assert why in run.state.message
    assert len(services.changes.view(change.key).events) == before


def test_a_review_recorded_on_the_cli_ends_the_review_run_waiting_in_the_ui_at_the_next_sweep(flow_stack):
    change = review_pending(flow_stack, "review-cli")
    run_id = str(run_deployment(REVIEW, parameters={"change": change.key}, timeout=0).id)
    wait_paused(run_id, "review-post-")
    code = flow_stack.services.approvals.approval_code_for(change.key, "bob", Act.review)
    flow_stack.services.reviews.record(change.key, actor="bob", code=code, summary="done on the CLI")
    assert run_deployment("approval-escalation/every-minute", timeout=120).state.is_completed()
    ended_as(run_id, "Closed", timeout_s=90)  # nudged: the gate read the record, nothing was applied twice
    view = flow_stack.services.changes.view(change.key)
    assert [e.actor for e in view.events if e.action == "review_recorded"] == ["bob"]
    assert refusals(flow_stack, change.key) == []
