"""All services over one unit of work: what the flows, the CLI and the notifier are handed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from ..config import Settings, load_org
from ..domain import ChangeTypeRules, Org, PolicySet, change_type, utcnow
from ..storage import ChangeRequest, Database
from ._amendments import AmendmentService
from ._approval_links import ApprovalLinks
from ._approvals import ApprovalService
from ._brief import ApprovalBriefs
from ._calendar import CalendarService
from ._policy_log import PolicyLog
from ._follow_ups import ReviewService
from ._what_if import WhatIfService
from ._canary import CanaryService
from ._watch import WatchService
from ._changes import ChangeService
from ._automation_tokens import AutomationTokens
from ._checklists import ChecklistService
from ._delegations import DelegationService
from ._gate_status import GateStatusReader
from ._identity import Identities
from ._lockdown import LockdownService
from ._runbooks import RunbookService
from ._recovery import RecoveryService
from ._reports import ReportService
from ._reverting import RollbackService
from ._scheduling import SchedulingService
from ._unit_of_work import UnitOfWork
from ._work import WorkService


@dataclass(frozen=True)
class Services:
    """One small service per concern, sharing the database, the config and the clock."""

    org: Org
    db: Database
    changes: ChangeService
    amendments: AmendmentService
    approvals: ApprovalService
    scheduling: SchedulingService
    calendar: CalendarService
    rollbacks: RollbackService
    checklists: ChecklistService
    canary: CanaryService
    reports: ReportService
    work: WorkService
    recovery: RecoveryService
    links: ApprovalLinks
    briefs: ApprovalBriefs
    delegations: DelegationService
    automation_tokens: AutomationTokens
    lockdown: LockdownService
    runbooks: RunbookService
    gate_status: GateStatusReader
    what_if: WhatIfService
    policy_log: PolicyLog
    reviews: ReviewService
    watch: WatchService

    @classmethod
    def build(cls, db: Database, org: Org, secret: bytes, *, clock: Callable[[], datetime] = utcnow,
              conflict_retries: int = 8, configured: PolicySet | None = None) -> "Services":
        """The services under `org` as given (`configured`: the config directory's policies, when `org` holds
        the version in force instead; see `governed`)."""
        uow = UnitOfWork(db, org, clock=clock, conflict_retries=conflict_retries)
        identities = Identities(org, secret)
        scheduling = SchedulingService(uow, identities)
        approvals = ApprovalService(uow, identities)
        briefs = ApprovalBriefs(uow, scheduling)
        rollbacks = RollbackService(uow)
        canary = CanaryService(uow, identities)
        return cls(org=org, db=db, changes=ChangeService(uow, scheduling, identities, rollbacks), rollbacks=rollbacks,
                   amendments=AmendmentService(uow, scheduling, identities), approvals=approvals,
                   scheduling=scheduling, calendar=CalendarService(uow, scheduling),
                   checklists=ChecklistService(uow, identities),
                   canary=canary, reports=ReportService(uow),
                   work=WorkService(uow, identities), recovery=RecoveryService(uow),
                   links=ApprovalLinks(uow, approvals, briefs, secret), briefs=briefs,
                   delegations=DelegationService(uow), automation_tokens=AutomationTokens(uow),
                   lockdown=LockdownService(uow, identities), runbooks=RunbookService(uow),
                   gate_status=GateStatusReader(uow, scheduling), what_if=WhatIfService(uow),
                   policy_log=PolicyLog(uow, configured), reviews=ReviewService(uow, identities),
                   watch=WatchService(uow, canary))

    @classmethod
    def governed(cls, db: Database, org: Org, secret: bytes, **options) -> "Services":
        """The services under the policy in force (issue 34): the config directory's, unless the version in force
        requires policy changes to go through a change request and none shipped the configured version yet; then
        the version in force, read back from the audit trail. What every process (CLI, worker, endpoint) runs."""
        services = cls.build(db, org, secret, **options)
        in_force = services.policy_log.in_force()
        if not in_force.pending:
            return services
        return cls.build(db, org.model_copy(update={"policies": in_force.policies}), secret,
                         configured=org.policies, **options)

    def rules(self, change: ChangeRequest) -> ChangeTypeRules:
        """The rules of the change's type (policies.yaml): every branch on a change type asks these."""
        return change_type(self.org.policies, change.type, change.environment)

    @classmethod
    def from_settings(cls, settings: Settings) -> "Services":
        return cls.governed(Database.from_settings(settings), load_org(settings.config_dir), settings.secret_bytes())
