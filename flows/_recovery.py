"""Runs that died: found by the escalation sweep, recorded, told to the people on call, and restarted where that
is safe. Prefect marks a run Crashed when its process dies (and, with flow heartbeats on and the zombie
automation `changeflow up` installs, when its machine goes silent); nothing in changeflow waits for a person to
press Retry.

What a restarted run does is decided by what the change database holds: finished steps are not run again, an
interrupted step (started, never finished) is put to a person ("outcome unknown: done or failed?") unless its
template declares its steps idempotent, and a canary whose run died has already been sent back to stable here.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from uuid import UUID

from prefect import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterEndTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventRelatedFilter
from prefect.states import Cancelled, Crashed, Scheduled

from flows._wiring import wiring
from flows.traffic import RouterError
from models import MAX_AUTOMATIC_RESTARTS, ChangeState, ConfigError, responsible_and_on_call, utcnow

DEAD = [StateType.CRASHED, StateType.FAILED]
# Dead runs are read back this far: a sweep that was down for days still finds the crashes it missed.
LOOK_BACK = timedelta(days=7)
PAGE = 200
SWEEP_FLOW = "approval-escalation"
# A run of this flow files its change first; one that died before that has no change to restart it by.
FILING_FLOW = "change-request"
RESTART_MESSAGE = "started again by changeflow"
# A worker's last act for a run it executed, after its own report of how the run's process exited.
WORKER_DONE_EVENT = "prefect.worker.executed-flow-run"
# Runs in these states still have work to do; a run that died there is started again. `completed`: the run
# closes it (or opens its review) next; a run killed between the two left it `completed` for ever
# (tests/e2e/test_distributed.py found it). `failed` / `rolled_back` are not here: a change enters them and
# `review_pending` in one transaction (ChangeService.transition's `then`), so no run dies between the two.
UNFINISHED = {ChangeState.submitted, ChangeState.awaiting_approval, ChangeState.approved, ChangeState.scheduled,
              ChangeState.implementing, ChangeState.verifying, ChangeState.completed}


async def _runs_in(states: list[StateType], ended_after=None) -> list[FlowRun]:
    run_filter = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=states)),
                               end_time=FlowRunFilterEndTime(after_=ended_after) if ended_after else None)
    found: list[FlowRun] = []
    async with get_client() as client:
        while page := await client.read_flow_runs(flow_run_filter=run_filter, limit=PAGE, offset=len(found)):
            found += page
            if len(page) < PAGE:
                break
    return found


async def _set_state(flow_run_id: UUID, state) -> None:
    async with get_client() as client:
        await client.set_flow_run_state(flow_run_id, state, force=True)


async def _flow_name(flow_id: UUID) -> str:
    async with get_client() as client:
        return (await client.read_flow(flow_id)).name


async def _restarts_by_changeflow(flow_run_id: UUID) -> int:
    """How often changeflow has put this run back to Scheduled: read from the run's own state history, as a run
    that never filed its change has no change record to count its crashes in."""
    async with get_client() as client:
        states = await client.read_flow_run_states(flow_run_id)
    return sum(1 for state in states
               if state.type == StateType.SCHEDULED and (state.message or "").startswith(RESTART_MESSAGE))


def start_again(run: FlowRun, why: str) -> bool:
    """Put a run that has no change record to restart it by back to Scheduled, at most MAX_AUTOMATIC_RESTARTS
    times (counted in the run's own history); past that it is left for a person (the UI's Retry)."""
    if asyncio.run(_restarts_by_changeflow(run.id)) >= MAX_AUTOMATIC_RESTARTS:
        return False
    asyncio.run(_set_state(run.id, Scheduled(message=f"{RESTART_MESSAGE}: {why}")))
    return True


def replace_stuck_runs(stuck_after: timedelta | None = None) -> dict:
    """Runs left Pending by a worker that died while starting them. A sweep run is cancelled (the next sweep,
    a minute later, does its work); a change's run is marked Crashed, so reconcile_crashed_runs records,
    announces and restarts it like any other crash; a run that never filed its change simply starts again."""
    # A worker sets Pending when it claims a run and Running once the run's process starts (seconds, a minute on
    # a loaded machine); a run still Pending after the bound never started: its worker died picking it up.
    stuck_after = stuck_after or timedelta(seconds=wiring().settings.stuck_pending_after_s)
    cancelled = crashed = rescheduled = 0
    now = utcnow()
    for run in asyncio.run(_runs_in([StateType.PENDING])):
        if run.state is None or now - run.state.timestamp < stuck_after:
            continue
        minutes = (now - run.state.timestamp).total_seconds() / 60
        why = f"stuck Pending for {minutes:.0f} min: its worker died before the run's process started"
        if asyncio.run(_flow_name(run.flow_id)) == SWEEP_FLOW:
            asyncio.run(_set_state(run.id, Cancelled(message=f"{why}; the next sweep does its work")))
            cancelled += 1
        elif wiring().services.changes.find_by_flow_run(str(run.id)) is not None:
            asyncio.run(_set_state(run.id, Crashed(message=why)))
            crashed += 1
        elif start_again(run, why):
            rescheduled += 1
    return {"stuck_sweeps_cancelled": cancelled, "stuck_runs_crashed": crashed, "stuck_runs_restarted": rescheduled}


def reconcile_crashed_runs() -> dict:
    """Every run that died (Crashed or Failed) while its change had work left: record the crash once, send a
    canary back to stable, tell the people on call, and restart the run (at most MAX_AUTOMATIC_RESTARTS times).
    The runs are read from Prefect's dead runs, so the cost follows the crashes, not the open changes."""
    rt = wiring()
    services = rt.services
    restarted = aborted = left = unfiled = settling = 0
    settled_before = utcnow() - timedelta(seconds=rt.settings.crash_settle_s)
    for run in asyncio.run(_runs_in(DEAD, ended_after=utcnow() - LOOK_BACK)):
        if run.state is not None and run.state.timestamp > settled_before:
            settling += 1  # its infrastructure may still be reporting it: the next sweep takes it
            continue
        change = services.changes.find_by_flow_run(str(run.id))
        if change is None and run.state is not None and run.state.type == StateType.CRASHED:
            # A change request whose run died before filing it (its worker killed while the run started): nothing
            # in changeflow knows of the request, so nothing else would start it again and the requester's change
            # would be lost. Filing is idempotent by run id. (A Failed run that filed nothing failed in
            # changeflow's own code: starting it again would only repeat that.)
            if asyncio.run(_flow_name(run.flow_id)) == FILING_FLOW:
                unfiled += start_again(run, f"its run crashed before filing its change ({run.state.message})")
            continue
        if change is None or change.state not in UNFINISHED or run.state is None:
            continue
        crash = services.recovery.record_crash(
            change.key, run_id=str(run.id), run_state=run.state.name,
            message=run.state.message or "", since=run.state.timestamp.isoformat())
        if crash is None:
            continue  # this crash was handled by an earlier sweep
        if abort_canary(change, crash.number):
            aborted += 1
        again = crash.number <= MAX_AUTOMATIC_RESTARTS
        reason = (f"its flow run {run.state.name.lower()} while {change.state} "
                  f"({crash.message or 'no message'}); " +
                  (f"restarted ({crash.number} of {MAX_AUTOMATIC_RESTARTS})" if again
                   else "left for a person: press Retry on the run after checking the service"))
        told = responsible_and_on_call(change, services.org.directory, services.org.policies.on_call_role)
        rt.notifier.announce(change, "run_crashed", told, round_=f"crash-{crash.number}", reason=reason)
        if again:
            # As the UI's Retry button would: the run starts again from the top on a free worker.
            asyncio.run(_set_state(run.id, Scheduled(message="restarted by changeflow after a crash")))
            restarted += 1
        else:
            left += 1
    return {"restarted": restarted, "canaries_aborted": aborted, "left_for_a_person": left,
            "unfiled_runs_restarted": unfiled, "settling": settling}


