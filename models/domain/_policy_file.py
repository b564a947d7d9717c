"""What policies.yaml holds, as data: each change type's approvals, escalation ladder, required fields and
timings, and the risk policy. `_change_types.ChangeTypeRules` reads a type's; `_policy` applies them."""

from __future__ import annotations

import difflib
import json

from datetime import timedelta
from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from ._enums import RiskLevel, Severity
from ._errors import InputError
from ._fields import Duration, Name, Strict
from ._lockdown import LockdownPolicy
from ._watch import WatchPolicy
from ._windows import WindowSchedule


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
RequiredField = Literal["rollback_plan", "test_evidence", "uat_signoff", "documentation_link", "category",
                        "implementation_plan", "description", "impact", "incident_id", "incident_severity",
                        "planned_start"]


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


class PromotionRule(Strict):
    """A release goes through `from` first: a change of one of `types` here names (in `promoted_from`) the closed,
    successful change that shipped the same `release` of the same service in `from`."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)  # `from` / `as` in YAML

    from_: Name = Field(alias="from", description="The environment a release must have shipped in first")
    types: list[Name] = Field(min_length=1, description="The change types the rule holds for")


class EnvironmentPolicy(Strict):
    """Where a change runs (the operations specification's production, staging, development): the windows its
    changes wait for, their notice, and approvals that differ from the type's. Freezes and ad hoc windows name an
    environment when they hold for one only."""

    description: str = Field(default="", description="One line for the run form")
    windows: list[Name] | Literal["any", "all"] = Field(
        default="all", description="The recurring windows (names from `windows:`) a change waiting for a window runs "
        "in here; `all`: every one; `any`: no window (continuous), approved means go")
    notice: Duration | None = Field(
        default=None, description="How far ahead a change is filed here, at least, instead of its type's notice "
        "(the specification's per-environment advance notice: staging 24 h, development none); empty: the type's")
    approvals: dict[Name, list[ApprovalRequirement]] = Field(
        default_factory=dict, description="Per change type: the approvals it needs here instead of its type's (what "
        "its risk adds still applies)")
    promotion: PromotionRule | None = Field(
        default=None, description="Releases reach this environment only through another one (staging first)")


class RollbackPolicy(Strict):
    """Rolling back a change that completed (`changeflow rollback KEY`, issue 32)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)  # `from` / `as` in YAML

    within: Duration = Field(default=timedelta(days=7), description="How long after its completion a change may be "
                             "rolled back this way (later: a change of its own)")
    as_: Name = Field(default="emergency", alias="as", description="The change type a rollback is filed as: its "
                      "approvals, window and freeze rules (an emergency's: the incident commander, at any time)")


class ScoreTargets(Strict):
    """The change success score's targets (issue 33; the operations specification's "Change Failure Rate < 5 %,
    Rollback Rate < 2 %, MTTR < 1 hour (P0), < 4 hours (P1)": its P0 and P1 are our P1 and P2); a score that misses
    one is flagged."""

    change_failure_rate: float = Field(default=0.05, ge=0, le=1, description="failed + rolled back, of all")
    rollback_rate: float = Field(default=0.02, ge=0, le=1, description="rolled back, of all")
    restore_hours: dict[Severity, float] = Field(
        default_factory=lambda: {Severity.P1: 1.0, Severity.P2: 4.0},
        description="Median hours from filing an incident's emergency fix to its success, per severity")


class ScoreRule(Strict):
    """A service whose success rate over the score window is under `below` (with at least `min_changes` ended
    there, so one bad day of a quiet service does not count) needs `approvals` too for changes of `types`."""

    below: float = Field(gt=0, le=1, description="success rate (succeeded / ended) under which the rule applies")
    min_changes: int = Field(default=10, ge=1, description="ended changes the window must hold for the rule to apply")
    types: list[Name] = Field(min_length=1, description="the change types it adds approvals to")
    approvals: list[ApprovalRequirement] = Field(min_length=1, description="role + count or quorum, as a "
                                                 "type's approvals")


class PreApprovalRule(Strict):
    """A pre-approved template's change skips the approval gate only on a service whose success rate over the score
    window is above `above`, with at least `min_changes` ended (a track record earns the recipe its trust)."""

    above: float = Field(ge=0, lt=1, description="success rate (succeeded / ended) the service must exceed")
    min_changes: int = Field(default=20, ge=1, description="ended changes the window must hold")


