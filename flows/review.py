"""The post-implementation review from the Prefect UI (issue 30): a change whose review is due is reviewed by running
the `change-review/record` deployment with its key. The run waits at a review gate (flows/_gate.py, the one gate
protocol) whose Resume form asks the reviewer's name, their personal code for the review and the summary; a
person the change's policy names as a reviewer closes the change, anyone else is refused on the record and the
run waits again. `changeflow review` does the same from a shell; the review reminders say both.

The code goes in the Resume form, never in the run's parameters: Prefect keeps parameters where anyone with UI
access reads them, and the gate deletes the form's stored input once applied (DESIGN.md "Trust boundaries")."""

from __future__ import annotations

import asyncio
from typing import Any

from prefect import flow
from prefect.input import RunInput
from prefect.runtime import flow_run
from prefect.states import State
from pydantic import Field

from flows._heartbeat import heartbeating
from flows._endings import run_ended
from flows._gate import Gate, form_description, wait_at
from flows._json_logs import trace_change
from flows._pause_key import GateKind, PauseKey
from flows._prefect_api import change_run_name, final_state, name_run
from flows._wiring import wiring
from models import (REFUSED, TEXT_LIMIT, ChangeflowError, ChangeState, InputError, PolicyViolation,
                    parse_action_items)


class ReviewInput(RunInput):
    """The Resume form of a change's review."""

    reviewer: str = Field(default="", description="Your user name in the approver directory.")
    approval_code: str = Field(default="", description="Your personal code for this change's review (from the "
                                                        "review reminder, or `changeflow approval-code`).")
    summary: str = Field(default="", max_length=TEXT_LIMIT,
                         description="What happened and what was learned (recorded).")
    timeline: str = Field(default="", max_length=TEXT_LIMIT, description="What happened when (UTC).")
    root_cause: str = Field(default="", max_length=TEXT_LIMIT,
                            description="Why it went wrong (required where the change failed or was rolled back).")
    went_well: str = Field(default="", max_length=TEXT_LIMIT, description="What went well.")
    went_wrong: str = Field(default="", max_length=TEXT_LIMIT, description="What could be improved.")
    action_items: str = Field(default="", max_length=TEXT_LIMIT,
                              description="One a line: what | owner (a person of the directory) | due (YYYY-MM-DD). "
                                          "Each owner is reminded when it falls due, then their managers.")


class ReviewGate(Gate[bool]):
    """Waits until the change's review is recorded (here, or by `changeflow review` meanwhile)."""

    kind = GateKind.review
    empty_resume_is_an_attempt = True

    def __init__(self, key: str):
        self.key = key

    def settled(self) -> bool | None:
        return True if wiring().services.changes.get(self.key).state == ChangeState.closed else None

    def gate(self) -> str:
        return "post"

    def form(self, refusal: str | None) -> Any:
        services = wiring().services
        change = services.changes.get(self.key)
        outcome = (change.outcome or "no outcome").replace("_", " ")
        lines = [f"## {change.key}: post-implementation review",
                 f"**{change.title}** ({change.type} change to **{change.service}**, {outcome}).",
                 f"One of **{', '.join(services.work.reviewers(self.key)) or 'nobody in the directory'}** records "
                 "the review with their personal code; the change is then closed.",
                 "Pressing Resume without your name and code records a refusal and the run waits again."]
        return ReviewInput.with_initial_data(description=form_description(lines, refusal))

    def apply(self, answer: RunInput, key: PauseKey) -> str | None:
        assert isinstance(answer, ReviewInput)
        try:
            wiring().services.reviews.record(
                self.key, actor=answer.reviewer, code=answer.approval_code, summary=answer.summary,
                timeline=answer.timeline, root_cause=answer.root_cause, went_well=answer.went_well,
                went_wrong=answer.went_wrong, action_items=parse_action_items(answer.action_items))
        except (PolicyViolation, InputError) as exc:
            return str(exc)
        return None


REVIEW_FLOW = "change-review"


@flow(name=REVIEW_FLOW, log_prints=True)
@heartbeating
def change_review(change: str) -> State:
    """Record the post-implementation review of `change` (its key, CHG-000123): the run waits for a reviewer's
    Resume. A change whose review is not due ends the run Refused, naming its state."""
    services = wiring().services
    try:
        record = services.changes.get(change.strip())
    except ChangeflowError as exc:
        return final_state(REFUSED, f"change: {exc}")
    if record.state != ChangeState.review_pending:
        return final_state(REFUSED, f"change: {record.key} is {record.state.replace('_', ' ')}; only a change "
                                    "whose review is due (review pending) is reviewed")
    asyncio.run(name_run(str(flow_run.id), change_run_name(record.key, f"review: {record.title}"),
                         ["changeflow", "review"]))
    trace_change(record.key)
    wait_at(ReviewGate(record.key))
    return run_ended(record.key)
