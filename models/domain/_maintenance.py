"""Scheduled maintenance: which activities run in which recurring window (maintenance.yaml; the windows
themselves are policies.yaml `windows:`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ._fields import Name
from ._schemas import RiskAnswers


class Activity(BaseModel):
    """One maintenance activity: a command, or a SQL statement run outside a transaction (VACUUM needs that)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str = Field(min_length=1, max_length=200)
    command: str | None = None
    sql: str | None = None
    database_url: str | None = Field(default=None, description="For sql; {database_url} is the change database")
    timeout_s: float = Field(default=600, gt=0, le=6 * 3600)
    idempotent: bool = Field(default=False, description="Safe to run again when a crash interrupted it; otherwise "
                                                         "an interrupted activity is reported as not done")

    @model_validator(mode="after")
    def _one_action(self) -> "Activity":
        if bool(self.command) == bool(self.sql):
            raise ValueError("give exactly one of command or sql")
        if self.sql and not self.database_url:
            raise ValueError("an sql activity needs database_url")
        return self


class WindowPlan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str
    service: str = Field(description="Service the maintenance change is recorded against")
    checklist: str | None = None
    activities: list[str] = Field(min_length=1)
    risk: RiskAnswers = Field(description="The window's answers to every risk question: its change carries them "
                                          "(a change's risk is never assumed)")


class MaintenancePlan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    windows: dict[Name, WindowPlan] = Field(description="By the name of a window in policies.yaml `windows:`")
    activities: dict[str, Activity]

    @model_validator(mode="after")
    def _known_activities(self) -> "MaintenancePlan":
        for kind, plan in self.windows.items():
            unknown = [a for a in plan.activities if a not in self.activities]
            if unknown:
                raise ValueError(f"windows.{kind}.activities: unknown activity {', '.join(unknown)}")
        return self
