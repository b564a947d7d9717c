"""The CLI's side of the Prefect flows: nudge a suspended gate, read where a run waits, stop a run (filing is
`flows.file_change`, shared with the pipeline API)."""

from __future__ import annotations

import asyncio

from flows import PrefectUnavailable
from models import ChangeRequest


def nudge_run(change: ChangeRequest, kind: str, gate: str | None = None, *, wait_s: float = 15) -> bool:
    """After a decision was recorded: resume the change's run suspended at a gate of `kind` (`approval`, ...; that
    `gate`, when given) with a bare "look again" that carries no code (see flows.nudge_suspended_run)."""
    if not change.flow_run_id:
        return False
    from flows import GateKind, nudge_suspended_run

    return nudge_suspended_run(change.flow_run_id, GateKind(kind), gate, wait_s=wait_s)


def waiting_gate(change: ChangeRequest, kind: str) -> str | None:
    """The gate (e.g. `canary-confirm-s2`) the change's run is suspended at, or None when it waits at no gate of
    `kind`."""
    if not change.flow_run_id:
        return None
    from flows import PauseKey, paused_key

    try:
        key = asyncio.run(paused_key(change.flow_run_id))
    except Exception as exc:  # noqa: BLE001 - any failure to reach Prefect means the same to the user
        raise PrefectUnavailable(f"could not read {change.key}'s flow run from Prefect ({type(exc).__name__}: "
                                 f"{exc}); is `changeflow up` running?") from None
    parsed = PauseKey.parse(key)
    return parsed.gate_name if parsed is not None and parsed.kind.value == kind else None


def paused_gates(changes: list[ChangeRequest]) -> dict[str, tuple[str, str]]:
    """Each change whose run waits at a changeflow gate: key -> (gate kind, gate within it, e.g. `pre-0`), read a
    page of runs at a time. Empty when Prefect cannot be reached: `pending` then lists what the database knows."""
    runs = {change.flow_run_id: change.key for change in changes if change.flow_run_id}
    if not runs:
        return {}
    from flows import PauseKey, paused_keys

    try:
        keys = asyncio.run(paused_keys(list(runs)))
    except Exception:  # noqa: BLE001 - the gates are a view of Prefect; the record stands without them
        return {}
    found = {}
    for run_id, text in keys.items():
        parsed = PauseKey.parse(text)
        if parsed is not None:
            found[runs[run_id]] = (parsed.kind.value, parsed.gate)
    return found


