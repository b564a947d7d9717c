"""What a change is and the rules it obeys. No Prefect import here: these rules test in milliseconds."""

from ._audit import GENESIS_HASH, VerifyResult, append_event, canonical_json, verify_chain
from ._config import (
    DEFAULTS_DIR,
    Channel,
    Directory,
    Org,
    Person,
    PolicySet,
    TypePolicy,
    load_directory,
    load_org,
    load_policies,
    parse_duration,
    parse_yaml,
)
from ._db import Database
from ._queries import ChangeFilter, Page
from ._enums import (
    AuditAction,
    BackoutDifficulty,
    ChangeState,
    ChangeType,
    Complexity,
    Decision,
    RiskLevel,
    Severity,
    UsersAffected,
    WindowKind,
)
from ._errors import (
    ChangeflowError,
    ConfigError,
    ConflictError,
    DatabaseBusy,
    IllegalTransition,
    InputError,
    NotFound,
    PolicyViolation,
)
from ._lifecycle import TERMINAL_STATES, TRANSITIONS, Transition, allowed_targets, is_allowed, plan_transition
from ._migrate import upgrade as upgrade_database
from ._policy import (
    GivenApproval,
    PolicyEvaluation,
    RequiredApproval,
    approval_code,
    authorise_decision,
    evaluate,
    required_approvals,
    verify_code,
)
from ._risk import RiskAssessment, ServiceHistory, assess_risk
from ._schemas import (
    ApprovalView,
    AuditEventView,
    ChangeRequestInput,
    ChangeRequestView,
    RiskAnswers,
    parse_change_request,
)
from ._service import ChangeService, DecisionResult, format_key
from ._settings import Settings
from ._tables import Approval, AuditEvent, AuditHead, ChangeRequest, MaintenanceWindow, Notification

__all__ = [
    "Approval", "ChangeFilter", "Page", "ApprovalView", "AuditAction", "AuditEvent", "AuditEventView", "AuditHead", "BackoutDifficulty",
    "ChangeRequest", "ChangeRequestInput", "ChangeRequestView", "ChangeService", "ChangeState", "ChangeType",
    "ChangeflowError", "Channel", "Complexity", "ConfigError", "ConflictError", "DEFAULTS_DIR", "Database",
    "DatabaseBusy", "Decision", "DecisionResult", "Directory", "GENESIS_HASH", "GivenApproval",
    "IllegalTransition", "InputError", "MaintenanceWindow", "NotFound", "Notification", "Org", "Person", "PolicyEvaluation",
    "PolicySet", "PolicyViolation", "RequiredApproval", "RiskAnswers", "RiskAssessment", "RiskLevel",
    "ServiceHistory", "Settings", "Severity", "TERMINAL_STATES", "TRANSITIONS", "Transition", "TypePolicy",
    "UsersAffected", "VerifyResult", "WindowKind", "allowed_targets", "append_event", "approval_code",
    "assess_risk", "authorise_decision", "canonical_json", "evaluate", "format_key", "is_allowed",
    "load_directory", "load_org", "load_policies", "parse_change_request", "parse_duration", "parse_yaml", "plan_transition",
    "required_approvals", "upgrade_database", "verify_chain", "verify_code",
]
