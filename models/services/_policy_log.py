"""Policy changes are changes (issue 34): the first time a process loads a policy version the audit trail does not
hold yet, it records it (who loaded it, when, the version it replaces, the diff line by line, and the file's text),
so `changeflow policy log` shows every version that governed changes and what each one changed.

When the version in force says so (policies.yaml `policy_changes`), a new version takes effect only once a change
request shipping it is approved: until then every process governs with the version in force, read back exactly
from the trail (`in_force`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select

from ..config import parse_policies
from ..domain import AuditAction, ChangeState, ConfigError, PolicyChangeRule, PolicySet
from ..storage import AuditEvent, ChangeRequest, append_event, decode_data, lock_chain
from ._unit_of_work import UnitOfWork

# A policy change that ended in these no longer ships its version, approved or not.
_UNDONE = [ChangeState.rejected.value, ChangeState.expired.value, ChangeState.cancelled.value,
           ChangeState.failed.value, ChangeState.rolled_back.value]


@dataclass(frozen=True)
class PolicyChange:
    seq: int
    at: datetime
    recorded_by: str
    version: str
    previous: str | None
    diff: str  # unified diff of the canonical text; empty for the first version recorded
    change: str | None = None  # the approved change request that shipped it (policies.yaml `policy_changes`)


@dataclass(frozen=True)
class PolicyInForce:
    """Which policy governs: the configured file's version, or (while that one waits for its change request) the
    version in force, as the trail recorded it."""

    policies: PolicySet
    configured: str  # the version in the config directory
    pending: bool  # the configured version waits for an approved change request
    rule: PolicyChangeRule | None  # the version in force's `policy_changes`
    approved_by: str | None = None  # the change request that shipped the configured version

    def describe(self) -> str:
        if not self.pending or self.rule is None:
            return f"policy version {self.configured[:12]} in force"
        return (f"policies.yaml version {self.configured[:12]} is not in force: policy changes need an approved "
                f"{self.rule.type} change request for {self.rule.service} with release "
                f"{self.rule.release(self.configured)} (`changeflow policy propose`); version "
                f"{self.policies.version[:12]} governs until then")


class PolicyLog:
    def __init__(self, uow: UnitOfWork, configured: PolicySet | None = None):
        self._uow = uow
        # The config directory's policies; the unit of work's are those in force (the same unless one is pending).
        self._configured = configured or uow.org.policies

    def in_force(self) -> PolicyInForce:
        """The configured version, unless the version in force (the trail's latest) has a `policy_changes` rule and
        no approved change request ships the configured one: then the version in force, read back from the trail.
        Nothing recorded yet: the configured version is the first."""
        configured = self._configured
        with self._uow.read() as session:
            last = self._latest(session)
            data = decode_data(last) if last is not None else {}
            if last is None or data.get("version") == configured.version:
                return PolicyInForce(configured, configured.version, False, configured.policy_changes)
            recorded = self._read_back(data)
            rule = recorded.policy_changes if recorded is not None else None
            if recorded is None or rule is None:
                return PolicyInForce(configured, configured.version, False, rule)
            shipped = self._shipped_by(session, rule, configured.version)
        if shipped is not None:
            return PolicyInForce(configured, configured.version, False, rule, shipped)
        return PolicyInForce(recorded, configured.version, True, rule)

    def record_loaded(self, recorded_by: str) -> PolicyChange | None:
        """Record the configured policy when the trail's latest recorded version is another one and it may take
        effect (None: it is recorded already, or it waits for its change request)."""
        policies = self._configured
        with self._uow.read() as session:  # the common case, every sweep: recorded already, no lock taken
            last = self._latest(session)
            if last is not None and decode_data(last).get("version") == policies.version:
                return None
        in_force = self.in_force()
        if in_force.pending:
            return None
        with self._uow.write() as session:
            lock_chain(session)  # before the read: two processes loading a new version at once record it once
            last = self._latest(session)
            if last is not None and decode_data(last).get("version") == policies.version:
                return None
            text = policies.canonical_text()
            before = decode_data(last) if last is not None else {}
            diff = policies.diff_from(str(before.get("content", "")), str(before.get("version", ""))) if before else ""
            now = self._uow.clock()
            appended = append_event(session, actor=recorded_by, action=AuditAction.policy_changed.value, at=now,
                                    data={"version": policies.version, "previous": before.get("version"),
                                          "content": text, "diff": diff, "source": policies.source,
                                          **({"change": in_force.approved_by} if in_force.approved_by else {})})
            return PolicyChange(appended.seq, now, recorded_by, policies.version, before.get("version"), diff,
                                in_force.approved_by)

    def log(self) -> list[PolicyChange]:
        """Every policy version recorded, oldest first."""
        with self._uow.read() as session:
            events = session.execute(select(AuditEvent).where(
                AuditEvent.action == AuditAction.policy_changed.value).order_by(AuditEvent.seq)).scalars().all()
        changes = []
        for event in events:
            data = decode_data(event)
            changes.append(PolicyChange(event.seq, event.occurred_at, event.actor, data["version"],
                                        data.get("previous"), data.get("diff", ""), data.get("change")))
        return changes

    @staticmethod
    def _read_back(data: dict) -> PolicySet | None:
        """The recorded version, parsed from the file text the trail kept (None: recorded before the text was
        kept, when no version could have a `policy_changes` rule)."""
        source = data.get("source")
        if not source:
            return None
        version = str(data.get("version", ""))
        policies = parse_policies(str(source).encode(), f"policies.yaml version {version[:12]} (audit trail)")
        if policies.version != version:
            raise ConfigError(f"policies.yaml version {version[:12]} (audit trail): its recorded text does not hash "
                              f"to its version; run `changeflow audit verify`")
        return policies

    @staticmethod
    def _shipped_by(session, rule: PolicyChangeRule, version: str) -> str | None:
        """The change request that ships `version` under `rule`, approved by people (not a pre-approved template)
        and not undone since."""
        return session.execute(select(ChangeRequest.key).where(
            ChangeRequest.type == rule.type, ChangeRequest.service == rule.service,
            ChangeRequest.release == rule.release(version), ChangeRequest.template.is_(None),
            ChangeRequest.approved_at.is_not(None), ChangeRequest.state.not_in(_UNDONE),
            or_(ChangeRequest.outcome.is_(None), ChangeRequest.outcome == "succeeded"),
        ).order_by(ChangeRequest.id).limit(1)).scalars().first()

    @staticmethod
    def _latest(session) -> AuditEvent | None:
        return session.execute(select(AuditEvent).where(AuditEvent.action == AuditAction.policy_changed.value)
                               .order_by(AuditEvent.seq.desc()).limit(1)).scalars().first()
