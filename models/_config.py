"""The organisation config: approver directory and approval policies, loaded from YAML with clear errors."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Callable, Literal, TypeVar

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from ._enums import ChangeType, RiskLevel
from ._errors import ConfigError, InputError

T = TypeVar("T")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: object) -> object:
    """'15m', '48h', '7d', '2w' -> timedelta (other forms are left to pydantic)."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"{value!r} is not a duration like 15m, 48h, 7d or 2w")
        return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Channel(_Strict):
    """One way to reach a person. The notifications package knows how to send on each type."""

    type: Literal["console", "file", "email", "slack", "teams", "webhook"]
    address: str | None = Field(default=None, description="e-mail address (email)")
    url: str | None = Field(default=None, description="incoming-webhook URL (slack, teams, webhook)")
    path: str | None = Field(default=None, description="file to append to (file)")

    @model_validator(mode="after")
    def _target_present(self) -> "Channel":
        needed = {"email": "address", "slack": "url", "teams": "url", "webhook": "url", "file": "path"}.get(self.type)
        if needed and not getattr(self, needed):
            raise ValueError(f"a {self.type} channel needs `{needed}`")
        return self


class Person(_Strict):
    name: str = Field(min_length=1, max_length=200)
    roles: list[Name] = Field(default_factory=list)
    channels: list[Channel] = Field(default_factory=lambda: [Channel(type="console")])


class ServiceEntry(_Strict):
    owners: list[Name] = Field(default_factory=list)
    stakeholders: list[Name] = Field(default_factory=list)


class Directory(_Strict):
    """Who may approve what, and how to reach them."""

    people: dict[Name, Person]
    services: dict[Name, ServiceEntry] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _services_name_known_people(self) -> "Directory":
        for service, entry in self.services.items():
            for who in (*entry.owners, *entry.stakeholders):
                if who not in self.people:
                    raise ValueError(f"services.{service}: {who!r} is not in people")
        return self

    def holders(self, role: str) -> list[str]:
        return sorted(user for user, person in self.people.items() if role in person.roles)

    def holds(self, user: str, role: str) -> bool:
        person = self.people.get(user)
        return person is not None and role in person.roles


class ApprovalRequirement(_Strict):
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


class TypePolicy(_Strict):
    approvals: list[ApprovalRequirement] = Field(min_length=1)
    approval_sla: Duration
    window: Literal["any", "maintenance"]
    notice: Duration = timedelta(0)
    documentation: str = ""
    testing: str = ""
    review_within: Duration | None = None
    extra_for_risk: dict[RiskLevel, list[ApprovalRequirement]] = Field(default_factory=dict)


class RiskPolicy(_Strict):
    medium_from: int = Field(default=4, ge=1, description="score at which a change is medium risk")
    high_from: int = Field(default=7, ge=1, description="score at which a change is high risk")
    failure_rate_window: Duration = timedelta(days=90)
    failure_rate_min_changes: int = Field(default=5, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> "RiskPolicy":
        if self.high_from <= self.medium_from:
            raise ValueError("high_from must be greater than medium_from")
        return self


class EscalationStep(_Strict):
    """Re-notify `role` when nobody has decided `after` the approval was requested."""

    after: Duration
    role: Name
    severities: list[str] = Field(
        default_factory=list, description="Only for emergency changes of these incident severities (empty: all)"
    )


class PolicySet(_Strict):
    reject_on_any_rejection: bool = True
    pre_approved_templates: list[Name] = Field(
        default_factory=list, description="Change templates whose runs skip the approval gate (ITIL standard changes)"
    )
    escalation: list[EscalationStep] = Field(default_factory=list)
    types: dict[ChangeType, TypePolicy]
    risk: RiskPolicy = Field(default_factory=RiskPolicy)
    version: str = Field(default="", description="SHA-256 of the policy file; set by the loader")

    @model_validator(mode="after")
    def _every_type(self) -> "PolicySet":
        missing = [t.value for t in ChangeType if t not in self.types]
        if missing:
            raise ValueError(f"types: no policy for {', '.join(missing)}")
        return self

    def for_type(self, change_type: ChangeType) -> TypePolicy:
        return self.types[ChangeType(change_type)]


class ChangeTemplate(_Strict):
    """A named, reviewed recipe that pre-fills a change request (restart a service, rotate a certificate...).

    Commands live only here, in the config directory an administrator controls: a request can name a
    template but can never bring commands of its own.
    """

    type: ChangeType = ChangeType.standard
    title: str = ""
    description: str = ""
    impact: str = ""
    implementation_plan: str = ""
    rollback_plan: str = ""
    test_evidence: str = ""
    risk: dict = Field(default_factory=dict)
    implementation_commands: list[str] = Field(default_factory=list)
    verify_commands: list[str] = Field(default_factory=list)
    rollback_commands: list[str] = Field(default_factory=list)
    command_timeout_s: float = Field(default=300, gt=0, le=86400)
    checklist: str | None = Field(default=None, description="Checklist (checklists.yaml) its changes run")


class Org(BaseModel):
    """Everything the rules need from the config directory."""

    model_config = ConfigDict(frozen=True)

    directory: Directory
    policies: PolicySet
    templates: dict[str, ChangeTemplate] = Field(default_factory=dict)
    checklists: dict[str, "Checklist"] = Field(default_factory=dict)
    maintenance: "MaintenancePlan | None" = None
    canary: "CanaryConfig | None" = None

    @model_validator(mode="after")
    def _templates_known(self) -> "Org":
        for name, template in self.templates.items():
            if template.checklist and template.checklist not in self.checklists:
                raise ValueError(f"templates.{name}.checklist: no checklist named {template.checklist!r}")
        for kind, plan in (self.maintenance.windows.items() if self.maintenance else []):
            if plan.checklist and plan.checklist not in self.checklists:
                raise ValueError(f"maintenance.windows.{kind}.checklist: no checklist named {plan.checklist!r}")
        unknown = [t for t in self.policies.pre_approved_templates if t not in self.templates]
        if unknown:
            raise ValueError(f"policies.pre_approved_templates: no template named {', '.join(unknown)}")
        for step in self.policies.escalation:
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
                        f"policies.types.{change_type.value}: role {requirement.role!r} needs "
                        f"{requirement.count or 1} approver(s) but the directory has {len(holders)}"
                    )
        return self


