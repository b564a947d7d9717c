"""The few Prefect API calls changeflow makes about a change's flow run (resume, cancel, read)."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import UUID

from prefect import get_client
from prefect.exceptions import Abort, CancelledRun, FailedRun, ObjectNotFound, PrefectHTTPStatusError
from prefect.input import RunInput
from prefect.input.actions import delete_flow_run_input
from prefect.client.schemas.objects import StateType
from prefect.states import Cancelled, Completed, Failed, State

from models import EndingKind, RunEnding

from flows._heartbeat import heartbeat_stopped
from flows._pause_key import GateKind, PauseKey


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


PAGE = 200


async def paused_keys(flow_run_ids: list[str]) -> dict[str, str]:
    """The pause key of each of these runs that is paused, read a page of runs at a time."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    keys: dict[str, str] = {}
    async with get_client() as client:
        for start in range(0, len(flow_run_ids), PAGE):
            ids = [UUID(i) for i in flow_run_ids[start:start + PAGE]]
            for run in await client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)),
                                                   limit=PAGE):
                if run.state is not None and run.state.is_paused():
                    keys[str(run.id)] = str(run.state.state_details.pause_key)
    return keys


async def cancelled_runs(look_back: timedelta = timedelta(days=7)) -> dict[str, tuple[str, str]]:
    """Runs cancelled (or being cancelled) in the look-back: run id -> (state type, when it entered the state)."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateName,
        FlowRunFilterStateType,
        FlowRunFilterStartTime,
    )
    from prefect.client.schemas.objects import StateType

    found: dict[str, tuple[str, str]] = {}
    # By name as well: a run that ended on its own as Rejected, Expired or Refused (grey, of type Cancelled,
    # `final_state`) was not cancelled by anyone, and reading those would cost a lookup each per sweep.
    run_filter = FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.CANCELLED, StateType.CANCELLING]),
                                 name=FlowRunFilterStateName(any_=["Cancelled", "Cancelling"])),
        start_time=FlowRunFilterStartTime(after_=datetime.now(timezone.utc) - look_back))
    async with get_client() as client:
        while page := await client.read_flow_runs(flow_run_filter=run_filter, limit=PAGE, offset=len(found)):
            found.update({str(r.id): (r.state.type.value, r.state.timestamp.isoformat())
                          for r in page if r.state is not None})
            if len(page) < PAGE:
                break
    return found


RUN_NAME_LENGTH = 120  # the Runs list shows the start of a name: the key, then as much of the title as fits


def change_run_name(key: str, title: str) -> str:
    return f"{key} {title}"[:RUN_NAME_LENGTH].rstrip()


def change_run_tags(change_type: str, service: str, risk_level: str) -> list[str]:
    """Tags the Runs page filters by (issue 30): one per facet, `facet:value`."""
    return [f"type:{change_type}", f"service:{service}", f"risk:{risk_level}"]


_STATE_OF_KIND = {EndingKind.succeeded: Completed, EndingKind.stopped: Cancelled, EndingKind.failed: Failed}
ENGINE_ERROR = "Engine execution exited with unexpected exception"
_ENDED_WITH: set[str] = set()  # the messages of the final states this process's runs returned


class NamedEndingIsNoError(logging.Filter):
    """Prefect's `run_flow` asks the finished engine for its result, which raises CancelledRun or FailedRun when
    the flow returned a Cancelled or Failed state, and logs that to the run as "Engine execution exited with
    unexpected exception" with a traceback, after the state is set (the engine then exits 0: the run concluded).
    A change that ends Rejected or Rolled back is no error of the engine: that one record is dropped, recognised
    by the message of a state `final_state` made in this process; every other error is kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != ENGINE_ERROR or not record.exc_info:
            return True
        raised = record.exc_info[1]
        return not (isinstance(raised, (CancelledRun, FailedRun)) and str(raised) in _ENDED_WITH)


def final_state(ending: RunEnding, message: str) -> State:
    """The run's last state: its name says what became of the change, its type gives the colour (Completed green,
    Cancelled grey, Failed red)."""
    _ENDED_WITH.add(message)
    return _STATE_OF_KIND[ending.kind](name=ending.name, message=message)


