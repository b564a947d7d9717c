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
from uuid import UUID

from prefect import get_client
from prefect.states import Scheduled

from flows._runtime import runtime
from flows.traffic import RouterError
from models import MAX_AUTOMATIC_RESTARTS, ChangeState, responsible

DEAD = {"CRASHED", "FAILED"}


async def _run(flow_run_id: str):
    async with get_client() as client:
        return await client.read_flow_run(UUID(flow_run_id))


async def _restart(flow_run_id: str) -> None:
    """Retry, as the UI's Retry button would: the run starts again from the top on a free worker."""
    async with get_client() as client:
        await client.set_flow_run_state(UUID(flow_run_id), Scheduled(message="restarted by changeflow after a crash"),
                                        force=True)


def reconcile_crashed_runs() -> dict:
    """Every change being implemented whose run is Crashed or Failed: record the crash once, send a canary back
    to stable, tell the people on call, and restart the run (at most MAX_AUTOMATIC_RESTARTS times)."""
    rt = runtime()
    services = rt.services
    restarted = aborted = left = 0
    for state in (ChangeState.implementing, ChangeState.verifying):
        for change in services.changes.list_changes(state=state, limit=1000):
            if not change.flow_run_id:
                continue
            run = asyncio.run(_run(change.flow_run_id))
            if run.state is None or run.state.type.value not in DEAD:
                continue
            crash = services.recovery.record_crash(
                change.key, run_id=change.flow_run_id, run_state=run.state.name,
                message=run.state.message or "", since=run.state.timestamp.isoformat())
            if crash is None:
                continue  # this crash was handled by an earlier sweep
            if abort_canary(change):
                aborted += 1
            again = crash.number <= MAX_AUTOMATIC_RESTARTS
            reason = (f"its flow run {run.state.name.lower()} while {change.state} "
                      f"({crash.message or 'no message'}); " +
                      (f"restarted ({crash.number} of {MAX_AUTOMATIC_RESTARTS})" if again
                       else "left for a person: press Retry on the run after checking the service"))
            ladder = services.rules(change).ladder
            on_call = services.org.directory.holders(ladder[0].role) if ladder else []
            rt.notifier.announce(change, "run_crashed", sorted({*responsible(change, services.org.directory),
                                                                *on_call}),
                                 round_=f"crash-{crash.number}", reason=reason)
            if again:
                asyncio.run(_restart(change.flow_run_id))
                restarted += 1
            else:
                left += 1
    return {"restarted": restarted, "canaries_aborted": aborted, "left_for_a_person": left}


def abort_canary(change) -> bool:
    """A canary whose run died goes back to stable now (Argo: a rollout whose controller died is continued or
    aborted, never left half-way); the restarted run sees the abort and rolls the change back."""
    services = runtime().services
    plan = services.canary.plan(change)
    if plan is None or services.recovery.canary_aborted(change.key):
        return False
    decided = services.canary.decisions(change.key)
    if decided and decided[max(decided)].get("action") == "promote":
        return False
    from flows.canary import router_of

    reason = "its run died during the rollout: all traffic sent back to the stable version"
    try:
        _, router = router_of(change, plan)
        router.set_weight(0)
    except RouterError as exc:
        reason += f" (setting the weight to 0 failed: {exc}; check the router)"
    services.recovery.abort_canary(change.key, reason)
    return True
