"""The transaction core every service writes through: load a change (locked on PostgreSQL), check the version
the caller read, bump it conditionally, apply a lifecycle move and append its audit event, all in one database
transaction.

Concurrency: every update of a change is conditional on the version the writer read (optimistic
concurrency), so two writers never both succeed from the same version. A caller that passes
`expected_version` gets a ConflictError when it is stale; internal callers that pass none are retried
against the fresh row.
"""

from __future__ import annotations

import random
import time
from datetime import datetime
from typing import Any, Callable, ContextManager, TypeVar

from sqlalchemy import select, update
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session

from ..domain import (
    EndedHistory,
    pre_approval_withheld,
    Standing,
    typed_key,
    Delegation,
    Directory,
    with_delegates,
    AuditAction,
    ChangeState,
    ChangeTypeRules,
    ConflictError,
    Decision,
    GivenApproval,
    NotFound,
    Org,
    PolicyEvaluation,
    RequiredApproval,
    RiskLevel,
    change_type,
    evaluate,
    next_escalation_at,
    OUTCOME_OF_STATE,
    plan_transition,
    stamps_of,
    required_approvals,
    utcnow,
)
from ..storage import (Approval, ChangeRequest, Database, DelegationRecord, append_event, decode_data, ended_changes,
                       events_for)

T = TypeVar("T")