class ScorePolicy(Strict):
    window: Duration = Field(default=timedelta(days=90), description="the range a rule reads the score over")
    targets: ScoreTargets = Field(default_factory=ScoreTargets)
    rules: list[ScoreRule] = Field(default_factory=list)
    pre_approval: PreApprovalRule | None = Field(
        default=None, description="Pre-approved templates skip the gate only on services with this record (None: on "
        "every service)")


class FollowUpPolicy(Strict):
    """What follows a post-implementation review (issue 33): its action items are reminded to their owner when due,
    then climb this ladder while open (an overdue review climbs it too)."""

    escalation: list[EscalationStep] = Field(
        default_factory=lambda: [EscalationStep(after=timedelta(days=3), role="team_lead"),
                                 EscalationStep(after=timedelta(days=7), role="management")],
        description="Who else is told, how long after it fell due")


class ManualWorkPolicy(Strict):
    """A manual work gate nobody answers (issue 33): its implementers are told again, and these roles, this long
    after they were first asked."""

    escalation: list[EscalationStep] = Field(
        default_factory=lambda: [EscalationStep(after=timedelta(hours=1), role="oncall_primary"),
                                 EscalationStep(after=timedelta(hours=4), role="management")],
        description="Who else is told, how long after the work was asked for")


class PolicyChangeRule(Strict):
    """Policy changes are changes (issue 34): a new version of policies.yaml takes effect only once a change request
    of `type` for `service` that ships it (`release: policy-<version>`, filed by `changeflow policy propose`) is
    approved; until then the version in force, kept in the audit trail, governs. The rule of the version in force
    decides, so switching it off is a policy change like any other."""

    type: Name = Field(description="The change type a policy change is filed as: its approvals are what it needs")
    service: Name = Field(default="platform", description="The service a policy change is filed for: changeflow's own")

    @staticmethod
    def release(version: str) -> str:
        """The `release` a change request names to ship policy `version` (its full SHA-256)."""
        return f"policy-{version}"


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
    on_call: Name | None = Field(
        default=None, description="The role on call for what goes wrong while a change runs (its run crashed, a canary "
        "waits for a person); empty: the first rung of `escalation`")
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
    lockdown: LockdownPolicy = Field(
        default_factory=LockdownPolicy, description="The incident button: who turns it on and off, what it admits")
    conflict_depth: int = Field(
        default=1, ge=0, le=5, description="Two changes planned at the same time clash on one service, or on services "
        "this many directory.yaml `depends_on` steps apart, either way (0: the same service only)")
    windows: dict[Name, WindowSchedule] = Field(
        default_factory=dict, description="The recurring maintenance windows in which a type with `window: "
        "maintenance` may run (besides the ad hoc windows recorded with `changeflow window add`)")
    rollback: RollbackPolicy = Field(default_factory=RollbackPolicy)
    environments: dict[Name, EnvironmentPolicy] = Field(
        default_factory=lambda: {"production": EnvironmentPolicy()}, min_length=1,
        description="Where changes run; a request that names none targets the first (the strictest, production)")
    types: dict[Name, TypePolicy] = Field(min_length=1)
    risk: RiskPolicy = Field(default_factory=RiskPolicy)
    score: ScorePolicy = Field(default_factory=ScorePolicy, description="The change success score: its targets "
                               "and the rules that use it (`changeflow report score`)")
    watch: WatchPolicy = Field(default_factory=WatchPolicy, description="The post-change watch (canary.yaml `watches`)")
    follow_ups: FollowUpPolicy = Field(default_factory=FollowUpPolicy)
    manual_work: ManualWorkPolicy = Field(default_factory=ManualWorkPolicy)
    policy_changes: PolicyChangeRule | None = Field(
        default=None, description="Policy changes go through a change request of their own (None: a changed file "
        "takes effect when it is loaded, recorded in the audit trail)")
    version: str = Field(default="", description="SHA-256 of the policy file; set by the loader")
    source: str = Field(default="", exclude=True, description="The file's text as loaded (set by the loader): what "
                        "the audit trail keeps of each version, so the version in force can be read back exactly")

    @property
    def default_environment(self) -> str:
        return next(iter(self.environments))

    def canonical_text(self) -> str:
        """The policy set as sorted, indented JSON: what its version means, line by line, for a diff between two
        versions (issue 34) whatever the YAML's layout or comments."""
        return json.dumps(self.model_dump(mode="json", by_alias=True, exclude={"version", "source"}), indent=1,
                          sort_keys=True)

    def diff_from(self, previous_text: str, previous_version: str) -> str:
        """What this version changes from a previous one (its canonical text), as a unified diff, one line of
        context: what the policy log and a policy change request show."""
        return "".join(difflib.unified_diff(
            previous_text.splitlines(keepends=True), self.canonical_text().splitlines(keepends=True),
            fromfile=f"policies {previous_version[:12]}", tofile=f"policies {self.version[:12]}", n=1))

    @property
    def on_call_role(self) -> str | None:
        return self.on_call or (self.escalation[0].role if self.escalation else None)

    def environment(self, name: str | None) -> tuple[str, EnvironmentPolicy]:
        """The environment `name` (None: the default one) and its policy; an unknown name is an input error."""
        name = self.default_environment if name is None else str(name)
        if name not in self.environments:
            problem = f"unknown environment {name!r} (known: {', '.join(self.environments)})"
            raise InputError(f"environment: {problem}", [("environment", problem)])
        return name, self.environments[name]

    def for_type(self, change_type: str, environment: str | None = None) -> TypePolicy:
        """A type's policy as it holds in `environment` (None: the default one): that environment's approvals for
        it, its notice where it sets one (else the type's), and no window where the environment has none."""
        policy = self.types[str(change_type)]
        _, place = self.environment(environment)
        update: dict[str, object] = {}
        if place.notice is not None:
            update["notice"] = place.notice
        if str(change_type) in place.approvals:
            update["approvals"] = place.approvals[str(change_type)]
        if place.windows == "any":
            update["window"] = "any"
        return policy.model_copy(update=update)

    def windows_in(self, environment: str | None) -> dict[str, WindowSchedule]:
        """The recurring windows of `environment` (None: the default one)."""
        _, place = self.environment(environment)
        if place.windows == "any":
            return {}
        return {name: w for name, w in self.windows.items() if place.windows == "all" or name in place.windows}

    def environments_with(self, window: str) -> list[str]:
        """The environments whose changes run in the recurring window `window`."""
        return [name for name, place in self.environments.items()
                if place.windows == "all" or (place.windows != "any" and window in place.windows)]

    @model_validator(mode="after")
    def _rollback_names_a_type(self) -> "PolicySet":
        if self.rollback.as_ not in self.types:
            raise ValueError(f"rollback.as: no change type named {self.rollback.as_!r}")
        return self

    @model_validator(mode="after")
    def _environments_name_what_exists(self) -> "PolicySet":
        for name, place in self.environments.items():
            unknown = [w for w in place.windows if w not in self.windows] if isinstance(place.windows, list) else []
            if unknown:
                raise ValueError(f"environments.{name}.windows: no window named {', '.join(unknown)} in `windows:`")
            if place.windows != "any" and not self.windows_in(name) and self.windows:
                raise ValueError(f"environments.{name}.windows: names no window (use `any` for none)")
            for type_name in place.approvals:
                if type_name not in self.types:
                    raise ValueError(f"environments.{name}.approvals: no change type named {type_name!r}")
            rule = place.promotion
            if rule is not None:
                if rule.from_ not in self.environments or rule.from_ == name:
                    raise ValueError(f"environments.{name}.promotion.from: {rule.from_!r} is not another environment")
                unknown = [t for t in rule.types if t not in self.types]
                if unknown:
                    raise ValueError(f"environments.{name}.promotion.types: no change type named {', '.join(unknown)}")
        return self

    @model_validator(mode="after")
    def _score_rules_name_types(self) -> "PolicySet":
        for n, rule in enumerate(self.score.rules):
            unknown = [t for t in rule.types if t not in self.types]
            if unknown:
                raise ValueError(f"score.rules.{n}.types: no change type named {', '.join(unknown)}")
        return self

    @model_validator(mode="after")
    def _sections_name_types(self) -> "PolicySet":
        if self.policy_changes is not None and self.policy_changes.type not in self.types:
            raise ValueError(f"policy_changes.type: no change type named {self.policy_changes.type!r}")
        for section, names, known in (("lockdown.admits", self.lockdown.admits, self.types),
                                      ("watch.by_type", self.watch.by_type, self.types),
                                      ("watch.environments", self.watch.environments or [], self.environments)):
            unknown = [name for name in names if name not in known]
            if unknown:
                what = "environment" if known is self.environments else "change type"
                raise ValueError(f"{section}: no {what} named {', '.join(unknown)}")
        return self

    @model_validator(mode="after")
    def _other_severities_name_a_type(self) -> "PolicySet":
        for name, policy in self.types.items():
            if policy.other_severities_as is not None and policy.other_severities_as not in self.types:
                raise ValueError(f"types.{name}.other_severities_as: no change type named "
                                 f"{policy.other_severities_as!r}")
        return self
