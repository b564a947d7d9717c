"""The few Prefect API calls changeflow makes about a change's flow run (resume, cancel, read)."""

from __future__ import annotations

from uuid import UUID

from prefect import get_client
from prefect.states import Cancelled


class ResumeRefused(Exception):
    """Prefect did not resume the run (not paused, or the input did not validate)."""


async def resume_with_input(flow_run_id: str, run_input: dict | None) -> None:
    """Resume through the same API the UI's Resume button uses; Prefect answers 200 with REJECT when it refuses."""
    async with get_client() as client:
        result = await client.resume_flow_run(UUID(flow_run_id), run_input=run_input)
    status = getattr(result.status, "value", result.status)
    if str(status).upper() != "ACCEPT":
        reason = getattr(result.details, "reason", "") or str(result.details)
        raise ResumeRefused(f"Prefect refused to resume flow run {flow_run_id}: {reason}")


async def paused_key(flow_run_id: str) -> str | None:
    """The pause key the run is waiting at, or None when it is not paused."""
    async with get_client() as client:
        run = await client.read_flow_run(UUID(flow_run_id))
    if run.state is None or not run.state.is_paused():
        return None
    return str(run.state.state_details.pause_key)


async def run_state(flow_run_id: str) -> str | None:
    """The run's state type (CANCELLED, PAUSED, RUNNING, ...), or None when Prefect does not know the run."""
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        try:
            run = await client.read_flow_run(UUID(flow_run_id))
        except ObjectNotFound:
            return None
    return run.state.type.value if run.state else None


async def cancel(flow_run_id: str, message: str) -> None:
    async with get_client() as client:
        await client.set_flow_run_state(UUID(flow_run_id), Cancelled(message=message), force=True)
