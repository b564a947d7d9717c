"""Change types as data: everything that makes an emergency, standard or major change behave as it does is read
from its policy (`types:` in policies.yaml), so a new change type is a YAML edit.

Every place that would branch on the type's name asks a `ChangeTypeRules` instead: does it wait for a
scheduled window, does a review always follow, which fields must a request fill, which escalation ladder
reminds people, may it override a freeze.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from ._errors import FieldProblem, InputError
from ._policy_file import EscalationStep, PolicySet, TypePolicy

# What a missing required field is called in the refusal ("a standard change needs a rollback plan").
_FIELD_NEEDS = {
    "rollback_plan": "needs a rollback plan",
    "test_evidence": "needs test evidence (where it was tested and the result)",
    "uat_signoff": "needs a UAT sign-off (who accepted it, and where that is recorded)",
    "documentation_link": "needs a link to its documentation",
    "category": "needs a category (corrective, adaptive, perfective or preventive)",
    "implementation_plan": "needs an implementation plan",
    "description": "needs a description",
    "impact": "needs an impact statement",
    "incident_id": "must name the incident it fixes",
    "incident_severity": "needs the incident severity (P1-P4)",
    "planned_start": "needs a planned start",
}


class RequestFields(Protocol):
    """What the type rules read of a request or a stored change."""

    type: str


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


@dataclass(frozen=True)
class ChangeTypeRules:
    name: str
    policy: TypePolicy  # as it holds in `environment` (its approvals, notice and window there)
    ladder: tuple[EscalationStep, ...]
    environment: str = ""

    @property
    def scheduled(self) -> bool:
        """Waits in `scheduled` for its planned start; `window: any` types go straight to implementation."""
        return self.policy.window != "any"

    @property
    def always_reviewed(self) -> bool:
        """Every change of this type passes `review_pending`, success or not (emergencies: documented after)."""
        return self.policy.review == "always"

    @property
    def review_within(self) -> timedelta:
        return self.policy.review_within

    @property
    def approval_sla(self) -> timedelta:
        return self.policy.approval_sla

    @property
    def overrides_freeze(self) -> bool:
        return self.policy.overrides_freeze

    def missing_fields(self, request: object) -> list[FieldProblem]:
        """The fields this type requires that the request leaves empty, each as a field-named problem."""
        return [
            FieldProblem(name, f"{article(self.name)} {self.name} change {_FIELD_NEEDS[name]}")
            for name in self.policy.requires
            if getattr(request, name, None) in (None, "")
        ]


    def severity_problems(self, request: object) -> list[FieldProblem]:
        """An incident severity this type is not for, as a field-named problem that names the type to use."""
        severity = getattr(request, "incident_severity", None)
        allowed = [str(getattr(s, "value", s)) for s in self.policy.severities]
        if not allowed or severity is None or str(getattr(severity, "value", severity)) in allowed:
            return []
        given = str(getattr(severity, "value", severity))
        instead = (f": file the fix of a {given} incident as {article(self.policy.other_severities_as)} "
                   f"{self.policy.other_severities_as} change" if self.policy.other_severities_as else "")
        return [FieldProblem("incident_severity", f"{article(self.name)} {self.name} change is only for "
                             f"{' or '.join(allowed)} incidents, not {given}{instead}")]

    def request_problems(self, request: object) -> list[FieldProblem]:
        """Everything this type's policy asks of a request that it does not give."""
        return [*self.missing_fields(request), *self.severity_problems(request)]


def change_type(policies: PolicySet, name: str, environment: str | None = None) -> ChangeTypeRules:
    """The rules of the change type `name` in `environment` (None: the default one); an unknown name is an input
    error naming the known ones."""
    if str(name) not in policies.types:
        known = ", ".join(policies.types)
        raise InputError(f"type: unknown change type {name!r} (known: {known})", [("type", "unknown change type")])
    environment, _ = policies.environment(environment)
    policy = policies.for_type(name, environment)
    ladder = policy.escalation if policy.escalation is not None else policies.escalation
    return ChangeTypeRules(name=str(name), policy=policy, ladder=tuple(ladder), environment=environment)
