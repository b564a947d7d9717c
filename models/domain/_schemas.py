"""What comes in (the UI form and `changeflow submit` file) and what goes out (`show --json`).

Field descriptions are written for the person filling the Prefect run form.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ._canary_plan import CanaryPlan
from ._enums import (
    BackoutDifficulty,
    ChangeCategory,
    ChangeState,
    Complexity,
    RiskLevel,
    Severity,
    UsersAffected,
)
from ._errors import FieldProblem, InputError
from ._fields import NAME_PATTERN, Moment, plain_text

TITLE_MAX = 200
MAX_CHANGE_LENGTH = timedelta(days=7)
TEXT_MAX = 20_000
LINK_MAX = 500


YES_OR_NO: dict[str, Any] = {"type": "string", "enum": ["yes", "no"]}


class RiskAnswers(BaseModel):
    """The risk questionnaire; scored into low / medium / high. Every question must be answered: a default would
    file an unanswered change as "few users, low complexity, easy back-out, tested in staging" and could skip the
    approvers high risk calls for (issue 30)."""

    model_config = ConfigDict(extra="forbid")

    users_affected: UsersAffected = Field(description="How many users could notice this change if it goes wrong?")
    complexity: Complexity = Field(description="How complex is the change itself?")
    backout_difficulty: BackoutDifficulty = Field(description="How hard is it to back the change out?")
    # The yes / no questions are a choice with nothing chosen in the run form: Prefect draws a boolean as a switch
    # that posts "no" for a question nobody answered. "yes" / "no" (and true / false in request files) validate as
    # booleans, and are stored as such.
    tested_in_staging: bool = Field(description="Was the change tested in staging first? yes or no",
                                    json_schema_extra=YES_OR_NO)
    touches_data: bool = Field(description="Does the change modify stored data (migrations, backfills, deletions)? "
                                           "yes or no", json_schema_extra=YES_OR_NO)


RISK_QUESTIONS = tuple(RiskAnswers.model_fields)


def unanswered_risk(request: "ChangeRequestInput") -> FieldProblem | None:
    """A request must carry its risk answers, its own or its template's reviewed ones: none is assumed."""
    if request.risk is not None:
        return None
    return FieldProblem("risk", f"answer every risk question ({', '.join(RISK_QUESTIONS)}): none is assumed")


