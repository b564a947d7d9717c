"""The change-request flow: record -> approvals -> window -> implement -> verify -> complete or roll back.

Reads like the change procedure; every decision is a call into `models/`. On resume Prefect runs this
function again from the top, so every step is idempotent: the change is keyed by the flow run id, the
outbox by change + event + recipient + round, and each approval gate input by its suspend key.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field
from prefect import flow, get_run_logger, task
from prefect.flow_runs import suspend_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run

from models import (
    ChangeRequest,
    ChangeRequestInput,
    ChangeState,
    ChangeflowError,
    ConflictError,
    Decision,
    PolicyViolation,
    Settings,
    everyone_concerned,
    load_policies,
)

from flows._commands import run_commands
from flows._runtime import runtime
from flows.canary import run_canary
from flows.checklists import run_phase

FINISHED = {ChangeState.rejected, ChangeState.expired, ChangeState.cancelled}


def offer_change_types(schema: dict[str, Any]) -> None:
    """The run form's `type` is a drop-down of the change types in the deploying worker's policies.yaml (read
    when the deployment is made, so a new type in the YAML appears at the next `changeflow up` / deploy)."""
    try:
        policies = load_policies(Settings().config_dir / "policies.yaml")
    except (ChangeflowError, OSError):
        return  # no config yet: a free-text field, checked by the service at submit
    schema["properties"]["type"]["enum"] = list(policies.types)


class ChangeRequestForm(ChangeRequestInput):
    """A change request as the Prefect run form asks for it."""

    model_config = ConfigDict(json_schema_extra=offer_change_types)


class WindowGateInput(RunInput):
    """The Resume form of a run waiting for its window. Resuming it empty starts nothing: the run checks the
    window again and waits on. Starting early is an explicit act of a person the policy allows."""

    person: str = Field(default="", description="Only to start before the window: your user name.")
    approval_code: str = Field(default="", description="Your personal approval code for this change.")
    reason: str = Field(default="", max_length=2000, description="Why it must start now (recorded).")


class ApprovalDecision(RunInput):
    """The approval form in the Prefect UI's Resume dialog."""

    approver: str = Field(description="Your user name in the approver directory.")
    decision: Decision = Field(default=Decision.approve, description="approve or reject")
    approval_code: str = Field(description="Your personal approval code from the notification (e.g. K7Q2-M9XA-3BTD).")
    comment: str = Field(default="", max_length=5000, description="Comment for the record (required to reject).")


@task(name="record change")
def record_change(request: ChangeRequestInput, run_id: str) -> str:
    services = runtime().services
    change = services.changes.submit(request, idempotency_key=f"flow-run:{run_id}", flow_run_id=run_id)
    if change.state == ChangeState.submitted.value:
        change = services.approvals.request_approval(change.key)
    return change.key


@task(name="notify approvers")
def notify_approvers(key: str) -> int:
    rt = runtime()
    change = rt.services.changes.get(key)
    written = rt.notifier.request_approvals(change)
    rt.notifier.deliver(change_key=key)
    return written


def gate_description(change: ChangeRequest, refusal: str | None) -> str:
    """The Markdown shown above the Resume form: what is being approved and what is still needed."""
    services = runtime().services
    evaluation = services.approvals.evaluation(change.key)
    approved_by = ", ".join(evaluation.approved_by) or "nobody yet"
    deadline = services.approvals.approval_deadline(change)
    lines = [
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
        "Enter your user name and the personal approval code from your notification.",
    ]
    if refusal:
        lines.append(f"> **The last attempt was refused:** {refusal}")
    return "\n\n".join(line for line in lines if line)


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
        decision = suspend_flow_run(wait_for_input=form, key=pause_key)
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
            continue
        except ConflictError as exc:
            refusal = f"{exc} (your decision was not recorded: please submit it again)"
            continue
        refusal = None
        logger.info("%s %s as %s; still needed: %s", decision.approver, decision.decision.value, result.role,
                    result.evaluation.describe_missing())


