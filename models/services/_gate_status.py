"""What a pipeline waiting on a change's approval gate is told (issue 32): one reading of the record, the same for
`changeflow wait` and the pipeline API's long poll, so both say the same words for the same state."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session

from ..domain import AuditAction, ChangeState, GateTarget, GateVerdict, gate_verdict
from ..storage import ChangeRequest, decode_data, events_for
from ._scheduling import SchedulingService
from ._unit_of_work import UnitOfWork


@dataclass(frozen=True)
class GateStatus:
    change: ChangeRequest
    verdict: GateVerdict
    waiting_for: str  # pending: what it waits for, in a person's words; else ""
    reason: str  # refused: why (its last transition's reason, a rejecter's comment); else ""


class GateStatusReader:
    def __init__(self, uow: UnitOfWork, scheduling: SchedulingService):
        self._uow = uow
        self._scheduling = scheduling

    def status(self, key: str, until: GateTarget = GateTarget.approval) -> GateStatus:
        uow = self._uow
        with uow.read() as session:
            change = uow.load(session, key)
            verdict = gate_verdict(ChangeState(change.state), until)
            waiting = self._waiting_for(session, change) if verdict is GateVerdict.pending else ""
            reason = ""
            if verdict is GateVerdict.refused:
                stopped = gate_verdict(ChangeState(change.state)) is GateVerdict.refused
                reason = (self._reason(session, change) if stopped
                          else f"it is {change.state}: past its implementation, nothing is left to deploy")
        return GateStatus(change, verdict, waiting, reason)

    def _waiting_for(self, session: Session, change: ChangeRequest) -> str:
        if change.state == ChangeState.submitted.value:
            return f"{change.requester} to confirm the filing"
        if change.state == ChangeState.awaiting_approval.value:
            return f"approval: still needed {self._uow.evaluate(session, change).describe_missing()}"
        if change.state in (ChangeState.approved.value, ChangeState.scheduled.value):
            check = self._scheduling.start_check(change.key)
            return ("its run to begin the implementation" if check.may_start
                    else f"its start: {check.reason}")
        return change.state

    @staticmethod
    def _reason(session: Session, change: ChangeRequest) -> str:
        events = events_for(session, change.key)
        transitions = [decode_data(e) for e in events if e.action == AuditAction.transition.value]
        rejections = [decode_data(e) for e in events if e.action == AuditAction.rejection.value]
        reason = str(transitions[-1].get("reason") or "") if transitions else ""
        comment = str(rejections[-1].get("comment") or "") if rejections else ""
        return "; ".join(part for part in (reason, comment and f"comment: {comment}") if part)