class UnitOfWork:
    def __init__(self, db: Database, org: Org, *, clock: Callable[[], datetime] = utcnow,
                 conflict_retries: int = 8):
        self.db = db
        self.org = org
        self.clock = clock
        self._conflict_retries = conflict_retries

    def read(self) -> ContextManager[Session]:
        return self.db.read()

    def write(self) -> ContextManager[Session]:
        return self.db.write()

    # ---- the change row ----------------------------------------------------------------------------------

    def retry(self, attempt: Callable[[], T], expected_version: int | None) -> T:
        attempts = 1 if expected_version is not None else self._conflict_retries
        for number in range(1, attempts + 1):
            try:
                return attempt()
            except ConflictError:
                if number == attempts:
                    raise
                time.sleep(random.uniform(0, 0.005 * number))
        raise AssertionError("unreachable")

    @staticmethod
    def load(session: Session, key: str, *, for_update: bool = False) -> ChangeRequest:
        stmt = select(ChangeRequest).where(ChangeRequest.key == typed_key(key))
        if for_update and session.get_bind().dialect.name == "postgresql":
            # Under READ COMMITTED each statement sees newer commits; locking the row makes the version,
            # the approvals and the policy check one consistent snapshot (SQLite writers are serial anyway).
            stmt = stmt.with_for_update()
        change = session.execute(stmt).scalar_one_or_none()
        if change is None:
            raise NotFound(f"no change {key!r}")
        return change

    @staticmethod
    def check_version(change: ChangeRequest, expected_version: int | None) -> int:
        if expected_version is not None and change.version != expected_version:
            raise ConflictError(
                f"{change.key} changed since you read it (version {expected_version}, now {change.version}); "
                "re-read it and try again"
            )
        return change.version

    def bump(self, session: Session, change: ChangeRequest, version: int, now: datetime, **values: Any) -> None:
        """The conditional, version-checked update every write of a change goes through."""
        result = session.execute(
            update(ChangeRequest)
            .where(ChangeRequest.id == change.id, ChangeRequest.version == version)
            .values(version=version + 1, updated_at=now, **values)
        )
        if result.rowcount != 1:
            raise ConflictError(f"{change.key} was changed by someone else at the same time; re-read and try again")
        # Mirror the row we just wrote instead of reading it back.
        for name, value in {"version": version + 1, "updated_at": now, **values}.items():
            set_committed_value(change, name, value)

    def rules(self, change: ChangeRequest) -> ChangeTypeRules:
        return change_type(self.org.policies, change.type, change.environment)

    def apply_transition(self, session: Session, change: ChangeRequest, target: ChangeState, actor: str,
                         reason: str, version: int, data: dict | None = None) -> ChangeRequest:
        now = self.clock()
        rules = self.rules(change)
        move = plan_transition(rules, ChangeState(change.state), target, actor=actor, reason=reason, at=now)
        values: dict[str, Any] = {"state": target.value, **{column: now for column in stamps_of(target)}}
        if target is ChangeState.awaiting_approval:
            values["escalation_due_at"] = next_escalation_at(now, None, list(rules.ladder),
                                                             change.incident_severity, rules.approval_sla)
        if target in OUTCOME_OF_STATE:
            values["outcome"] = OUTCOME_OF_STATE[target]
        if target is ChangeState.review_pending:
            values["review_due_at"] = now + rules.review_within
        self.bump(session, change, version, now, **values)
        append_event(
            session,
            actor=move.actor,
            action=AuditAction.transition.value,
            change_key=change.key,
            from_state=move.source.value,
            to_state=move.target.value,
            data={"reason": reason, **(data or {})},
            at=now,
        )
        if change.rolls_back and values.get("outcome") == "succeeded":
            # A rollback that worked: the reverted change's history says so, in the same transaction (issue 32).
            append_event(session, actor=move.actor, action=AuditAction.reverted.value, change_key=change.rolls_back,
                         data={"by": change.key}, at=now)
        return change

    # ---- the approval policy, as every service that moves a change must see it --------------------------

    def required_for(self, change: ChangeRequest) -> list[RequiredApproval]:
        return required_approvals(change.type, RiskLevel(change.risk_level), self.org.policies, self.org.directory,
                                  change.environment, self.standing_of(change))

    def standing_of(self, change: ChangeRequest) -> Standing | None:
        """Its service's success when it was filed, over policies.yaml `score.window`, where a score rule reads it
        for its type (None otherwise: no query). As of its filing, so every later look at what it needs (each
        decision, the brief, the what-if's replay) finds the same."""
        if not any(change.type in rule.types for rule in self.org.policies.score.rules):
            return None
        return self.standing_at_filing(change)

    def pre_approval_withheld(self, change: ChangeRequest) -> str | None:
        """Why a pre-approved template's change goes through the gate after all: its service's record, short of
        policies.yaml `score.pre_approval` (None: the policy asks for no record, or it has one)."""
        score = self.org.policies.score
        if score.pre_approval is None:
            return None
        return pre_approval_withheld(score.pre_approval, self.standing_at_filing(change), score.window)

    def standing_at_filing(self, change: ChangeRequest) -> Standing:
        """Its service's success over policies.yaml `score.window` before the change was filed."""
        window = self.org.policies.score.window
        filed = change.created_at or self.clock()
        with self.read() as session:
            ended = ended_changes(session, filed - window, filed, service=change.service)
        return EndedHistory(ended).standing(filed, window)

    @staticmethod
    def given(session: Session, change: ChangeRequest) -> list[GivenApproval]:
        rows = session.execute(
            select(Approval.approver, Approval.role, Approval.decision, Approval.on_behalf_of).where(
                Approval.change_id == change.id, Approval.round == change.approval_round
            )
        )
        return [GivenApproval(a, r, Decision(d), on_behalf) for a, r, d, on_behalf in rows]

    @staticmethod
    def delegations(session: Session, *, at: datetime) -> list[Delegation]:
        """The delegations in force at `at` (not revoked, the period covering it)."""
        rows = session.execute(select(DelegationRecord).where(
            DelegationRecord.starts_at <= at, DelegationRecord.ends_at > at,
            DelegationRecord.revoked_at.is_(None))).scalars()  # type: ignore[union-attr]
        return [Delegation(r.delegator, r.delegate, r.starts_at, r.ends_at, r.reason) for r in rows]

    def directory_for(self, session: Session, change: ChangeRequest) -> Directory:
        """The approver directory in force for `change` now: every gate asks this who may act, so a delegate
        stands in for their delegator wherever the delegator could act, and never for the change's requester."""
        return with_delegates(self.org.directory, self.delegations(session, at=self.clock()), self.clock(),
                              requester=change.requester)

    def evaluate(self, session: Session, change: ChangeRequest) -> PolicyEvaluation:
        return evaluate(self.required_for(change), self.given(session, change),
                        reject_on_any_rejection=self.org.policies.reject_on_any_rejection)

    # ---- once-only audit markers -------------------------------------------------------------------------

    def marker(self, key: str, action: AuditAction, match: dict, data: dict | None = None, *,
               actor: str = "changeflow") -> tuple[datetime, dict]:
        """Append an event once per `match` (a resumed run asks again); return when and what was first written."""
        with self.write() as session:
            change = self.load(session, key, for_update=True)
            for event in events_for(session, change.key):
                if event.action == action.value and all(decode_data(event).get(k) == v for k, v in match.items()):
                    return event.occurred_at, decode_data(event)
            now = self.clock()
            append_event(session, actor=actor, action=action.value, change_key=change.key, at=now,
                         data={**match, **(data or {})})
            return now, {**match, **(data or {})}

    def replayed_refusal(self, session: Session, change: ChangeRequest, attempt_id: str | None) -> str | None:
        """The refusal already recorded for this gate attempt: a resumed run replays the inputs of the keys that
        fired before, and each must be refused once, not once per replay."""
        if not attempt_id:
            return None
        for event in events_for(session, change.key):
            data = decode_data(event)
            if data.get("attempt") == attempt_id and "refusal" in data:
                return str(data["refusal"])
        return None

    def record_refusal(self, session: Session, change: ChangeRequest, *, actor: str, action: AuditAction,
                       refusal: str, attempt_id: str | None = None, **data: object) -> None:
        """A refused attempt on the record (committed with the caller's transaction, which then raises)."""
        append_event(session, actor=actor.strip() or "unknown (Prefect UI)", action=action.value,
                     change_key=change.key, at=self.clock(),
                     data={**data, "refusal": refusal, **({"attempt": attempt_id} if attempt_id else {})})

    def last_event_per_step(self, key: str, action: AuditAction) -> dict[int, dict]:
        """The data of the change's latest `action` event for each `step`."""
        with self.read() as session:
            return {decode_data(e)["step"]: decode_data(e) for e in events_for(session, typed_key(key))
                    if e.action == action.value}
