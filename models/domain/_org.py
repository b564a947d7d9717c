"""The organisation's rules as one value: the directory, the policies, the templates, the checklists, the
maintenance plan and the canary configuration of a config directory, checked against each other.

Shapes only: `models.config` reads them from YAML; nothing here does I/O.
"""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ._canary_plan import CanaryConfig
from ._checklist import Checklist
from ._directory import Directory
from ._maintenance import MaintenancePlan
from ._policy_file import PolicySet
from ._runbooks import Runbook
from ._templates import ChangeTemplate


class Org(BaseModel):
    """Everything the rules need from the config directory."""

    model_config = ConfigDict(frozen=True)

    directory: Directory
    policies: PolicySet
    templates: dict[str, ChangeTemplate] = Field(default_factory=dict)
    checklists: dict[str, Checklist] = Field(default_factory=dict)
    maintenance: MaintenancePlan | None = None
    canary: CanaryConfig | None = None
    runbooks: dict[str, Runbook] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _templates_known(self) -> "Org":
        for name, template in self.templates.items():
            if template.type not in self.policies.types:
                raise ValueError(f"templates.{name}.type: no change type named {template.type!r} in policies.yaml")
            if template.checklist and template.checklist not in self.checklists:
                raise ValueError(f"templates.{name}.checklist: no checklist named {template.checklist!r}")
            if template.runbook and template.runbook not in self.runbooks:
                raise ValueError(f"templates.{name}.runbook: no runbook named {template.runbook!r} (runbooks/"
                                 f"{template.runbook}.md)")
        for kind, plan in (self.maintenance.windows.items() if self.maintenance else []):
            if kind not in self.policies.windows:
                raise ValueError(f"maintenance.windows.{kind}: no window named {kind!r} in policies.yaml windows")
            if plan.checklist and plan.checklist not in self.checklists:
                raise ValueError(f"maintenance.windows.{kind}.checklist: no checklist named {plan.checklist!r}")
        unknown = [t for t in self.policies.pre_approved_templates if t not in self.templates]
        if unknown:
            raise ValueError(f"policies.pre_approved_templates: no template named {', '.join(unknown)}")
        if not any(self.directory.holders(role) for role in self.policies.lockdown.declared_by):
            # A lockdown nobody could lift (or declare) would be found in the incident it was meant for.
            raise ValueError(f"policies.lockdown.declared_by: nobody in the directory holds "
                             f"{', '.join(self.policies.lockdown.declared_by)}")
        ladders = [self.policies.escalation, *(p.escalation or [] for p in self.policies.types.values())]
        for step in (step for ladder in ladders for step in ladder):
            if not self.directory.holders(step.role):
                raise ValueError(f"policies.escalation: nobody in the directory holds the role {step.role!r}")
        return self

    @model_validator(mode="after")
    def _policies_fit_directory(self) -> "Org":
        sets = [(f"types.{name}", [*policy.approvals, *(r for extra in policy.extra_for_risk.values() for r in extra)])
                for name, policy in self.policies.types.items()]
        sets += [(f"environments.{place}.approvals.{name}", requirements)
                 for place, environment in self.policies.environments.items()
                 for name, requirements in environment.approvals.items()]
        for where, requirements in sets:
            for requirement in requirements:
                holders = self.directory.holders(requirement.role)
                if len(holders) < (requirement.count or 1):
                    raise ValueError(
                        f"policies.{where}: role {requirement.role!r} needs "
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

    def runbook_of(self, change: "HasTemplate", named: str | None = None) -> Runbook | None:
        """The runbook a request names, or else its template's (None: it follows none)."""
        template = self.template_of(change)
        name = named or (template.runbook if template else None)
        return self.runbooks.get(name) if name else None

    def checklist_of(self, change: "HasChecklist") -> Checklist | None:
        """The checklist a change runs, if any, its service_health items pointed at the service's health URL."""
        checklist = self.checklists.get(change.checklist) if change.checklist else None
        if checklist is None:
            return None
        return checklist.for_service(change.service, {name: entry.health
                                                      for name, entry in self.directory.services.items()})


class HasTemplate(Protocol):
    template: str | None


class HasChecklist(Protocol):
    checklist: str | None
    service: str