def _format_validation(source: str, exc: ValidationError) -> ConfigError:
    problems = [(".".join(str(p) for p in err["loc"]) or "(top level)", err["msg"]) for err in exc.errors()]
    lines = "; ".join(f"{loc}: {msg}" for loc, msg in problems)
    return ConfigError(f"{source}: {lines}", problems)


def parse_yaml(raw: bytes | str, source: str, error: type[InputError] = ConfigError) -> object:
    """Parse YAML; a syntax error becomes `error` naming the source, line and column."""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        raise error(f"{source}:{where} not valid YAML ({getattr(exc, 'problem', None) or exc})") from None


def read_yaml(path: Path) -> tuple[object, bytes]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found (run `changeflow init` to install the example config)") from None
    return parse_yaml(raw, str(path)), raw


def load_policies(path: Path) -> PolicySet:
    data, raw = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        policies = PolicySet.model_validate(data)
    except ValidationError as exc:
        raise _format_validation(str(path), exc) from None
    return policies.model_copy(update={"version": hashlib.sha256(raw).hexdigest()})


def load_directory(path: Path) -> Directory:
    data, _ = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        return Directory.model_validate(data)
    except ValidationError as exc:
        raise _format_validation(str(path), exc) from None


def load_optional_mapping(path: Path, validate: Callable[[dict], T], what: str) -> T | None:
    """An optional YAML file holding a mapping (templates, checklists, maintenance): None when absent or empty."""
    if not path.exists():
        return None
    data, _ = read_yaml(path)
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of {what}")
    try:
        return validate(data)
    except ValidationError as exc:
        raise _format_validation(str(path), exc) from None


def load_templates(path: Path) -> dict[str, ChangeTemplate]:
    """Templates are optional: no file means no templates."""
    return load_optional_mapping(
        path, lambda data: {str(name): ChangeTemplate.model_validate(body) for name, body in data.items()},
        "template names") or {}


def load_org(config_dir: Path) -> Org:
    directory = load_directory(config_dir / "directory.yaml")
    policies = load_policies(config_dir / "policies.yaml")
    templates = load_templates(config_dir / "templates.yaml")
    checklists = load_checklists(config_dir / "checklists.yaml")
    maintenance = load_maintenance(config_dir / "maintenance.yaml")
    canary = load_canary(config_dir / "canary.yaml")
    try:
        return Org(directory=directory, policies=policies, templates=templates, checklists=checklists,
                   maintenance=maintenance, canary=canary)
    except ValidationError as exc:
        raise _format_validation(str(config_dir), exc) from None


DEFAULTS_DIR = Path(__file__).parent / "defaults"

from ._checklist import Checklist, load_checklists  # noqa: E402  (defined on top of this module's helpers)
from ._maintenance import MaintenancePlan, load_maintenance  # noqa: E402
from ._canary_plan import CanaryConfig, load_canary  # noqa: E402

Org.model_rebuild()
