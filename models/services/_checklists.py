"""Checklists and implementation steps: each item's outcome stored once with its evidence, phase verdicts and
finished steps in the audit trail once, so a resumed run never runs or records anything twice."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from ..domain import (Act, AuditAction, ChecklistItem, ItemOutcome, PhaseVerdict, PolicyViolation, checked_name,
                      checked_text, typed_key)
from ..storage import ROWS, ChecklistResult, append_event, checklist_rows_bound, decode_data, events_for, insert_result
from ._identity import Identities
from ._unit_of_work import UnitOfWork


class ChecklistService:
    def __init__(self, uow: UnitOfWork, identities: Identities | None = None):
        self._uow = uow
        self._identities = identities

    def confirm_item(self, key: str, *, person: str, code: str, phase: str, step: int, item: ChecklistItem,
                     note: str = "", attempt_id: str | None = None) -> bool:
        """A person confirms a manual item: someone of the directory with their personal code for the change.
        A refusal is recorded (`confirmation_refused`) and raised; nothing is confirmed. False when the item
        already had its result."""
        checked_name(person, "person")
        checked_text(note, "note")
        uow = self._uow
        assert self._identities is not None, "built by Services.build, which passes the identities"
        with uow.write() as session:
            change = uow.load(session, key, for_update=True)
            replayed = next((decode_data(e) for e in events_for(session, change.key)
                             if attempt_id and e.action == AuditAction.confirmation_refused.value
                             and decode_data(e).get("attempt") == attempt_id), None)
            refusal = (replayed["refusal"] if replayed
                       else self._identities.refusal(change, person.strip(), code, Act.confirm_check))
            if refusal is not None and replayed is None:
                append_event(session, actor=person.strip() or "unknown (Prefect UI)",
                             action=AuditAction.confirmation_refused.value, change_key=change.key, at=uow.clock(),
                             data={"phase": phase, "step": step, "item": item.id, "refusal": refusal,
                                   **({"attempt": attempt_id} if attempt_id else {})})
        if refusal is not None:
            raise PolicyViolation(f"{item.id}: {refusal}")
        return self.record_check(key, phase=phase, step=step, item=item, actor=person.strip(),
                                 outcome=ItemOutcome(item_id=item.id, passed=True, required=item.required,
                                                     detail=note or "confirmed"))

    def record_check(self, key: str, *, phase: str, step: int, item: ChecklistItem, outcome: ItemOutcome,
                     actor: str = "changeflow") -> bool:
        """Store one item's outcome once; False when (change, phase, step, item) already has one."""
        uow = self._uow
        with uow.write() as session:
            change = uow.load(session, key)
            written = insert_result(session, change.key, phase, step, item, outcome, actor)
            if written and actor != "changeflow":
                append_event(session, actor=actor, action=AuditAction.checklist_confirmed.value,
                             change_key=change.key, data={"phase": phase, "step": step, "item": item.id,
                                                          "note": outcome.detail}, at=uow.clock())
            return written

    def check_results(self, key: str, *, phase: str | None = None, step: int | None = None) -> list[ChecklistResult]:
        stmt = select(ChecklistResult).where(ChecklistResult.change_key == typed_key(key))
        if phase is not None:
            stmt = stmt.where(ChecklistResult.phase == phase)
        if step is not None:
            stmt = stmt.where(ChecklistResult.step == step)
        with self._uow.read() as session:
            return list(session.execute(stmt.order_by(ChecklistResult.id)).scalars())

    def record_phase(self, key: str, verdict: PhaseVerdict, *, step: int) -> None:
        """The phase verdict in the audit trail (once per change, phase and step), with the digest of each result
        it was based on: `audit verify` then catches a result edited, added or deleted afterwards."""
        results = self.check_results(key, phase=verdict.phase, step=step)
        self._uow.marker(key, AuditAction.checklist_phase, {"phase": verdict.phase, "step": step},
                         {"status": verdict.status.name, "failed_required": verdict.failed_required,
                          "failed_advisory": verdict.failed_advisory, ROWS: checklist_rows_bound(results)})

    def phase_waiting_since(self, key: str, phase: str, step: int) -> datetime:
        return self._uow.marker(key, AuditAction.checklist_waiting, {"phase": phase, "step": step})[0]

    def record_step(self, key: str, step: int, evidence: dict) -> dict:
        """Record an implementation step as done (once); returns the first record's data."""
        return self._uow.marker(key, AuditAction.implementation_step, {"step": step}, evidence)[1]

    def done_steps(self, key: str) -> dict[int, dict]:
        return self._uow.last_event_per_step(key, AuditAction.implementation_step)
