"""Policy changes are changes (issue 34): the first time a process loads a policy version the audit trail does not
hold yet, it records it (who loaded it, when, the version it replaces and the diff, line by line), so `changeflow
policy log` shows every version that governed changes and what each one changed."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from ..domain import AuditAction
from ..storage import AuditEvent, append_event, decode_data, lock_chain
from ._unit_of_work import UnitOfWork


@dataclass(frozen=True)
class PolicyChange:
    seq: int
    at: datetime
    recorded_by: str
    version: str
    previous: str | None
    diff: str  # unified diff of the canonical text; empty for the first version recorded


class PolicyLog:
    def __init__(self, uow: UnitOfWork):
        self._uow = uow

    def record_loaded(self, recorded_by: str) -> PolicyChange | None:
        """Record the policy in force when the trail's latest recorded version is another one (None: it is
        recorded already)."""
        policies = self._uow.org.policies
        with self._uow.read() as session:  # the common case, every sweep: recorded already, no lock taken
            last = self._latest(session)
            if last is not None and decode_data(last).get("version") == policies.version:
                return None
        with self._uow.write() as session:
            lock_chain(session)  # before the read: two processes loading a new version at once record it once
            last = self._latest(session)
            if last is not None and decode_data(last).get("version") == policies.version:
                return None
            text = policies.canonical_text()
            before = decode_data(last) if last is not None else {}
            diff = "".join(difflib.unified_diff(
                str(before.get("content", "")).splitlines(keepends=True), text.splitlines(keepends=True),
                fromfile=f"policies {str(before.get('version', ''))[:12]}", tofile=f"policies {policies.version[:12]}",
                n=1)) if before else ""
            now = self._uow.clock()
            appended = append_event(session, actor=recorded_by, action=AuditAction.policy_changed.value, at=now,
                                    data={"version": policies.version, "previous": before.get("version"),
                                          "content": text, "diff": diff})
            return PolicyChange(appended.seq, now, recorded_by, policies.version, before.get("version"), diff)

    def log(self) -> list[PolicyChange]:
        """Every policy version recorded, oldest first."""
        with self._uow.read() as session:
            events = session.execute(select(AuditEvent).where(
                AuditEvent.action == AuditAction.policy_changed.value).order_by(AuditEvent.seq)).scalars().all()
        changes = []
        for event in events:
            data = decode_data(event)
            changes.append(PolicyChange(event.seq, event.occurred_at, event.actor, data["version"],
                                        data.get("previous"), data.get("diff", "")))
        return changes

    @staticmethod
    def _latest(session) -> AuditEvent | None:
        return session.execute(select(AuditEvent).where(AuditEvent.action == AuditAction.policy_changed.value)
                               .order_by(AuditEvent.seq.desc()).limit(1)).scalars().first()
