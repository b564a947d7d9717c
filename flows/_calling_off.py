"""Calling a change off ends its Prefect run: cancelled before implementation (it only waited at a gate), stopped
during it (the sweep then starts it again only to roll the change back). Shared by `changeflow cancel` / `abort`
and the pipeline API; the decision itself is the services' (`AmendmentService`)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from models import ChangeRequest


@dataclass(frozen=True)
class Stopped:
    """What stopping a change's run did."""

    run: bool  # False: Prefect could not be reached (the person is told to press Cancel)
    traffic: str  # what became of a canary's traffic: "back on stable", what went wrong, or "" (no canary)

    def __bool__(self) -> bool:
        return self.run


def stop_run(change: ChangeRequest, message: str) -> Stopped:
    """Stop a running change's run as the UI's Cancel does, and send its canary's traffic back to stable at once
    (even when Prefect could not be reached)."""
    stopped = False
    if change.flow_run_id:
        from flows._prefect_api import stop

        try:
            asyncio.run(stop(change.flow_run_id, message))
            stopped = True
        except Exception:  # noqa: BLE001 - the abort is on the record; the person is told to press Cancel instead
            pass
    # Whoever stops a rollout (`abort`, a lockdown) wants the canary out now, not at the next sweep (issue 32:
    # weight 0 within one bake interval; benchmarks/abort_reaction.py). After the stop, so the dying run takes no
    # further step; should it still start one, its step first finds the abort and rolls back
    # (flows/canary.py::hold_while_locked_down), and the sweep sends 0 again once the run is gone.
    if not change.canary:
        return Stopped(stopped, "")
    from flows._recovery import canary_to_stable

    try:
        trouble = canary_to_stable(change)
    except Exception as exc:  # noqa: BLE001 - the abort is recorded: the sweep sends the traffic back in any case
        trouble = f" ({type(exc).__name__}: {exc})"
    if trouble:
        logging.getLogger("changeflow.abort").warning("%s: traffic not sent back to stable%s", change.key, trouble)
    return Stopped(stopped, trouble.strip(" ()") or "back on stable")


def cancel_run(change: ChangeRequest, message: str) -> bool:
    """Cancel the change's Prefect run so it stops waiting at its gate; False when Prefect could not be reached
    (the change is cancelled anyway: its run then finds it cancelled at its next resume)."""
    if not change.flow_run_id:
        return False
    from flows._prefect_api import cancel

    try:
        asyncio.run(cancel(change.flow_run_id, message))
    except Exception:  # noqa: BLE001 - the change's record is what counts; the run is housekeeping
        return False
    return True


def end_run_of(change: ChangeRequest, *, aborted: bool, message: str) -> bool:
    """Stop (aborted) or cancel (withdrawn) the change's run; False when Prefect could not be reached."""
    return bool(stop_run(change, message)) if aborted else cancel_run(change, message)
