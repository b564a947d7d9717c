"""The sweep (every minute): reminders up the ladder, expiry past the SLA, runs cancelled in the UI reconciled,
nudges for runs that can continue, filings nobody confirmed cancelled, crashed and stuck runs restarted,
post-implementation review reminders, audit checkpoints, and delivery of what the outbox holds.

Its Prefect flow keeps the name it was first deployed under, `approval-escalation` (deployment `every-minute`):
a server kept from an earlier `changeflow up` would otherwise hold the old deployment beside the new one, two
sweeps a minute, one of them pointing at a file that is gone."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from prefect import flow, get_run_logger
from prefect.exceptions import ObjectNotFound
from prefect.states import Completed, State

from models import (ChangeflowError, ChangeState, due_escalations, format_wait, requester_and, responsible, rungs_due,
                    run_ending, sla_passed, utcnow)

from flows._heartbeat import heartbeating
from flows._prefect_api import ResumeRefused, cancel, cancelled_runs, paused_keys, resume_with_input
from flows._anchors import anchor_checkpoint
from flows._change_page import publish_change_page
from flows._pause_key import GateKind, PauseKey
from flows.review import REVIEW_FLOW
from flows._recovery import (canary_to_stable, reconcile_crashed_runs, replace_stuck_runs, runs_the_change_flow,
                             undo_after_cancel, worker_let_go_of)
from flows._wiring import wiring

REVIEW_REMINDER_LEAD = timedelta(hours=24)


def escalate_and_expire(page: int = 500) -> dict:
    """The changes whose next rung or SLA end has come (an indexed read: the cost follows the changes due, not
    every change waiting); each is handled, then its next moment stored."""
    rt = wiring()
    services, notifier = rt.services, rt.notifier
    now = utcnow()
    reminded = expired = 0
    handled: set[int | None] = set()
    # Each change once per sweep, even should its stored moment not move (a concurrent write won the update).
    while due := [c for c in services.approvals.due_for_escalation(now, limit=page) if c.id not in handled]:
        for change in due:
            handled.add(change.id)
            if change.approval_requested_at is None:
                services.approvals.escalation_handled(change, now)
                continue
            # Every rung whose delay has passed is written once (the outbox key holds the rung), then the SLA
            # decides: a P1 whose one-hour SLA ran out has still reached the executive.
            waited = format_wait(now - change.approval_requested_at)
            ladder = list(services.rules(change).ladder)  # each change type may have its own (policies.yaml)
            for rung in due_escalations(change.approval_requested_at, now, ladder, change.incident_severity):
                people = [p for p in services.org.directory.holders(rung.step.role) if p != change.requester]
                reminded += notifier.remind(change, level=f"L{rung.level}-{rung.step.role}", people=people,
                                            role=rung.step.role, waited=waited)
            sla = services.approvals.approval_sla(change)
            if sla_passed(change.approval_requested_at, now, sla):
                expire(change, sla)
                expired += 1
            services.approvals.escalation_handled(change, now)
        if len(due) < page:
            break
    return {"reminded": reminded, "expired": expired}


def expire(change, sla) -> None:
    rt = wiring()
    services, notifier = rt.services, rt.notifier
    change = services.changes.transition(change.key, ChangeState.expired, actor="approval-escalation",
                                         reason=f"no decision within the approval SLA ({format_wait(sla)})")
    people = requester_and(change, services.org.directory, notifier.approvers_to_ask(change))
    notifier.announce(change, "expired", people, reason="No decision within the approval SLA.")
    if change.flow_run_id:
        asyncio.run(cancel(change.flow_run_id, f"{change.key} expired: approval SLA passed",
                           name=run_ending(ChangeState.expired, None).name))
        # Its run waited suspended (no process to write it): the change's page says what became of it.
        publish_change_page(change.key, run_id=change.flow_run_id)


def checklist_deadline_passed(change, pause_key: PauseKey) -> bool:
    """A manual checklist item of the waiting phase is past its timeout: the run must record it as failed."""
    phase, _, step = pause_key.gate.partition("-")
    services = wiring().services
    checklist = services.org.checklist_of(change)
    if checklist is None:
        return False
    done = {r.item_id for r in services.checklists.check_results(change.key, phase=phase, step=int(step))}
    since = services.checklists.phase_waiting_since(change.key, phase, int(step))
    return any(i.kind == "manual" and i.id not in done and utcnow() >= since + timedelta(seconds=i.timeout_s)
               for i in checklist.items(phase))


def cancel_changes_of_cancelled_runs() -> int:
    """Someone cancelled a change's run in the Prefect UI (a suspended run has no process to run a hook): a
    change not yet implemented is cancelled too, instead of staying `scheduled` and blocking its slot; a change
    being implemented is undone (issue 32: it stayed `implementing` for ever, its canary at its weight): its canary
    goes back to stable at once, and its run is started again only to roll it back. Read from Prefect's cancelled
    runs, so the cost follows the cancellations, not the open changes."""
    services = wiring().services
    cancelled = 0
    for run_id, (run_state, since) in asyncio.run(cancelled_runs()).items():
        change = services.changes.find_by_flow_run(run_id)
        if change is None:
            continue
        if change.state in (ChangeState.implementing, ChangeState.verifying):
            # Only once Cancelled: while Cancelling, its process may still run (the worker has yet to stop it).
            # Only a change-request run: a maintenance window's run would carry on with its activities if started
            # again (it has no undo), so a window cancelled mid-way is left to a person.
            # Recorded once per cancellation; the restart is taken up whenever the run is still Cancelled, so a
            # sweep that died between the two leaves it to the next sweep (a restarted run is Cancelled no more).
            if run_state == "CANCELLED" and runs_the_change_flow(run_id):
                services.recovery.record_cancelled_run(change.key, run_id=run_id, since=since)
                if worker_let_go_of(run_id, cancelled_at=datetime.fromisoformat(since)):
                    undo_after_cancel(change, run_id)
                    cancelled += 1
                else:
                    canary_to_stable(change)  # the traffic now; the run once its worker has let go of it
        elif change.state in (ChangeState.awaiting_approval, ChangeState.approved, ChangeState.scheduled):
            if services.amendments.cancel_for_cancelled_run(change.key, run_state):
                cancelled += 1
                publish_change_page(change.key, run_id=run_id)  # its run has no process left to write it
    return cancelled


def nudge_runs_that_can_continue() -> int:
    """Resume suspended runs whose change moved on without them (a CLI decision, an opened window)."""
    rt = wiring()
    services = rt.services
    nudged = 0
    candidates = []
    for state in (ChangeState.approved, ChangeState.rejected, ChangeState.scheduled, ChangeState.implementing,
                  ChangeState.verifying):
        candidates += services.changes.all_in_state(state)
    # A filing confirmed on the CLI whose nudge was lost: its run still waits at the filing gate. Only changes
    # asked for approval lately (a run at the filing gate of an older one was nudged by an earlier sweep).
    lately = utcnow() - services.org.policies.confirm_filing_within
    candidates += [c for c in services.changes.all_in_state(ChangeState.awaiting_approval)
                   if c.approval_requested_at is not None and c.approval_requested_at >= lately]
    # One read of Prefect per page of runs, not one per change.
    paused = asyncio.run(paused_keys([c.flow_run_id for c in candidates if c.flow_run_id]))
    for change in candidates:
        key = PauseKey.parse(paused.get(change.flow_run_id or ""))
        if key is None:
            continue
        if key.kind is GateKind.window:
            # Only when the window gate would let it start anyway: the nudge authorises nothing.
            if not services.scheduling.start_check(change.key).may_start:
                continue
        elif key.kind is GateKind.checklist:
            if not checklist_deadline_passed(change, key):
                continue
        elif key.kind is GateKind.canary:
            # A canary nobody answered: past its gate's deadline the run rolls it back (fail-safe); the flow
            # checks the deadline itself.
            if utcnow() < services.canary.gate_deadline(change.key, key.gate_name):
                continue
        elif key.kind not in (GateKind.approval, GateKind.filing):
            continue
        elif key.kind is GateKind.approval and change.state == ChangeState.awaiting_approval.value:
            continue  # still waiting for decisions
        # A bare "look again", never a code or a decision: each gate re-reads the record (the decision that moved
        # the change was recorded by the services) and authorises nothing from an empty resume.
        try:
            asyncio.run(resume_with_input(change.flow_run_id, None))
            nudged += 1
        except ResumeRefused:
            pass
    return nudged


def cancel_unconfirmed_filings() -> int:
    """A change its requester never confirmed filing (policies.yaml `confirm_filing_within`) is cancelled: filed
    in someone else's name, or abandoned; its run, waiting at the filing gate, is nudged to end."""
    services = wiring().services
    within = services.org.policies.confirm_filing_within
    cancelled = 0
    for change in services.changes.all_in_state(ChangeState.submitted):
        if utcnow() - change.created_at < within:
            continue
        try:
            change = services.changes.transition(
                change.key, ChangeState.cancelled, actor="changeflow",
                reason=f"its requester, {change.requester}, did not confirm the filing within {within}")
        except ChangeflowError:
            continue  # confirmed meanwhile
        cancelled += 1
        if change.flow_run_id:
            try:
                asyncio.run(resume_with_input(change.flow_run_id, None))
            except ResumeRefused:
                pass  # not suspended just now: the gate sees the cancellation when it looks again
    return cancelled


