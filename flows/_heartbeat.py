"""A running flow's own heartbeat (issue 28: a silent machine found within 30 s). Prefect's flow-run heartbeat has a
floor of 30 s (`PREFECT_FLOWS_HEARTBEAT_FREQUENCY`, `ge=30`), so a zombie window on it cannot be shorter than about
a minute without taking a live run for a dead one. Every changeflow flow therefore sends its own event,
`changeflow.flow-run.heartbeat`, about its run every CHANGEFLOW_RUN_HEARTBEAT_S (5 s), and the zombie automation
(automations.yaml) marks a run Crashed when none came for CHANGEFLOW_ZOMBIE_AFTER_S (20 s).

It stops (and the events already emitted are sent) before the flow returns and before a gate suspends the run: a
heartbeat processed after the run's Completed or Suspended would open a new window that nothing closes."""

from __future__ import annotations

import contextvars
import functools
import threading
import types
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

HEARTBEAT_EVENT = "changeflow.flow-run.heartbeat"

F = TypeVar("F", bound=Callable[..., Any])

# The heartbeat of the flow running in this process (one flow run per process; None outside a run).
_current: RunHeartbeat | None = None


class RunHeartbeat:
    def __init__(self, flow_run_id: str, every_s: float):
        self.flow_run_id, self.every_s = flow_run_id, every_s
        self._resource = {"prefect.resource.id": f"prefect.flow-run.{flow_run_id}"}
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        # The thread runs in a copy of this context, so it sees the run's Prefect settings (its API URL): an empty
        # context would make the events client start a temporary server of its own (Prefect's own heartbeat does
        # the same, flow_engine._send_heartbeats).
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._beat,), name="changeflow-heartbeat",
                                        daemon=True)
        self._thread.start()

    def stop(self, flush: bool = True) -> None:
        """Stop beating and, with `flush`, send what was emitted (idempotent)."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if not flush:
            return
        if self._thread is not None:
            self._thread.join(timeout=self.every_s + 2)
        from prefect.events.worker import EventsWorker

        # The heartbeats emitted so far reach the server before the state this process proposes next.
        EventsWorker.drain_all(timeout=5)

    def _beat(self) -> None:
        from prefect.events import emit_event

        while not self._stopped.is_set():
            try:
                emit_event(event=HEARTBEAT_EVENT, resource=self._resource)
            except Exception:  # noqa: BLE001 - a heartbeat lost is one late: the window allows for it
                pass
            self._stopped.wait(self.every_s)


def heartbeating(fn: F) -> F:
    """Under `@flow`: the flow's body runs with its run's heartbeat going (no heartbeat outside a flow run)."""
    run = _run_beating

    def beating(*args: Any, **kwargs: Any) -> Any:
        return run(fn, args, kwargs)  # (free variables only: the wrapper below runs in the flow's module globals)

    # Prefect validates a flow's parameters against annotations it resolves in `fn.__globals__` (validated_func's
    # model_rebuild), and this module's would not resolve a flow's `from __future__` string annotations
    # ("`Maintenance_AnnouncementModel` is not fully defined"): the wrapper is the same code in the flow's globals.
    wrapper = types.FunctionType(beating.__code__, fn.__globals__, fn.__name__, None, beating.__closure__)
    return functools.update_wrapper(wrapper, fn)  # type: ignore[return-value]


def _run_beating(fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    global _current
    from prefect.runtime import flow_run

    run_id = flow_run.get_id()
    if not run_id or _current is not None:
        return fn(*args, **kwargs)
    _current = RunHeartbeat(run_id, _every_s())
    _current.start()
    try:
        result = fn(*args, **kwargs)
    except BaseException:
        # Failed, cancelled or terminated: stop beating, but never wait on the events client here. A cancelled run's
        # process must exit at once on its SIGTERM (its worker reports the exit, and a restart waits for that
        # report; a lingering exit let the restarted run be killed, CI 2026-12-07).
        heartbeat, _current = _current, None
        heartbeat.stop(flush=False)
        raise
    heartbeat, _current = _current, None
    heartbeat.stop()
    return result


@contextmanager
def heartbeat_stopped() -> Iterator[None]:
    """Around a suspension: the run's process ends there, and a heartbeat processed after its `Suspended` would
    mark it Crashed a window later. When the suspension returns instead (its key had already fired, on a re-run),
    the run goes on here and beats again."""
    global _current
    beating = _current
    if beating is None:
        yield
        return
    beating.stop()
    yield
    _current = RunHeartbeat(beating.flow_run_id, beating.every_s)
    _current.start()


def _every_s() -> float:
    from models import Settings

    try:
        return Settings().run_heartbeat_s
    except ValueError:  # a broken setting is reported by the flow's own wiring, with the field named
        return Settings.model_fields["run_heartbeat_s"].default
