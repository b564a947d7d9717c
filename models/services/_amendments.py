"""A change after it was filed, before it is implemented: withdrawn by a person, cancelled with its Prefect run,
amended or rescheduled (which sends it back to approval in a new round: what was approved is not what would run).
Each write is one transaction with its audit event; a refusal is recorded and raised."""

from __future__ import annotations

from enum import Enum

from sqlmodel import Session

from ..domain import (
    IllegalTransition,
    CLEARED_BY_AMENDMENT,
    checked_name,
    checked_text,
    Act,
    AuditAction,
    ChangeRequestInput,
    ChangeState,
    FieldProblem,
    InputError,
    PolicyViolation,
    change_type,
    invalid_request,
    parse_change_request,
)
from ..storage import CONTENT, ChangeRequest, append_event, change_content_digest
from ._automation_tokens import AutomationTokens, TokenHolder, token_refusal
from ._identity import Identities
from ._scheduling import SchedulingService
from ._unit_of_work import UnitOfWork

# What an amendment may change. Type, service, environment, requester and template make it another change: cancel
# and file anew. (The release and the change that proved it may be corrected: approved again, checked again.)
AMENDABLE_FIELDS = ("title", "description", "impact", "implementation_plan", "rollback_plan", "test_evidence",
                    "uat_signoff", "documentation_link", "category", "planned_start", "planned_end", "release",
                    "promoted_from")

# States from which a change can still be called off (after these, the way back is a rollback).
_WITHDRAWABLE = (ChangeState.submitted, ChangeState.awaiting_approval, ChangeState.approved, ChangeState.scheduled)
_ABORTABLE = (ChangeState.implementing, ChangeState.verifying)


def _plain(value: object) -> object:
    return value.isoformat() if hasattr(value, "isoformat") else value



