"""The organisation's rules as data: approver directory, approval policies per change type, templates.

Shapes only: `models.config` reads them from YAML; nothing here does I/O.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from datetime import timedelta
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ._canary_plan import CanaryConfig
from ._checklist import Checklist
from ._enums import RiskLevel, Severity
from ._fields import Duration, Name, Strict
from ._maintenance import MaintenancePlan
from ._schemas import RiskAnswers

class Channel(Strict):
    """One way to reach a person. The notifications package knows how to send on each type."""

    type: Literal["console", "file", "email", "slack", "teams", "webhook"]
    address: str | None = Field(default=None, description="e-mail address (email)")
    url: str | None = Field(default=None, description="incoming-webhook URL (slack, teams, webhook)")
    path: str | None = Field(default=None, description="file to append to (file); a relative path is under CHANGEFLOW_HOME")

    @model_validator(mode="after")
    def _target_present(self) -> "Channel":
        needed = {"email": "address", "slack": "url", "teams": "url", "webhook": "url", "file": "path"}.get(self.type)
        if needed and not getattr(self, needed):
            raise ValueError(f"a {self.type} channel needs `{needed}`")
        if self.url is not None:
            problem = url_problem(self.url)
            if problem:
                raise ValueError(f"url: {problem}")
        return self


def url_problem(url: str) -> str | None:
    """Why a webhook URL cannot be used (None: it can). Checked when the directory loads, not at 3 a.m."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        return f"not a usable URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host"
    return None


class Person(Strict):
    name: str = Field(min_length=1, max_length=200)
    roles: list[Name] = Field(default_factory=list)
    channels: list[Channel] = Field(default_factory=lambda: [Channel(type="console")])
    slack_user_id: str | None = Field(
        default=None, pattern=r"^[UW][A-Z0-9]{2,20}$",
        description="Slack member id (Profile > Copy member ID): a click on an Approve button acts as this person")


class ServiceEntry(Strict):
    owners: list[Name] = Field(default_factory=list)
    stakeholders: list[Name] = Field(default_factory=list)
    depends_on: list[Name] = Field(default_factory=list, description="Services this one calls: a change to one of "
                                   "them is shown to approvers with this service among what depends on it")


class Directory(Strict):
    """Who may approve what, and how to reach them."""

    people: dict[Name, Person]
    services: dict[Name, ServiceEntry] = Field(default_factory=dict)
    automations: list[Name] = Field(
        default_factory=list,
        description="Names that file changes on their own (the scheduled maintenance): they may request, never "
        "approve, confirm or start anything")
    witnesses: dict[Name, Channel] = Field(
        default_factory=dict,
        description="Where each signed audit checkpoint is also sent (an auditor's webhook, mailbox or a file "
        "outside HOME): `audit verify-bundle --witness` checks a bundle against what they received, which "
        "whoever can write HOME cannot re-sign")

    def person_with_slack_id(self, slack_user_id: str) -> str | None:
        return next((name for name, person in self.people.items() if person.slack_user_id == slack_user_id), None)

    @model_validator(mode="after")
    def _slack_ids_are_unique(self) -> "Directory":
        seen: dict[str, str] = {}
        for name, person in self.people.items():
            if person.slack_user_id and seen.setdefault(person.slack_user_id, name) != name:
                raise ValueError(f"people.{name}.slack_user_id: {person.slack_user_id} is already "
                                 f"{seen[person.slack_user_id]}'s")
        return self

    @model_validator(mode="after")
    def _services_name_known_people(self) -> "Directory":
        for service, entry in self.services.items():
            for who in (*entry.owners, *entry.stakeholders):
                if who not in self.people:
                    raise ValueError(f"services.{service}: {who!r} is not in people")
            for used in entry.depends_on:
                if used not in self.services:
                    raise ValueError(f"services.{service}.depends_on: {used!r} is not a service of the directory")
        return self

    def dependents(self, service: str) -> list[str]:
        """The services that depend on `service`, directly or through others (what a change to it may break)."""
        found: set[str] = set()
        frontier = [service]
        while frontier:
            current = frontier.pop()
            for name, entry in self.services.items():
                if current in entry.depends_on and name not in found and name != service:
                    found.add(name)
                    frontier.append(name)
        return sorted(found)

    def may_request(self, name: str) -> bool:
        """A requester is a person of the directory or one of its automations: never an invented name, which
        would let someone file under a stranger's name and approve their own change."""
        return name in self.people or name in self.automations

    def holders(self, role: str) -> list[str]:
        return sorted(user for user, person in self.people.items() if role in person.roles)

    def holds(self, user: str, role: str) -> bool:
        person = self.people.get(user)
        return person is not None and role in person.roles

    def operator_refusal(self, operator: str, roles: list[str], may: str) -> str | None:
        """Why `operator` may not do an operator act (`may`: "print a code") reserved to `roles` (None: they may)."""
        if any(self.holds(operator, role) for role in roles):
            return None
        return f"{operator!r} holds none of the roles that may {may} ({', '.join(roles)})"


