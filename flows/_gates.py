"""The gates of the change-request flow: approval and the maintenance window. Each suspends the run (holding no
worker) and checks what came back: a suspend key that already fired returns at once on a re-run (Prefect), so the
gate is the check after the suspend, never the suspend itself (DESIGN.md, "Trust boundaries")."""

from __future__ import annotations

from pydantic import Field, ValidationError
from prefect import get_run_logger
from prefect.flow_runs import suspend_flow_run
from prefect.input import RunInput

from flows._prefect_api import forget_answer
from flows._runtime import runtime
from models import ChangeRequest, ChangeState, ConflictError, Decision, PolicyViolation


class WindowGateInput(RunInput):
    """The Resume form of a run waiting for its window. Resuming it empty starts nothing: the run checks the
    window again and waits on. Starting early is an explicit act of a person the policy allows."""

    person: str = Field(default="", description="Only to start before the window: your user name.")
    approval_code: str = Field(default="", description="Your personal approval code for this change.")
    reason: str = Field(default="", max_length=2000, description="Why it must start now (recorded).")


class ApprovalDecision(RunInput):
    """The approval form in the Prefect UI's Resume dialog. Every field has a default so that a path which has
    already recorded its decision (CLI, link, Slack, sweep) can resume with no input at all; a form left as it
    is records nothing (`is_bare`)."""

    approver: str = Field(default="", description="Your user name in the approver directory.")
    decision: Decision = Field(default=Decision.approve, description="approve or reject")
    approval_code: str = Field(default="", description="Your personal approval code from the notification "
                                                       "(e.g. K7Q2-M9XA-3BTD).")
    comment: str = Field(default="", max_length=5000, description="Comment for the record (required to reject).")


def is_bare(answer: RunInput) -> bool:
    """A resume that carries nothing: the bare "look again" of a path that recorded its decision through the
    services first, or a Resume form left untouched. It authorises nothing; the gate re-reads the record."""
    return answer.model_dump() == type(answer)().model_dump()


def gate_of(pause_key: str) -> str:
    """The gate a pause key belongs to: the key without its attempt number (`canary-confirm-s2-3` ->
    `canary-confirm-s2`); every gate suspends under `<gate>-<attempt>`."""
    return pause_key.rsplit("-", 1)[0]


def gate_description(change: ChangeRequest, refusal: str | None) -> str:
    """The Markdown shown above the Resume form: what is being approved and what is still needed."""
    services = runtime().services
    evaluation = services.approvals.evaluation(change.key)
    approved_by = ", ".join(evaluation.approved_by) or "nobody yet"
    deadline = services.approvals.approval_deadline(change)
    # A refusal goes first: Prefect's own toast after Resume says "resumed" whatever the run decided.
    lines = [
        f"> **Your last submission was refused and NOT recorded:** {refusal}" if refusal else "",
        f"## {change.key}: {change.title}",
        f"**{change.type}** change to **{change.service}**, requested by **{change.requester}**; "
        f"risk **{change.risk_level}** ({change.risk_score}: {'; '.join(change.risk_reasons) or 'no risk factors'})",
    ]
    if change.incident_id:
        lines.append(f"Incident **{change.incident_id}** ({change.incident_severity})")
    lines += [
        f"**Plan:** {change.implementation_plan or '-'}",
        f"**Rollback plan:** {change.rollback_plan or '-'}",
        f"**Approved so far:** {approved_by}. **Still needed:** {evaluation.describe_missing()}.",
        f"**Decide by:** {deadline:%Y-%m-%d %H:%M} UTC" if deadline else "",
        "Enter your user name and the personal approval code from your notification. (Resume with the form "
        "left as it is records nothing and shows this page again.)",
    ]
    return "\n\n".join(line for line in lines if line)


def tell_the_refused(change: ChangeRequest, person: str, refusal: str, attempt: str) -> None:
    """The person whose decision was refused hears it on their own channel (once per attempt), not only in the
    form they would have to reopen."""
    rt = runtime()
    if person not in rt.services.org.directory.people:
        return
    rt.notifier.announce(change, "decision_refused", [person], reason=refusal, round_=attempt)
    rt.notifier.deliver(change_key=change.key)


def approval_gate(key: str) -> ChangeRequest:
    """Suspend until the policy is satisfied or the change is rejected/expired, applying each decision.

    Keys are stable (`approval-r<round>-<n>`): after a restart the loop replays the inputs Prefect already
    holds for fired keys, and `attempt_id` makes each replay a no-op, until it reaches the first new key.
    """
    logger = get_run_logger()
    services = runtime().services
    refusal: str | None = None
    attempt = 0
    while True:
        change = services.changes.get(key)
        if change.state != ChangeState.awaiting_approval.value:
            return change
        attempt += 1
        pause_key = f"approval-r{change.approval_round}-{attempt}"
        form = ApprovalDecision.with_initial_data(description=gate_description(change, refusal))
        try:
            decision = suspend_flow_run(wait_for_input=form, key=pause_key)
        except ValidationError:
            # A key this run suspended at before it died, never resumed: Prefect returns at once with no stored
            # decision. Nothing was decided; wait again under the next key.
            logger.warning("%s fired before a crash without a decision; waiting again", pause_key)
            continue
        if is_bare(decision):
            # Someone recorded a decision elsewhere and asks the run to look again (or pressed Resume on an
            # untouched form): the loop re-reads the change and waits again while it still needs people.
            refusal = None
            continue
        result = None
        try:
            result = services.approvals.decide(
                key,
                approver=decision.approver.strip(),
                decision=decision.decision,
                code=decision.approval_code,
                comment=decision.comment,
                attempt_id=pause_key,
            )
        except PolicyViolation as exc:
            refusal = str(exc)
            logger.warning("refused: %s", exc)
            tell_the_refused(change, decision.approver.strip(), refusal, pause_key)
        except ConflictError as exc:
            refusal = f"{exc} (your decision was not recorded: please submit it again)"
        forget_answer(decision)  # recorded or refused: the code it carried stays out of Prefect's storage
        if result is None:
            continue
        refusal = None
        logger.info("%s %s as %s; still needed: %s", decision.approver, decision.decision.value, result.role,
                    result.evaluation.describe_missing())


def window_description(change: ChangeRequest, reason: str, refusal: str | None) -> str:
    """What the Resume dialog of a run waiting for its window says: unmistakably not an approval form."""
    services = runtime().services
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
    services = runtime().services
    change = services.changes.get(key)
    if change.state == ChangeState.approved.value:
        clashes = services.scheduling.schedule_clashes(key)
        if clashes:
            return services.changes.transition(key, ChangeState.cancelled, actor="changeflow",
                                               reason="cannot be scheduled: " + "; ".join(clashes))
        change = services.changes.transition(key, ChangeState.scheduled, actor="changeflow",
                                             reason=f"waiting for the window starting {change.planned_start or 'now'}")
    refusal: str | None = None
    attempt = 0
    while True:
        change = services.changes.get(key)
        if change.state != ChangeState.scheduled.value:
            return change
        check = services.scheduling.start_check(key)
        if check.may_start:
            return change
        attempt += 1
        pause_key = f"window-r{change.approval_round}-{attempt}"
        form = WindowGateInput.with_initial_data(description=window_description(change, check.reason, refusal))
        answer = suspend_flow_run(wait_for_input=form, key=pause_key)
        refusal = services.scheduling.answer_window_gate(key, person=answer.person, code=answer.approval_code,
                                                         reason=answer.reason, attempt_id=pause_key)
        forget_answer(answer)
        if refusal:
            get_run_logger().warning("window gate: %s", refusal)
