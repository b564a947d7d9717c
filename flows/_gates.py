"""The gates of the change-request flow: the requester's confirmation of their filing, approval and the
maintenance window, each waiting by the one gate protocol (flows/_gate.py)."""

from __future__ import annotations

from typing import Any

from pydantic import Field
from prefect import get_run_logger
from prefect.input import RunInput

from flows._gate import Gate, wait_at
from flows._pause_key import GateKind, PauseKey
from flows._wiring import wiring
from models import TEXT_LIMIT, ChangeRequest, ChangeState, ConflictError, Decision, PolicyViolation


class FilingConfirmation(RunInput):
    """The Resume form of a run whose change waits for its requester to confirm they filed it. The run form carries
    no identity (anyone who reaches the Prefect UI can type any name into it), so a change goes to its approvers
    only once the person named as requester proves, with the code sent to them, that they filed it."""

    requester: str = Field(default="", description="Your user name: you filed this change.")
    approval_code: str = Field(default="", description="The code sent to you for confirming this filing.")


def filing_description(change: ChangeRequest, refusal: str | None) -> str:
    lines = [
        f"> **Your last submission was refused and NOT recorded:** {refusal}" if refusal else "",
        f"## {change.key}: {change.title}",
        f"Filed in the name of **{change.requester}**. Nothing goes to its approvers until {change.requester} "
        "confirms that they filed it, with the code sent to them for it.",
        *(f"**{line.label}:** {line.text}" for line in wiring().services.briefs.of(change).lines),
        "If you are not the requester, leave this form: a filing nobody confirms is cancelled.",
    ]
    return "\n\n".join(line for line in lines if line)


class FilingGate(Gate[ChangeRequest]):
    """Waits until the requester has confirmed their filing (the change moves on to approval) or it was
    cancelled unconfirmed; a filled form is a confirmation."""

    kind = GateKind.filing

    def __init__(self, key: str):
        self.key = key
        self.change = wiring().services.changes.get(key)

    def settled(self) -> ChangeRequest | None:
        self.change = wiring().services.changes.get(self.key)
        return self.change if self.change.state != ChangeState.submitted.value else None

    def gate(self) -> str:
        return ""

    def form(self, refusal: str | None) -> Any:
        return FilingConfirmation.with_initial_data(description=filing_description(self.change, refusal))

    def apply(self, answer: RunInput, key: PauseKey) -> str | None:
        assert isinstance(answer, FilingConfirmation)
        try:
            wiring().services.approvals.confirm_filing(self.key, person=answer.requester,
                                                        code=answer.approval_code, attempt_id=str(key))
        except PolicyViolation as exc:
            return str(exc)
        except ConflictError as exc:
            return f"{exc} (your confirmation was not recorded: please submit it again)"
        return None

    def before_wait(self, attempt: int) -> None:
        # Once (the outbox sends it once however often the run comes back here); a pipeline hears nothing: it
        # confirms with its token when it files.
        if attempt == 0 and self.change.requester in wiring().services.org.directory.people:
            rt = wiring()
            rt.notifier.announce(self.change, "filing_received", [self.change.requester], personal_code=True)
            rt.notifier.deliver(change_key=self.key)


def filing_gate(key: str) -> ChangeRequest:
    """Suspend until the requester confirms the filing (or it is cancelled unconfirmed)."""
    return wait_at(FilingGate(key))


class WindowGateInput(RunInput):
    """The Resume form of a run waiting for its window. Resuming it empty starts nothing: the run checks the
    window again and waits on. Starting early is an explicit act of a person the policy allows."""

    person: str = Field(default="", description="Only to start before the window: your user name.")
    approval_code: str = Field(default="", description="Your personal approval code for this change.")
    reason: str = Field(default="", max_length=TEXT_LIMIT, description="Why it must start now (recorded).")


class ApprovalDecision(RunInput):
    """The approval form in the Prefect UI's Resume dialog. Every field has a default so that a path which has
    already recorded its decision (CLI, link, Slack, sweep) can resume with no input at all; a form left as it
    is records nothing (`is_bare`)."""

    approver: str = Field(default="", description="Your user name in the approver directory.")
    decision: Decision = Field(default=Decision.approve, description="approve or reject")
    approval_code: str = Field(default="", description="Your personal approval code from the notification "
                                                       "(e.g. K7Q2-M9XA-3BTD).")
    comment: str = Field(default="", max_length=TEXT_LIMIT,
                         description="Comment for the record (required to reject).")


def gate_description(change: ChangeRequest, refusal: str | None) -> str:
    """The Markdown shown above the Resume form: what is being approved (the brief every approver sees) and what
    is still needed."""
    services = wiring().services
    evaluation = services.approvals.evaluation(change.key)
    deadline = services.approvals.approval_deadline(change)
    # A refusal goes first: Prefect's own toast after Resume says "resumed" whatever the run decided.
    lines = [
        f"> **Your last submission was refused and NOT recorded:** {refusal}" if refusal else "",
        f"## {change.key}: {change.title}",
        *(f"**{line.label}:** {line.text}" for line in services.briefs.of(change).lines),
        f"**Plan:** {change.implementation_plan or '-'}",
        f"**Rollback plan:** {change.rollback_plan or '-'}",
        f"**Still needed:** {evaluation.describe_missing()}.",
        f"**Decide by:** {deadline:%Y-%m-%d %H:%M} UTC" if deadline else "",
        "Enter your user name and the personal approval code from your notification. (Resume with the form "
        "left as it is records nothing and shows this page again.)",
    ]
    return "\n\n".join(line for line in lines if line)


