"""Calling a change off ends its Prefect run: cancelled before implementation (it only waited at a gate), stopped
during it (the sweep then starts it again only to roll the change back). Shared by `changeflow cancel` / `abort`
and the pipeline API; the decision itself is the services' (`AmendmentService`)."""

from __future__ import annotations

import asyncio

from models import ChangeRequest


def stop_run(change: ChangeRequest, message: str) -> bool:
    """Stop a running change's run as the UI's Cancel does; False when Prefect could not be reached."""
    if not change.flow_run_id:
        return False
    from flows._prefect_api import stop

    try:
        asyncio.run(stop(change.flow_run_id, message))
    except Exception:  # noqa: BLE001 - the abort is on the record; the person is told to press Cancel instead
        return False
    return True


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
    return stop_run(change, message) if aborted else cancel_run(change, message)
