"""Maintenance checklists: definitions (YAML), item results, and the phase verdict (worst wins).

Phases follow the operations spec: `pre` before anything is touched, `during` around each implementation
step, `post` after. A required item that fails fails its phase; an advisory one is recorded and notified.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator


PHASES = ("pre", "during", "post")
Phase = Literal["pre", "during", "post"]


class _Item(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$", description="Stable id, e.g. backup-verified")
    title: str = Field(min_length=1, max_length=200)
    required: bool = Field(default=True, description="A failed required item fails the phase; advisory only warns")
    timeout_s: float = Field(default=60, gt=0, le=86_400)
    retries: int = Field(default=0, ge=0, le=10)


class ManualItem(_Item):
    kind: Literal["manual"] = "manual"
    runbook_step: int | None = Field(default=None, ge=1, le=999, description="The step of the change's runbook "
                                     "this item confirms: shown beside it; a change without that step is refused")


class HttpItem(_Item):
    kind: Literal["http"]
    url: str = Field(pattern=r"^https?://")
    expect_status: int = Field(default=200, ge=100, le=599)
    json_field: str | None = Field(default=None, description="Dotted path into a JSON body, e.g. status.db")
    json_value: str | int | float | bool | None = None
    body_contains: str | None = None
    max_latency_ms: float | None = Field(default=None, gt=0)


# Commands that exit 0 whatever the machine's state: a check made of one records a pass that proved nothing (issue
# 31: the shipped smoke test was `true`). Refused at load, naming the item.
_NO_OP_COMMANDS = {"true", ":", "exit 0", "/bin/true", "/usr/bin/true"}


class CommandItem(_Item):
    kind: Literal["command"]
    command: str = Field(min_length=1)
    idempotent: bool = Field(default=False, description="Safe to run again when a crash interrupted it; otherwise "
                                                         "a person says whether it passed")

    @model_validator(mode="after")
    def _checks_something(self) -> "CommandItem":
        if self.command.strip().rstrip(";").strip() in _NO_OP_COMMANDS:
            raise ValueError(f"command {self.command!r} checks nothing: it passes whatever the state of the machine "
                             "(give a real check, or make the item manual)")
        return self


class ServiceHealthItem(_Item):
    """The change's service answers at the health URL directory.yaml gives it (`services.<name>.health`): the
    smoke test of a checklist shared by every service. The URL is filled in from the directory when the change's
    checklist is read (`Checklist.for_service`); a service with none fails the item, saying so."""

    kind: Literal["service_health"]
    timeout_s: float = Field(default=10, gt=0, le=86_400)
    expect_status: int = Field(default=200, ge=100, le=599)
    service: str | None = Field(default=None, description="Filled in: the service probed")
    url: str | None = Field(default=None, description="Filled in: its health URL from the directory")


# A command item interrupted by a crash becomes a question to a person, who has this long to answer.
INTERRUPTED_CHECK_TIMEOUT_S = 3600.0


def interrupted_check_question(item: CommandItem) -> ManualItem:
    """What a person is asked about a non-idempotent command item whose run died while it ran."""
    return ManualItem(id=item.id, required=item.required, timeout_s=max(item.timeout_s, INTERRUPTED_CHECK_TIMEOUT_S),
                      title=f"{item.title} (interrupted by a crash, outcome unknown: tick only if it passed)"[:200])


class SqlItem(_Item):
    kind: Literal["sql"]
    database_url: str = Field(min_length=1, description="SQLAlchemy URL of the database to check (read-only)")
    query: str = Field(min_length=1)
    expect: str | int | float | bool | None = Field(default=None, description="Expected first column of row 1")


class BackupFreshItem(_Item):
    kind: Literal["backup_fresh"]
    path_glob: str | None = Field(default=None, description="Newest file matching this glob must be young enough")
    timestamp_url: str | None = Field(default=None, description="Or: an endpoint answering an ISO timestamp")
    max_age_hours: float = Field(gt=0)

    @model_validator(mode="after")
    def _one_source(self) -> "BackupFreshItem":
        if bool(self.path_glob) == bool(self.timestamp_url):
            raise ValueError("give exactly one of path_glob or timestamp_url")
        return self


class ChangeflowBackupItem(_Item):
    """changeflow's own database and audit checkpoints backed up now and the backup proved in a throw-away database
    (`changeflow db backup`): a maintenance window's "backup verified" that needs nothing the machine lacks."""

    kind: Literal["changeflow_backup"]
    timeout_s: float = Field(default=1800, gt=0)


class MetricItem(_Item):
    kind: Literal["metric"]
    prometheus_url: str = Field(pattern=r"^https?://")
    query: str = Field(min_length=1)
    operator: Literal["<", "<=", ">", ">="] = "<"
    threshold: float


ChecklistItem = Annotated[
    Union[ManualItem, HttpItem, CommandItem, SqlItem, BackupFreshItem, ChangeflowBackupItem, MetricItem,
          ServiceHealthItem],
    Field(discriminator="kind")
]


class Checklist(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    pre: list[ChecklistItem] = Field(default_factory=list)
    during: list[ChecklistItem] = Field(default_factory=list)
    post: list[ChecklistItem] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_ids(self) -> "Checklist":
        seen: set[str] = set()
        for phase in PHASES:
            for item in getattr(self, phase):
                if item.id in seen:
                    raise ValueError(f"item id {item.id!r} is used twice")
                seen.add(item.id)
        return self

    def items(self, phase: str) -> list[ChecklistItem]:
        return list(getattr(self, phase))

    def for_service(self, service: str, health_urls: dict[str, str | None]) -> "Checklist":
        """This checklist as a change of `service` runs it: each service_health item names the service and the
        health URL `health_urls` (the directory's) gives it."""
        def resolved(item: ChecklistItem) -> ChecklistItem:
            if isinstance(item, ServiceHealthItem):
                return item.model_copy(update={"service": service, "url": health_urls.get(service)})
            return item
        return self.model_copy(update={phase: [resolved(i) for i in getattr(self, phase)] for phase in PHASES})

    def find(self, item_id: str) -> tuple[str, ChecklistItem] | None:
        for phase in PHASES:
            for item in getattr(self, phase):
                if item.id == item_id:
                    return phase, item
        return None


class Status(IntEnum):
    """Ordered best to worst so a phase's verdict is the worst of its items (Argo Rollouts' way)."""

    passed = 0
    skipped = 1
    advisory_failed = 2
    failed = 3


class ItemOutcome(BaseModel):
    item_id: str
    passed: bool
    required: bool
    evidence: dict[str, Any] = Field(default_factory=dict)
    detail: str = ""


class PhaseVerdict(BaseModel):
    phase: str
    status: Status
    failed_required: list[str] = Field(default_factory=list)
    failed_advisory: list[str] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status < Status.failed


def phase_verdict(phase: str, outcomes: list[ItemOutcome]) -> PhaseVerdict:
    status = Status.passed
    failed_required, failed_advisory = [], []
    for outcome in outcomes:
        if outcome.passed:
            continue
        if outcome.required:
            failed_required.append(outcome.item_id)
            status = max(status, Status.failed)
        else:
            failed_advisory.append(outcome.item_id)
            status = max(status, Status.advisory_failed)
    return PhaseVerdict(phase=phase, status=status, failed_required=failed_required, failed_advisory=failed_advisory)

