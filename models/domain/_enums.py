"""The vocabulary of the domain, spelled once. Change types are not here: they are data (policies.yaml)."""

from __future__ import annotations

from enum import Enum


class ChangeState(str, Enum):
    submitted = "submitted"
    awaiting_approval = "awaiting_approval"
    approved = "approved"
    scheduled = "scheduled"
    implementing = "implementing"
    verifying = "verifying"
    completed = "completed"
    failed = "failed"
    rolled_back = "rolled_back"
    review_pending = "review_pending"
    closed = "closed"
    rejected = "rejected"
    expired = "expired"
    cancelled = "cancelled"


class Severity(str, Enum):
    """Incident severity; response times from the operations spec: 15 min / 1 h / 4 h / 24 h."""

    P1 = "P1"
    P2 = "P2"
    P3 = "P3"
    P4 = "P4"


class ChangeCategory(str, Enum):
    """Why a change is made (the maintenance categories of ISO/IEC 14764): a fault fixed, a change of environment
    followed, an improvement, or a fault prevented. Reported per service and team."""

    corrective = "corrective"
    adaptive = "adaptive"
    perfective = "perfective"
    preventive = "preventive"


class RiskLevel(str, Enum):
    low = "low"
    medium = "medium"
    high = "high"


class Decision(str, Enum):
    approve = "approve"
    reject = "reject"


class Act(str, Enum):
    """What a personal code is good for. A code is bound to one act on one change in one round, so a code seen
    anywhere (a forwarded mail, a log a person pasted) is worth at most the act it was sent for."""

    file = "file"  # the requester confirms that they filed the change (nobody files under another's name)
    approve = "approve"  # approve or reject (the approval request, its link and buttons)
    start_early = "start_early"  # start a scheduled change before its window
    confirm_work = "confirm_work"  # manual work done (implemented, verified, rolled back)
    confirm_check = "confirm_check"  # a manual checklist item
    answer_canary = "answer_canary"  # a canary gate: proceed or roll back
    review = "review"  # the post-implementation review
    follow_up = "follow_up"  # close an action item of a review (its owner)
    withdraw = "withdraw"  # the requester calls the change off
    amend = "amend"  # the requester changes the request (it goes back to approval)
    lockdown = "lockdown"  # turn the lockdown on or off (bound to the next lockdown act, not to a change)


class UsersAffected(str, Enum):
    none = "none"
    few = "few"
    many = "many"
    all = "all"


class Complexity(str, Enum):
    low = "low"
    medium = "medium"
    high = "high"


class BackoutDifficulty(str, Enum):
    easy = "easy"
    moderate = "moderate"
    hard = "hard"


class AuditAction(str, Enum):
    submitted = "submitted"
    transition = "transition"
    approval = "approval"
    rejection = "rejection"
    approval_refused = "approval_refused"
    policy_decision = "policy_decision"
    review_recorded = "review_recorded"
    action_item_closed = "action_item_closed"
    work_requested = "work_requested"
    notification_failed = "notification_failed"
    checklist_phase = "checklist_phase"
    checklist_confirmed = "checklist_confirmed"
    checklist_waiting = "checklist_waiting"
    implementation_step = "implementation_step"
    policy_override = "policy_override"
    canary_decision = "canary_decision"
    canary_confirmation = "canary_confirmation"
    window_gate_refused = "window_gate_refused"
    early_start = "early_start"
    rollback_filed = "rollback_filed"  # on a completed change: a change that rolls it back was filed (issue 32)
    reverted = "reverted"  # on a completed change: its rollback completed; DORA counts it failed
    confirmation_refused = "confirmation_refused"
    cancel_refused = "cancel_refused"
    canary_gate_waiting = "canary_gate_waiting"
    work_confirmed = "work_confirmed"
    change_amended = "change_amended"
    amend_refused = "amend_refused"
    step_started = "step_started"
    step_retried = "step_retried"
    check_started = "check_started"
    check_retried = "check_retried"
    rollback_started = "rollback_started"
    rollback_retried = "rollback_retried"
    run_crashed = "run_crashed"
    # A new attempt of a change's run found side effects of an earlier attempt unfinished: that attempt is dead.
    run_resumed = "run_resumed"
    # A change's run cancelled (the Prefect UI's Cancel) while it was implemented: the change is undone (issue 32).
    run_cancelled = "run_cancelled"
    canary_aborted = "canary_aborted"
    canary_resumed = "canary_resumed"
    endpoint_refused = "endpoint_refused"
    code_issued = "code_issued"  # an operator printed someone's code (`changeflow approval-code`)
    code_issue_refused = "code_issue_refused"
    filing_confirmed = "filing_confirmed"  # the requester proved they filed the change (or an automation did)
    filing_refused = "filing_refused"
    automation_token_issued = "automation_token_issued"  # an operator issued a pipeline's token (its hash kept)
    automation_token_revoked = "automation_token_revoked"
    automation_token_refused = "automation_token_refused"
    delegation_recorded = "delegation_recorded"  # an operator recorded a person's delegation (`changeflow delegate`)
    delegation_revoked = "delegation_revoked"
    delegation_refused = "delegation_refused"
    policy_changed = "policy_changed"  # a policy version loaded for the first time, with its diff (issue 34)
    lockdown_declared = "lockdown_declared"  # the incident button: no change starts (issue 32)
    lockdown_lifted = "lockdown_lifted"
    lockdown_refused = "lockdown_refused"
    watch_started = "watch_started"  # a verified change's service is watched before it completes (issue 33)
    watch_decision = "watch_decision"  # the watch's verdict, binding its measurements like a canary decision
    canary_held = "canary_held"  # a canary took no further step while a lockdown held it (`canaries: hold`)
