"""Filing a change from outside the Prefect UI's run form: `changeflow submit` and the pipeline API's
`POST /api/v1/changes` both come here, so both refuse the same things, in the same order, before anything is
written: a malformed request, a lockdown, a pipeline's token that is forged, revoked or for another service.

A pipeline (an automation of the directory) proves its filing with its token, so its change goes to its
approvers at once; a person confirms theirs with the code sent to them."""

from __future__ import annotations

import time

from models import ChangeflowError, ChangeRequest, InputError, PolicyViolation, Services

SUBMIT_DEPLOYMENT = "change-request/submit"


class PrefectUnavailable(ChangeflowError):
    exit_code = 1


def start_change_flow(services: Services, request: dict, *, wait_s: float = 120) -> tuple[ChangeRequest, str]:
    """Start the submit deployment and wait until its run has recorded the change (it then waits for its
    requester's confirmation)."""
    from prefect.deployments import run_deployment

    try:
        run = run_deployment(SUBMIT_DEPLOYMENT, parameters={"request": request}, timeout=0)
    except Exception as exc:  # noqa: BLE001 - any failure to reach Prefect means the same to the user
        raise PrefectUnavailable(
            f"could not start {SUBMIT_DEPLOYMENT} ({type(exc).__name__}: {exc}); is a Prefect server and worker "
            "running (`changeflow up`)? `changeflow submit --local` records the change without a flow"
        ) from None
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        change = services.changes.find_by_idempotency_key(f"flow-run:{run.id}")
        if change is not None:
            return change, str(run.id)
        time.sleep(0.25)
    raise PrefectUnavailable(
        f"flow run {run.id} was created but has not recorded the change after {wait_s:g} s: is a worker polling "
        "the `changeflow` work pool?"
    )


def file_change(services: Services, data: dict, *, token: str | None = None, local: bool = False) -> ChangeRequest:
    """Validate `data`, refuse it during a lockdown (before a run is started that would only end Refused) or when
    `token` does not prove its requester's filing on its service; then record it (its run started unless
    `local`) and, with a token, confirm the filing and let the run, waiting at its filing gate, look again."""
    request = services.changes.validate_request(data)
    locked = services.scheduling.lockdown_refusal_now(request.type, "be filed")
    if locked is not None:
        raise PolicyViolation(locked)
    if token is not None:
        if request.requester not in services.org.directory.automations:
            raise InputError(f"requester: {request.requester!r} is a person, who confirms with the code sent to "
                             "them; a token proves an automation's filing", [("requester", "not an automation")])
        # Checked before anything is written; confirm_filing checks it again, on the record.
        refusal = services.automation_tokens.refusal(request.requester, token, request.service)
        if refusal is not None:
            raise PolicyViolation(f"{refusal}: nothing was filed")
    if local:
        change = services.changes.submit(request)
    else:
        change, _run_id = start_change_flow(services, request.as_run_form())
    if token is not None:
        # Recorded here, where the token is; the run is only asked to look again (no token reaches Prefect).
        change = services.approvals.confirm_filing(change.key, person=change.requester, code=token)
        if change.flow_run_id:
            from flows._pause_key import GateKind
            from flows._prefect_api import nudge_suspended_run

            nudge_suspended_run(change.flow_run_id, GateKind.filing)
    return change