def abort_canary(change, crash: int) -> bool:
    """A canary whose run died goes back to stable now (Argo: a rollout whose controller died is continued or
    aborted, never left half-way); the restarted run takes the abort up: it resumes the step it was in, or rolls
    the change back (canary.yaml `resume_after_crash`)."""
    services = wiring().services
    plan = services.canary.plan(change)
    if plan is None or services.recovery.canary_abort_to_take_up(change.key) is not None:
        return False  # no canary, or already on stable since its last run died
    decided = services.canary.decisions(change.key)
    if decided and decided[max(decided)].get("action") == "promote":
        return False
    reason = "its run died during the rollout: all traffic sent back to the stable version" + canary_to_stable(change)
    services.recovery.abort_canary(change.key, reason, crash=crash)
    return True


def canary_to_stable(change) -> str:
    """Send all of a change's canary traffic back to the stable version now; what went wrong doing so, or ""."""
    from flows.canary import router_of

    plan = wiring().services.canary.plan(change)
    if plan is None:
        return ""
    try:
        _, router = router_of(change, plan)
        router.set_weight(0)
    except RouterError as exc:
        return f" (setting the weight to 0 failed: {exc}; check the router)"
    except ConfigError as exc:
        # canary.yaml no longer names the service's router (edited while the change ran): the sweep goes on with
        # its other work and says so, rather than failing for every change behind this one (clean-clone CI run,
        # 2026-12-06: one such change failed every later sweep).
        return f" (no router to set the weight to 0: {exc}; check the traffic by hand)"
    return ""