async def waiting_review_runs() -> dict[str, str]:
    """The `change-review` runs waiting at their gate (hot or suspended): run id -> the change key they review."""
    from prefect import get_client
    from prefect.client.schemas.filters import (FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterState,
                                                FlowRunFilterStateType)
    from prefect.client.schemas.objects import StateType

    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[REVIEW_FLOW])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(
                any_=[StateType.PAUSED]))), limit=200)
    return {str(run.id): str(run.parameters.get("change", "")) for run in runs}


def nudge_review_runs() -> int:
    """A review recorded by `changeflow review` while a review run waited in the UI: the run is resumed bare, sees
    the change closed and ends (it authorises nothing: the gate reads the record)."""
    services = wiring().services
    nudged = 0
    for run_id, key in asyncio.run(waiting_review_runs()).items():
        try:
            closed = services.changes.get(key).state == ChangeState.closed
        except ChangeflowError:
            continue
        if closed:
            try:
                asyncio.run(resume_with_input(run_id, None))
                nudged += 1
            except ResumeRefused:
                pass  # between a hot wait and its suspension: the next sweep
    return nudged


def remind_reviews() -> int:
    rt = wiring()
    services, notifier = rt.services, rt.notifier
    now = utcnow()
    written = 0
    for change in services.changes.list_changes(state=ChangeState.review_pending, limit=1000):
        if change.review_due_at is None or change.review_due_at - now > REVIEW_REMINDER_LEAD:
            continue
        people = responsible(change, services.org.directory)
        stage = "overdue" if change.review_due_at <= now else "due"
        # With the code of the review act: `changeflow review` and the review run's Resume form both ask for it.
        written += notifier.announce(change, "review_due", people, round_=stage, deadline=change.review_due_at,
                                     personal_code=True)
        # Overdue: up policies.yaml `follow_ups.escalation`, once per rung (the outbox's key holds the round).
        for rung in services.reviews.review_rungs(change, people):
            if rung.level:
                written += notifier.announce(change, "review_overdue", [p for p in rung.people if p not in people],
                                             round_=f"overdue-{rung.level}", deadline=change.review_due_at,
                                             extra={"rung": rung.level, "reviewers": ", ".join(people)})
    return written


