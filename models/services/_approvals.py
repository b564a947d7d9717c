"""Approvals: asking for them, recording each decision under the policy, and the personal codes that prove who
an approver is (the Prefect UI carries no identity)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlmodel import Session

from ..domain import (
    typed_key,
    checked_name,
    checked_text,
    IllegalTransition,
    Act,
    AuditAction,
    ChangeState,
    Decision,
    GivenApproval,
    PolicyEvaluation,
    PolicyViolation,
    RequiredApproval,
    authorise_decision,
    evaluate,
    next_escalation_at,
)
from ..storage import Approval, AuditEvent, ChangeRequest, append_event, decode_data, events_for
from ._automation_tokens import AutomationTokens, token_refusal
from ._delegations import DelegationService
from ._identity import Identities
from ._unit_of_work import UnitOfWork


@dataclass(frozen=True)
class DecisionResult:
    change: ChangeRequest
    role: str
    evaluation: PolicyEvaluation
    repeated: bool = False


class ApprovalService:
    def __init__(self, uow: UnitOfWork, identities: Identities):
        self._uow = uow
        self._identities = identities

    # ---- reads ------------------------------------------------------------------------------------------

    def required_for(self, change: ChangeRequest) -> list[RequiredApproval]:
        return self._uow.required_for(change)

    def evaluation(self, key: str) -> PolicyEvaluation:
        with self._uow.read() as session:
            return self._uow.evaluate(session, self._uow.load(session, key))

    def last_decision(self, key: str) -> Approval | None:
        with self._uow.read() as session:
            change = self._uow.load(session, key)
            return session.execute(
                select(Approval)
                .where(Approval.change_id == change.id, Approval.round == change.approval_round)
                .order_by(Approval.id.desc())
                .limit(1)
            ).scalar_one_or_none()

    def decided_by(self, key: str) -> list[str]:
        """Who has already decided on the change in its current approval round (a delegator counts as decided
        when their delegate acted for them)."""
        with self._uow.read() as session:
            given = self._uow.given(session, self._uow.load(session, key))
        return [party for g in given for party in (g.approver, g.on_behalf_of) if party]

    def pending_approvals(self) -> list[tuple[ChangeRequest, PolicyEvaluation]]:
        """Changes waiting for decisions, oldest request first, with what each still needs."""
        with self._uow.read() as session:
            changes = session.execute(
                select(ChangeRequest)
                .where(ChangeRequest.state == ChangeState.awaiting_approval.value)
                .order_by(ChangeRequest.approval_requested_at, ChangeRequest.id)
            ).scalars().all()
            return [(change, self._uow.evaluate(session, change)) for change in changes]

    def due_for_escalation(self, now: datetime, limit: int = 500) -> list[ChangeRequest]:
        """Changes awaiting approval whose next reminder rung or SLA end has come, earliest first: read through
        an index, so a sweep over 10,000 waiting changes reads only the few that are due."""
        with self._uow.read() as session:
            return list(session.execute(
                select(ChangeRequest)
                .where(ChangeRequest.state == ChangeState.awaiting_approval.value,
                       ChangeRequest.escalation_due_at <= now)  # type: ignore[operator]
                .order_by(ChangeRequest.escalation_due_at, ChangeRequest.id)
                .limit(limit)
            ).scalars().all())

    def escalation_handled(self, change: ChangeRequest, now: datetime) -> datetime | None:
        """The sweep did what was due for the change at `now`: store its next moment (None: nothing left).
        Scheduling, not content: no version bump, so it never conflicts with a decision landing meanwhile; the
        `escalation_due_at` condition keeps a newer round's schedule from being overwritten."""
        rules = self._uow.rules(change)
        following = None if change.approval_requested_at is None else next_escalation_at(
            change.approval_requested_at, now, list(rules.ladder), change.incident_severity, rules.approval_sla)
        with self._uow.write() as session:
            session.execute(
                update(ChangeRequest)
                .where(ChangeRequest.id == change.id,  # type: ignore[arg-type]
                       ChangeRequest.escalation_due_at == change.escalation_due_at)  # type: ignore[arg-type]
                .values(escalation_due_at=following))
        return following

    def approval_sla(self, change: ChangeRequest) -> timedelta:
        return self._uow.rules(change).approval_sla

    def approval_deadline(self, change: ChangeRequest) -> datetime | None:
        """When the approval SLA runs out (None before approvals were requested)."""
        return change.approval_requested_at + self.approval_sla(change) if change.approval_requested_at else None

    # ---- codes ------------------------------------------------------------------------------------------

    def approval_code_for(self, key: str, approver: str, act: Act = Act.approve) -> str:
        """The personal code to send to `approver` for `act` on the change in its current round."""
        with self._uow.read() as session:
            change = self._uow.load(session, key)
        return self._identities.code_for(change, approver, act)

    def issue_code(self, key: str, *, operator: str, person: str, act: Act) -> str:
        """`person`'s code for `act`, printed for them by an operator (policies.yaml `code_issuers`) when no personal
        channel reached them: recorded on the change (who, for whom, which act), refused and recorded otherwise."""
        checked_name(operator, "operator")
        uow = self._uow
        directory = uow.org.directory
        with uow.write() as session:
            change = uow.load(session, key)
            data = {"for": person, "act": act.value, "round": change.approval_round}
            issuers = uow.org.policies.code_issuers
            refusal = directory.operator_refusal(operator, issuers, "print a code")
            if refusal is None and person not in directory.people:
                refusal = f"{person!r} is not in the approver directory"
            append_event(session, actor=operator, change_key=change.key, at=uow.clock(),
                         action=(AuditAction.code_issue_refused if refusal else AuditAction.code_issued).value,
                         data={**data, "refusal": refusal} if refusal else data)
        if refusal:
            raise PolicyViolation(refusal)
        return self._identities.code_for(change, person, act)

    # ---- writes -----------------------------------------------------------------------------------------

    def request_approval(self, key: str, *, actor: str = "changeflow") -> ChangeRequest:
        """Move a submitted change to `awaiting_approval`, recording the policy decision of who must approve; for
        the filers changeflow trusts itself (its scheduled maintenance). A person's filing moves on only when they
        confirm it (`confirm_filing`).

        A change from a pre-approved template goes straight on to `approved`, recorded with the template and
        the policy version that allowed it.
        """
        uow = self._uow

        def attempt() -> ChangeRequest:
            with uow.write() as session:
                return self._ask_for_approvals(session, uow.load(session, key, for_update=True), actor)

        return uow.retry(attempt, None)

    def confirm_filing(self, key: str, *, person: str, code: str, attempt_id: str | None = None) -> ChangeRequest:
        """The requester proves that they filed the change, with the code sent to them for it (a pipeline: the token
        issued for it; issue 27: nobody files under another's name, and the form and the CLI carry no identity).
        Then approvals are requested. A
        refusal is recorded (`filing_refused`) and raised; a repeat, or a replayed `attempt_id`, records nothing."""
        checked_name(person, "requester")
        uow = self._uow
        person = person.strip()
        # A pipeline (an automation of the directory) proves it with the token an operator issued for it.
        automation = person in uow.org.directory.automations
        # Read before the write transaction: whom the token speaks for, if anyone.
        holder = AutomationTokens(uow).holder_if_automation(person, code)

        def attempt() -> ChangeRequest:
            with uow.write() as session:
                change = uow.load(session, key, for_update=True)
                replayed = uow.replayed_refusal(session, change, attempt_id)
                refusal = replayed
                if refusal is None and change.state != ChangeState.submitted.value:
                    if self.filing_confirmed(change.key, session=session):
                        return change  # confirmed already: a resumed run, the CLI nudging after recording
                    refusal = f"{change.key} is {change.state}: there is no filing to confirm"
                if refusal is None and person != change.requester:
                    refusal = (f"only the requester of {change.key} ({change.requester}) confirms that they filed "
                               f"it" if person else "no name given")
                if refusal is None and automation:
                    refusal = token_refusal(holder, person, change.service)
                elif refusal is None:
                    refusal = self._identities.refusal(change, person, code, Act.file)
                if refusal is None:
                    append_event(session, actor=person, action=AuditAction.filing_confirmed.value,
                                 change_key=change.key, at=uow.clock(),
                                 data={**({"attempt": attempt_id} if attempt_id else {})})
                    return self._ask_for_approvals(session, change, person)
                if replayed is None:
                    uow.record_refusal(session, change, actor=person or "unknown (Prefect UI)",
                                       action=AuditAction.filing_refused, refusal=refusal, attempt_id=attempt_id)
            raise PolicyViolation(refusal)

        return uow.retry(attempt, None)

    def filing_confirmed(self, key: str, *, session: Session | None = None) -> bool:
        """Whether the change's filing is on record as confirmed (by its requester, or trusted at filing)."""
        if session is None:
            with self._uow.read() as session:
                return self.filing_confirmed(key, session=session)
        return any(e.action in (AuditAction.filing_confirmed.value, AuditAction.policy_decision.value)
                   for e in events_for(session, typed_key(key)))

    def _ask_for_approvals(self, session: Session, change: ChangeRequest, actor: str) -> ChangeRequest:
        uow = self._uow
        policies = uow.org.policies
        if change.state != ChangeState.submitted.value:
            # Only a new change asks for approval here; an amended one is asked again by `amend`.
            raise IllegalTransition(f"{change.key} is {change.state}: approval was already requested")
        template = uow.org.template_of(change)
        pre_approved = template is not None and change.template in policies.pre_approved_templates
        dropped = template.extras_in(change) if template is not None and pre_approved else []
        pre_approved = pre_approved and not dropped
        withheld = uow.pre_approval_withheld(change) if pre_approved else None
        pre_approved = pre_approved and withheld is None
        required = [] if pre_approved else uow.required_for(change)
        standing = None if pre_approved else uow.standing_of(change)
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
                # What a score rule read (policies.yaml `score.rules`): the service's success when it was filed.
                **({"standing": {"changes": standing.changes, "success_rate": standing.success_rate}}
                   if standing is not None else {}),
                # Why a pre-approved template's change still needs its approvals (what it added, its record).
                **({"pre_approval_dropped": dropped} if dropped else {}),
                **({"pre_approval_withheld": withheld} if withheld else {}),
            },
            at=uow.clock(),
        )
        change = uow.apply_transition(
            session, change, ChangeState.awaiting_approval, actor, "approvals requested", change.version
        )
        if pre_approved:
            change = uow.apply_transition(
                session, change, ChangeState.approved, "policy-engine",
                f"pre-approved template {change.template} (policy {change.policy_version[:12]})",
                change.version,
            )
        return change

    def decide(self, key: str, *, approver: str, decision: Decision | str, code: str, role: str | None = None,
               comment: str = "", expected_version: int | None = None,
               attempt_id: str | None = None, via: str | None = None, replay_refusal: bool = True) -> DecisionResult:
        """Record an approver's decision. A refused attempt is written to the audit trail, then raised.

        `attempt_id` names one submission (a gate's suspend key, an approval link): replaying it, as a resumed
        flow run does, returns the first outcome instead of recording it again (`replay_refusal` False: a
        decision, but not a refusal, where one id stands for several submissions, as a link's posts). `via` says
        how the person was identified when not by typing their code (a Slack click, a signed link), for the record.
        """
        checked_name(approver, "approver")
        checked_text(comment, "comment")
        decision = Decision(decision)
        uow = self._uow

        def attempt() -> DecisionResult:
            refusal: PolicyViolation | None = None
            with uow.write() as session:
                change = uow.load(session, key, for_update=True)
                version = uow.check_version(change, expected_version)
                required = uow.required_for(change)
                given = uow.given(session, change)
                replayed = self._replayed_attempt(session, change, attempt_id, replay_refusal)
                if replayed is not None:
                    if replayed.action == AuditAction.approval_refused.value:
                        refusal = PolicyViolation(decode_data(replayed)["reason"])
                    else:
                        return DecisionResult(change=change, role=decode_data(replayed)["role"],
                                              evaluation=uow.evaluate(session, change), repeated=True)
                repeat = None if refusal else self._repeated_decision(change, approver, role, decision, code, given)
                if refusal is None and repeat is not None:
                    # The same person sending the same decision again (a resumed run, the CLI nudging the
                    # flow after recording it): acknowledged, not recorded twice.
                    return DecisionResult(change=change, role=repeat.role, evaluation=uow.evaluate(session, change),
                                          repeated=True)
                if refusal is None:
                    try:
                        acting_role = self._authorise(session, change, approver, role, decision, code, comment,
                                                      required, given)
                    except PolicyViolation as exc:
                        refusal = exc
                        append_event(
                            session,
                            actor=approver,
                            action=AuditAction.approval_refused.value,
                            change_key=change.key,
                            data={"decision": decision.value, "role": role, "reason": str(exc),
                                  **({"attempt": attempt_id} if attempt_id else {}), **({"via": via} if via else {})},
                            at=uow.clock(),
                        )
                    else:
                        result = self._record_decision(
                            session, change, version, approver, acting_role, decision, comment, required, given,
                            attempt_id, via,
                            DelegationService(self._uow).stands_in_for(session, change, approver).get(acting_role),
                        )
            if refusal is not None:
                raise refusal
            return result

        return uow.retry(attempt, expected_version)

    # ---- internals --------------------------------------------------------------------------------------

    @staticmethod
    def _replayed_attempt(session: Session, change: ChangeRequest, attempt_id: str | None,
                          with_refusals: bool = True) -> AuditEvent | None:
        if not attempt_id:
            return None
        decisions = (AuditAction.approval.value, AuditAction.rejection.value,
                     *((AuditAction.approval_refused.value,) if with_refusals else ()))
        for event in events_for(session, change.key):
            if event.action in decisions and decode_data(event).get("attempt") == attempt_id:
                return event
        return None

    def _repeated_decision(self, change: ChangeRequest, approver: str, role: str | None, decision: Decision,
                           code: str, given: list[GivenApproval]) -> GivenApproval | None:
        earlier = next(
            (g for g in given if g.approver == approver and g.decision == decision and role in (None, g.role)), None
        )
        if earlier and self._identities.proves(change, approver, code, Act.approve):
            return earlier
        return None

    def _authorise(self, session: Session, change: ChangeRequest, approver: str, role: str | None,
                   decision: Decision, code: str, comment: str, required: list[RequiredApproval],
                   given: list[GivenApproval]) -> str:
        if change.state != ChangeState.awaiting_approval.value:
            raise PolicyViolation(f"{change.key} is {change.state}, not awaiting approval")
        if approver == change.requester:
            raise PolicyViolation(
                f"{approver} requested this change and cannot approve or reject it (self-approval)"
            )
        if decision is Decision.reject and not comment.strip():
            # The requester and the audit must learn why; a bare "no" is sent back to the person.
            raise PolicyViolation("a rejection needs a comment saying why")
        if approver in self._uow.org.directory.people:
            self._identities.check(change, approver, code, Act.approve)
        try:
            return authorise_decision(requester=change.requester, approver=approver, role=role, decision=decision,
                                      required=required, given=given,
                                      directory=self._uow.directory_for(session, change),
                                      stands_in_for=DelegationService(self._uow).stands_in_for(
                                          session, change, approver))
        except PolicyViolation as exc:
            outside = DelegationService(self._uow).not_in_force(approver)
            raise (PolicyViolation(f"{exc} ({outside})") if outside else exc) from None

    def _record_decision(self, session: Session, change: ChangeRequest, version: int, approver: str, role: str,
                         decision: Decision, comment: str, required: list[RequiredApproval],
                         given: list[GivenApproval], attempt_id: str | None, via: str | None,
                         on_behalf_of: str | None) -> DecisionResult:
        uow = self._uow
        now = uow.clock()
        uow.bump(session, change, version, now)
        session.add(Approval(change_id=change.id, round=change.approval_round, approver=approver, role=role,
                             decision=decision.value, comment=comment, decided_at=now, on_behalf_of=on_behalf_of))
        after = evaluate(required, [*given, GivenApproval(approver, role, decision, on_behalf_of)],
                         reject_on_any_rejection=uow.org.policies.reject_on_any_rejection)
        append_event(
            session,
            actor=approver,
            action=(AuditAction.approval if decision is Decision.approve else AuditAction.rejection).value,
            change_key=change.key,
            data={"role": role, "comment": comment, "round": change.approval_round, "missing": after.missing,
                  **({"attempt": attempt_id} if attempt_id else {}), **({"via": via} if via else {}),
                  **({"for": on_behalf_of} if on_behalf_of else {})},
            at=now,
        )
        if after.rejected:
            change = uow.apply_transition(
                session, change, ChangeState.rejected, approver, f"rejected by {approver} ({role})", change.version
            )
        elif after.satisfied:
            change = uow.apply_transition(
                session, change, ChangeState.approved, "policy-engine",
                f"approvals complete: {', '.join(after.approved_by)}", change.version,
            )
        return DecisionResult(change=change, role=role, evaluation=after)
