"""Change templates as data (templates.yaml): named, reviewed recipes a request can name, and what a change
filed from one carries."""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import Field

from ._enums import ChangeCategory
from ._fields import Name, Strict
from ._schemas import RiskAnswers


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
    category: ChangeCategory | None = Field(default=None, description="Its changes' category when they give none")
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
    runbook: Name | None = Field(default=None, description="Runbook (CONFIG_DIR/runbooks/<name>.md) its changes "
                                 "follow: shown in the run, its version recorded on each change")

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


class FiledFromTemplate(Protocol):
    service: str
    impact: str
    implementation_plan: str
    rollback_plan: str
    test_evidence: str
    risk_answers: dict[str, Any]
    canary: dict[str, Any] | None
    checklist: str | None
