"""The manual-work gate: where a change has no automation for a stage, the run suspends (holding no worker) until
a person its policy names confirms the stage with their personal code, from the Resume form or
`changeflow work`. Nothing is ever "handed to the operator" and counted as done without such a confirmation.

It waits by the one gate protocol (flows/_gate.py): a resume with empty or wrong input is refused on the record
and the run waits again.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field
from prefect.input import RunInput

from flows._gate import Gate, form_description, wait_at
from flows._pause_key import GateKind, PauseKey
from flows._wiring import wiring
from models import TEXT_LIMIT, ChangeRequest, PolicyViolation, WorkConfirmation, WorkOutcome, WorkStage

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
    note: str = Field(default="", max_length=TEXT_LIMIT, description="What you did or saw (recorded).")


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
    return form_description(lines, refusal)


def work_gate(stage: WorkStage, step: int | None = None) -> str:
    """The work gate's name within its kind: `implemented`, `rolled-back-s2` (Prefect's keys allow letters,
    digits and dashes only)."""
    return stage.value.replace("_", "-") + (f"-s{step}" if step is not None else "")


class ManualWorkGate(Gate[WorkConfirmation]):
    """Waits until a person the policy names confirms the stage (of one interrupted `step`, when given) with their
    code; its people are told once, with their own codes. An empty Resume is a refused attempt."""

    kind = GateKind.work
    empty_resume_is_an_attempt = True

    def __init__(self, key: str, stage: WorkStage, step: int | None, interrupted: str | None):
        self.key, self.stage, self.step, self.interrupted = key, stage, step, interrupted

    def settled(self) -> WorkConfirmation | None:
        return wiring().services.work.confirmation(self.key, self.stage, self.step)

    def gate(self) -> str:
        return work_gate(self.stage, self.step)

    def before_wait(self, attempt: int) -> None:
        if attempt:
            return
        rt = wiring()
        change = rt.services.changes.get(self.key)
        # When it was first asked for: where policies.yaml `manual_work.escalation` counts from (recorded once).
        rt.services.work.requested(self.key, self.stage, self.step)
        # Keyed by change, event, person and round+stage in the outbox: a resumed run tells nobody twice.
        rt.notifier.announce(change, "work_needed", rt.services.work.implementers(self.key),
                             round_=f"{change.approval_round}:{self.stage.value}:{self.step or ''}",
                             extra={"stage": self.stage.value.replace("_", " ")}, personal_code=True)
        rt.notifier.deliver(change_key=self.key)

    def form(self, refusal: str | None) -> Any:
        services = wiring().services
        return ManualWorkInput.with_initial_data(description=work_description(
            services.changes.get(self.key), self.stage, services.work.implementers(self.key), refusal,
            self.interrupted))

    def apply(self, answer: RunInput, key: PauseKey) -> str | None:
        assert isinstance(answer, ManualWorkInput)
        try:
            wiring().services.work.confirm(self.key, stage=self.stage, person=answer.person,
                                            code=answer.approval_code, outcome=answer.outcome, note=answer.note,
                                            attempt_id=str(key), step=self.step)
        except PolicyViolation as exc:
            return str(exc)
        return None


def manual_work_gate(key: str, stage: WorkStage, *, step: int | None = None,
                     interrupted: str | None = None) -> WorkConfirmation:
    """Wait until the stage (of one interrupted `step`, when given) is confirmed."""
    return wait_at(ManualWorkGate(key, stage, step, interrupted))