@task(name="announce")
def announce(key: str, event: str, reason: str = "", extra: dict | None = None) -> None:
    """Tell the requester, the approvers and the service's owners and stakeholders."""
    rt = runtime()
    change = rt.services.changes.get(key)
    audience = everyone_concerned(change, rt.services.org.directory, rt.services.approvals.decided_by(key))
    rt.notifier.announce(change, event, audience, reason=reason, extra=extra)
    rt.notifier.deliver(change_key=key)


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
        lines.append(f"> **The last attempt was refused:** {refusal}")
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
        pause_key = f"window-{attempt}"
        form = WindowGateInput.with_initial_data(description=window_description(change, check.reason, refusal))
        answer = suspend_flow_run(wait_for_input=form, key=pause_key)
        refusal = services.scheduling.answer_window_gate(key, person=answer.person, code=answer.approval_code,
                                                         reason=answer.reason, attempt_id=pause_key)
        if refusal:
            get_run_logger().warning("window gate: %s", refusal)


@task(name="implementation step")
def run_step(command: str, service_name: str, timeout_s: float) -> dict:
    result = run_commands([command], service=service_name, timeout_s=timeout_s)[0]
    return result.evidence()


def implement(key: str) -> bool:
    """Run the change's steps (its template's commands), the during-checklist after each; roll back on failure.

    Each finished step is recorded, so a run resumed mid-implementation (a manual during-item) does not run
    a step twice.
    """
    rt = runtime()
    change = rt.services.changes.get(key)
    while change.state in (ChangeState.approved.value, ChangeState.scheduled.value):
        try:
            # Window and freezes are checked again at this moment, in the transaction that starts it.
            change = rt.services.scheduling.begin_implementation(key)
        except PolicyViolation:
            change = wait_for_window(key)
    if change.state != ChangeState.implementing.value:
        return change.state in (ChangeState.verifying.value, ChangeState.completed.value)
    template = rt.services.org.template_of(change)
    commands = template.implementation_commands if template else []
    done = rt.services.checklists.done_steps(key)
    evidence = []
    for step, command in enumerate(commands or [None], start=1):
        if step in done:
            evidence.append(done[step])
            continue
        if command is None:
            outcome = {"step": step, "manual": "implementation plan handed to the operator", "ok": True}
        else:
            result = run_step(command, change.service, template.command_timeout_s)
            outcome = {"step": step, **result, "ok": result["exit_code"] == 0 and not result["timed_out"]}
        if not outcome["ok"]:
            roll_back(key, f"implementation step {step} failed", [*evidence, outcome])
            return False
        evidence.append(rt.services.checklists.record_step(key, step, outcome))
        during = run_phase(key, "during", step)
        if not during.ok:
            roll_back(key, f"during-checklist failed after step {step}: {', '.join(during.failed_required)}",
                      evidence)
            return False
    plan = rt.services.canary.plan(change)
    if plan is not None:
        return ship_canary(key, first_step=len(commands), evidence=evidence)
    rt.services.changes.transition(key, ChangeState.verifying, actor="changeflow",
                          reason="implementation steps done" if template else "implementation plan handed to the operator",
                          data={"steps": evidence})
    return True


def ship_canary(key: str, *, first_step: int, evidence: list[dict]) -> bool:
    """The canary rollout is the last part of the implementation; its during-checklist runs after each step."""
    rt = runtime()

    def during(index: int) -> str:
        verdict = run_phase(key, "during", first_step + index)
        return "" if verdict.ok else f"during-checklist failed after canary step {index}: " \
                                     f"{', '.join(verdict.failed_required)}"

    result, reason, failing = run_canary(key, during=during)
    if result == "promoted":
        rt.services.changes.transition(key, ChangeState.verifying, actor="changeflow", reason=reason,
                              data={"steps": evidence, "canary": rt.services.canary.decisions(key)})
        return True
    if result == "rolled_back":
        roll_back(key, f"canary rolled back: {reason}", [*evidence, {"canary": rt.services.canary.decisions(key)}])
        announce(key, "canary_rolled_back", reason=reason, extra={"measurements": failing})
        return False
    fail(key, reason, [*evidence, {"canary": rt.services.canary.decisions(key)}])
    return False


