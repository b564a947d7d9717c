"""The change-request flow: record -> approvals -> window -> implement -> verify -> complete or roll back.

Reads like the change procedure; every decision is a call into `models/`. On resume Prefect runs this
function again from the top, so every step is idempotent: the change is keyed by the flow run id, the
outbox by change + event + recipient + round, and each approval gate input by its suspend key.
"""

from __future__ import annotations

import asyncio

from prefect import flow, get_run_logger, task
from prefect.runtime import flow_run
from prefect.states import State

from models import (REFUSED, ChangeRequest, ChangeRequestInput, ChangeState, PolicyViolation, Rerun,
                    WorkStage, everyone_concerned, rerun_of)

from flows._heartbeat import heartbeating
from flows._commands import run_commands
from flows._gates import approval_gate, filing_gate, wait_for_window
from flows._manual import manual_work_gate
from flows._change_page import publish_change_page, publish_runbook
from flows._json_logs import trace_change
from flows._endings import run_ended
from flows._run_form import ChangeRequestForm
from flows._prefect_api import change_run_name, change_run_tags, final_state, name_run
from flows._recovery import canary_to_stable
from flows._watch import watch
from flows._wiring import run_attempt, wiring
from flows.canary import run_canary
from flows.checklists import run_phase

FINISHED = {ChangeState.rejected, ChangeState.expired, ChangeState.cancelled}


@task(name="record change")
def record_change(request: ChangeRequestInput, run_id: str) -> str:
    """Record the request; it goes to its approvers once its requester has confirmed it (`filing_gate`)."""
    services = wiring().services
    change = services.changes.submit(request, idempotency_key=f"flow-run:{run_id}", flow_run_id=run_id)
    # A run is its change (issue 30): the Runs list shows `CHG-000123 <title>` instead of a random name, and
    # filters by type, service and risk. (The title is the requester's own words, never a secret.)
    asyncio.run(name_run(run_id, change_run_name(change.key, change.title),
                         change_run_tags(change.type, change.service, change.risk_level)))
    publish_change_page(change.key)
    return change.key


@task(name="notify approvers")
def notify_approvers(key: str) -> int:
    rt = wiring()
    change = rt.services.changes.get(key)
    written = rt.notifier.request_approvals(change)
    rt.notifier.deliver(change_key=key)
    return written


@task(name="tell the requester")
def tell_the_requester(key: str, event: str, reason: str) -> None:
    rt = wiring()
    change = rt.services.changes.get(key)
    if change.requester not in rt.services.org.directory.people:
        return  # an automation: nobody to tell
    rt.notifier.announce(change, event, [change.requester], reason=reason)
    rt.notifier.deliver(change_key=key)


@task(name="announce")
def announce(key: str, event: str, reason: str = "", extra: dict | None = None) -> None:
    """Tell the requester, the approvers and the service's owners and stakeholders."""
    rt = wiring()
    change = rt.services.changes.get(key)
    audience = everyone_concerned(change, rt.services.org.directory, rt.services.approvals.decided_by(key))
    rt.notifier.announce(change, event, audience, reason=reason, extra=extra)
    rt.notifier.deliver(change_key=key)
    publish_change_page(key)


@task(name="implementation step")
def run_step(command: str, service_name: str, timeout_s: float) -> dict:
    result = run_commands([command], service=service_name, timeout_s=timeout_s)[0]
    return result.evidence()


