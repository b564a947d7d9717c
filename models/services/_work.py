"""Manual work: the confirmations that stand in for automation. A change without implementation commands is
done, verified or rolled back only when a person the policy names says so, with their personal code."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlmodel import Session

from ..domain import (
    checked_name,
    checked_text,
    Act,
    AuditAction,
    ChangeState,
    InputError,
    PolicyViolation,
    WorkOutcome,
    WorkStage,
    implementer_refusal,
    implementers,
    pipeline_implementer_refusal,
    reviewers,
)
from ..storage import Approval, AuditEvent, ChangeRequest, append_event, decode_data, events_for
from ._automation_tokens import AutomationTokens, TokenHolder, token_refusal
from ._identity import Identities
from ._recovery import step_of_a_dead_run
from ._unit_of_work import UnitOfWork

PIPELINE_RESULTS = ("succeeded", "failed")
EVIDENCE_MAX = 2000


def checked_evidence(url: str) -> str:
    """A pipeline's evidence: the http(s) URL of its job, which an auditor follows."""
    url = url.strip()
    problem = ("empty: give the URL of the pipeline's job" if not url
               else f"longer than {EVIDENCE_MAX} characters" if len(url) > EVIDENCE_MAX
               else "not an http(s) URL" if not url.startswith(("https://", "http://")) or any(
                   c.isspace() or ord(c) < 32 for c in url) else "")
    if problem:
        raise InputError(f"evidence: {problem}", [("evidence", problem)])
    return url


# The state a change is in while a person does each stage (the flow moves it on once confirmed).
_STAGE_STATES = {
    WorkStage.implemented: (ChangeState.implementing,),
    WorkStage.verified: (ChangeState.verifying,),
    WorkStage.rolled_back: (ChangeState.implementing, ChangeState.verifying),
}


@dataclass(frozen=True)
class WorkConfirmation:
    stage: WorkStage
    outcome: WorkOutcome
    person: str
    note: str
    at: datetime
    step: int | None = None  # one interrupted step whose outcome was unknown; None: the change's manual work

    @property
    def done(self) -> bool:
        return self.outcome is WorkOutcome.done


# Where a change's manual work can be waiting for a person.
_UNDER_WAY = (ChangeState.approved, ChangeState.scheduled, ChangeState.implementing, ChangeState.verifying)


@dataclass(frozen=True)
class WorkWaiting:
    """Manual work asked for and not confirmed yet: of which change and stage, since when, on whom."""

    change: ChangeRequest
    stage: WorkStage
    step: int | None
    asked_at: datetime
    implementers: list[str]


