"""What an approver sees before deciding (issue 27): one brief of the change, built here and shown the same way
in every notification channel, on the approval link's page and above the Prefect UI's Resume form, so no
approver decides blind: when it runs, the risk answers behind its score, the evidence, the commands its template
runs, its canary steps and thresholds, what it clashes with, who has decided so far, and who stands in for whom."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from ..domain import CanaryPlan, active_delegations
from ..storage import ChangeRequest
from ._scheduling import SchedulingService
from ._slots import describe_window
from ._unit_of_work import UnitOfWork


@dataclass(frozen=True)
class BriefLine:
    label: str
    text: str


@dataclass(frozen=True)
class ApprovalBrief:
    key: str
    lines: list[BriefLine]

    def text(self, label: str) -> str:
        return next((line.text for line in self.lines if line.label == label), "")


class ApprovalBriefs:
    def __init__(self, uow: UnitOfWork, scheduling: SchedulingService):
        self._uow = uow
        self._scheduling = scheduling

    def of(self, change: ChangeRequest) -> ApprovalBrief:
        uow = self._uow
        rules = uow.rules(change)
        lines = [BriefLine("When", self._when(change, rules.scheduled)),
                 BriefLine("Service", f"{change.service} ({change.type} change, requested by {change.requester})"),
                 BriefLine("Depends on it", self._dependents(change.service)),
                 BriefLine("Risk", self._risk(change))]
        if change.incident_id:
            lines.append(BriefLine("Incident", f"{change.incident_id} ({change.incident_severity})"))
        lines.append(BriefLine("Test evidence", change.test_evidence or "none given"))
        # Issue 31: what a major change's policy requires beside it, shown where it was given.
        for label, value in (("UAT sign-off", change.uat_signoff), ("Documentation", change.documentation_link),
                             ("Category", change.category)):
            if value:
                lines.append(BriefLine(label, value))
        template = uow.org.templates.get(change.template) if change.template else None
        if template is not None:
            for label, commands in (("Runs", template.implementation_commands),
                                    ("Verifies with", template.verify_commands),
                                    ("Rolls back with", template.rollback_commands)):
                if commands:
                    lines.append(BriefLine(label, " ; ".join(commands)))
        if change.canary:
            lines.append(BriefLine("Canary", self._canary(CanaryPlan.model_validate(change.canary))))
        clashes = self._scheduling.schedule_clashes(change.key) if change.planned_start else []
        lines.append(BriefLine("Clashes with", "; ".join(clashes) or "nothing on its service in its window"))
        lines.append(BriefLine("Decided so far", self._decided(change)))
        standing_in = self._standing_in(change)
        if standing_in:
            lines.append(BriefLine("Standing in", standing_in))
        return ApprovalBrief(change.key or "", lines)

    def _dependents(self, service: str) -> str:
        directory = self._uow.org.directory
        dependents = directory.dependents(service)
        if not dependents:
            return "nothing in the directory"
        return "; ".join(f"{name} (owners: {', '.join(directory.services[name].owners) or 'none named'})"
                         for name in dependents)

    def _when(self, change: ChangeRequest, scheduled: bool) -> str:
        if change.planned_start is not None:
            end = change.planned_end or change.planned_start + timedelta(hours=1)
            return f"{change.planned_start:%a %Y-%m-%d %H:%M}-{end:%H:%M} UTC"
        if not scheduled:
            return "as soon as it is approved (its policy needs no window)"
        slot = self._scheduling.slot_held_by(change)
        held = describe_window(slot.window) if slot is not None and slot.window is not None else None
        return f"no date given: the first window nobody related holds, {held or 'none in the next 100 days'}"

    @staticmethod
    def _risk(change: ChangeRequest) -> str:
        answers = ", ".join(f"{question.replace('_', ' ')}: {answer}"
                            for question, answer in sorted((change.risk_answers or {}).items()))
        reasons = "; ".join(change.risk_reasons) or "no risk factors"
        return f"{change.risk_level} (score {change.risk_score}: {reasons})" + (f"; answers: {answers}" if answers
                                                                               else "")

    @staticmethod
    def _canary(plan: CanaryPlan) -> str:
        steps = " -> ".join(f"{step.weight} % for {step.bake_s:g} s" for step in plan.steps)
        fails = "; ".join(f"{metric.name} {metric.operator} {metric.threshold:g} ({metric.failure_limit} times)"
                          for metric in plan.metrics)
        judged = f" (analysis {plan.analysis}, which it may only tighten)" if plan.analysis else ""
        return f"{steps}; rolls back when {fails}{judged}"

    def _decided(self, change: ChangeRequest) -> str:
        with self._uow.read() as session:
            given = self._uow.given(session, change)
        return ", ".join(f"{g.approver} {'approved' if g.decision.value == 'approve' else 'rejected'} as {g.role}"
                         f"{f' for {g.on_behalf_of}' if g.on_behalf_of else ''}" for g in given) or "nobody yet"

    def _standing_in(self, change: ChangeRequest) -> str:
        """The delegations in force for this change: whose authority a delegate holds, until when."""
        uow = self._uow
        with uow.read() as session:
            delegations = active_delegations(uow.delegations(session, at=uow.clock()), uow.clock(),
                                             not_from=change.requester, directory=uow.org.directory)
        return "; ".join(f"{d.delegate} for {d.delegator} until {d.ends_at:%Y-%m-%d %H:%M} UTC ({d.reason})"
                         for d in delegations)