def implement(key: str) -> bool:
    """Run the change's steps (its template's commands), the during-checklist after each; roll back on failure.
    A change without automation has one manual step, done only when a person its policy names confirms it.

    Each finished step is recorded, so a run resumed mid-implementation (a manual during-item) does not run
    a step twice.
    """
    rt = wiring()
    change = rt.services.changes.get(key)
    while change.state in (ChangeState.approved.value, ChangeState.scheduled.value):
        try:
            # Window and freezes are checked again at this moment, in the transaction that starts it.
            change = rt.services.scheduling.begin_implementation(key)
        except PolicyViolation:
            change = wait_for_window(key)
    if change.state != ChangeState.implementing.value:
        return change.state in (ChangeState.verifying.value, ChangeState.completed.value)
    template = rt.services.rollbacks.template_for(change)
    commands: list[str | None] = list(template.implementation_commands) if template else []
    plan = rt.services.canary.plan(change)
    done = rt.services.checklists.done_steps(key)
    interrupted = rt.services.recovery.interrupted_steps(key, attempt=run_attempt())  # by a run that died
    evidence: list[dict] = []
    if (traffic := traffic_back(change)) is not None:  # a rollback of a canary: its users first
        evidence.append(traffic)
        if not traffic["ok"]:
            roll_back(key, f"the traffic did not go back to stable: {traffic['detail']}", evidence)
            return False
    for step, command in enumerate(commands or ([] if plan is not None or traffic else [None]), start=1):
        if step in done:
            if not done[step].get("ok", True):
                # It finished and failed before a crash: the rollback it needs, not a second run.
                roll_back(key, f"implementation step {step} failed", [*evidence, done[step]])
                return False
            evidence.append(done[step])
            continue
        if command is None:
            work = manual_work_gate(key, WorkStage.implemented)
            outcome = {"step": step, "manual": work.note or "implemented by hand", "confirmed_by": work.person,
                       "ok": work.done}
        elif (rerun := rerun_of(step in interrupted, bool(template and template.idempotent))) is Rerun.not_blindly:
            # Its outcome is unknown, so a person who checked the service says what happened.
            work = manual_work_gate(key, WorkStage.implemented, step=step, interrupted=f"{step} ({command})")
            outcome = {"step": step, "command": command, "interrupted": True, "confirmed_by": work.person,
                       "manual": work.note or ("took effect" if work.done else "did not take effect"),
                       "ok": work.done}
        else:
            assert template is not None
            if rerun is Rerun.run_again:  # the template declares its steps idempotent: at least once
                rt.services.recovery.record_retry(key, step)
            rt.services.recovery.begin_step(key, step, attempt=run_attempt())
            result = run_step(command, change.service, template.command_timeout_s)
            outcome = {"step": step, **result, "ok": result["exit_code"] == 0 and not result["timed_out"]}
        # Finished, whatever the outcome: a restart must know the step ran (and failed, if it did).
        recorded = rt.services.checklists.record_step(key, step, outcome)
        if not outcome["ok"]:
            roll_back(key, f"implementation step {step} failed", [*evidence, recorded])
            return False
        evidence.append(recorded)
        during = run_phase(key, "during", step)
        if not during.ok:
            roll_back(key, f"during-checklist failed after step {step}: {', '.join(during.failed_required)}",
                      evidence)
            return False
    if plan is not None:
        return ship_canary(key, first_step=len(commands), evidence=evidence)
    manual = not commands
    rt.services.changes.transition(key, ChangeState.verifying, actor=evidence[-1].get("confirmed_by", "changeflow")
                                   if manual else "changeflow",
                                   reason="implemented by hand (confirmed)" if manual else "implementation steps done",
                                   data={"steps": evidence})
    return True


def traffic_back(change) -> dict | None:
    """For a rollback of a promoted canary (issue 32): all of its service's traffic back to the stable version,
    as its first step (setting a weight is idempotent: a restarted run sets it again). None: no such step."""
    reverted = wiring().services.rollbacks.reverted_canary(change)
    if reverted is None or reverted.canary is None:
        return None
    problem = canary_to_stable(reverted)
    stable = reverted.canary.get("stable_version", "stable")
    return {"step": 0, "traffic": f"all to {stable} (weight 0 for {reverted.canary.get('canary_version')})",
            "ok": not problem, "detail": problem.strip(" ()")}


def is_manual(key: str) -> bool:
    """No implementation commands, no canary and no traffic to move: only a person can say it was done."""
    rt = wiring()
    change = rt.services.changes.get(key)
    template = rt.services.rollbacks.template_for(change)
    return (not (template and template.implementation_commands) and rt.services.canary.plan(change) is None
            and rt.services.rollbacks.reverted_canary(change) is None)


def ship_canary(key: str, *, first_step: int, evidence: list[dict]) -> bool:
    """The canary rollout is the last part of the implementation; its during-checklist runs after each step."""
    rt = wiring()

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
        roll_back(key, f"canary rolled back: {reason}", [*evidence, {"canary": rt.services.canary.decisions(key)}],
                  traffic_restored=True)
        announce(key, "canary_rolled_back", reason=reason, extra={"measurements": failing})
        return False
    fail(key, reason, [*evidence, {"canary": rt.services.canary.decisions(key)}])
    return False