def escalate_manual_work() -> int:
    """Manual work nobody confirmed (issue 33): past each step of policies.yaml `manual_work.escalation`, its
    implementers are told again (with their code for it) and the step's role holders told it waits, once a rung."""
    rt = wiring()
    services, notifier = rt.services, rt.notifier
    ladder, now = services.org.policies.manual_work.escalation, utcnow()
    written = 0
    for waiting in services.work.unanswered():
        change, stage = waiting.change, waiting.stage.value.replace("_", " ")
        for rung in rungs_due(waiting.asked_at, now, waiting.implementers, ladder, services.org.directory, 0):
            round_ = f"{change.approval_round}:{waiting.stage.value}:{waiting.step or ''}:rung{rung.level}"
            extra = {"stage": stage, "rung": rung.level, "asked_at": waiting.asked_at.strftime("%Y-%m-%d %H:%M UTC"),
                     "implementers": ", ".join(waiting.implementers)}
            written += notifier.announce(change, "work_overdue", waiting.implementers, round_=round_,
                                         extra=extra, personal_code=True)
            written += notifier.announce(change, "work_overdue", [p for p in rung.people
                                                                  if p not in waiting.implementers],
                                         round_=round_, extra=extra)
    return written


def remind_action_items() -> int:
    """Each open action item fallen due: its owner told (with their code for closing it), then, while it stays
    open, each rung of policies.yaml `follow_ups.escalation` (issue 33). Enqueued first, then marked: a crash in
    between repeats nothing (the outbox's key holds the item and the rung)."""
    rt = wiring()
    services, notifier = rt.services, rt.notifier
    written = 0
    for reminder in services.reviews.reminders_due():
        item, rung = reminder.item, reminder.rung
        change = services.changes.get(item.change_key)
        for person in rung.people:
            written += notifier.announce(change, "action_item_due", [person], round_=f"item-{item.number}-{rung.level}",
                                         deadline=item.due_at, personal_code=person == item.owner,
                                         extra={"number": item.number, "what": item.what, "owner": item.owner,
                                                "rung": rung.level})
        services.reviews.reminded(item.id or 0, rung.level)
    return written