class ApprovalRequirement(Strict):
    role: Name
    count: int | None = Field(default=None, ge=1, le=50, description="How many different people of this role")
    quorum: Literal["majority"] | None = Field(
        default=None, description="'majority': more than half of the role's members in the directory"
    )

    @model_validator(mode="after")
    def _count_or_quorum(self) -> "ApprovalRequirement":
        if self.count is not None and self.quorum is not None:
            raise ValueError("give either count or quorum, not both")
        return self


class EscalationStep(Strict):
    """Re-notify `role` when nobody has decided `after` the approval was requested."""

    after: Duration
    role: Name
    severities: list[str] = Field(
        default_factory=list, description="Only for changes fixing incidents of these severities (empty: all)"
    )


# Request fields a change type can make mandatory (`requires:` in policies.yaml).
RequiredField = Literal["rollback_plan", "test_evidence", "implementation_plan", "description", "impact",
                        "incident_id", "incident_severity", "planned_start"]


class TypePolicy(Strict):
    """Everything that makes one change type behave as it does; `models.domain.change_type` reads it."""

    description: str = Field(default="", description="One line for the run form: what the type is for")
    approvals: list[ApprovalRequirement] = Field(min_length=1)
    approval_sla: Duration
    window: Literal["any", "maintenance"] = Field(
        description="any: implemented right after approval; maintenance: scheduled, waits for its planned start")
    notice: Duration = timedelta(0)
    documentation: str = ""
    testing: str = ""
    requires: list[RequiredField] = Field(default_factory=list, description="Fields a request of this type must fill")
    review: Literal["always", "after_failure"] = Field(
        default="after_failure", description="always: every change gets a post-implementation review")
    review_within: Duration = Field(default=timedelta(hours=48), description="When the review is due")
    early_start: list[Name] = Field(
        default_factory=list,
        description="Roles that may start a scheduled change before its planned start, with their personal code "
        "(empty: nobody; the window is binding)")
    overrides_freeze: bool = Field(
        default=False, description="A freeze or clash is recorded as an override instead of refusing the change")
    implementers: list[Name] = Field(
        default_factory=lambda: ["requester", "owner"],
        description="Who confirms manual work (implemented, verified, rolled back): `requester`, `owner` (the "
        "service's owners) or a role")
    reviewers: list[Name] = Field(
        default_factory=lambda: ["owner", "team_lead"],
        description="Who records the post-implementation review: `requester`, `owner` (the service's owners) or a "
        "role. The requester reviews only where this names them")
    separate_implementer: bool = Field(
        default=False, description="Whoever approved the change may not confirm its manual work (segregation)")
    escalation: list[EscalationStep] | None = Field(
        default=None, description="This type's reminder ladder (empty: the policy set's `escalation`)")
    extra_for_risk: dict[RiskLevel, list[ApprovalRequirement]] = Field(default_factory=dict)
    severities: list[Severity] = Field(
        default_factory=list, description="The incident severities this type may be filed for (empty: any). The "
        "specification's emergency path is for P1 and P2; P3 and P4 take the standard one")
    other_severities_as: Name | None = Field(
        default=None, description="The type a request of another severity is filed as instead (the refusal names it)")
    hot_gate: Duration = Field(
        default=timedelta(0), description="How long a gate of this type that waits for a person (approval, manual "
        "work, checklist item, canary question) first waits in its run's process: an answer then moves the run "
        "within about a second, but the wait holds a worker slot and its memory. Past it the run suspends and frees "
        "the slot, and an answer costs a new flow-run process (seconds). 0: suspend at once.")

    @field_validator("hot_gate")
    @classmethod
    def _hot_gate_bounded(cls, value: timedelta) -> timedelta:
        # A slot held for hours by a gate nobody answers starves every other change of workers.
        if not timedelta(0) <= value <= timedelta(hours=1):
            raise ValueError("hot_gate must be between 0 and 1h")
        return value


