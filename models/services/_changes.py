"""Changes: filing, reading and moving a change along its lifecycle (each write one transaction with its audit
events). Approvals, scheduling, checklists and the canary are their own services over the same unit of work."""

from __future__ import annotations

from sqlalchemy import case, func, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from ..domain import (
    format_key,
    AuditAction,
    AuditEventView,
    ApprovalView,
    ChangeRequestInput,
    ChangeRequestView,
    ChangeState,
    FieldProblem,
    InputError,
    PolicyViolation,
    ServiceHistory,
    assess_risk,
    change_type,
    invalid_request,
    parse_change_request,
    runbook_problems,
    unanswered_risk,
)
from ..storage import (
    CONTENT,
    ROWS,
    Approval,
    ChangeFilter,
    ChangeRequest,
    ChecklistResult,
    Notification,
    Page,
    append_event,
    change_content_digest,
    decode_data,
    events_for,
    query_changes,
)
from ._identity import Identities
from ._reverting import RollbackService
from ._scheduling import SchedulingService
from ._unit_of_work import UnitOfWork

# Template fields a request may leave empty for its template to fill ({service} is replaced).
_TEMPLATE_TEXT_FIELDS = ("title", "description", "impact", "implementation_plan", "rollback_plan", "test_evidence")


class ChangeService:
    def __init__(self, uow: UnitOfWork, scheduling: SchedulingService, identities: Identities | None = None,
                 rollbacks: RollbackService | None = None):
        self._uow = uow
        self._scheduling = scheduling
        self._identities = identities
        self._rollbacks = rollbacks or RollbackService(uow)

    # ---- reads ------------------------------------------------------------------------------------------

    def get(self, key: str) -> ChangeRequest:
        with self._uow.read() as session:
            return self._uow.load(session, key)

    def find_by_idempotency_key(self, idempotency_key: str) -> ChangeRequest | None:
        with self._uow.read() as session:
            return session.execute(
                select(ChangeRequest).where(ChangeRequest.idempotency_key == idempotency_key)
            ).scalar_one_or_none()

    def find_by_flow_run(self, flow_run_id: str) -> ChangeRequest | None:
        """The change a Prefect flow run implements (the latest, should a run ever have been re-attached)."""
        with self._uow.read() as session:
            return session.execute(
                select(ChangeRequest).where(ChangeRequest.flow_run_id == flow_run_id)
                .order_by(ChangeRequest.id.desc()).limit(1)  # type: ignore[union-attr]
            ).scalar_one_or_none()

    def view(self, key: str) -> ChangeRequestView:
        with self._uow.read() as session:
            change = self._uow.load(session, key)
            approvals = session.execute(
                select(Approval).where(Approval.change_id == change.id)
                .order_by(Approval.decided_at, Approval.id)
            ).scalars()
            events = events_for(session, change.key)
            checks = session.execute(select(ChecklistResult).where(ChecklistResult.change_key == change.key)
                                     .order_by(ChecklistResult.id)).scalars()
            notes = session.execute(select(Notification).where(Notification.change_key == change.key)
                                    .order_by(Notification.id)).scalars()
            return ChangeRequestView(
                **change.model_dump(exclude={"id", "risk_answers", "idempotency_key", "approval_requested_at",
                                             "approved_at"}),
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
                canary_steps=[{k: v for k, v in decode_data(e).items() if k not in ("router", ROWS)}
                              | {"at": e.occurred_at}
                              for e in events if e.action == AuditAction.canary_decision.value],
                rolled_back_by=self._rollbacks.rolled_back_by(session, change.key or key),
            )

    def all_in_state(self, state: ChangeState) -> list[ChangeRequest]:
        """Every change in `state` (the sweep's candidates for a nudge: the changes that moved on, few)."""
        with self._uow.read() as session:
            return list(session.execute(select(ChangeRequest).where(ChangeRequest.state == state.value)
                                        .order_by(ChangeRequest.id)).scalars().all())  # type: ignore[arg-type]

    def list_changes(self, *, limit: int = 50, after: str | None = None, **filters: object) -> list[ChangeRequest]:
        return self.query(ChangeFilter(**filters), limit=limit, after=after).items

    def query(self, change_filter: ChangeFilter, *, limit: int = 50, after: str | None = None) -> Page:
        types = self._uow.org.policies.types
        if change_filter.type is not None and change_filter.type not in types:
            # A typo would list nothing, silently (issue 28).
            raise InputError(f"--type: no change type named {change_filter.type!r} ({', '.join(types)})",
                             [("type", "unknown change type")])
        policies = self._uow.org.policies
        if change_filter.environment is not None and change_filter.environment not in policies.environments:
            raise InputError(f"--environment: no environment named {change_filter.environment!r} "
                             f"({', '.join(policies.environments)})", [("environment", "unknown environment")])
        with self._uow.read() as session:
            return query_changes(session, change_filter, limit=limit, after=after,
                                 default_environment=policies.default_environment)

    # ---- writes -----------------------------------------------------------------------------------------

    def validate_request(self, request: ChangeRequestInput | dict) -> ChangeRequestInput:
        """Everything `submit` checks before writing (fields, the type's rules, template), without writing."""
        request = self._apply_template(parse_change_request(request))
        policies = self._uow.org.policies
        try:
            # Stored by name even when left out: the default environment is the config's today, not later.
            request = request.model_copy(update={"environment": policies.environment(request.environment)[0]})
        except InputError as unknown:
            raise invalid_request(unknown.problems) from None
        problems: list[FieldProblem] = change_type(policies, request.type, request.environment).request_problems(
            request)
        if (unanswered := unanswered_risk(request)) is not None:
            problems.append(unanswered)
        if not self._uow.org.directory.may_request(request.requester):
            problems.append(FieldProblem("requester", f"{request.requester!r} is not in the approver directory"))
        if request.checklist and request.checklist not in self._uow.org.checklists:
            known = ", ".join(sorted(self._uow.org.checklists)) or "none configured"
            problems.append(FieldProblem("checklist", f"unknown checklist {request.checklist!r} (known: {known})"))
        problems += runbook_problems(self._uow.org, request)
        if request.canary is not None:
            # Judged by the analysis its service requires or it names, which it may only tighten (issue 33).
            judged, loosening = self._uow.org.canary_config.with_analysis(request.service, request.canary)
            request = request.model_copy(update={"canary": judged})
            problems += loosening + self._uow.org.canary_config.check_plan(request.service, judged)
        with self._uow.read() as session:
            problems += self._scheduling.slot_problems(session, request, request.type)
            problems += self._scheduling.promotion_problems(session, request)
            problems += self._rollbacks.problems(session, request)
        if problems:
            raise invalid_request(problems)
        return request

    def refusal(self, request: ChangeRequestInput | dict) -> InputError | PolicyViolation | None:
        """Why `submit` would refuse this request now (None: it would take it), without writing: for the run form,
        which must end with a clear message instead of a failed task and a traceback."""
        try:
            checked = self.validate_request(request)
            with self._uow.read() as session:
                locked = self._scheduling.lockdown_refusal(session, checked.type, "be filed")
                clashes = self._scheduling.clashes(session, checked)
        except (InputError, PolicyViolation) as exc:
            return exc
        if locked is not None:
            return PolicyViolation(locked)
        if clashes and not change_type(self._uow.org.policies, checked.type, checked.environment).overrides_freeze:
            return PolicyViolation("; ".join(clashes))
        return None

    def submit(self, request: ChangeRequestInput | dict, *, idempotency_key: str | None = None,
               flow_run_id: str | None = None) -> ChangeRequest:
        """Record a change request (state `submitted`); with an idempotency key, a repeat returns the first."""
        if idempotency_key:
            # Before the checks: a repeat (a restarted run's filing step) finds what the first recorded, which
            # the checks made now might refuse (its notice since run down; a rollback "already rolled back" by
            # itself).
            existing = self.find_by_idempotency_key(idempotency_key)
            if existing is not None:
                return existing
        request = self.validate_request(request)
        rules = change_type(self._uow.org.policies, request.type, request.environment)
        try:
            with self._uow.write() as session:
                # Read in the transaction that writes the filing: a lockdown declared a moment before holds.
                locked = self._scheduling.lockdown_refusal(session, request.type, "be filed")
                if locked is not None:
                    raise PolicyViolation(locked)
                clashes = self._scheduling.clashes(session, request)
                if clashes and not rules.overrides_freeze:
                    raise PolicyViolation("; ".join(clashes))
                if request.rolls_back:
                    # The reverted change's row locked, then checked again: two rollbacks filed at once, one wins.
                    self._uow.load(session, request.rolls_back, for_update=True)
                    if problems := self._rollbacks.problems(session, request):
                        raise invalid_request(problems)
                change = self._insert(session, request, idempotency_key, flow_run_id)
                if change.rolls_back:
                    # Linked both ways on the record: the reverted change's history names its rollback.
                    append_event(session, actor=request.requester, action=AuditAction.rollback_filed.value,
                                 change_key=change.rolls_back, at=self._uow.clock(),
                                 data={"by": change.key, "reason": request.description[:2000]})
                if clashes:
                    # A type that may override (emergencies) goes through, and the override is on the record.
                    append_event(session, actor=request.requester, action=AuditAction.policy_override.value,
                                 change_key=change.key, at=self._uow.clock(),
                                 data={"overridden": clashes, "reason": f"{request.type} change"})
                return change
        except IntegrityError:
            # A concurrent submit with the same idempotency key won the race: return its record.
            existing = self.find_by_idempotency_key(idempotency_key) if idempotency_key else None
            if existing is None:
                raise
            return existing

    def attach_flow_run(self, key: str, flow_run_id: str) -> ChangeRequest:
        """Record the Prefect flow run that drives the change (no audit event: it is bookkeeping)."""
        uow = self._uow

        def attempt() -> ChangeRequest:
            with uow.write() as session:
                change = uow.load(session, key, for_update=True)
                if change.flow_run_id != flow_run_id:
                    uow.bump(session, change, change.version, uow.clock(), flow_run_id=flow_run_id)
                return change

        return uow.retry(attempt, None)

    def transition(self, key: str, target: ChangeState | str, *, actor: str, reason: str = "",
                   expected_version: int | None = None, data: dict | None = None,
                   then: tuple[ChangeState, str] | None = None) -> ChangeRequest:
        """Apply one lifecycle move; raises IllegalTransition / ConflictError / PolicyViolation and writes nothing.
        `then`: (state, reason) of a second move in the same transaction, for an outcome and the step that must
        follow it (failed -> review_pending): a process killed between two transactions left the change at the
        outcome with nothing to take it on."""
        target = ChangeState(target)
        uow = self._uow

        def attempt() -> ChangeRequest:
            with uow.write() as session:
                change = uow.load(session, key, for_update=True)
                version = uow.check_version(change, expected_version)
                if target is ChangeState.awaiting_approval and change.state != ChangeState.submitted.value:
                    # Back to approval only with a new round (amend), or the old round's approvals would count.
                    raise PolicyViolation(f"{change.key} goes back to approval only by an amendment (`changeflow "
                                          "amend`), which opens a new approval round")
                if target is ChangeState.approved:
                    evaluation = uow.evaluate(session, change)
                    if not evaluation.satisfied:
                        raise PolicyViolation(
                            f"{change.key} cannot be approved yet: still needs {evaluation.describe_missing()}"
                        )
                change = uow.apply_transition(session, change, target, actor, reason, version, data)
                if then is not None:
                    change = uow.apply_transition(session, change, then[0], actor, then[1], change.version)
                return change

        return uow.retry(attempt, expected_version)

    # ---- internals --------------------------------------------------------------------------------------

    def _insert(self, session: Session, request: ChangeRequestInput, idempotency_key: str | None,
                flow_run_id: str | None) -> ChangeRequest:
        org = self._uow.org
        now = self._uow.clock()
        if request.risk is None:  # validate_request refuses it; kept so that no path files unanswered risk
            raise invalid_request([unanswered_risk(request) or FieldProblem("risk", "missing")])
        risk = assess_risk(request.risk, self._history(session, request.service, now), org.policies.risk)
        change = ChangeRequest(
            **request.model_dump(exclude={"risk", "runbook"}, mode="python"),
            state=ChangeState.submitted.value,
            risk_level=risk.level.value,
            risk_score=risk.score,
            risk_reasons=list(risk.reasons),
            risk_answers=request.risk.model_dump(mode="json"),
            policy_version=org.policies.version,
            idempotency_key=idempotency_key,
            flow_run_id=flow_run_id,
            created_at=now,
            updated_at=now,
        )
        change.incident_severity = request.incident_severity.value if request.incident_severity else None
        change.category = request.category.value if request.category else None
        session.add(change)
        session.flush()
        assert change.id is not None
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
                CONTENT: change_content_digest(change),
                # The runbook as it was when filed, on the chain: what the change followed, whatever the file
                # says later (issue 33).
                **({"runbook": {"name": runbook.name, "version": runbook.version, "text": runbook.text}}
                   if (runbook := org.runbook_of(request, request.runbook)) else {}),
            },
            at=now,
        )
        return change

    def _history(self, session: Session, service: str, now) -> ServiceHistory:
        since = now - self._uow.org.policies.risk.failure_rate_window
        outcome = ChangeRequest.outcome
        implemented, failed = session.execute(
            select(
                func.count(),
                func.coalesce(func.sum(case((outcome.in_(("failed", "rolled_back")), 1), else_=0)), 0),
            ).where(
                ChangeRequest.service == service,
                ChangeRequest.implemented_at >= since,
                outcome.is_not(None),
            )
        ).one()
        return ServiceHistory(implemented=int(implemented), failed=int(failed))

    def _apply_template(self, request: ChangeRequestInput) -> ChangeRequestInput:
        """Fill the fields the request leaves empty from the template it names."""
        if not request.template:
            return request
        org = self._uow.org
        template = org.templates.get(request.template)
        if template is None:
            known = ", ".join(sorted(org.templates)) or "none configured"
            raise InputError(f"template: unknown template {request.template!r} (known: {known})",
                             [("template", "unknown template")])
        if template.type != request.type:
            raise InputError(f"type: template {request.template} is a {template.type} change",
                             [("type", "does not match the template")])
        merged = request.model_dump()
        for name in _TEMPLATE_TEXT_FIELDS:
            if not merged[name]:
                merged[name] = getattr(template, name).replace("{service}", request.service)
        if request.risk is None and template.risk is not None:
            merged["risk"] = template.risk.model_dump(mode="json")
        if not merged.get("checklist") and template.checklist:
            merged["checklist"] = template.checklist
        if not merged.get("category") and template.category:
            merged["category"] = template.category
        return parse_change_request(merged)
