"""The canary's record: its plan and traffic target, every measurement (append-only), each step's decision
once per bake, and the answers people give at its gates."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from ..domain import (
    typed_key,
    checked_name,
    checked_text,
    Act,
    AuditAction,
    CanaryConfig,
    CanaryPlan,
    CanaryTarget,
    ConfigError,
    PolicyViolation,
    people_named,
)
from ..storage import ROWS, CanaryMeasurement, ChangeRequest, decode_data, events_for, measurement_rows_bound
from ._identity import Identities
from ._unit_of_work import UnitOfWork


class CanaryService:
    def __init__(self, uow: UnitOfWork, identities: Identities):
        self._uow = uow
        self._identities = identities

    def plan(self, change: ChangeRequest) -> CanaryPlan | None:
        return CanaryPlan.model_validate(change.canary) if change.canary else None

    def target(self, change: ChangeRequest) -> CanaryTarget:
        target = self._uow.org.canary_config.services.get(change.service)
        if target is None:
            raise ConfigError(f"canary.yaml: no traffic router for service {change.service!r}")
        return target

    def record_measurements(self, key: str, rows: list[dict[str, Any]]) -> None:
        with self._uow.write() as session:
            change = self._uow.load(session, key)
            session.add_all(CanaryMeasurement(change_key=change.key, **row) for row in rows)

    def measurements(self, key: str, *, step: int | None = None) -> list[CanaryMeasurement]:
        stmt = select(CanaryMeasurement).where(CanaryMeasurement.change_key == typed_key(key))
        if step is not None:
            stmt = stmt.where(CanaryMeasurement.step == step)
        with self._uow.read() as session:
            return list(session.execute(stmt.order_by(CanaryMeasurement.id)).scalars())

    def unfinished_bake(self, key: str, step: int) -> str | None:
        """The bake of `step` that stored measurements and decided nothing (its run died mid-bake): the restarted
        run resumes it rather than starting the step over."""
        with self._uow.read() as session:
            decisions = [decode_data(e) for e in events_for(session, typed_key(key))
                         if e.action == AuditAction.canary_decision.value]
        decided = {d.get("bake") for d in decisions if d.get("step") == step}
        bakes = [row.bake for row in self.measurements(key, step=step) if row.bake not in decided]
        return bakes[-1] if bakes else None

    def record_decision(self, key: str, *, step: int, bake: str, decision: dict[str, Any]) -> dict[str, Any]:
        """A step's decision in the audit trail, once per bake of the step, with the digest of each measurement
        it was based on; returns the first record's data."""
        measured = [row for row in self.measurements(key, step=step) if row.bake == bake]
        return self._uow.marker(key, AuditAction.canary_decision, {"step": step, "bake": bake},
                                {**decision, ROWS: measurement_rows_bound(measured)})[1]

    def decisions(self, key: str) -> dict[int, dict]:
        """The last decision of each canary step (without the row digests, which are for `audit verify`)."""
        return {step: {k: v for k, v in decision.items() if k != ROWS}
                for step, decision in self._uow.last_event_per_step(key, AuditAction.canary_decision).items()}

    def gate_waiting_since(self, key: str, gate: str) -> datetime:
        """When the gate first waited for a person (once per gate: restarts and refusals do not reset it)."""
        return self._uow.marker(key, AuditAction.canary_gate_waiting, {"gate": gate})[0]

    def gate_deadline(self, key: str, gate: str) -> datetime:
        return self.gate_waiting_since(key, gate) + timedelta(seconds=self._uow.org.canary_config.gate_timeout_s)

    def gate_answer(self, key: str, gate: str) -> str | None:
        """The answer on record at a canary gate (the first one counts, as in `confirm`), or None."""
        with self._uow.read() as session:
            answers = [decode_data(e) for e in events_for(session, typed_key(key))
                       if e.action == AuditAction.canary_confirmation.value]
        return next((a["answer"] for a in answers if a.get("gate") == gate), None)

    def confirm(self, key: str, *, person: str, code: str, action: str, comment: str, gate: str) -> dict[str, Any]:
        """A person's answer at a canary gate (confirm a step, or judge an inconclusive analysis), checked like an
        approval: someone in the directory, with their personal code for this change."""
        checked_name(person, "person")
        checked_text(comment, "comment")
        with self._uow.read() as session:
            change = self._uow.load(session, key)
            directory = self._uow.directory_for(session, change)
        self._identities.check(change, person, code, Act.answer_canary)
        named = (self._uow.org.canary or CanaryConfig()).gate_answerers
        allowed = people_named(named, change, directory)
        if person not in allowed:
            raise PolicyViolation(f"{person} may not answer a canary gate of {change.key} (canary.yaml "
                                  f"gate_answerers: {', '.join(named)}; that is {', '.join(allowed) or 'nobody'})")
        return self._uow.marker(key, AuditAction.canary_confirmation, {"gate": gate},
                                {"person": person, "answer": action, "comment": comment}, actor=person)[1]
