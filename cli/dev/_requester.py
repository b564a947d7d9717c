"""A requester confirming their filing, as the demo, the load drivers, the benchmarks and the tests play one
(issue 27): they read the code sent to them and enter it in the run's Resume form once the run waits at its
filing gate, over the HTTP API the Prefect UI uses. (Simulated people may compute codes: each stands in for
someone reading their own inbox.)"""

from __future__ import annotations

import time

import httpx

from models import Act, ChangeRequest, ChangeState, Services

_ENDED = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def filed_change(services: Services, run_id: str) -> ChangeRequest | None:
    return services.changes.find_by_idempotency_key(f"flow-run:{run_id}")


def confirm_filing_in_form(services: Services, api_url: str, run_id: str, *, timeout_s: float = 120,
                           poll_s: float = 0.2, once_suspended: bool = False) -> ChangeRequest | None:
    """Once the run has recorded its change and waits at the filing gate, its requester confirms in the Resume
    form (`once_suspended`: only after the gate's hot period, its process gone); returns the change once it has
    moved on, or None when the run ended without recording one (a request the form refused)."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=api_url, timeout=30) as http:
        while time.monotonic() < deadline:
            change = filed_change(services, run_id)
            if change is not None and change.state != ChangeState.submitted.value:
                return change
            state = http.get(f"/flow_runs/{run_id}").json().get("state") or {}
            if change is None and state.get("type") in _ENDED:
                return None
            pause_key = (state.get("state_details") or {}).get("pause_key") or ""
            waiting = state.get("type") == "PAUSED" and (state.get("name") == "Suspended" or not once_suspended)
            if change is not None and waiting and pause_key.startswith("filing-"):
                code = services.approvals.approval_code_for(change.key, change.requester, Act.file)
                # Refused between two waits of the gate ("not paused", "schema not found"): pressed again.
                http.post(f"/flow_runs/{run_id}/resume",
                          json={"run_input": {"requester": change.requester, "approval_code": code}})
            time.sleep(poll_s)
    raise TimeoutError(f"run {run_id}: its filing was never confirmed within {timeout_s:g} s")
