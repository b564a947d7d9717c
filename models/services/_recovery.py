"""Crash safety: what a run that died leaves behind, and what its next run may do about it.

Every side effect of an implementation records an intent before it runs (`step_started`, with the attempt) and
its result after (`implementation_step`). A step that started and never finished was interrupted: its outcome is
unknown, and it is never run again blindly (at-most-once), unless its template declares its steps idempotent
(at-least-once). A crashed run is recorded once per crash, and a canary whose run died is sent back to stable and
marked aborted (once per crash): the next run takes the abort up, resuming the step it was in or rolling the
change back (canary.yaml `resume_after_crash`), so no canary is left half-way with nobody watching it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from ..domain import PHASES, AuditAction, ChangeState, WorkStage, typed_key
from ..storage import ChecklistResult, decode_data, events_for
from ._unit_of_work import UnitOfWork


# A change whose runs keep dying is left to a person after this many automatic restarts.
MAX_AUTOMATIC_RESTARTS = 3


@dataclass(frozen=True)
class CanaryAbort:
    crash: int | None  # the crash that sent it back to stable (None: recorded before aborts were numbered)
    reason: str


@dataclass(frozen=True)
class Crash:
    run_state: str
    message: str
    at: datetime
    number: int  # the how-many-th crash of this change's runs


class RecoveryService:
    def __init__(self, uow: UnitOfWork):
        self._uow = uow

    # ---- intents of side effects ------------------------------------------------------------------------

    def begin_step(self, key: str, step: int, attempt: str) -> None:
        """Record that step `step` is about to run (before its command starts)."""
        self._uow.marker(key, AuditAction.step_started, {"step": step, "attempt": attempt})

    def record_retry(self, key: str, step: int) -> None:
        """An idempotent step runs again after a crash (once per crash)."""
        self._uow.marker(key, AuditAction.step_retried, {"step": step, "after_crash": self.crashes(key)})

    def begin_check(self, key: str, phase: str, step: int, item: str, attempt: str) -> None:
        """Record that a checklist command is about to run (checks with side effects: `command` items)."""
        self._uow.marker(key, AuditAction.check_started, {"phase": phase, "step": step, "item": item,
                                                          "attempt": attempt})

    def record_check_retry(self, key: str, phase: str, step: int, item: str) -> None:
        """An idempotent checklist command runs again after a crash (once per crash)."""
        self._uow.marker(key, AuditAction.check_retried, {"phase": phase, "step": step, "item": item,
                                                          "after_crash": self.crashes(key)})

    def interrupted_checks(self, key: str, phase: str, step: int, *, attempt: str) -> set[str]:
        """Checklist commands of (phase, step) that an earlier attempt started and left with no stored result:
        their outcome is unknown. `attempt`: the run's attempt asking, which takes them up."""
        events = self._events(key)
        found = {item for p, s, item in self._unfinished_checks(key, events, of_attempts_other_than=attempt)
                 if (p, s) == (phase, step)}
        return self._taken_up(key, attempt, found)

    def checks_awaiting_a_person(self, key: str, phase: str, step: int) -> set[str]:
        """Checklist commands of (phase, step) interrupted by a run known dead: a person may answer for them."""
        return {item for p, s, item in self._unfinished_checks(key, self._events(key), dead_only=True)
                if (p, s) == (phase, step)}

    def _taken_up(self, key: str, attempt: str, found):
        """Unfinished side effects of an earlier attempt, found by the run's new `attempt`: that attempt is on the
        record as dead from now on (`run_resumed`), so `pending` asks people about them and only about them."""
        if found:
            self._uow.marker(key, AuditAction.run_resumed, {"attempt": attempt})
        return found

    def _unfinished_checks(self, key: str, events: list, *, dead_only: bool = False,
                           of_attempts_other_than: str | None = None) -> set[tuple[str, int, str]]:
        """(phase, step, item) of every checklist command that started and has no stored result (`dead_only`: of
        a run known dead)."""
        intents = _intents_of(events, AuditAction.check_started, dead_only=dead_only, other_than=of_attempts_other_than)
        started = {(d["phase"], d["step"], d["item"]) for d in map(decode_data, intents)}
        if not started:
            return set()
        with self._uow.read() as session:
            finished = set(session.execute(select(ChecklistResult.phase, ChecklistResult.step, ChecklistResult.item_id)
                                           .where(ChecklistResult.change_key == typed_key(key))).tuples())
        return started - finished

    def begin_rollback(self, key: str, attempt: str) -> None:
        """Record that the rollback commands are about to run; the rolled_back transition is their finish."""
        self._uow.marker(key, AuditAction.rollback_started, {"attempt": attempt})

    def record_rollback_retry(self, key: str) -> None:
        self._uow.marker(key, AuditAction.rollback_retried, {"after_crash": self.crashes(key)})

    def rollback_interrupted(self, key: str, *, attempt: str) -> bool:
        """The rollback commands started (by an earlier attempt) and the change never reached rolled_back."""
        return bool(self._taken_up(key, attempt, _rollback_unfinished(self._events(key), other_than=attempt)))

    def interrupted_steps(self, key: str, *, attempt: str) -> list[int]:
        """Steps that an earlier attempt started and never finished: their outcome is unknown."""
        return self._taken_up(key, attempt, _interrupted(self._events(key), other_than=attempt))

    # ---- crashed runs -----------------------------------------------------------------------------------

    def record_crash(self, key: str, *, run_id: str, run_state: str, message: str, since: str) -> Crash | None:
        """The run's crash on the record, once per (run, state timestamp); None when it was already recorded."""
        before = self.crashes(key)
        at, data = self._uow.marker(key, AuditAction.run_crashed, {"run": run_id, "since": since},
                                    {"run_state": run_state, "message": message[:500]}, actor="prefect")
        if self.crashes(key) == before:
            return None
        return Crash(run_state, data["message"], at, before + 1)

    def needs_a_person(self, key: str) -> list[str]:
        """Why a change waits for a person after crashes (empty: it does not): steps and checklist commands whose
        outcome is unknown, and runs that died too often to be restarted again."""
        events = self._events(key)
        answered = {decode_data(e).get("step") for e in events if e.action == AuditAction.work_confirmed.value}
        # Only what a run known dead left (a crash on the record, or a later attempt that took it up): a step
        # of a live run is merely running (issue 28: every running step was listed as interrupted).
        reasons = [f"step {step} was interrupted by a crash: is it done? (`changeflow work {key} implemented "
                   "--step ...` or the run's Resume form)" for step in _interrupted(events, dead_only=True)
                   if step not in answered]
        reasons += [f"{phase}-check {item} was interrupted by a crash: did it pass? (`changeflow confirm {key} "
                    f"{item} --as ... --code ...` or the run's checklist form)"
                    for phase, _step, item in self._checks_put_to_a_person(key, events)]
        if self._rollback_put_to_a_person(key, events):
            reasons.append(f"the rollback was interrupted by a crash: was it undone? (`changeflow work {key} "
                           "rolled_back --as ... --code ...` or the run's Resume form)")
        crashes = sum(1 for e in events if e.action == AuditAction.run_crashed.value)
        if crashes > MAX_AUTOMATIC_RESTARTS:
            reasons.append(f"its run died {crashes} times: check the service, then press Retry on the run")
        return reasons

    def _checks_put_to_a_person(self, key: str, events: list) -> list[tuple[str, int, str]]:
        """Unfinished checklist commands that may not run again by themselves (not idempotent)."""
        unfinished = self._unfinished_checks(key, events, dead_only=True)
        if not unfinished:
            return []
        with self._uow.read() as session:
            checklist = self._uow.org.checklist_of(self._uow.load(session, key))
        rerun = {(phase, item.id) for phase in PHASES if checklist
                 for item in checklist.items(phase) if item.idempotent}
        return sorted(c for c in unfinished if (c[0], c[2]) not in rerun)

    def _rollback_put_to_a_person(self, key: str, events: list) -> bool:
        """An interrupted rollback nobody has answered for, of a template that may not run it again."""
        answered = any(e.action == AuditAction.work_confirmed.value
                       and decode_data(e).get("stage") == WorkStage.rolled_back.value for e in events)
        if answered or not _rollback_unfinished(events, dead_only=True):
            return False
        with self._uow.read() as session:
            template = self._uow.org.template_of(self._uow.load(session, key))
        return not (template and template.idempotent)

    def record_cancelled_run(self, key: str, *, run_id: str, since: str) -> bool:
        """The change's run was cancelled while the change was being implemented (issue 32: it stayed
        `implementing` for ever). Once per (run, cancellation); False when it was already recorded."""
        before = len(self._cancellations(key))
        self._uow.marker(key, AuditAction.run_cancelled, {"run": run_id, "since": since},
                         {"reason": "its run was cancelled while it was being implemented: the change is undone"},
                         actor="prefect")
        return len(self._cancellations(key)) > before

    def abort_reason(self, key: str) -> str | None:
        """Why the change is to be undone instead of carried on: a cancellation of its run recorded since its
        implementation last began; None when there is none."""
        events = self._events(key)
        began = max((e.seq for e in events if e.to_state == ChangeState.implementing.value), default=0)
        cancelled = [e for e in events if e.action == AuditAction.run_cancelled.value and e.seq > began]
        # The first: a person's abort names them and their reason; the sweep's record of the stopped run follows.
        return str(decode_data(cancelled[0])["reason"]) if cancelled else None

    def _cancellations(self, key: str) -> list:
        return [e for e in self._events(key) if e.action == AuditAction.run_cancelled.value]

    def crashes(self, key: str) -> int:
        return sum(1 for e in self._events(key) if e.action == AuditAction.run_crashed.value)

    def _events(self, key: str) -> list:
        with self._uow.read() as session:
            return list(events_for(session, typed_key(key)))

    # ---- canaries whose run died ------------------------------------------------------------------------

    def abort_canary(self, key: str, reason: str, *, crash: int) -> None:
        self._uow.marker(key, AuditAction.canary_aborted, {"crash": crash}, {"reason": reason},
                         actor="approval-escalation")

    def canary_abort_to_take_up(self, key: str) -> CanaryAbort | None:
        """The latest abort to stable that no restarted run has taken up yet (None: the canary is live or done)."""
        events = self._events(key)
        resumed = {decode_data(e).get("crash") for e in events if e.action == AuditAction.canary_resumed.value}
        aborts = [decode_data(e) for e in events if e.action == AuditAction.canary_aborted.value]
        if not aborts or aborts[-1].get("crash") in resumed:
            return None
        return CanaryAbort(aborts[-1].get("crash"), aborts[-1]["reason"])

    def resume_canary(self, key: str, abort: CanaryAbort, *, step: int, stored_measurements: int) -> None:
        """The restarted run takes the abort up and resumes the rollout at `step` (once per abort)."""
        self._uow.marker(key, AuditAction.canary_resumed, {"crash": abort.crash},
                         {"step": step, "stored_measurements": stored_measurements})