# `run_flow` logs through the flow run logger (`prefect.flow_runs`): the filter sits there from the moment the
# flow's module is imported, before the engine runs it (warm, cold or served alike).
if not any(isinstance(f, NamedEndingIsNoError) for f in logging.getLogger("prefect.flow_runs").filters):
    logging.getLogger("prefect.flow_runs").addFilter(NamedEndingIsNoError())


async def name_run(flow_run_id: str, name: str, tags: list[str]) -> bool:
    """The run named for its change and tagged with its facets (its own tags, the deployment's, kept). Idempotent:
    a resumed run that already carries them writes nothing. Returns whether anything was written."""
    async with get_client() as client:
        run = await client.read_flow_run(UUID(flow_run_id))
        wanted = sorted({*run.tags, *tags})
        if run.name == name and sorted(run.tags) == wanted:
            return False
        await client.update_flow_run(UUID(flow_run_id), name=name, tags=wanted)
    return True


async def run_state(flow_run_id: str) -> str | None:
    """The run's state type (CANCELLED, PAUSED, RUNNING, ...), or None when Prefect does not know the run."""
    async with get_client() as client:
        try:
            run = await client.read_flow_run(UUID(flow_run_id))
        except ObjectNotFound:
            return None
    return run.state.type.value if run.state else None


async def cancel(flow_run_id: str, message: str, name: str = "Cancelled") -> None:
    """Cancel the run (suspended, it has no process to end it), in a state `name`d for its change's end."""
    async with get_client() as client:
        await client.set_flow_run_state(UUID(flow_run_id), Cancelled(name=name, message=message), force=True)


async def stop(flow_run_id: str, message: str) -> None:
    """Stop a change's run as the UI's Cancel does: a run with a process goes Cancelling (its worker stops the
    process, then marks it Cancelled); a suspended or scheduled one, which has none, is Cancelled at once."""
    from prefect.states import Cancelling

    async with get_client() as client:
        run = await client.read_flow_run(UUID(flow_run_id))
        if run.state is not None and run.state.type in (StateType.RUNNING, StateType.PENDING):
            await client.set_flow_run_state(UUID(flow_run_id), Cancelling(message=message), force=True)
        elif run.state is None or not run.state.is_final():
            await client.set_flow_run_state(UUID(flow_run_id), Cancelled(message=message), force=True)


def nudge_suspended_run(flow_run_id: str, kind: GateKind, gate: str | None = None, *, wait_s: float = 15) -> bool:
    """Resume a run suspended at a gate of `kind` (that `gate`, when given) with no input at all: a bare "look
    again". The decision was
    recorded before this call, through the services (the CLI, the approval endpoint, the sweep); the gate re-reads
    it. Never a code: Prefect keeps a resume's input readable to anyone who reaches its API (DESIGN.md, "Trust
    boundaries"), and a code found there would be worth another act.

    The gate may be running for someone else's decision at this moment; retry until it suspends again.
    False when it could not be reached: the escalation sweep resumes it within a minute.
    """
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            key = PauseKey.parse(asyncio.run(paused_key(flow_run_id)))
            if key is not None and key.kind is kind and gate in (None, key.gate):
                asyncio.run(resume_with_input(flow_run_id, None))
                return True
        except ResumeRefused:
            pass
        except PrefectHTTPStatusError:
            # A 5xx, e.g. two approvers' resumes racing on a PostgreSQL-backed server: read the run again and retry.
            pass
        except Exception:  # noqa: BLE001 - Prefect unreachable: the decision is recorded, the sweep nudges later
            return False
        time.sleep(0.5)
    return False


def _current_run_id() -> UUID:
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        raise RuntimeError("a gate waits inside a flow run only")
    return context.flow_run.id


def has_fired(key: str) -> bool:
    """Whether this run paused or suspended at `key` before (Prefect remembers every key that fired): a re-run
    replays its gates in order, and a fired key never waits again."""
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(_current_run_id())
    return key in (run.empirical_policy.pause_keys or set())


# The message of the Running state a hot gate proposes when nobody answered in time: not a resume.
NO_ANSWER_WHILE_HOT = "nobody answered while the gate was hot: it suspends next"