NOTHING_DUE = "Nothing due"
SWEEP_FLOW = "approval-escalation"


def found_nothing_due(summary: dict) -> bool:
    """Nothing reminded, expired, cancelled, restarted, nudged, signed or sent: every count 0, no checkpoint."""
    return not any(summary.values())


async def forget_idle_sweeps(ended_before: datetime) -> int:
    """Delete the sweep runs named `Nothing due` that ended before `ended_before` (the Runs list keeps the runs
    that did something); returns how many."""
    from prefect import get_client
    from prefect.client.schemas.filters import (FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterEndTime,
                                                FlowRunFilterState, FlowRunFilterStateName)

    async with get_client() as client:
        idle = await client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[SWEEP_FLOW])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(name=FlowRunFilterStateName(any_=[NOTHING_DUE])),
                                          end_time=FlowRunFilterEndTime(before_=ended_before)),
            limit=200)
        for run in idle:
            try:
                await client.delete_flow_run(run.id)
            except ObjectNotFound:
                pass  # another sweep deleted it first
    return len(idle)


@flow(name=SWEEP_FLOW, log_prints=True)
@heartbeating
def sweep() -> dict | State:
    logger = get_run_logger()
    summary = escalate_and_expire()
    summary["cancelled"] = cancel_changes_of_cancelled_runs()
    summary["unconfirmed_cancelled"] = cancel_unconfirmed_filings()
    summary.update(replace_stuck_runs())
    summary.update(reconcile_crashed_runs())
    summary["nudged"] = nudge_runs_that_can_continue() + nudge_review_runs()
    summary["review_reminders"] = remind_reviews()
    summary["action_item_reminders"] = remind_action_items()
    summary["manual_work_escalations"] = escalate_manual_work()
    # A policy version the trail does not hold yet is recorded with its diff (issue 34): the sweep runs on the
    # deployed config every minute, so a changed policies.yaml is on the record before or as it governs a change;
    # one that waits for its change request (policies.yaml `policy_changes`) is said, not recorded.
    policy_log = wiring().services.policy_log
    policy_log.record_loaded("approval-escalation (sweep)")
    if (in_force := policy_log.in_force()).pending:
        logger.warning(in_force.describe())
    checkpoint = anchor_checkpoint()
    summary["checkpoint"] = checkpoint.seq if checkpoint else None
    report = wiring().notifier.deliver()
    summary.update(sent=report.sent, failed=report.failed)
    logger.info("escalation sweep: %s", summary)
    kept = timedelta(seconds=wiring().settings.sweep_idle_runs_kept_s)
    asyncio.run(forget_idle_sweeps(ended_before=utcnow() - kept))
    if found_nothing_due(summary):
        # Completed (green) under its own name, so a later sweep can tell it from one that did something.
        return Completed(name=NOTHING_DUE, message="nothing was due")
    return summary
