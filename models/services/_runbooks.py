"""The runbook a change follows (issue 33), as it was when the change was filed: its `submitted` event holds the
name, the version and the text, so the run shows what was approved whatever the file says later."""

from __future__ import annotations

from ..domain import AuditAction, Runbook, runbook_step_text, typed_key
from ..storage import decode_data, events_for
from ._unit_of_work import UnitOfWork


class RunbookService:
    def __init__(self, uow: UnitOfWork):
        self._uow = uow

    def of(self, key: str) -> Runbook | None:
        with self._uow.read() as session:
            filed = next((e for e in events_for(session, typed_key(key))
                          if e.action == AuditAction.submitted.value), None)
        recorded = decode_data(filed).get("runbook") if filed is not None else None
        return Runbook(name=recorded["name"], text=recorded["text"]) if recorded else None

    def step_line(self, key: str, step: int | None) -> str | None:
        """The line shown beside a checklist item that confirms `step` of the change's runbook (None: no step)."""
        return runbook_step_text(self.of(key), step) if step else None
