"""Change operations: each one a single database transaction that writes the change and its audit events.

Concurrency: every update of a change is conditional on the version the writer read (optimistic
concurrency), so two writers never both succeed from the same version. A caller that passes
`expected_version` gets a ConflictError when it is stale; internal callers that pass none are retried
against the fresh row.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable, TypeVar

from sqlalchemy import case, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session

from ._audit import append_event, decode_data, events_for
from ._canary_plan import CanaryConfig, CanaryPlan, CanaryTarget
from ._config import Org
from ._db import Database
from ._enums import AuditAction, ChangeState, ChangeType, Decision, RiskLevel
from ._errors import ConfigError, ConflictError, InputError, NotFound, PolicyViolation
from ._lifecycle import plan_transition
from ._queries import ChangeFilter, Page, query_changes
from ._policy import (
    GivenApproval,
    PolicyEvaluation,
    RequiredApproval,
    approval_code,
    authorise_decision,
    evaluate,
    required_approvals,
    verify_code,
)
from ._risk import ServiceHistory, assess_risk
from ._schemas import ApprovalView, AuditEventView, ChangeRequestInput, ChangeRequestView, parse_change_request
from ._tables import Approval, CanaryMeasurement, ChangeRequest
from ._types import utcnow

T = TypeVar("T")

_CLOSING_STATES = {ChangeState.closed, ChangeState.rejected, ChangeState.expired, ChangeState.cancelled}
_OUTCOMES = {
    ChangeState.completed: "succeeded",
    ChangeState.failed: "failed",
    ChangeState.rolled_back: "rolled_back",
}


ACTIVE_STATES = {"submitted", "awaiting_approval", "approved", "scheduled", "implementing", "verifying"}


def format_key(change_id: int) -> str:
    return f"CHG-{change_id:06d}"


@dataclass(frozen=True)
class DecisionResult:
    change: ChangeRequest
    role: str
    evaluation: PolicyEvaluation
    repeated: bool = False


class ChangeService:
    def __init__(
        self,
        db: Database,
        org: Org,
        secret: bytes,
        *,
        clock: Callable[[], datetime] = utcnow,
        conflict_retries: int = 8,
    ):
        self.db = db
        self.org = org
        self._secret = secret
        self._clock = clock
        self._conflict_retries = conflict_retries

    # ---- reads ------------------------------------------------------------------------------------------

    def get(self, key: str) -> ChangeRequest:
        with self.db.read() as session:
            return self._load(session, key)

    def required_for(self, change: ChangeRequest) -> list[RequiredApproval]:
        return required_approvals(
            ChangeType(change.type), RiskLevel(change.risk_level), self.org.policies, self.org.directory
        )

    def evaluation(self, key: str) -> PolicyEvaluation:
        with self.db.read() as session:
            change = self._load(session, key)
            return self._evaluate(session, change)

    def last_decision(self, key: str) -> Approval | None:
        with self.db.read() as session:
            change = self._load(session, key)
            return session.execute(
                select(Approval)
                .where(Approval.change_id == change.id, Approval.round == change.approval_round)
                .order_by(Approval.id.desc())
                .limit(1)
            ).scalar_one_or_none()

    def decided_by(self, key: str) -> list[str]:
        """Who has already decided on the change in its current approval round."""
        with self.db.read() as session:
            change = self._load(session, key)
            return [g.approver for g in self._given(session, change)]

    def attach_flow_run(self, key: str, flow_run_id: str) -> ChangeRequest:
        """Record the Prefect flow run that drives the change (no audit event: it is bookkeeping)."""

        def attempt() -> ChangeRequest:
            with self.db.write() as session:
                change = self._load(session, key, for_update=True)
                if change.flow_run_id != flow_run_id:
                    self._bump(session, change, change.version, self._clock(), flow_run_id=flow_run_id)
                return change

        return self._retry(attempt, None)

    def approval_code_for(self, key: str, approver: str) -> str:
        """The personal code to send to `approver` for the change's current approval round."""
        change = self.get(key)
        return approval_code(self._secret, change.key, approver, change.approval_round)

    def view(self, key: str) -> ChangeRequestView:
        with self.db.read() as session:
            change = self._load(session, key)
            approvals = session.execute(
                select(Approval).where(Approval.change_id == change.id).order_by(Approval.decided_at, Approval.id)
            ).scalars()
            events = events_for(session, change.key)
            from ._tables import ChecklistResult, Notification

            checks = session.execute(select(ChecklistResult).where(ChecklistResult.change_key == change.key)
                                     .order_by(ChecklistResult.id)).scalars()
            notes = session.execute(select(Notification).where(Notification.change_key == change.key)
                                    .order_by(Notification.id)).scalars()
            return ChangeRequestView(
                **change.model_dump(exclude={"id", "risk_answers", "idempotency_key", "approval_requested_at", "approved_at"}),
                checklist_results=[c.model_dump(include={"phase", "step", "item_id", "title", "kind", "required",
                                                         "passed", "detail", "actor", "recorded_at"}) for c in checks],
                notifications=[{"id": n.id, "event": n.event, "recipient": n.recipient,
                                "channel": n.channel.get("type"), "state": n.state, "attempts": n.attempts,
                                "sent_at": n.sent_at} for n in notes],
                approvals=[ApprovalView(**a.model_dump()) for a in approvals],
                events=[
                    AuditEventView(**e.model_dump(exclude={"data", "change_key", "prev_hash", "hash"}),
                                   data=decode_data(e))
                    for e in events
                ],
                canary_steps=[{k: v for k, v in decode_data(e).items() if k != "router"} | {"at": e.occurred_at}
                              for e in events if e.action == AuditAction.canary_decision.value],
            )

    def list_changes(self, *, limit: int = 50, after: str | None = None, **filters) -> list[ChangeRequest]:
        return self.query(ChangeFilter(**filters), limit=limit, after=after).items

    def query(self, change_filter: "ChangeFilter", *, limit: int = 50, after: str | None = None) -> "Page":
        with self.db.read() as session:
            return query_changes(session, change_filter, limit=limit, after=after)

    # ---- writes -----------------------------------------------------------------------------------------

    def submit(
        self,
        request: ChangeRequestInput | dict,
        *,
        idempotency_key: str | None = None,
        flow_run_id: str | None = None,
    ) -> ChangeRequest:
        """Record a change request (state `submitted`); with an idempotency key, a repeat returns the first."""
        request = self._apply_template(parse_change_request(request))
        if idempotency_key:
            existing = self.find_by_idempotency_key(idempotency_key)
            if existing is not None:
                return existing
        try:
            with self.db.write() as session:
                clashes = self._schedule_clashes(session, request)
                if clashes and request.type is not ChangeType.emergency:
                    raise PolicyViolation("; ".join(clashes))
                change = self._insert(session, request, idempotency_key, flow_run_id)
                if clashes:
                    # Emergencies go through, and the override is on the record.
                    append_event(session, actor=request.requester, action=AuditAction.policy_override.value,
                                 change_key=change.key, data={"overridden": clashes, "reason": "emergency change"},
                                 at=self._clock())
                return change
        except IntegrityError:
            # A concurrent submit with the same idempotency key won the race: return its record.
            existing = self.find_by_idempotency_key(idempotency_key) if idempotency_key else None
            if existing is None:
                raise
            return existing

    def schedule_clashes(self, key: str) -> list[str]:
        """For a recorded change: the freezes and other changes its window now overlaps (checked again when
        it is scheduled, since a freeze may have been declared after it was submitted)."""
        with self.db.read() as session:
            change = self._load(session, key)
            return self._schedule_clashes(session, change, exclude=change.key)

    def _schedule_clashes(self, session: Session, request, exclude: str | None = None) -> list[str]:
        """Freezes and other active changes on the same service that the planned window overlaps."""
        from ._tables import MaintenanceWindow

        if request.planned_start is None:
            return []
        start = request.planned_start
        end = request.planned_end or start + timedelta(hours=2)
        clashes = []
        freezes = session.execute(
            select(MaintenanceWindow).where(
                MaintenanceWindow.freeze.is_(True), MaintenanceWindow.starts_at < end, MaintenanceWindow.ends_at > start,
                (MaintenanceWindow.service.is_(None)) | (MaintenanceWindow.service == request.service),
            )
        ).scalars()
        for freeze in freezes:
            clashes.append(f"planned window falls in the freeze '{freeze.title or 'freeze'}' "
                           f"({freeze.starts_at:%Y-%m-%d %H:%M} to {freeze.ends_at:%Y-%m-%d %H:%M} UTC)")
        active = [s.value for s in ChangeState if s.value in ACTIVE_STATES]
        others = session.execute(
            select(ChangeRequest).where(
                ChangeRequest.service == request.service, ChangeRequest.state.in_(active),
                ChangeRequest.planned_start.is_not(None), ChangeRequest.planned_start < end,
            )
        ).scalars()
        for other in others:
            if other.key == exclude:
                continue
            other_end = other.planned_end or other.planned_start + timedelta(hours=2)
            if other_end > start:
                clashes.append(f"conflicts with {other.key} ({other.title}) on {other.service}, planned "
                               f"{other.planned_start:%Y-%m-%d %H:%M} to {other_end:%H:%M} UTC")
        return clashes

    def add_window(self, *, starts_at: datetime, ends_at: datetime, kind: str = "ad_hoc", title: str = "",
                   service: str | None = None, freeze: bool = False, actor: str = "changeflow"):
        from ._tables import MaintenanceWindow

        if ends_at <= starts_at:
            raise InputError("end: must be after start", [("end", "before start")])
        with self.db.write() as session:
            window = MaintenanceWindow(starts_at=starts_at, ends_at=ends_at, kind=kind, title=title,
                                       service=service, freeze=freeze)
            session.add(window)
            session.flush()
            append_event(session, actor=actor, action=AuditAction.policy_decision.value, at=self._clock(),
                         data={"window": window.id, "freeze": freeze, "title": title, "service": service,
                               "starts_at": starts_at.isoformat(), "ends_at": ends_at.isoformat()})
            return window

    def windows_between(self, start: datetime, end: datetime) -> list:
        from ._tables import MaintenanceWindow

        with self.db.read() as session:
            return list(session.execute(
                select(MaintenanceWindow).where(MaintenanceWindow.starts_at < end, MaintenanceWindow.ends_at > start)
                .order_by(MaintenanceWindow.starts_at)).scalars())

    def changes_planned_between(self, start: datetime, end: datetime) -> list[ChangeRequest]:
        with self.db.read() as session:
            return list(session.execute(
                select(ChangeRequest).where(ChangeRequest.planned_start < end,
                                            ChangeRequest.planned_start >= start - timedelta(days=1))
                .order_by(ChangeRequest.planned_start)).scalars())

    def validate_request(self, request: ChangeRequestInput | dict) -> ChangeRequestInput:
        """Everything `submit` checks before writing (fields, cross-field rules, template), without writing."""
        return self._apply_template(parse_change_request(request))

    def request_approval(self, key: str, *, actor: str = "changeflow") -> ChangeRequest:
        """Move a submitted change to `awaiting_approval`, recording the policy decision of who must approve.

        A change from a pre-approved template goes straight on to `approved`, recorded with the template and
        the policy version that allowed it.
        """

        def attempt() -> ChangeRequest:
            with self.db.write() as session:
                change = self._load(session, key, for_update=True)
                pre_approved = change.template is not None and change.template in self.org.policies.pre_approved_templates
                required = [] if pre_approved else self.required_for(change)
                append_event(
                    session,
                    actor=actor,
                    action=AuditAction.policy_decision.value,
                    change_key=change.key,
                    data={
                        "policy_version": change.policy_version,
                        "required": [{"role": r.role, "count": r.count} for r in required],
                        "risk_level": change.risk_level,
                        "approval_sla_s": self.approval_sla(change).total_seconds(),
                        **({"pre_approved_template": change.template} if pre_approved else {}),
                    },
                    at=self._clock(),
                )
                change = self._apply_transition(
                    session, change, ChangeState.awaiting_approval, actor, "approvals requested", change.version
                )
                if pre_approved:
                    change = self._apply_transition(
                        session, change, ChangeState.approved, "policy-engine",
                        f"pre-approved template {change.template} (policy {change.policy_version[:12]})",
                        change.version,
                    )
                return change

        return self._retry(attempt, None)

    def template_of(self, change: ChangeRequest):
        """The change template the change was filed from, if any (its commands drive the implementation)."""
        return self.org.templates.get(change.template) if change.template else None

    def checklist_of(self, change: ChangeRequest):
        """The checklist the change runs, if any."""
        return self.org.checklists.get(change.checklist) if change.checklist else None

    def approval_sla(self, change: ChangeRequest) -> timedelta:
        return self.org.policies.for_type(ChangeType(change.type)).approval_sla

    def approval_deadline(self, change: ChangeRequest) -> datetime | None:
        """When the approval SLA runs out (None before approvals were requested)."""
        return change.approval_requested_at + self.approval_sla(change) if change.approval_requested_at else None

    def pending_approvals(self) -> list[tuple[ChangeRequest, PolicyEvaluation]]:
        """Changes waiting for decisions, oldest request first, with what each still needs."""
        with self.db.read() as session:
            changes = session.execute(
                select(ChangeRequest)
                .where(ChangeRequest.state == ChangeState.awaiting_approval.value)
                .order_by(ChangeRequest.approval_requested_at, ChangeRequest.id)
            ).scalars().all()
            return [(change, self._evaluate(session, change)) for change in changes]

    def transition(
        self,
        key: str,
        target: ChangeState | str,
        *,
        actor: str,
        reason: str = "",
        expected_version: int | None = None,
        data: dict | None = None,
    ) -> ChangeRequest:
        """Apply one lifecycle move; raises IllegalTransition / ConflictError / PolicyViolation and writes nothing."""
        target = ChangeState(target)

        def attempt() -> ChangeRequest:
            with self.db.write() as session:
                change = self._load(session, key, for_update=True)
                version = self._check_version(change, expected_version)
                if target is ChangeState.approved:
                    evaluation = self._evaluate(session, change)
                    if not evaluation.satisfied:
                        raise PolicyViolation(
                            f"{change.key} cannot be approved yet: still needs {evaluation.describe_missing()}"
                        )
                return self._apply_transition(session, change, target, actor, reason, version, data)

        return self._retry(attempt, expected_version)

    def decide(
        self,
        key: str,
        *,
        approver: str,
        decision: Decision | str,
        code: str,
        role: str | None = None,
        comment: str = "",
        expected_version: int | None = None,
        attempt_id: str | None = None,
    ) -> DecisionResult:
        """Record an approver's decision. A refused attempt is written to the audit trail, then raised.

        `attempt_id` names one submission (a gate's suspend key): replaying it, as a resumed flow run does,
        returns the first outcome instead of recording it again.
        """
        decision = Decision(decision)

        def attempt() -> DecisionResult:
            refusal: PolicyViolation | None = None
            with self.db.write() as session:
                change = self._load(session, key, for_update=True)
                version = self._check_version(change, expected_version)
                required = self.required_for(change)
                given = self._given(session, change)
                replayed = self._replayed_attempt(session, change, attempt_id)
                if replayed is not None:
                    if replayed.action == AuditAction.approval_refused.value:
                        refusal = PolicyViolation(decode_data(replayed)["reason"])
                    else:
                        return DecisionResult(change=change, role=decode_data(replayed)["role"],
                                              evaluation=self._evaluate(session, change), repeated=True)
                repeat = None if refusal else self._repeated_decision(change, approver, role, decision, code, given)
                if refusal is None and repeat is not None:
                    # The same person sending the same decision again (a resumed run, the CLI nudging the
                    # flow after recording it): acknowledged, not recorded twice.
                    return DecisionResult(change=change, role=repeat.role, evaluation=self._evaluate(session, change),
                                          repeated=True)
                if refusal is None:
                    try:
                        acting_role = self._authorise(change, approver, role, decision, code, required, given)
                    except PolicyViolation as exc:
                        refusal = exc
                        append_event(
                            session,
                            actor=approver,
                            action=AuditAction.approval_refused.value,
                            change_key=change.key,
                            data={"decision": decision.value, "role": role, "reason": str(exc),
                                  **({"attempt": attempt_id} if attempt_id else {})},
                            at=self._clock(),
                        )
                    else:
                        result = self._record_decision(
                            session, change, version, approver, acting_role, decision, comment, required, given,
                            attempt_id,
                        )
            if refusal is not None:
                raise refusal
            return result

        return self._retry(attempt, expected_version)

    def record_review(self, key: str, *, actor: str, summary: str) -> ChangeRequest:
        """Record the post-implementation review and close the change."""
        if not summary.strip():
            raise InputError("summary: a post-implementation review needs a summary", [("summary", "empty")])

        def attempt() -> ChangeRequest:
            with self.db.write() as session:
                change = self._load(session, key, for_update=True)
                append_event(
                    session,
                    actor=actor,
                    action=AuditAction.review_recorded.value,
                    change_key=change.key,
                    data={"summary": summary},
                    at=self._clock(),
                )
                return self._apply_transition(
                    session, change, ChangeState.closed, actor, "post-implementation review recorded", change.version
                )

        return self._retry(attempt, None)

    # ---- checklists --------------------------------------------------------------------------------------

    def record_check(self, key: str, *, phase: str, step: int, item, outcome, actor: str = "changeflow") -> bool:
        """Store one item's outcome once; False when (change, phase, step, item) already has one."""
        from ._checklist_store import insert_result

        with self.db.write() as session:
            change = self._load(session, key)
            written = insert_result(session, change.key, phase, step, item, outcome, actor)
            if written and actor != "changeflow":
                append_event(session, actor=actor, action=AuditAction.checklist_confirmed.value,
                             change_key=change.key, data={"phase": phase, "step": step, "item": item.id,
                                                          "note": outcome.detail}, at=self._clock())
            return written

    def check_results(self, key: str, *, phase: str | None = None, step: int | None = None) -> list:
        from ._tables import ChecklistResult

        stmt = select(ChecklistResult).where(ChecklistResult.change_key == key.upper()).order_by(ChecklistResult.id)
        if phase is not None:
            stmt = stmt.where(ChecklistResult.phase == phase)
        if step is not None:
            stmt = stmt.where(ChecklistResult.step == step)
        with self.db.read() as session:
            return list(session.execute(stmt).scalars())

    def record_phase(self, key: str, verdict, *, step: int) -> None:
        """The phase verdict in the audit trail (once per change, phase and step)."""
        self._marker(key, AuditAction.checklist_phase, {"phase": verdict.phase, "step": step},
                     {"status": verdict.status.name, "failed_required": verdict.failed_required,
                      "failed_advisory": verdict.failed_advisory})

    def _marker(self, key: str, action: AuditAction, match: dict, data: dict | None = None, *,
                actor: str = "changeflow"):
        """Append an event once per `match` (a resumed run asks again); return the time it was first written."""
        with self.db.write() as session:
            change = self._load(session, key, for_update=True)
            for event in events_for(session, change.key):
                if event.action == action.value and all(decode_data(event).get(k) == v for k, v in match.items()):
                    return event.occurred_at, decode_data(event)
            now = self._clock()
            append_event(session, actor=actor, action=action.value, change_key=change.key, at=now,
                         data={**match, **(data or {})})
            return now, {**match, **(data or {})}

    def phase_waiting_since(self, key: str, phase: str, step: int) -> datetime:
        return self._marker(key, AuditAction.checklist_waiting, {"phase": phase, "step": step})[0]

    def record_step(self, key: str, step: int, evidence: dict) -> dict:
        """Record an implementation step as done (once); returns the first record's data."""
        return self._marker(key, AuditAction.implementation_step, {"step": step}, evidence)[1]

    def done_steps(self, key: str) -> dict[int, dict]:
        return self._last_event_per_step(key, AuditAction.implementation_step)

    def _last_event_per_step(self, key: str, action: AuditAction) -> dict[int, dict]:
        """The data of the change's latest `action` event for each `step`."""
        with self.db.read() as session:
            return {decode_data(e)["step"]: decode_data(e) for e in events_for(session, key.upper())
                    if e.action == action.value}

    # ---- canary ------------------------------------------------------------------------------------------

    def canary_plan(self, change: ChangeRequest) -> CanaryPlan | None:
        return CanaryPlan.model_validate(change.canary) if change.canary else None

    @property
    def canary_config(self) -> CanaryConfig:
        """canary.yaml, or an empty one (no service has a router) when the file is absent."""
        return self.org.canary or CanaryConfig()

    def canary_target(self, change: ChangeRequest) -> CanaryTarget:
        target = self.canary_config.services.get(change.service)
        if target is None:
            raise ConfigError(f"canary.yaml: no traffic router for service {change.service!r}")
        return target

    def record_measurements(self, key: str, rows: list[dict]) -> None:
        with self.db.write() as session:
            change = self._load(session, key)
            session.add_all(CanaryMeasurement(change_key=change.key, **row) for row in rows)

    def measurements(self, key: str, *, step: int | None = None) -> list[CanaryMeasurement]:
        stmt = select(CanaryMeasurement).where(CanaryMeasurement.change_key == key.upper())
        if step is not None:
            stmt = stmt.where(CanaryMeasurement.step == step)
        with self.db.read() as session:
            return list(session.execute(stmt.order_by(CanaryMeasurement.id)).scalars())

    def record_canary_decision(self, key: str, *, step: int, bake: str, decision: dict) -> dict:
        """A step's decision in the audit trail, once per bake of the step; returns the first record's data."""
        return self._marker(key, AuditAction.canary_decision, {"step": step, "bake": bake}, decision)[1]

    def canary_decisions(self, key: str) -> dict[int, dict]:
        """The last decision of each canary step."""
        return self._last_event_per_step(key, AuditAction.canary_decision)

    def check_person_code(self, key: str, person: str, code: str) -> None:
        change = self.get(key)
        if person not in self.org.directory.people:
            raise PolicyViolation(f"person: {person!r} is not in the approver directory")
        if not verify_code(self._secret, change.key, person, change.approval_round, code):
            raise PolicyViolation(f"approval_code: wrong code for {person} on {change.key}")

    def confirm_canary(self, key: str, *, person: str, code: str, action: str, comment: str, gate: str) -> dict:
        """A person's answer at a canary gate (confirm a step, or judge an inconclusive analysis), checked like an
        approval: someone in the directory, with their personal code for this change."""
        self.check_person_code(key, person, code)
        return self._marker(key, AuditAction.canary_confirmation, {"gate": gate},
                            {"person": person, "answer": action, "comment": comment}, actor=person)[1]

    # ---- internals --------------------------------------------------------------------------------------

    def _retry(self, attempt: Callable[[], T], expected_version: int | None) -> T:
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
    def _load(session: Session, key: str, *, for_update: bool = False) -> ChangeRequest:
        stmt = select(ChangeRequest).where(ChangeRequest.key == key.upper())
        if for_update and session.get_bind().dialect.name == "postgresql":
            # Under READ COMMITTED each statement sees newer commits; locking the row makes the version,
            # the approvals and the policy check one consistent snapshot (SQLite writers are serial anyway).
            stmt = stmt.with_for_update()
        change = session.execute(stmt).scalar_one_or_none()
        if change is None:
            raise NotFound(f"no change {key!r}")
        return change

    @staticmethod
    def _check_version(change: ChangeRequest, expected_version: int | None) -> int:
        if expected_version is not None and change.version != expected_version:
            raise ConflictError(
                f"{change.key} changed since you read it (version {expected_version}, now {change.version}); "
                "re-read it and try again"
            )
        return change.version

    def find_by_idempotency_key(self, idempotency_key: str) -> ChangeRequest | None:
        with self.db.read() as session:
            return session.execute(
                select(ChangeRequest).where(ChangeRequest.idempotency_key == idempotency_key)
            ).scalar_one_or_none()

    def _insert(
        self, session: Session, request: ChangeRequestInput, idempotency_key: str | None, flow_run_id: str | None
    ) -> ChangeRequest:
        now = self._clock()
        risk = assess_risk(request.risk, self._history(session, request.service, now), self.org.policies.risk)
        change = ChangeRequest(
            **request.model_dump(exclude={"risk"}, mode="python"),
            state=ChangeState.submitted.value,
            risk_level=risk.level.value,
            risk_score=risk.score,
            risk_reasons=list(risk.reasons),
            risk_answers=request.risk.model_dump(mode="json"),
            policy_version=self.org.policies.version,
            idempotency_key=idempotency_key,
            flow_run_id=flow_run_id,
            created_at=now,
            updated_at=now,
        )
        change.type = request.type.value
        change.incident_severity = request.incident_severity.value if request.incident_severity else None
        session.add(change)
        session.flush()
        change.key = format_key(change.id)
        session.flush()
        append_event(
            session,
            actor=request.requester,
            action=AuditAction.submitted.value,
            change_key=change.key,
            to_state=ChangeState.submitted.value,
            data={
                "type": change.type,
                "title": change.title,
                "service": change.service,
                "risk_level": change.risk_level,
                "risk_score": change.risk_score,
                "risk_reasons": change.risk_reasons,
                "policy_version": change.policy_version,
                "flow_run_id": flow_run_id,
            },
            at=now,
        )
        return change

    def _history(self, session: Session, service: str, now: datetime) -> ServiceHistory:
        since = now - self.org.policies.risk.failure_rate_window
        implemented, failed = session.execute(
            select(
                func.count(),
                func.coalesce(func.sum(case((ChangeRequest.outcome.in_(("failed", "rolled_back")), 1), else_=0)), 0),
            ).where(
                ChangeRequest.service == service,
                ChangeRequest.implemented_at >= since,
                ChangeRequest.outcome.is_not(None),
            )
        ).one()
        return ServiceHistory(implemented=int(implemented), failed=int(failed))

    def _given(self, session: Session, change: ChangeRequest) -> list[GivenApproval]:
        rows = session.execute(
            select(Approval.approver, Approval.role, Approval.decision).where(
                Approval.change_id == change.id, Approval.round == change.approval_round
            )
        )
        return [GivenApproval(a, r, Decision(d)) for a, r, d in rows]

    def _evaluate(self, session: Session, change: ChangeRequest) -> PolicyEvaluation:
        return evaluate(
            self.required_for(change),
            self._given(session, change),
            reject_on_any_rejection=self.org.policies.reject_on_any_rejection,
        )

    @staticmethod
    def _replayed_attempt(session: Session, change: ChangeRequest, attempt_id: str | None):
        if not attempt_id:
            return None
        decisions = (AuditAction.approval.value, AuditAction.rejection.value, AuditAction.approval_refused.value)
        for event in events_for(session, change.key):
            if event.action in decisions and decode_data(event).get("attempt") == attempt_id:
                return event
        return None

    def _repeated_decision(
        self,
        change: ChangeRequest,
        approver: str,
        role: str | None,
        decision: Decision,
        code: str,
        given: list[GivenApproval],
    ) -> GivenApproval | None:
        earlier = next(
            (g for g in given if g.approver == approver and g.decision == decision and role in (None, g.role)), None
        )
        if earlier and verify_code(self._secret, change.key, approver, change.approval_round, code):
            return earlier
        return None

    def _apply_template(self, request: ChangeRequestInput) -> ChangeRequestInput:
        request = self._apply_template_fields(request)
        if request.checklist and request.checklist not in self.org.checklists:
            known = ", ".join(sorted(self.org.checklists)) or "none configured"
            raise InputError(f"checklist: unknown checklist {request.checklist!r} (known: {known})",
                             [("checklist", "unknown checklist")])
        if request.canary is not None:
            problems = self.canary_config.check_plan(request.service, request.canary)
            if problems:
                raise InputError("; ".join(problems), [(p.split(":")[0], p.split(": ", 1)[1]) for p in problems])
        return request

    def _apply_template_fields(self, request: ChangeRequestInput) -> ChangeRequestInput:
        if not request.template:
            return request
        template = self.org.templates.get(request.template)
        if template is None:
            known = ", ".join(sorted(self.org.templates)) or "none configured"
            raise InputError(f"template: unknown template {request.template!r} (known: {known})",
                             [("template", "unknown template")])
        if template.type != request.type:
            raise InputError(f"type: template {request.template} is a {template.type.value} change",
                             [("type", "does not match the template")])
        merged = request.model_dump()
        for name in ("title", "description", "impact", "implementation_plan", "rollback_plan", "test_evidence"):
            if not merged[name]:
                merged[name] = getattr(template, name).replace("{service}", request.service)
        if "risk" not in request.model_fields_set and template.risk:
            merged["risk"] = template.risk
        if not merged.get("checklist") and template.checklist:
            merged["checklist"] = template.checklist
        return parse_change_request(merged, template_applied=True)

    def _authorise(
        self,
        change: ChangeRequest,
        approver: str,
        role: str | None,
        decision: Decision,
        code: str,
        required: list[RequiredApproval],
        given: list[GivenApproval],
    ) -> str:
        if change.state != ChangeState.awaiting_approval.value:
            raise PolicyViolation(f"{change.key} is {change.state}, not awaiting approval")
        if approver == change.requester:
            raise PolicyViolation(
                f"{approver} requested this change and cannot approve or reject it (self-approval)"
            )
        if approver in self.org.directory.people and not verify_code(
            self._secret, change.key, approver, change.approval_round, code
        ):
            raise PolicyViolation(f"wrong approval code for {approver} on {change.key} (round {change.approval_round})")
        return authorise_decision(
            requester=change.requester,
            approver=approver,
            role=role,
            decision=decision,
            required=required,
            given=given,
            directory=self.org.directory,
        )

    def _record_decision(
        self,
        session: Session,
        change: ChangeRequest,
        version: int,
        approver: str,
        role: str,
        decision: Decision,
        comment: str,
        required: list[RequiredApproval],
        given: list[GivenApproval],
        attempt_id: str | None,
    ) -> DecisionResult:
        now = self._clock()
        self._bump(session, change, version, now)
        session.add(
            Approval(
                change_id=change.id,
                round=change.approval_round,
                approver=approver,
                role=role,
                decision=decision.value,
                comment=comment,
                decided_at=now,
            )
        )
        after = evaluate(
            required,
            [*given, GivenApproval(approver, role, decision)],
            reject_on_any_rejection=self.org.policies.reject_on_any_rejection,
        )
        append_event(
            session,
            actor=approver,
            action=(AuditAction.approval if decision is Decision.approve else AuditAction.rejection).value,
            change_key=change.key,
            data={"role": role, "comment": comment, "round": change.approval_round, "missing": after.missing,
                  **({"attempt": attempt_id} if attempt_id else {})},
            at=now,
        )
        if after.rejected:
            change = self._apply_transition(
                session, change, ChangeState.rejected, approver, f"rejected by {approver} ({role})", change.version
            )
        elif after.satisfied:
            change = self._apply_transition(
                session, change, ChangeState.approved, "policy-engine",
                f"approvals complete: {', '.join(after.approved_by)}", change.version,
            )
        return DecisionResult(change=change, role=role, evaluation=after)

    def _bump(self, session: Session, change: ChangeRequest, version: int, now: datetime, **values) -> None:
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

    def _apply_transition(
        self,
        session: Session,
        change: ChangeRequest,
        target: ChangeState,
        actor: str,
        reason: str,
        version: int,
        data: dict | None = None,
    ) -> ChangeRequest:
        now = self._clock()
        move = plan_transition(
            ChangeType(change.type), ChangeState(change.state), target, actor=actor, reason=reason, at=now
        )
        values: dict = {"state": target.value}
        if target is ChangeState.implementing:
            values["implemented_at"] = now
        if target is ChangeState.awaiting_approval:
            values["approval_requested_at"] = now
        if target is ChangeState.approved:
            values["approved_at"] = now
        if target in _OUTCOMES:
            values["outcome"] = _OUTCOMES[target]
            values["ended_at"] = now
        if target in _CLOSING_STATES:
            values["closed_at"] = now
        if target is ChangeState.review_pending:
            within = self.org.policies.for_type(ChangeType(change.type)).review_within or timedelta(hours=48)
            values["review_due_at"] = now + within
        self._bump(session, change, version, now, **values)
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
        return change