class RiskPolicy(Strict):
    medium_from: int = Field(default=4, ge=1, description="score at which a change is medium risk")
    high_from: int = Field(default=7, ge=1, description="score at which a change is high risk")
    failure_rate_window: Duration = timedelta(days=90)
    failure_rate_min_changes: int = Field(default=5, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> "RiskPolicy":
        if self.high_from <= self.medium_from:
            raise ValueError("high_from must be greater than medium_from")
        return self


class PolicySet(Strict):
    reject_on_any_rejection: bool = True
    pre_approved_templates: list[Name] = Field(
        default_factory=list, description="Change templates whose runs skip the approval gate (ITIL standard changes)"
    )
    escalation: list[EscalationStep] = Field(default_factory=list)
    code_issuers: list[Name] = Field(
        default_factory=lambda: ["operator"],
        description="Roles that may print someone's personal code (`changeflow approval-code`), when no personal "
        "channel reached them; each code printed is recorded (who, for whom, which act)")
    confirm_filing_within: Duration = Field(
        default=timedelta(days=1),
        description="How long a filed change waits for its requester to confirm that they filed it before it is "
        "cancelled (a filing in someone else's name is never confirmed)")
    delegation_recorders: list[Name] = Field(
        default_factory=lambda: ["operator"],
        description="Roles that may record or end a delegation (`changeflow delegate`) at the person's request; "
        "each is recorded (who recorded it, who delegates to whom, for which period, why)")
    longest_delegation: Duration = Field(
        default=timedelta(days=31),
        description="The longest period one delegation may run: authority handed over is handed back by default")
    types: dict[Name, TypePolicy] = Field(min_length=1)
    risk: RiskPolicy = Field(default_factory=RiskPolicy)
    version: str = Field(default="", description="SHA-256 of the policy file; set by the loader")

    def for_type(self, change_type: str) -> TypePolicy:
        return self.types[str(change_type)]

    @model_validator(mode="after")
    def _other_severities_name_a_type(self) -> "PolicySet":
        for name, policy in self.types.items():
            if policy.other_severities_as is not None and policy.other_severities_as not in self.types:
                raise ValueError(f"types.{name}.other_severities_as: no change type named "
                                 f"{policy.other_severities_as!r}")
        return self


class ChangeTemplate(Strict):
    """A named, reviewed recipe that pre-fills a change request (restart a service, rotate a certificate...).

    Commands live only here, in the config directory an administrator controls: a request can name a
    template but can never bring commands of its own.
    """

    type: Name = "standard"
    title: str = ""
    description: str = ""
    impact: str = ""
    implementation_plan: str = ""
    rollback_plan: str = ""
    test_evidence: str = ""
    risk: RiskAnswers | None = Field(
        default=None, description="The reviewed risk answers its changes carry when they give none of their own "
        "(every question, as a request must)")
    implementation_commands: list[str] = Field(default_factory=list)
    verify_commands: list[str] = Field(default_factory=list)
    rollback_commands: list[str] = Field(default_factory=list)
    command_timeout_s: float = Field(default=300, gt=0, le=86400)
    idempotent: bool = Field(
        default=False, description="Its implementation commands may run again after a crash (at-least-once); "
        "otherwise an interrupted step is put to a person (at-most-once)")
    checklist: str | None = Field(default=None, description="Checklist (checklists.yaml) its changes run")

    def extras_in(self, change: "FiledFromTemplate") -> list[str]:
        """The fields of a change filed from this template that carry more than the template gives: a plan,
        risk answers, a canary or a checklist of its own. Pre-approval covers only what was reviewed, so a
        change with any of these goes through the normal gate (ITIL: a standard change is the recipe, as is)."""
        extras = [name for name in ("impact", "implementation_plan", "rollback_plan", "test_evidence")
                  if getattr(change, name) and getattr(change, name) != getattr(self, name).replace(
                      "{service}", change.service)]
        if self.risk is None or change.risk_answers != self.risk.model_dump(mode="json"):
            extras.append("risk")
        if change.canary:
            extras.append("canary")
        if (change.checklist or None) != self.checklist:
            extras.append("checklist")
        return extras


class Org(BaseModel):
    """Everything the rules need from the config directory."""

    model_config = ConfigDict(frozen=True)

    directory: Directory
    policies: PolicySet
    templates: dict[str, ChangeTemplate] = Field(default_factory=dict)
    checklists: dict[str, Checklist] = Field(default_factory=dict)
    maintenance: MaintenancePlan | None = None
    canary: CanaryConfig | None = None

    @model_validator(mode="after")
    def _templates_known(self) -> "Org":
        for name, template in self.templates.items():
            if template.type not in self.policies.types:
                raise ValueError(f"templates.{name}.type: no change type named {template.type!r} in policies.yaml")
            if template.checklist and template.checklist not in self.checklists:
                raise ValueError(f"templates.{name}.checklist: no checklist named {template.checklist!r}")
        for kind, plan in (self.maintenance.windows.items() if self.maintenance else []):
            if plan.checklist and plan.checklist not in self.checklists:
                raise ValueError(f"maintenance.windows.{kind}.checklist: no checklist named {plan.checklist!r}")
        unknown = [t for t in self.policies.pre_approved_templates if t not in self.templates]
        if unknown:
            raise ValueError(f"policies.pre_approved_templates: no template named {', '.join(unknown)}")
        ladders = [self.policies.escalation, *(p.escalation or [] for p in self.policies.types.values())]
        for step in (step for ladder in ladders for step in ladder):
            if not self.directory.holders(step.role):
                raise ValueError(f"policies.escalation: nobody in the directory holds the role {step.role!r}")
        return self

    @model_validator(mode="after")
    def _policies_fit_directory(self) -> "Org":
        for change_type, policy in self.policies.types.items():
            requirements = list(policy.approvals)
            for extra in policy.extra_for_risk.values():
                requirements.extend(extra)
            for requirement in requirements:
                holders = self.directory.holders(requirement.role)
                if len(holders) < (requirement.count or 1):
                    raise ValueError(
                        f"policies.types.{change_type}: role {requirement.role!r} needs "
                        f"{requirement.count or 1} approver(s) but the directory has {len(holders)}"
                    )
        return self

    @property
    def canary_config(self) -> CanaryConfig:
        """canary.yaml, or an empty one (no service has a router) when the file is absent."""
        return self.canary or CanaryConfig()

    def template_of(self, change: "HasTemplate") -> ChangeTemplate | None:
        """The change template a change or request names, if any (its commands drive the implementation)."""
        return self.templates.get(change.template) if change.template else None

    def checklist_of(self, change: "HasChecklist") -> Checklist | None:
        """The checklist a change runs, if any."""
        return self.checklists.get(change.checklist) if change.checklist else None


class FiledFromTemplate(Protocol):
    service: str
    impact: str
    implementation_plan: str
    rollback_plan: str
    test_evidence: str
    risk_answers: dict[str, Any]
    canary: dict[str, Any] | None
    checklist: str | None


class HasTemplate(Protocol):
    template: str | None


class HasChecklist(Protocol):
    checklist: str | None