def was_resumed(key: str) -> bool:
    """Whether someone resumed this run when it waited at `key` (a Resume, a nudge), as opposed to a wait that ran
    out or a run that died waiting. An empty resume leaves no input in Prefect, so the state that followed the
    pause is what tells."""
    with get_client(sync_client=True) as client:
        states = client.read_flow_run_states(_current_run_id())
    paused_at = [i for i, state in enumerate(states)
                 if state.type == StateType.PAUSED and state.state_details.pause_key == key]
    if not paused_at or paused_at[-1] + 1 >= len(states):
        return False
    after = states[paused_at[-1] + 1]
    return ((after.type == StateType.SCHEDULED and after.name == "Resuming")
            or (after.type == StateType.RUNNING and after.message != NO_ANSWER_WHILE_HOT))


def stored_answer(form: Any, key: str) -> RunInput | None:
    """The Resume input Prefect holds for `key`, or None: nobody resumed it (a hot wait that ran out, a run that
    died waiting), or its gate applied it and deleted it (`forget_answer`), so there is nothing left to apply.

    Prefect stores it under the state's name and the key (`suspended-<key>`, `paused-<key>`), and a bare resume
    as `{}`: both names are read here, whichever way the key waited."""
    from prefect.input.actions import read_flow_run_input
    from prefect.input.run_input import keyset_from_base_key, run_input_subclass_from_type

    run_id = _current_run_id()
    form_type: Any = run_input_subclass_from_type(form)
    for name in ("suspended", "paused"):
        keyset = keyset_from_base_key(f"{name}-{key}")
        if read_flow_run_input(keyset["response"], flow_run_id=run_id) is not None:
            return form_type.load(keyset, flow_run_id=run_id)
    return None


def a_run_waits_for_a_slot(client: Any, due_for_s: float) -> bool:
    """Whether some flow run has been due for `due_for_s` and still not started: every worker slot is taken."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterNextScheduledStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    due = datetime.now(timezone.utc) - timedelta(seconds=due_for_s)
    waiting = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
                            next_scheduled_start_time=FlowRunFilterNextScheduledStartTime(before_=due))
    return client.count_flow_runs(flow_run_filter=waiting) > 0


def empty_answer(form: Any, key: str) -> RunInput:
    """The form as an empty resume leaves it (every field at its default), tied to `key`'s stored input."""
    from prefect.input.run_input import keyset_from_base_key, run_input_subclass_from_type

    form_type: Any = run_input_subclass_from_type(form)
    return form_type.load(keyset_from_base_key(f"suspended-{key}"), flow_run_id=_current_run_id())


def _form_already_stored(exc: PrefectHTTPStatusError) -> bool:
    return exc.response.status_code == 409 and "/input" in str(exc.request.url)


def _delete_form(keyset: Any, run_id: UUID) -> None:
    """The schema and description a pause stored under `keyset` (never its response: an answer is kept)."""
    for part in (keyset["schema"], keyset["description"]):
        try:
            delete_flow_run_input(part, run_id)
        except ObjectNotFound:
            pass
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code != 404:
                raise


def save_form(form_type: Any, keyset: Any, run_id: UUID) -> None:
    """Store a gate's Resume form. A server killed after it stored the form but before it answered leaves it
    there, and the client's retry of the same request gets 409 (CI 2026-12-06, a kill test): the form is ours,
    so it is replaced."""
    try:
        form_type.save(keyset)
    except PrefectHTTPStatusError as exc:
        if not _form_already_stored(exc):
            raise
        _delete_form(keyset, run_id)
        form_type.save(keyset)


def suspend_at(form: Any, key: str) -> RunInput:
    """`suspend_flow_run` under `key`, which stores the gate's form first: the same 409 as `save_form` after a
    server died mid-request failed the run ("A flow run input with this key already exists"); the form is
    deleted and the suspend made again. (Suspending raises to end this process; it returns only when resumed.)"""
    from prefect.flow_runs import suspend_flow_run
    from prefect.input.run_input import keyset_from_paused_state
    from prefect.states import Suspended

    with heartbeat_stopped():
        try:
            return suspend_flow_run(wait_for_input=form, key=key)
        except PrefectHTTPStatusError as exc:
            if not _form_already_stored(exc):
                raise
        _delete_form(keyset_from_paused_state(Suspended(pause_key=key)), _current_run_id())
        return suspend_flow_run(wait_for_input=form, key=key)


