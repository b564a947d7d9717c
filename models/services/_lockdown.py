"""The incident button (issue 32): `changeflow lockdown on|off`. Its state is the latest lockdown event on the
audit trail, so a lockdown cannot be lifted by editing a row without breaking the chain; every filing and every
start reads it in its own transaction (`ChangeService.submit`, `SchedulingService._start_check`). Turning it on
or off takes a person of a `lockdown.declared_by` role with their personal code for the next lockdown act: a
code works once, so one seen in a log cannot lift the lockdown it was sent to declare."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlmodel import Session

from ..domain import (NO_LOCKDOWN, AuditAction, ChangeState, InputError, Lockdown, PolicyViolation, checked_name,
                      checked_text, lockdown_refusal)
from ..storage import ChangeRequest, append_event, decode_data, latest_event_of
from ._identity import Identities
from ._unit_of_work import UnitOfWork

_STATE_ACTIONS = (AuditAction.lockdown_declared.value, AuditAction.lockdown_lifted.value)


def lockdown_in_force(session: Session) -> Lockdown:
    """The lockdown as the trail last recorded it (read in the caller's transaction)."""
    event = latest_event_of(session, _STATE_ACTIONS)
    if event is None:
        return NO_LOCKDOWN
    declared = event.action == AuditAction.lockdown_declared.value
    return Lockdown(on=declared, round=event.seq, by=event.actor, since=event.occurred_at,
                    reason=str(decode_data(event).get("reason", "")))


@dataclass(frozen=True)
class LockdownResult:
    """A lockdown turned on or off, and the changes whose canaries it aborted (their runs are for the caller to
    stop: the sweep then rolls each back, as after `changeflow abort`)."""

    lockdown: Lockdown
    aborted: list[ChangeRequest]


class LockdownService:
    def __init__(self, uow: UnitOfWork, identities: Identities):
        self._uow = uow
        self._identities = identities

    def status(self) -> Lockdown:
        with self._uow.read() as session:
            return lockdown_in_force(session)

    def hold_canary(self, key: str, change_type: str, step: int) -> str | None:
        """Why the change's canary may not take `step` now (policy `canaries: hold`), or None. The hold is recorded
        once per step and lockdown, for the auditor who asks why a rollout stood still for two hours."""
        policy = self._uow.org.policies.lockdown
        if policy.canaries != "hold":
            return None
        lockdown = self.status()
        reason = lockdown_refusal(lockdown, policy, change_type, "take a further canary step")
        if reason is not None:
            self._uow.marker(key, AuditAction.canary_held, {"step": step, "lockdown": lockdown.round},
                             {"reason": reason})
        return reason

    def code_for(self, person: str) -> str:
        """`person`'s code for the next lockdown act (sent to their own channel only)."""
        return self._identities.lockdown_code_for(person, self.status().round)

    def may_declare(self, person: str) -> bool:
        policy = self._uow.org.policies.lockdown
        return any(self._uow.org.directory.holds(person, role) for role in policy.declared_by)

    def declare(self, *, person: str, code: str, reason: str) -> LockdownResult:
        """Turn the lockdown on. A canary being rolled out is aborted (policy `canaries: stable`: the caller stops its
        run and the sweep rolls it back) or left to hold (`hold`: its run takes no further step until it is lifted)."""
        return self._press(person=person, code=code, reason=reason, on=True)

    def lift(self, *, person: str, code: str, reason: str) -> LockdownResult:
        return self._press(person=person, code=code, reason=reason, on=False)

    def _press(self, *, person: str, code: str, reason: str, on: bool) -> LockdownResult:
        checked_name(person, "person")
        checked_text(reason, "reason")
        if not reason.strip():
            raise InputError("reason: say why (it is announced and recorded)", [("reason", "empty")])
        uow = self._uow
        with uow.write() as session:
            now = uow.clock()
            before = lockdown_in_force(session)
            refusal = self._refusal(person, code, before, on)
            if refusal is not None:
                append_event(session, actor=person, action=AuditAction.lockdown_refused.value, at=now,
                             data={"refusal": refusal, "on": on, "reason": reason[:2000]})
            else:
                aborted = self._abort_canaries(session, person, reason) if on else []
                append_event(session, actor=person, at=now, data={
                    "reason": reason[:2000], "aborted": [c.key for c in aborted],
                    "canaries": uow.org.policies.lockdown.canaries},
                    action=(AuditAction.lockdown_declared if on else AuditAction.lockdown_lifted).value)
                return LockdownResult(lockdown_in_force(session), aborted)
        raise PolicyViolation(f"lockdown {'on' if on else 'off'}: {refusal}")

    def _refusal(self, person: str, code: str, before: Lockdown, on: bool) -> str | None:
        policy = self._uow.org.policies.lockdown
        wrong = self._identities.lockdown_refusal(person, code, before.round)
        if wrong is not None:
            return wrong
        if not self.may_declare(person):
            roles = ", ".join(policy.declared_by)
            return f"{person} holds none of the roles that may turn a lockdown on or off ({roles})"
        if on and before.on:
            return f"already on: {before.describe()}"
        if not on and not before.on:
            return "there is no lockdown to lift"
        return None

    def _abort_canaries(self, session: Session, person: str, reason: str) -> list[ChangeRequest]:
        """Policy `canaries: stable`: every change rolling a canary out is aborted, recorded as `changeflow abort`
        records it (the sweep rolls a stopped run's change back from this record)."""
        if self._uow.org.policies.lockdown.canaries != "stable":
            return []
        implementing = session.execute(select(ChangeRequest).where(
            ChangeRequest.state == ChangeState.implementing.value)).scalars().all()
        aborted = [c for c in implementing if c.canary]
        now = self._uow.clock()
        for change in aborted:
            append_event(session, actor=person, action=AuditAction.run_cancelled.value, change_key=change.key, at=now,
                         data={"run": change.flow_run_id, "since": now.isoformat(),
                               "reason": f"lockdown declared by {person}: {reason[:2000]}"})
        return aborted