def verify(key: str) -> bool:
    """The template's verify commands (or, for a manual change, a person's confirmation), then the
    post-checklist; a required failure rolls the change back."""
    rt = wiring()
    change = rt.services.changes.get(key)
    if change.state != ChangeState.verifying.value:
        return change.state == ChangeState.completed.value
    template = rt.services.rollbacks.template_for(change)
    checks: list[dict] = []
    for command in template.verify_commands if template else []:
        checks.append(run_step(command, change.service, template.command_timeout_s))
        if checks[-1]["exit_code"] != 0 or checks[-1]["timed_out"]:
            roll_back(key, "verification failed", checks)
            return False
    if not checks and is_manual(key):
        work = manual_work_gate(key, WorkStage.verified)
        checks.append({"manual": work.note or "verified by hand", "confirmed_by": work.person, "ok": work.done})
        if not work.done:
            roll_back(key, f"verification failed: {work.note}", checks)
            return False
    post = run_phase(key, "post")
    if not post.ok:
        roll_back(key, f"post-checklist failed: {', '.join(post.failed_required)}", checks)
        return False
    # The specification's "monitor error rates for 2 hours", measured (issue 33): the change completes after it.
    watched = watch(key)
    if not watched.kept:
        roll_back(key, watched.reason, [*checks, watched.evidence], traffic_restored=watched.traffic_restored)
        return False
    rt.services.changes.transition(key, ChangeState.completed, actor="changeflow", reason="verified",
                                   data={"checks": checks, **watched.evidence})
    return True


def roll_back(key: str, why: str, evidence: list[dict], *, traffic_restored: bool = False) -> None:
    """Undo the change: its template's rollback commands, or a person's confirmed manual rollback. Nothing is
    recorded as rolled back that nobody undid (`traffic_restored`: the canary already sent all traffic to stable)."""
    rt = wiring()
    change = rt.services.changes.get(key)
    template = rt.services.rollbacks.template_for(change)
    rollback: list[dict] = []
    # A rollback a crash interrupted is not run again blindly either: a person says whether it completed,
    # unless the template declares its commands idempotent.
    interrupted = rt.services.recovery.rollback_interrupted(key, attempt=run_attempt())
    rerun = rerun_of(interrupted, bool(template and template.idempotent))
    commands = template.rollback_commands if template else []
    if commands and rerun is not Rerun.not_blindly:
        if rerun is Rerun.run_again:
            rt.services.recovery.record_rollback_retry(key)
        rt.services.recovery.begin_rollback(key, attempt=run_attempt())
        results = run_commands(commands, service=change.service, timeout_s=template.command_timeout_s)
        rollback = [r.evidence() for r in results]
        if not all(r.ok for r in results):
            # A rollback command that failed undid nothing we can vouch for: the change failed, not rolled back.
            last = results[-1]
            outcome = "timed out" if last.timed_out else f"exit {last.exit_code}"
            fail(key, f"{why}; the rollback failed: `{last.command}` ({outcome})", [*evidence, *rollback])
            return
    elif (interrupted or not traffic_restored) and \
            change.state in (ChangeState.implementing.value, ChangeState.verifying.value):
        work = manual_work_gate(key, WorkStage.rolled_back,
                                interrupted="the rollback commands" if interrupted else None)
        rollback = [{"manual": work.note or "rolled back by hand", "confirmed_by": work.person, "ok": work.done}]
        if not work.done:
            fail(key, f"{why}; the manual rollback failed: {work.note}", [*evidence, *rollback])
            return
    rt.services.changes.transition(key, ChangeState.rolled_back, actor="changeflow", reason=why,
                                   data={"evidence": evidence, "rollback": rollback},
                                   then=(ChangeState.review_pending, "rolled back: review due"))


def fail(key: str, why: str, evidence: list[dict]) -> None:
    """The change could not be carried out and nothing was undone (nothing to undo, or the undo itself failed)."""
    rt = wiring()
    rt.services.changes.transition(key, ChangeState.failed, actor="changeflow", reason=why, data={"evidence": evidence},
                                   then=(ChangeState.review_pending, "failed: review due"))


@task(name="close")
def close(key: str) -> str:
    services = wiring().services
    change = services.changes.get(key)
    if change.state == ChangeState.completed.value:
        target = ChangeState.review_pending if services.rules(change).always_reviewed else ChangeState.closed
        change = services.changes.transition(key, target, actor="changeflow",
                                    reason="post-implementation review due" if target is ChangeState.review_pending
                                    else "completed")
    return change.state