def pause_in_process(form: Any, key: str, seconds: float, poll_s: float, yield_after_s: float) -> RunInput | None:
    """Pause the current run under `key` for at most `seconds`, its process kept and polling Prefect every
    `poll_s`: the answer (a Resume's input; an empty one for a bare resume), or None when nobody resumed it, the run
    back to Running so that its gate can suspend next. It stops waiting early when another run has been due for
    `yield_after_s` without starting: a gate that holds a slot must not keep a change from starting (eight
    unanswered gates would hold every slot of a worker for their whole hot period).

    Not `pause_flow_run(timeout=)`: that sets a pause deadline, and Prefect's pause-expiration service fails a
    run paused past it (in the moment between the deadline and the next state we propose, too)."""
    from prefect.input.run_input import keyset_from_paused_state, run_input_subclass_from_type
    from prefect.states import Paused, Running
    from prefect.utilities.engine import propose_state_sync

    run_id = _current_run_id()
    # (Prefect's annotations of these are looser than what they return: typed as Any here.)
    form_type: Any = run_input_subclass_from_type(form)
    paused: Any = Paused(reschedule=False, pause_key=key)  # no timeout: no deadline for the service to enforce
    keyset: Any = keyset_from_paused_state(paused)
    paused.state_details.run_input_keyset = keyset
    with get_client(sync_client=True) as client:
        state = propose_state_sync(client=client, state=paused, flow_run_id=run_id)
        if state.is_running():
            return stored_answer(form, key)  # the key fired before (callers ask `has_fired` first)
        if not state.is_paused():
            raise RuntimeError(f"the run could not pause at {key}: {state.type.value}")
        # The Resume dialog's form. Only now: Prefect 3.9's server deletes whatever a keyset holds when the pause
        # under it begins (an earlier attempt's input), so a form stored before the pause is lost (tried
        # 2026-12-07: every hot gate waited without a form). A Resume pressed before this store is refused "Run
        # input schema not found"; the person presses again.
        save_form(form_type, keyset, run_id)
        deadline = time.monotonic() + seconds
        # Whether a run waits for a slot is asked every half yield period, not every poll: one read of the run per
        # poll is what an answer needs, and the server serves every hot gate's reads (issue 26).
        next_slot_check = time.monotonic() + yield_after_s / 2
        while time.monotonic() < deadline:
            time.sleep(poll_s)
            run = client.read_flow_run(run_id)
            if run.state is not None and run.state.is_running():
                return form_type.load(keyset)  # (an empty resume stores nothing: an empty form)
            if run.state is not None and not run.state.is_paused():
                # Marked Crashed and restarted elsewhere, or cancelled: the run is no longer this process's.
                # Abort ends it without proposing a state (anything proposed now would overwrite the new one).
                raise Abort(f"the run left its pause at {key} for {run.state.type.value}: it is no longer ours")
            if time.monotonic() >= next_slot_check:
                if a_run_waits_for_a_slot(client, yield_after_s):
                    break
                next_slot_check = time.monotonic() + yield_after_s / 2
        # Nobody answered in time. A Resume may land between the last look and this proposal: then the run is
        # Running already, and what it carried is read below, not lost (nor left in Prefect's storage).
        propose_state_sync(client=client, state=Running(message=NO_ANSWER_WHILE_HOT), flow_run_id=run_id)
    return stored_answer(form, key)


def forget_answer(answer: RunInput) -> None:
    """Delete the run input a gate has just applied. Prefect stores what a Resume form carries (a personal code
    among it) at /flow_runs/{id}/input/{key}, readable after the run has moved on; the decision is on our record
    now. Called after the answer is recorded, so a crash in between leaves the input for the replay to apply
    (a no-op, by its attempt id) and delete."""
    try:
        delete_flow_run_input(answer.metadata.key, answer.metadata.receiver)
    except ObjectNotFound:
        pass  # nothing was stored (a bare "look again") or an earlier try deleted it
    except PrefectHTTPStatusError as exc:
        if exc.response.status_code != 404:
            raise