class WorkService:
    def __init__(self, uow: UnitOfWork, identities: Identities):
        self._uow = uow
        self._identities = identities

    def implementers(self, key: str) -> list[str]:
        """Who is asked to confirm the change's manual work."""
        change = self._change(key)
        return implementers(self._uow.rules(change), change, self._uow.org.directory)

    def reviewers(self, key: str) -> list[str]:
        """Who may record the change's post-implementation review (the type's `reviewers`)."""
        change = self._change(key)
        return reviewers(self._uow.rules(change), change, self._uow.org.directory)

    def requested(self, key: str, stage: WorkStage, step: int | None = None) -> None:
        """Record when a stage's manual work was first asked for (once: a resumed gate asks again, the record
        stands): where policies.yaml `manual_work.escalation` counts from."""
        with self._uow.write() as session:
            change = self._uow.load(session, key, for_update=True)
            if any(e.action == AuditAction.work_requested.value and decode_data(e).get("stage") == stage.value
                   and decode_data(e).get("step") == step for e in events_for(session, change.key)):
                return
            append_event(session, actor="changeflow", action=AuditAction.work_requested.value, change_key=change.key,
                         at=self._uow.clock(), data={"stage": stage.value, **({"step": step} if step is not None
                                                                             else {})})

    def unanswered(self) -> list[WorkWaiting]:
        """The manual work asked for and not confirmed, of the changes under way, oldest first."""
        with self._uow.read() as session:
            rows = session.execute(select(AuditEvent, ChangeRequest).join(
                ChangeRequest, ChangeRequest.key == AuditEvent.change_key).where(
                AuditEvent.action == AuditAction.work_requested.value,
                ChangeRequest.state.in_([s.value for s in _UNDER_WAY])).order_by(AuditEvent.seq)).all()
            waiting = []
            for event, change in rows:
                data = decode_data(event)
                stage, step = WorkStage(data["stage"]), data.get("step")
                if self._recorded(session, change, stage, step) is None:
                    waiting.append(WorkWaiting(change, stage, step, event.occurred_at,
                                               implementers(self._uow.rules(change), change, self._uow.org.directory)))
        return waiting

    def confirmation(self, key: str, stage: WorkStage | str, step: int | None = None) -> WorkConfirmation | None:
        with self._uow.read() as session:
            return self._recorded(session, self._uow.load(session, key), WorkStage(stage), step)

    def confirm(self, key: str, *, stage: WorkStage | str, person: str, code: str,
                outcome: WorkOutcome | str = WorkOutcome.done, note: str = "",
                attempt_id: str | None = None, step: int | None = None) -> WorkConfirmation:
        """Record that `person` did (or failed) a stage of the change's manual work. Idempotent: the stage's first
        confirmation stands and is returned again. A refusal is recorded and raised; nothing is confirmed."""
        checked_name(person, "person")
        checked_text(note, "note")
        stage, person = WorkStage(stage), person.strip()
        try:
            outcome = WorkOutcome(outcome)
        except ValueError:
            raise InputError(f"outcome: must be one of {', '.join(o.value for o in WorkOutcome)}",
                             [("outcome", "unknown outcome")]) from None
        uow = self._uow
        # A pipeline proves itself with its token, read before the write transaction.
        holder = AutomationTokens(uow).holder_if_automation(person, code)

        def attempt() -> WorkConfirmation:
            with uow.write() as session:
                change = uow.load(session, key, for_update=True)
                earlier = self._recorded(session, change, stage, step)
                if earlier is not None:
                    return earlier
                refusal = uow.replayed_refusal(session, change, attempt_id)
                replayed = refusal is not None
                if refusal is None:
                    refusal = self._refusal(session, change, stage, person, code, outcome, note, step, holder)
                if refusal is None:
                    at = uow.clock()
                    append_event(session, actor=person, action=AuditAction.work_confirmed.value,
                                 change_key=change.key, at=at,
                                 data={"stage": stage.value, "outcome": outcome.value, "note": note,
                                       **({"step": step} if step is not None else {})})
                    return WorkConfirmation(stage, outcome, person, note, at, step)
                if not replayed:
                    uow.record_refusal(session, change, actor=person, action=AuditAction.confirmation_refused,
                                       refusal=refusal, attempt_id=attempt_id, work=stage.value)
            raise PolicyViolation(f"{stage.value}: {refusal}")

        return uow.retry(attempt, None)

    def report_outcome(self, key: str, *, automation: str, token: str, result: str,
                       evidence: str) -> WorkConfirmation:
        """A pipeline that deployed the change says how it went (issue 32): `succeeded` or `failed`, with the URL of
        its job as evidence. Recorded as the implementation's confirmation (the change's run carries on as after a
        person's: verification, or the rollback), so the change's outcome, and DORA, count what the pipeline did.
        Only the automation that filed it, with its token, while the change is implemented."""
        if result not in PIPELINE_RESULTS:
            raise InputError(f"result: must be {' or '.join(PIPELINE_RESULTS)}", [("result", "unknown result")])
        checked_evidence(evidence)
        outcome = WorkOutcome.done if result == "succeeded" else WorkOutcome.failed
        return self.confirm(key, stage=WorkStage.implemented, person=automation, code=token, outcome=outcome,
                            note=f"pipeline {result}: {evidence.strip()}")

    # ---- internals --------------------------------------------------------------------------------------

    def _change(self, key: str) -> ChangeRequest:
        with self._uow.read() as session:
            return self._uow.load(session, key)

    def _refusal(self, session: Session, change: ChangeRequest, stage: WorkStage, person: str, code: str,
                 outcome: WorkOutcome, note: str, step: int | None, holder: TokenHolder | None) -> str | None:
        if ChangeState(change.state) not in _STAGE_STATES[stage]:
            return f"{change.key} is {change.state}: there is no {stage.value.replace('_', ' ')} work to confirm"
        if step is not None and not step_of_a_dead_run(events_for(session, change.key), step):
            return (f"step {step} of {change.key} is not waiting for anyone: it finished, or its run is still "
                    "running it (answer for a step only once its run died)")
        if person in self._uow.org.directory.automations:
            # A pipeline reports the deployment it made: its implementation, nothing a person must vouch for.
            if stage is not WorkStage.implemented or step is not None:
                return f"a pipeline reports the implementation only; {stage.value.replace('_', ' ')} is a person's"
            return (token_refusal(holder, person, change.service)
                    or pipeline_implementer_refusal(self._uow.rules(change), change, person))
        identity = self._identities.refusal(change, person, code, Act.confirm_work)
        if identity is not None:
            return identity
        approvers = session.execute(
            select(Approval.approver).where(Approval.change_id == change.id, Approval.round == change.approval_round,
                                            Approval.decision == "approve")).scalars()
        standing = implementer_refusal(self._uow.rules(change), change,
                                       self._uow.directory_for(session, change), person, approvers)
        if standing is not None:
            return standing
        if outcome is WorkOutcome.failed and not note.strip():
            return "say what went wrong (a failed stage needs a note)"
        return None

    @staticmethod
    def _recorded(session: Session, change: ChangeRequest, stage: WorkStage,
                  step: int | None) -> WorkConfirmation | None:
        for event in events_for(session, change.key):
            data = decode_data(event)
            if (event.action == AuditAction.work_confirmed.value and data.get("stage") == stage.value
                    and data.get("step") == step):
                return WorkConfirmation(stage, WorkOutcome(data["outcome"]), event.actor, data.get("note", ""),
                                        event.occurred_at, step)
        return None
