"""Rolling back a completed change (issue 32): the request `changeflow rollback` files, the checks every filing
that names `rolls_back` passes, and the steps its run takes (the reverted change's rollback)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select
from sqlmodel import Session

from ..domain import (
    ChangeTemplate,
    FieldProblem,
    PolicyViolation,
    Reverting,
    checked_name,
    checked_text,
    reverting_problems,
    reverting_template,
    rollback_refusal,
    rollback_request,
)
from ..storage import ChangeRequest
from ._slots import ACTIVE_STATES
from ._unit_of_work import UnitOfWork


class RollbackService:
    def __init__(self, uow: UnitOfWork):
        self._uow = uow

    def request_for(self, key: str, *, person: str, reason: str, incident_id: str | None = None,
                    incident_severity: str | None = None) -> dict[str, Any]:
        """The request that rolls back `key` now, for `person` to file; PolicyViolation when it may not be."""
        checked_name(person, "person")
        checked_text(reason, "reason")
        if not reason.strip():
            raise PolicyViolation("reason: say why the change is rolled back (it goes on the record)")
        with self._uow.read() as session:
            original = self._uow.load(session, key)
            refusal = rollback_refusal(self._uow.org.policies, original, self._uow.clock())
            already = self.rolled_back_by(session, original.key or key)
        if refusal is not None:
            raise PolicyViolation(f"rollback: {refusal}")
        if already is not None:
            raise PolicyViolation(f"rollback: {key} is already rolled back by {already}")
        return rollback_request(self._uow.org.policies, original, person=person.strip(), reason=reason.strip(),
                                incident_id=incident_id, incident_severity=incident_severity)

    def problems(self, session: Session, request: Reverting) -> list[FieldProblem]:
        """What is wrong with a filing that names `rolls_back` (checked by every submit: the CLI, the run form,
        the pipeline API)."""
        if not request.rolls_back:
            return []
        original = session.execute(select(ChangeRequest).where(ChangeRequest.key == request.rolls_back)
                                   ).scalars().first()
        return reverting_problems(self._uow.org.policies, request, original, self._uow.clock(),
                                  self.rolled_back_by(session, request.rolls_back))

    @staticmethod
    def rolled_back_by(session: Session, key: str) -> str | None:
        """The change that rolls `key` back, still running or done (one that failed or was called off does not
        count: it may be tried again)."""
        return session.execute(select(ChangeRequest.key).where(
            ChangeRequest.rolls_back == key,
            or_(ChangeRequest.state.in_([s.value for s in ACTIVE_STATES]),  # type: ignore[attr-defined]
                ChangeRequest.outcome == "succeeded")).order_by(ChangeRequest.id)).scalars().first()

    def template_for(self, change: ChangeRequest) -> ChangeTemplate | None:
        """The commands a change's run carries out: its template's, or for a rollback the reverted change's
        rollback commands."""
        original = self.reverted(change)
        if original is None:
            return self._uow.org.template_of(change)
        return reverting_template(self._uow.org.template_of(original))

    def reverted(self, change: ChangeRequest) -> ChangeRequest | None:
        """The change a rollback undoes (None: it is no rollback)."""
        if not change.rolls_back:
            return None
        with self._uow.read() as session:
            return self._uow.load(session, change.rolls_back)

    def reverted_canary(self, change: ChangeRequest) -> ChangeRequest | None:
        """The canary change a rollback undoes, whose traffic it sends back to stable first (None: no such step)."""
        original = self.reverted(change)
        return original if original is not None and original.canary else None
