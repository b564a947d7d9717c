"""The manual-work gate: where a change has no automation for a stage, the run suspends (holding no worker) until
a person its policy names confirms the stage with their personal code, from the Resume form or
`changeflow work`. Nothing is ever "handed to the operator" and counted as done without such a confirmation.

Like every gate, the check is after the suspend, never the suspend itself: a resume with empty or wrong input
is refused on the record and the run waits again (a fired key returns at once on a re-run, see Prefect's
`suspend_flow_run`).
"""

from __future__ import annotations

from pydantic import Field
from prefect import get_run_logger
from prefect.flow_runs import suspend_flow_run
from prefect.input import RunInput

from flows._prefect_api import forget_answer
from flows._runtime import runtime
from models import ChangeRequest, PolicyViolation, WorkConfirmation, WorkOutcome, WorkStage

_ASKS = {
    WorkStage.implemented: "carry out the implementation plan, then confirm it is **done** (or **failed**)",
    WorkStage.verified: "check the change works as intended, then confirm it is **done** (verified) or **failed**",
    WorkStage.rolled_back: "carry out the rollback plan, then confirm the rollback is **done** (or **failed**)",
}


class ManualWorkInput(RunInput):
    """The Resume form of a run waiting for a person to do part of a change by hand."""

    person: str = Field(default="", description="Your user name in the approver directory.")
    approval_code: str = Field(default="", description="Your personal code for this change (from the notification).")
    outcome: WorkOutcome = Field(default=WorkOutcome.done, description="done, or failed (say what went wrong)")
    note: str = Field(default="", max_length=5000, description="What you did or saw (recorded).")


def work_description(change: ChangeRequest, stage: WorkStage, people: list[str], refusal: str | None,
                     interrupted: str | None = None) -> str:
    consequence = ("**failed** (the change is recorded as failed, nothing undone)" if stage is WorkStage.rolled_back
                   else "**failed** (the change is rolled back)")
    why = (f"Its step **{interrupted}** was interrupted when its run died: whether it took effect is unknown, and "
           f"it is not run again blindly. Check the service, then confirm it **done** (it took effect) or "
           f"{consequence}." if interrupted else
           f"It has no automation for this step: {_ASKS[stage]}.")
    lines = [
        f"## {change.key} needs a person: {stage.value.replace('_', ' ')}",
        f"**{change.title}** ({change.type} change to **{change.service}**). {why} "
        f"One of **{', '.join(people) or 'nobody in the directory'}** answers, with their personal code.",
        f"**Implementation plan:** {change.implementation_plan or '-'}",
        f"**Rollback plan:** {change.rollback_plan or '-'}",
        "Pressing Resume without your name and code records a refusal and the run waits again.",
    ]
    if refusal:
        lines.append(f"> **The last attempt was refused:** {refusal}")
    return "\n\n".join(lines)


def work_key_prefix(stage: WorkStage, step: int | None = None) -> str:
    return f"work-{stage.value.replace('_', '-')}-" + (f"s{step}-" if step is not None else "")


def manual_work_gate(key: str, stage: WorkStage, *, step: int | None = None,
                     interrupted: str | None = None) -> WorkConfirmation:
    """Wait until the stage (of one interrupted `step`, when given) is confirmed; its people are told once, with
    their own codes."""
    rt = runtime()
    services = rt.services
    refusal: str | None = None
    attempt = 0
    while True:
        confirmed = services.work.confirmation(key, stage, step)
        if confirmed is not None:
            return confirmed
        change = services.changes.get(key)
        people = services.work.implementers(key)
        if attempt == 0:
            # Keyed by change, event, person and round+stage in the outbox: a resumed run tells nobody twice.
            rt.notifier.announce(change, "work_needed", people,
                                 round_=f"{change.approval_round}:{stage.value}:{step or ''}",
                                 extra={"stage": stage.value.replace("_", " ")}, personal_code=True)
            rt.notifier.deliver(change_key=key)
        attempt += 1
        # (Prefect's run-input keys allow letters, digits and dashes only.)
        pause_key = f"{work_key_prefix(stage, step)}{attempt}"
        form = ManualWorkInput.with_initial_data(
            description=work_description(change, stage, people, refusal, interrupted))
        answer = suspend_flow_run(wait_for_input=form, key=pause_key)
        try:
            services.work.confirm(key, stage=stage, person=answer.person, code=answer.approval_code,
                                  outcome=answer.outcome, note=answer.note, attempt_id=pause_key, step=step)
            refusal = None
        except PolicyViolation as exc:
            refusal = str(exc)
            get_run_logger().warning("manual work gate: %s", exc)
        forget_answer(answer)