def tell_the_refused(change: ChangeRequest, person: str, refusal: str, attempt: str) -> None:
    """The person whose decision was refused hears it on their own channel (once per attempt), not only in the
    form they would have to reopen."""
    rt = wiring()
    if person not in rt.services.org.directory.people:
        return
    rt.notifier.announce(change, "decision_refused", [person], reason=refusal, round_=attempt)
    rt.notifier.deliver(change_key=change.key)


class ApprovalGate(Gate[ChangeRequest]):
    """Waits until the policy is satisfied or the change is rejected or expired; a filled form is a decision.

    Keys are `approval-r<round>-<n>`: after a restart the gate replays what Prefect still holds for fired keys
    (`attempt_id` makes each replay a no-op) until it reaches the first new key."""

    kind = GateKind.approval

    def __init__(self, key: str):
        self.key = key
        self.change = wiring().services.changes.get(key)

    def settled(self) -> ChangeRequest | None:
        self.change = wiring().services.changes.get(self.key)
        return self.change if self.change.state != ChangeState.awaiting_approval.value else None

    def gate(self) -> str:
        return f"r{self.change.approval_round}"

    def form(self, refusal: str | None) -> Any:
        return ApprovalDecision.with_initial_data(description=gate_description(self.change, refusal))

    def apply(self, answer: RunInput, key: PauseKey) -> str | None:
        assert isinstance(answer, ApprovalDecision)
        approver = answer.approver.strip()
        try:
            result = wiring().services.approvals.decide(self.key, approver=approver, decision=answer.decision,
                                                         code=answer.approval_code, comment=answer.comment,
                                                         attempt_id=str(key))
        except PolicyViolation as exc:
            tell_the_refused(self.change, approver, str(exc), str(key))
            return str(exc)
        except ConflictError as exc:
            return f"{exc} (your decision was not recorded: please submit it again)"
        get_run_logger().info("%s %s as %s; still needed: %s", approver, answer.decision.value, result.role,
                              result.evaluation.describe_missing())
        return None


def approval_gate(key: str) -> ChangeRequest:
    """Suspend until the policy is satisfied or the change is rejected/expired, applying each decision."""
    return wait_at(ApprovalGate(key))


def window_description(change: ChangeRequest, reason: str, refusal: str | None) -> str:
    """What the Resume dialog of a run waiting for its window says: unmistakably not an approval form."""
    services = wiring().services
    allowed = services.rules(change).policy.early_start
    lines = [
        f"## {change.key} is waiting for its maintenance window",
        f"**{change.title}** ({change.type} change to **{change.service}**) is approved and scheduled: {reason}.",
        "It starts by itself when its window opens. **Pressing Resume does not start it**: the run checks the "
        "window and the freezes again and goes on waiting.",
        (f"To start it **before** its window, a person holding {' or '.join(allowed)} enters their user name, "
         "personal approval code and the reason; the early start is recorded under their name.") if allowed
        else f"The {change.type} policy does not allow starting before the window.",
    ]
    if refusal:
        lines.insert(0, f"> **Your last submission was refused:** {refusal}")
    return "\n\n".join(lines)


def wait_for_window(key: str) -> ChangeRequest:
    """A scheduled change waits, suspended (holding no worker), until its window opens, no freeze covers it, or an
    authorised person starts it early. Every resume re-checks: a suspend key that already fired returns at once
    on a re-run (Prefect), so the gate is the check after it, never the suspend itself."""
    services = wiring().services
    change = services.changes.get(key)
    if change.state == ChangeState.approved.value:
        clashes = services.scheduling.schedule_clashes(key)
        if clashes:
            return services.changes.transition(key, ChangeState.cancelled, actor="changeflow",
                                               reason="cannot be scheduled: " + "; ".join(clashes))
        change = services.changes.transition(key, ChangeState.scheduled, actor="changeflow",
                                             reason=f"waiting for the window starting {change.planned_start or 'now'}")
    return wait_at(WindowGate(key))


class WindowGate(Gate[ChangeRequest]):
    """Waits until the window opens with no freeze over it, or a person the policy allows starts it early (a
    filled form); an empty Resume starts nothing."""

    kind = GateKind.window
    waits_for_a_person = False  # it waits for the clock (days, often): suspended at once
    empty_resume_is_an_attempt = True  # recorded as a refused early start unless the window is open anyway

    def __init__(self, key: str):
        self.key = key
        self.change = wiring().services.changes.get(key)
        self.reason = ""

    def settled(self) -> ChangeRequest | None:
        services = wiring().services
        self.change = services.changes.get(self.key)
        if self.change.state != ChangeState.scheduled.value:
            return self.change
        check = services.scheduling.start_check(self.key)
        self.reason = check.reason
        return self.change if check.may_start else None

    def gate(self) -> str:
        return f"r{self.change.approval_round}"

    def form(self, refusal: str | None) -> Any:
        return WindowGateInput.with_initial_data(description=window_description(self.change, self.reason, refusal))

    def apply(self, answer: RunInput, key: PauseKey) -> str | None:
        assert isinstance(answer, WindowGateInput)
        return wiring().services.scheduling.answer_window_gate(self.key, person=answer.person,
                                                                code=answer.approval_code, reason=answer.reason,
                                                                attempt_id=str(key))