class AmendmentService:
    def __init__(self, uow: UnitOfWork, scheduling: SchedulingService, identities: Identities):
        self._uow = uow
        self._scheduling = scheduling
        self._identities = identities

    def withdraw(self, key: str, *, person: str, code: str, reason: str) -> ChangeRequest:
        """Cancel a change before it is implemented: its requester, or someone who may approve it, with their
        personal code. A refusal is recorded and raised; after implementation began, rollback is the way back."""
        checked_name(person, "person")
        checked_text(reason, "reason")
        if not reason.strip():
            raise InputError("reason: say why the change is cancelled", [("reason", "empty")])
        uow = self._uow
        holder = AutomationTokens(uow).holder_if_automation(person, code)

        def attempt() -> ChangeRequest:
            with uow.write() as session:
                change = uow.load(session, key, for_update=True)
                refusal = self._calling_off_refusal(session, change, person, code, holder)
                if refusal is None:
                    try:
                        return uow.apply_transition(session, change, ChangeState.cancelled, person,
                                                    f"cancelled by {person}: {reason}", change.version)
                    except IllegalTransition as exc:
                        # Past the point of cancelling (a rejection got there first): refused on the record too,
                        # as every other refused withdrawal (issue 28).
                        refusal = str(exc)
                append_event(session, actor=person or "unknown", action=AuditAction.cancel_refused.value,
                             change_key=change.key, data={"refusal": refusal, "reason": reason}, at=uow.clock())
            raise PolicyViolation(f"cancel: {refusal}")

        return uow.retry(attempt, None)

    def amend(self, key: str, changes: dict, *, person: str, code: str, reason: str) -> ChangeRequest:
        """Change what was asked before implementation begins (a reschedule is an amendment of the dates): by its
        requester or an owner of the service, with their code. The amended change is approved again in a new round,
        so the old round's approvals no longer count and its codes stop working. Bad values are an InputError and
        a refusal is recorded and raised; in both cases nothing else is written."""
        checked_name(person, "person")
        checked_text(reason, "reason")
        unknown = sorted(set(changes) - set(AMENDABLE_FIELDS))
        if unknown:
            raise InputError(f"{unknown[0]}: cannot be amended (amendable: {', '.join(AMENDABLE_FIELDS)}); "
                             "cancel the change and file a new one", [(name, "not amendable") for name in unknown])
        if not changes:
            raise InputError("amendment: nothing to change", [("amendment", "empty")])
        if not reason.strip():
            raise InputError("reason: say why the change is amended", [("reason", "empty")])
        uow = self._uow

        def attempt() -> ChangeRequest:
            with uow.write() as session:
                change = uow.load(session, key, for_update=True)
                refusal = self._identities.refusal(change, person, code, Act.amend)
                entry = uow.directory_for(session, change).services.get(change.service)
                if refusal is None and person not in (change.requester, *(entry.owners if entry else ())):
                    refusal = f"{person} neither requested {change.key} nor owns {change.service}"
                if refusal is None and ChangeState(change.state) not in _WITHDRAWABLE:
                    refusal = f"{change.key} is {change.state}: only a change not yet implemented can be amended"
                if refusal is not None:
                    uow.record_refusal(session, change, actor=person, action=AuditAction.amend_refused,
                                       refusal=refusal, amendment=sorted(changes))
                else:
                    return self._apply_amendment(session, change, changes, person, reason)
            raise PolicyViolation(f"amend: {refusal}")

        return uow.retry(attempt, None)

    def _apply_amendment(self, session: Session, change: ChangeRequest, changes: dict, person: str,
                         reason: str) -> ChangeRequest:
        uow = self._uow
        current = {name: getattr(change, name) for name in ChangeRequestInput.model_fields if hasattr(change, name)}
        current["risk"] = change.risk_answers
        request = parse_change_request({**current, **changes})
        amended = {name: _stored(getattr(request, name)) for name in changes}
        problems: list[FieldProblem] = change_type(uow.org.policies, request.type,
                                                   request.environment).request_problems(request)
        if {"release", "promoted_from"} & set(changes):
            problems += self._scheduling.promotion_problems(session, request)
        if {"planned_start", "planned_end"} & set(changes):
            problems += self._scheduling.slot_problems(session, request, request.type)
            clashes = self._scheduling.clashes(session, request, exclude=change.key)
            if clashes and not uow.rules(change).overrides_freeze:
                problems += [FieldProblem("planned_start", clash) for clash in clashes]
        if problems:
            raise invalid_request(problems)
        before = {name: _plain(getattr(change, name)) for name in amended}
        now = uow.clock()
        round_ = change.approval_round + 1
        uow.bump(session, change, change.version, now, **amended, approval_round=round_,
                 **{column: None for column in CLEARED_BY_AMENDMENT})
        append_event(session, actor=person, action=AuditAction.change_amended.value, change_key=change.key, at=now,
                     data={"reason": reason, "before": before, "after": {k: _plain(v) for k, v in amended.items()},
                           "round": round_, CONTENT: change_content_digest(change)})
        if change.state != ChangeState.awaiting_approval.value:
            # Approved or waiting for its window: what was approved is not what will run, so it is approved again.
            change = uow.apply_transition(session, change, ChangeState.awaiting_approval, person,
                                          f"amended ({', '.join(sorted(amended))}): approval round {round_}",
                                          change.version)
        return change

    def abort(self, key: str, *, person: str, code: str, reason: str) -> ChangeRequest:
        """Stop a change while it is being implemented (issue 32): the same people and code as a withdrawal. The
        abort is recorded; stopping the run is the caller's part, and the sweep then starts it again only to roll
        the change back (`RecoveryService.abort_reason`). A refusal is recorded and raised."""
        checked_name(person, "person")
        checked_text(reason, "reason")
        if not reason.strip():
            raise InputError("reason: say why the change is aborted", [("reason", "empty")])
        uow = self._uow
        holder = AutomationTokens(uow).holder_if_automation(person, code)

        def attempt() -> ChangeRequest:
            with uow.write() as session:
                change = uow.load(session, key, for_update=True)
                refusal = self._calling_off_refusal(session, change, person, code, holder)
                if refusal is None and ChangeState(change.state) not in _ABORTABLE:
                    refusal = (f"{change.key} is {change.state}: only a change being implemented can be aborted"
                               + ("; call it off with `changeflow cancel`" if ChangeState(change.state) in
                                  _WITHDRAWABLE else ""))
                if refusal is None:
                    now = uow.clock()
                    append_event(session, actor=person, action=AuditAction.run_cancelled.value,
                                 change_key=change.key, at=now,
                                 data={"run": change.flow_run_id, "since": now.isoformat(),
                                       "reason": f"aborted by {person}: {reason}"})
                    return change
                append_event(session, actor=person or "unknown", action=AuditAction.cancel_refused.value,
                             change_key=change.key, data={"refusal": refusal, "reason": reason, "abort": True},
                             at=uow.clock())
            raise PolicyViolation(f"abort: {refusal}")

        return uow.retry(attempt, None)

    def call_off(self, key: str, *, person: str, code: str, reason: str) -> tuple[ChangeRequest, bool]:
        """Withdraw the change if it is not yet implemented, abort it if it is being implemented: what a pipeline
        whose job was cancelled asks for its change (issue 32). Returns the change and whether it was aborted (its
        run is then stopped and rolled back, not cancelled). Each path checks the state again as it writes."""
        with self._uow.read() as session:
            state = ChangeState(self._uow.load(session, key).state)
        if state in _ABORTABLE:
            return self.abort(key, person=person, code=code, reason=reason), True
        return self.withdraw(key, person=person, code=code, reason=reason), False

    def _calling_off_refusal(self, session: Session, change: ChangeRequest, person: str, code: str,
                             holder: TokenHolder | None) -> str | None:
        """Who may call a change off, before implementation (withdraw) or during it (abort): its requester, or
        someone who may approve it, with their code for that act; a pipeline, only its own change, with its token
        for the change's service. None when `person` may."""
        if person in self._uow.org.directory.automations:
            refusal = token_refusal(holder, person, change.service)
            if refusal is None and person != change.requester:
                refusal = f"{person} did not file {change.key}: a pipeline calls off only its own changes"
            return refusal
        refusal = self._identities.refusal(change, person, code, Act.withdraw)
        roles = {r.role for r in self._uow.required_for(change)}
        if refusal is None and person != change.requester and not any(
                self._uow.directory_for(session, change).holds(person, role) for role in roles):
            refusal = f"{person} neither requested {change.key} nor may approve it ({', '.join(sorted(roles))})"
        return refusal

    def cancel_for_cancelled_run(self, key: str, run_state: str) -> ChangeRequest | None:
        """The change's Prefect run was cancelled (from the UI, the API, or a timeout) before implementation: the
        change is cancelled too, so it stops holding its slot on the calendar. None when it was past that point."""
        uow = self._uow

        def attempt() -> ChangeRequest | None:
            with uow.write() as session:
                change = uow.load(session, key, for_update=True)
                if ChangeState(change.state) not in _WITHDRAWABLE:
                    return None
                return uow.apply_transition(session, change, ChangeState.cancelled, "prefect",
                                            f"its Prefect flow run was {run_state.lower()}", change.version)

        return uow.retry(attempt, None)


def _stored(value: object) -> object:
    """A request value as its column holds it (an enum, the category, as its text)."""
    return value.value if isinstance(value, Enum) else value