def service_reason(key: str, to_state: str | None = None) -> str:
    """The reason of the change's last transition (into `to_state`, when given): what the requester is told."""
    events = wiring().services.changes.view(key).events
    return next((e.data.get("reason", "") for e in reversed(events)
                 if e.action == "transition" and to_state in (None, e.to_state)), "")


def outcome_reason(key: str, outcome: str | None) -> str:
    """Why the change ended as it did: its outcome and the reason of the transition that recorded it."""
    if not outcome:
        return "not implemented"
    reason = service_reason(key, outcome)
    return f"{outcome.replace('_', ' ')}: {reason}" if reason else outcome.replace("_", " ")


def approved_and_due(key: str) -> ChangeRequest:
    """Approval, then (for a scheduled type) the window. An amendment sends an approved or scheduled change back
    to approval in a new round, so this loops until the change may start or has ended."""
    while True:
        notify_approvers(key)  # once per round (the outbox is keyed by it)
        change = approval_gate(key)
        if ChangeState(change.state) in FINISHED:
            return change
        announce(key, "approved")
        if wiring().services.rules(change).scheduled:
            change = wait_for_window(key)
        if change.state != ChangeState.awaiting_approval.value:
            return change


def see_through(key: str) -> None:
    """The change from its filing to the end of its run: confirmed, approved, due, checked, implemented, closed."""
    trace_change(key)  # JSON logs carry it from here on
    filed = filing_gate(key)
    if ChangeState(filed.state) in FINISHED:  # cancelled unconfirmed, or withdrawn: only its requester hears
        tell_the_requester(key, "filing_cancelled", service_reason(key))
        return
    while True:
        change = approved_and_due(key)
        if change.state == ChangeState.cancelled.value and change.approved_at is not None:
            # Approved, then called off at its window (a clash, a withdrawal, its run cancelled).
            announce(key, "change_failed", reason=service_reason(key))
            return
        if ChangeState(change.state) in FINISHED:
            announce(key, change.state)
            return
        pre = run_phase(key, "pre")
        if not pre.ok:
            # Nothing has been touched yet: the change stops here.
            rt = wiring()
            if rt.services.changes.get(key).state in (ChangeState.approved.value, ChangeState.scheduled.value):
                rt.services.changes.transition(key, ChangeState.cancelled, actor="changeflow",
                                               reason=f"pre-checklist failed: {', '.join(pre.failed_required)}")
            announce(key, "change_failed", reason=f"pre-checklist failed: {', '.join(pre.failed_required)}")
            return
        aborted = wiring().services.recovery.abort_reason(key)
        if aborted is not None:
            # Its run was cancelled while the change was implemented (the UI's Cancel, issue 32): the sweep sent
            # its canary back to stable and started the run again to undo the change, not to carry it on.
            roll_back(key, aborted, [], traffic_restored=wiring().services.canary.plan(change) is not None)
            break
        announce(key, "change_started")
        publish_runbook(key)
        if implement(key):
            verify(key)
        if wiring().services.changes.get(key).state != ChangeState.awaiting_approval.value:
            break  # (amended while it waited: approved again from the top)
    # The recorded outcome, not this run's return values, decides: a re-run of a finished change repeats
    # the same announcement (a no-op in the outbox) instead of inventing a failure.
    outcome = wiring().services.changes.get(key).outcome
    if outcome == "succeeded":
        announce(key, "change_completed")
    else:
        announce(key, "change_failed", reason=outcome_reason(key, outcome))
    close(key)


# The form's fields are checked in the body, not by Prefect before it: a date range out of order or out of
# bounds failed parameter validation, a red Failed run with a traceback (issue 30); the services refuse it by name.
@flow(name="change-request", log_prints=True, validate_parameters=False)
@heartbeating
def change_request(request: ChangeRequestForm) -> State:
    """File a change request: it is recorded, approved by the people its policy names, and implemented."""
    run_id = str(flow_run.id)
    services = wiring().services
    if services.changes.find_by_idempotency_key(f"flow-run:{run_id}") is None:
        problem = services.changes.refusal(request)
        if problem is not None:
            # Bad input ends the run Refused with the field-named reason, never with a traceback; nothing is written.
            get_run_logger().error("change request refused: %s", problem)
            return final_state(REFUSED, f"change request refused: {problem}")
    key = record_change(request, run_id)
    see_through(key)
    return run_ended(key)


if __name__ == "__main__":
    change_request.serve(name="submit")