def runs_the_change_flow(run_id: str) -> bool:
    """Whether the run is of the change-request flow, the one that knows how to undo its change on a restart."""
    async def flow_of_run() -> str:
        async with get_client() as client:
            run = await client.read_flow_run(UUID(run_id))
            return (await client.read_flow(run.flow_id)).name

    return asyncio.run(flow_of_run()) == FILING_FLOW


def worker_let_go_of(run_id: str, cancelled_at: datetime) -> bool:
    """Whether a run stopped by its worker may be started again: its worker reported it is done with the run's
    process, or the run has been Cancelled for CHANGEFLOW_STOPPED_RUN_REPORT_WAIT_S without that report. Prefect
    3.9's worker reports the stopped process's exit ('status code -15') after the run is Cancelled; a restart made
    before that report was overwritten by it and the run ended Crashed (clean-clone CI run 25, 2026-12-06). Never
    sooner than CHANGEFLOW_STOPPED_RUN_RESTART_AFTER_S: a worker may still be handed the cancel's event again, and
    it would stop the restarted process (the setting says why)."""
    settings = wiring().settings
    cancelled_for = utcnow() - cancelled_at
    if cancelled_for < timedelta(seconds=settings.stopped_run_restart_after_s):
        return False
    if cancelled_for >= timedelta(seconds=settings.stopped_run_report_wait_s):
        return True

    async def reported() -> bool:
        async with get_client() as client:
            states = await client.read_flow_run_states(UUID(run_id))
            attempts = [s.timestamp for s in states if s.type == StateType.RUNNING]
            if not attempts:
                return True  # it never ran: no process to report on
            page = await client.read_events(EventFilter(
                occurred=EventOccurredFilter(since=max(attempts)),  # this attempt's, not an earlier one's
                event=EventNameFilter(name=[WORKER_DONE_EVENT]),
                related=EventRelatedFilter(id=[f"prefect.flow-run.{run_id}"])), limit=1)
            return bool(page.events)

    return asyncio.run(reported())


def undo_after_cancel(change, run_id: str) -> None:
    """A change's run cancelled while the change was implemented (the UI's Cancel): its canary goes back to stable
    now, and the run is started again, only to roll the change back (the flow reads the cancellation on the
    record, `RecoveryService.abort_reason`); the rollback is the flow's, with its own records and its gates."""
    trouble = canary_to_stable(change)
    asyncio.run(_set_state(UUID(run_id), Scheduled(
        message=f"{RESTART_MESSAGE}: cancelled while {change.state}, started again only to undo the change{trouble}")))