def verify(key: str) -> bool:
    """The template's verify commands, then the post-checklist; a required failure rolls the change back."""
    rt = runtime()
    change = rt.services.changes.get(key)
    if change.state != ChangeState.verifying.value:
        return change.state == ChangeState.completed.value
    template = rt.services.org.template_of(change)
    checks = []
    for command in template.verify_commands if template else []:
        checks.append(run_step(command, change.service, template.command_timeout_s))
        if checks[-1]["exit_code"] != 0 or checks[-1]["timed_out"]:
            roll_back(key, "verification failed", checks)
            return False
    post = run_phase(key, "post")
    if not post.ok:
        roll_back(key, f"post-checklist failed: {', '.join(post.failed_required)}", checks)
        return False
    rt.services.changes.transition(key, ChangeState.completed, actor="changeflow", reason="verified", data={"checks": checks})
    return True


def roll_back(key: str, why: str, evidence: list[dict]) -> None:
    rt = runtime()
    change = rt.services.changes.get(key)
    template = rt.services.org.template_of(change)
    results = run_commands(template.rollback_commands, service=change.service,
                           timeout_s=template.command_timeout_s) if template else []
    rt.services.changes.transition(key, ChangeState.rolled_back, actor="changeflow", reason=why,
                          data={"evidence": evidence, "rollback": [r.evidence() for r in results]})
    rt.services.changes.transition(key, ChangeState.review_pending, actor="changeflow", reason="rolled back: review due")


def fail(key: str, why: str, evidence: list[dict]) -> None:
    """The change could not be carried out and nothing was undone (there was nothing to undo)."""
    rt = runtime()
    rt.services.changes.transition(key, ChangeState.failed, actor="changeflow", reason=why, data={"evidence": evidence})
    rt.services.changes.transition(key, ChangeState.review_pending, actor="changeflow", reason="failed: review due")


@task(name="close")
def close(key: str) -> str:
    services = runtime().services
    change = services.changes.get(key)
    if change.state == ChangeState.completed.value:
        target = ChangeState.review_pending if services.rules(change).always_reviewed else ChangeState.closed
        change = services.changes.transition(key, target, actor="changeflow",
                                    reason="post-implementation review due" if target is ChangeState.review_pending
                                    else "completed")
    return change.state


def service_reason(key: str, to_state: str | None = None) -> str:
    """The reason of the change's last transition (into `to_state`, when given): what the requester is told."""
    events = runtime().services.changes.view(key).events
    return next((e.data.get("reason", "") for e in reversed(events)
                 if e.action == "transition" and to_state in (None, e.to_state)), "")


def outcome_reason(key: str, outcome: str | None) -> str:
    """Why the change ended as it did: its outcome and the reason of the transition that recorded it."""
    if not outcome:
        return "not implemented"
    reason = service_reason(key, outcome)
    return f"{outcome.replace('_', ' ')}: {reason}" if reason else outcome.replace("_", " ")


@flow(name="change-request", log_prints=True)
def change_request(request: ChangeRequestForm) -> str:
    """File a change request: it is recorded, approved by the people its policy names, and implemented."""
    run_id = str(flow_run.id)
    key = record_change(request, run_id)
    notify_approvers(key)
    change = approval_gate(key)
    if ChangeState(change.state) in FINISHED:
        announce(key, change.state)
        return change.state
    announce(key, "approved")
    if runtime().services.rules(change).scheduled:
        change = wait_for_window(key)
        if change.state == ChangeState.cancelled.value:
            announce(key, "change_failed", reason=service_reason(key))
            return change.state
    pre = run_phase(key, "pre")
    if not pre.ok:
        # Nothing has been touched yet: the change stops here.
        rt = runtime()
        if rt.services.changes.get(key).state in (ChangeState.approved.value, ChangeState.scheduled.value):
            rt.services.changes.transition(key, ChangeState.cancelled, actor="changeflow",
                                  reason=f"pre-checklist failed: {', '.join(pre.failed_required)}")
        announce(key, "change_failed", reason=f"pre-checklist failed: {', '.join(pre.failed_required)}")
        return rt.services.changes.get(key).state
    announce(key, "change_started")
    if implement(key):
        verify(key)
    # The recorded outcome, not this run's return values, decides: a re-run of a finished change repeats
    # the same announcement (a no-op in the outbox) instead of inventing a failure.
    outcome = runtime().services.changes.get(key).outcome
    if outcome == "succeeded":
        announce(key, "change_completed")
    else:
        announce(key, "change_failed", reason=outcome_reason(key, outcome))
    return close(key)


if __name__ == "__main__":
    change_request.serve(name="submit")