def _intents_of(events: list, action: AuditAction, *, dead_only: bool = False,
                other_than: str | None = None) -> list:
    """The intents (`step_started`, ...) among `events`; `dead_only`: those of a run known dead, that is with a
    crash recorded after them or a later attempt of the run that took them up (`run_resumed`); `other_than`: not
    those of this attempt (the run asking)."""
    intents = [e for e in events if e.action == action.value and decode_data(e).get("attempt") != other_than]
    if not dead_only or not intents:
        return intents
    crashed = max((e.seq for e in events if e.action == AuditAction.run_crashed.value), default=0)
    resumed = [(e.seq, decode_data(e).get("attempt")) for e in events if e.action == AuditAction.run_resumed.value]
    return [e for e in intents if e.seq < crashed
            or any(seq > e.seq and attempt != decode_data(e).get("attempt") for seq, attempt in resumed)]


def _interrupted(events: list, *, dead_only: bool = False, other_than: str | None = None) -> list[int]:
    started = {decode_data(e)["step"]
               for e in _intents_of(events, AuditAction.step_started, dead_only=dead_only, other_than=other_than)}
    finished = {decode_data(e)["step"] for e in events if e.action == AuditAction.implementation_step.value}
    return sorted(started - finished)


def _rollback_unfinished(events: list, *, dead_only: bool = False, other_than: str | None = None) -> bool:
    started = bool(_intents_of(events, AuditAction.rollback_started, dead_only=dead_only, other_than=other_than))
    return started and not any(e.action == AuditAction.transition.value and e.to_state == "rolled_back"
                               for e in events)


def step_of_a_dead_run(events: list, step: int) -> bool:
    """Step `step` was started by a run known dead and never finished: only then may a person say what happened
    (an answer about a step of a live run would race the step itself)."""
    return step in _interrupted(events, dead_only=True)
