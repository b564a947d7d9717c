"""Services: one small service per concern over a shared unit of work (load, version check, bump, transition,
audit event in one transaction). Entry points (flows, CLI, notifications) call these, never storage directly."""

from ._amendments import AMENDABLE_FIELDS, AmendmentService
from ._anchors import AnchorReport, AuditAnchors
from ._health import HealthService
from ._audit_bundle import BundleReport, ExportSummary, export_bundle, verify_bundle
from ._approvals import ApprovalService, DecisionResult
from ._approval_links import ApprovalLinks, LinkPage
from ._brief import ApprovalBrief, ApprovalBriefs, BriefLine
from ._canary import CanaryService
from ._watch import WatchService
from ._changes import ChangeService, format_key
from ._gate_status import GateStatus, GateStatusReader
from ._automation_tokens import AutomationTokens, IssuedToken, TokenHolder, TokenRecord
from ._checklists import ChecklistService
from ._delegations import DelegationService, DelegationView
from ._container import Services
from ._lockdown import LockdownResult, LockdownService, lockdown_in_force
from ._runbooks import RunbookService
from ._recovery import MAX_AUTOMATIC_RESTARTS, CanaryAbort, Crash, RecoveryService
from ._reports import REPORTS, Report, ReportResult, ReportService, compliance, dora, sla
from ._backups import BackupReport, BackupService
from ._calendar import Calendar, CalendarEntry, CalendarService
from ._what_if import Replay, WhatIfReport, WhatIfRow, WhatIfService
from ._follow_ups import Reminder, ReviewService
from ._policy_log import PolicyChange, PolicyInForce, PolicyLog
from ._reverting import RollbackService
from ._scheduling import SchedulingService
from ._slots import ACTIVE_STATES, Slot, describe_window
from ._unit_of_work import UnitOfWork
from ._work import WorkConfirmation, WorkService, WorkWaiting

__all__ = [
    "describe_window",
    "Slot",
    "AMENDABLE_FIELDS",
    "AmendmentService",
    "ACTIVE_STATES",
    "AnchorReport",
    "ApprovalBrief",
    "ApprovalBriefs",
    "BriefLine",
    "ApprovalLinks",
    "ApprovalService",
    "BackupReport",
    "BackupService",
    "Calendar",
    "CalendarEntry",
    "CalendarService",
    "Replay",
    "WhatIfReport",
    "PolicyChange",
    "PolicyLog",
    "Reminder",
    "ReviewService",
    "PolicyInForce",
    "WhatIfRow",
    "WhatIfService",
    "RollbackService",
    "LinkPage",
    "AuditAnchors",
    "HealthService",
    "BundleReport",
    "ExportSummary",
    "export_bundle",
    "verify_bundle",
    "CanaryService",
    "WatchService",
    "ChangeService",
    "ChecklistService",
    "AutomationTokens",
    "IssuedToken",
    "GateStatus",
    "GateStatusReader",
    "TokenHolder",
    "TokenRecord",
    "DecisionResult",
    "DelegationService",
    "DelegationView",
    "LockdownResult",
    "LockdownService",
    "RunbookService",
    "lockdown_in_force",
    "CanaryAbort",
    "Crash",
    "MAX_AUTOMATIC_RESTARTS",
    "REPORTS",
    "RecoveryService",
    "Report",
    "ReportResult",
    "ReportService",
    "SchedulingService",
    "Services",
    "UnitOfWork",
    "WorkConfirmation",
    "WorkService",
    "WorkWaiting",
    "compliance",
    "dora",
    "format_key",
    "sla",
]