class ChangeRequestInput(BaseModel):
    """A change request as a requester files it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    type: str = Field(
        pattern=NAME_PATTERN,
        description="The change type from policies.yaml (emergency: fixes a live incident, approved by the incident "
        "commander; standard: team lead + peer reviewer; major: Change Advisory Board quorum).",
        json_schema_extra={"position": 0},
    )
    title: str = Field(
        min_length=1, max_length=TITLE_MAX, description="One line saying what changes.",
        json_schema_extra={"position": 1},
    )
    service: str = Field(
        pattern=NAME_PATTERN,
        description="The service being changed (letters, digits, . _ - @).",
        json_schema_extra={"position": 2},
    )
    environment: str | None = Field(
        default=None, pattern=NAME_PATTERN,
        description="Where it runs (policies.yaml environments: production, staging, development). Empty: the first, "
        "production.",
        json_schema_extra={"position": 3},
    )
    release: str | None = Field(
        default=None, max_length=100, pattern=NAME_PATTERN,
        description="The release it ships (a version or build, e.g. 2.4.1), where it ships one.",
        json_schema_extra={"position": 4},
    )
    promoted_from: str | None = Field(
        default=None, max_length=20, pattern=r"^CHG-\d{1,12}$",
        description="The closed change (CHG-...) that shipped this release in the environment before (staging "
        "first, where the environment's policy says so).",
        json_schema_extra={"position": 5},
    )
    rolls_back: str | None = Field(
        default=None, max_length=20, pattern=r"^CHG-\d{1,12}$",
        description="The completed change (CHG-...) this one rolls back, within policies.yaml rollback.within of its "
        "completion (changeflow rollback KEY fills this in). Empty: none.",
        json_schema_extra={"position": 6},
    )
    requester: str = Field(
        pattern=NAME_PATTERN,
        description="Your user name in the approver directory. You can never approve your own change.",
        json_schema_extra={"position": 7},
    )
    description: str = Field(
        default="", max_length=TEXT_MAX, description="Why the change is needed and what it does.",
        json_schema_extra={"position": 8},
    )
    impact: str = Field(
        default="", max_length=TEXT_MAX, description="Who and what is affected, and for how long.",
        json_schema_extra={"position": 9},
    )
    implementation_plan: str = Field(
        default="", max_length=TEXT_MAX, description="The steps, in order.", json_schema_extra={"position": 10}
    )
    rollback_plan: str = Field(
        default="",
        max_length=TEXT_MAX,
        description="How to undo the change. Required where the change type's policy says so (standard, major).",
        json_schema_extra={"position": 11},
    )
    test_evidence: str = Field(
        default="",
        max_length=TEXT_MAX,
        description="Where it was tested and the result (staging run, test report link). Required where the change "
        "type's policy says so (standard: the staging evidence; major: the full suite).",
        json_schema_extra={"position": 12},
    )
    uat_signoff: str | None = Field(
        default=None, max_length=TEXT_MAX,
        description="Who accepted it in user acceptance testing, and where that is recorded. Required for major "
        "changes (their policy says so).",
        json_schema_extra={"position": 13},
    )
    documentation_link: str | None = Field(
        default=None, max_length=LINK_MAX, pattern=r"^https?://[^\s]+$",
        description="Where its documentation is (an http or https link). Required for major changes.",
        json_schema_extra={"position": 14},
    )
    category: ChangeCategory | None = Field(
        default=None,
        description="Why it is made: corrective (fixes a fault), adaptive (follows a change around it), perfective "
        "(improves it), preventive (prevents a fault).",
        json_schema_extra={"position": 15},
    )
    planned_start: Moment | None = Field(
        default=None, description="When the change should start (with a UTC offset).",
        json_schema_extra={"position": 16},
    )
    planned_end: Moment | None = Field(
        default=None, description="When the change should be finished.", json_schema_extra={"position": 17}
    )
    incident_id: str | None = Field(
        default=None,
        max_length=100,
        description="The incident this change fixes. Required for emergency changes (their policy says so).",
        json_schema_extra={"position": 18},
    )
    incident_severity: Severity | None = Field(
        default=None,
        description="Severity of that incident (P1 critical ... P4 low). Required for emergency changes.",
        json_schema_extra={"position": 19},
    )
    risk: RiskAnswers | None = Field(
        default=None,
        description="Risk questionnaire: answer every question, none is assumed. A request from a template that "
        "carries reviewed answers may leave it out.",
        json_schema_extra={"position": 20},
    )
    template: str | None = Field(
        default=None,
        max_length=100,
        description="Name of a change template (restart-service, rotate-certificate, ...) that fills the fields "
        "you leave empty. Some templates are pre-approved.",
        json_schema_extra={"position": 21},
    )

    checklist: str | None = Field(
        default=None,
        max_length=100,
        description="Checklist whose pre / during / post items run around the implementation (e.g. maintenance, "
        "automated); empty: none, or the template's.",
        json_schema_extra={"position": 22},
    )
    runbook: str | None = Field(
        default=None,
        max_length=100,
        description="The runbook (config runbooks/<name>.md) the change follows: shown in its run, its version "
        "recorded. Empty: its template's, or none.",
        json_schema_extra={"position": 23},
    )
    canary: CanaryPlan | None = Field(
        default=None,
        description="Ship the new version as a canary: traffic steps (10 -> 50 -> 100 %), metric analysis at every "
        "interval, automatic rollback on a breach. Empty: no canary.",
        json_schema_extra={"position": 24},
    )

    @field_validator("*", mode="before")
    @classmethod
    def _plain_text(cls, value: object) -> object:
        return plain_text(value)

    @field_validator("uat_signoff", "documentation_link", "category", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        # The run form posts "" for a field left empty: not given (the type's `requires` names it).
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _window_in_order(self) -> "ChangeRequestInput":
        # Rules that depend on the change type live in its policy (models.domain.change_type), checked by
        # the service once a template has filled in what it supplies.
        if self.planned_start and self.planned_end and self.planned_end <= self.planned_start:
            raise ValueError("planned_end: must be after planned_start")
        if self.planned_start and self.planned_end and self.planned_end - self.planned_start > MAX_CHANGE_LENGTH:
            # An open-ended change would hold its service's calendar slot for ever.
            raise ValueError(f"planned_end: a change may last at most {MAX_CHANGE_LENGTH.days} days (split it)")
        return self

    def as_run_form(self) -> dict[str, Any]:
        """The request as the Prefect run form posts it: the submit deployment's parameter schema takes the yes /
        no questions as "yes" / "no", and Prefect refused a request from the CLI or the pipeline API whose
        answers were dumped as booleans (409, "False is not one of ['yes', 'no']")."""
        form = self.model_dump(mode="json", exclude_unset=True)
        if isinstance(form.get("risk"), dict):
            form["risk"] = {question: ("yes" if answer else "no") if isinstance(answer, bool) else answer
                            for question, answer in form["risk"].items()}
        return form


class ApprovalView(BaseModel):
    approver: str
    role: str
    decision: str
    comment: str
    round: int
    decided_at: datetime
    on_behalf_of: str | None = None  # the delegator a delegate acted for


class AuditEventView(BaseModel):
    seq: int
    occurred_at: datetime
    actor: str
    action: str
    from_state: str | None
    to_state: str | None
    data: dict[str, Any]


class ChangeRequestView(BaseModel):
    """What `changeflow show --json` returns."""

    key: str
    type: str
    state: ChangeState
    title: str
    description: str
    service: str
    requester: str
    risk_level: RiskLevel
    risk_score: int
    risk_reasons: list[str]
    impact: str
    planned_start: datetime | None
    planned_end: datetime | None
    implementation_plan: str
    rollback_plan: str
    test_evidence: str
    uat_signoff: str | None = None
    documentation_link: str | None = None
    category: ChangeCategory | None = None
    incident_id: str | None
    incident_severity: Severity | None
    flow_run_id: str | None
    policy_version: str
    approval_round: int
    review_due_at: datetime | None
    created_at: datetime
    updated_at: datetime
    version: int
    outcome: str | None = None
    implemented_at: datetime | None = None
    ended_at: datetime | None = None
    closed_at: datetime | None = None
    template: str | None = None
    checklist: str | None = None
    approvals: list[ApprovalView] = []
    events: list[AuditEventView] = []
    checklist_results: list[dict[str, Any]] = []
    notifications: list[dict[str, Any]] = []
    canary: dict[str, Any] | None = None
    canary_steps: list[dict[str, Any]] = []
    environment: str | None = None
    release: str | None = None
    promoted_from: str | None = None
    rolls_back: str | None = None
    rolled_back_by: str | None = None  # the change that rolled this one back after it completed


def parse_change_request(data: object) -> ChangeRequestInput:
    """Validate a change request, turning pydantic's errors into one InputError naming each field."""
    from pydantic import ValidationError

    if isinstance(data, ChangeRequestInput):
        return data
    if not isinstance(data, dict):
        raise InputError(f"a change request must be a mapping of fields, not {type(data).__name__}")
    try:
        return ChangeRequestInput.model_validate(data)
    except ValidationError as exc:
        problems: list[FieldProblem] = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            message = err["msg"].removeprefix("Value error, ") if field else err["msg"]
            if err["type"] == "extra_forbidden":
                message = "unknown field (not part of a change request)"
            if not field and message.startswith("Value error, "):
                # Cross-field rules name their own fields: "rollback_plan: ...; incident_id: ..."
                for part in message.removeprefix("Value error, ").split("; "):
                    name, _, detail = part.partition(": ")
                    problems.append(FieldProblem(name, detail))
                continue
            problems.append(FieldProblem(field or "(request)", message))
        raise invalid_request(problems) from None


def invalid_request(problems: list[FieldProblem]) -> InputError:
    return InputError(f"invalid change request: {'; '.join(str(p) for p in problems)}", problems)
