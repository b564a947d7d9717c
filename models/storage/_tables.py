"""The database tables (the system of record for changes). Input validation lives in _schemas."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Column, Index, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from ..domain import utcnow
from ._types import UTCDateTime


def _optional_time():
    return Field(default=None, sa_type=UTCDateTime, nullable=True)


class ChangeRequest(SQLModel, table=True):
    __tablename__ = "change_requests"
    __table_args__ = (
        Index("ix_change_service_created", "service", "created_at"),
        Index("ix_change_state", "state"),
        Index("ix_change_type", "type"),
        Index("ix_change_requester", "requester"),
        Index("ix_change_created_id", "created_at", "id"),
        Index("ix_change_implemented", "implemented_at"),
        Index("ix_change_service_ended", "service", "ended_at"),
        Index("ix_change_approval_requested", "approval_requested_at"),
        Index("ix_change_flow_run", "flow_run_id"),
        Index("ix_change_escalation_due", "state", "escalation_due_at"),
        Index("ix_change_rolls_back", "rolls_back"),
        Index("ix_change_ended", "ended_at"),  # the score and DORA over a range, for every service
    )

    id: int | None = Field(default=None, primary_key=True)
    key: str | None = Field(default=None, sa_type=String(20), unique=True, description="Human key, CHG-000042")
    type: str = Field(sa_type=String(16))
    state: str = Field(sa_type=String(24))
    title: str = Field(sa_type=String(200))
    description: str = Field(default="", sa_type=Text)
    service: str = Field(sa_type=String(100))
    requester: str = Field(sa_type=String(100))
    risk_level: str = Field(sa_type=String(8))
    risk_score: int = 0
    risk_reasons: list = Field(default_factory=list, sa_type=JSON)
    risk_answers: dict = Field(default_factory=dict, sa_type=JSON)
    impact: str = Field(default="", sa_type=Text)
    planned_start: datetime | None = _optional_time()
    planned_end: datetime | None = _optional_time()
    implementation_plan: str = Field(default="", sa_type=Text)
    rollback_plan: str = Field(default="", sa_type=Text)
    test_evidence: str = Field(default="", sa_type=Text)
    incident_id: str | None = Field(default=None, sa_type=String(100))
    incident_severity: str | None = Field(default=None, sa_type=String(2))
    flow_run_id: str | None = Field(default=None, sa_type=String(64))
    policy_version: str = Field(sa_type=String(64))
    approval_round: int = 1
    review_due_at: datetime | None = _optional_time()
    # When the escalation sweep next has something to do while the change awaits approval (a reminder rung, the
    # SLA's end): scheduling, not content; the sweep reads only the changes due (issue 15).
    escalation_due_at: datetime | None = _optional_time()
    idempotency_key: str | None = Field(default=None, sa_type=String(128), unique=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    implemented_at: datetime | None = _optional_time()
    closed_at: datetime | None = _optional_time()
    template: str | None = Field(default=None, sa_type=String(100), description="Change template it came from")
    checklist: str | None = Field(default=None, sa_type=String(100), description="Checklist its phases run")
    approval_requested_at: datetime | None = _optional_time()
    approved_at: datetime | None = _optional_time()
    outcome: str | None = Field(
        default=None, sa_type=String(16), description="succeeded / failed / rolled_back, once implemented"
    )
    ended_at: datetime | None = Field(
        default=None, sa_type=UTCDateTime, nullable=True, description="When the outcome was recorded"
    )
    canary: dict | None = Field(default=None, sa_type=JSON, description="Canary plan, when shipped as a canary")
    version: int = Field(default=1, description="Optimistic-concurrency counter, bumped by every update")
    # Where it runs (policies.yaml `environments`); None: filed before environments existed, the default one.
    environment: str | None = Field(default=None, sa_type=String(32))
    release: str | None = Field(default=None, sa_type=String(100), description="The release it ships")
    promoted_from: str | None = Field(
        default=None, sa_type=String(20), description="The change that shipped the release in the environment before")
    rolls_back: str | None = Field(
        default=None, sa_type=String(20), description="The completed change this one rolls back (issue 32)")
    # Evidence and category (issue 31): what a type's policy may require (`requires:`); None when not given.
    uat_signoff: str | None = Field(default=None, sa_type=Text, description="Who accepted it in UAT, and where")
    documentation_link: str | None = Field(default=None, sa_type=String(500), description="Its documentation")
    category: str | None = Field(
        default=None, sa_type=String(16), description="corrective / adaptive / perfective / preventive")


class Approval(SQLModel, table=True):
    __tablename__ = "approvals"
    __table_args__ = (
        # One person fills one role per change and round, enforced by the database as well as the policy.
        UniqueConstraint("change_id", "round", "approver", name="uq_approval_person_per_round"),
        Index("ix_approval_approver", "approver"),
    )

    id: int | None = Field(default=None, primary_key=True)
    change_id: int = Field(foreign_key="change_requests.id", index=True)
    round: int = 1
    approver: str = Field(sa_type=String(100))
    role: str = Field(sa_type=String(64))
    decision: str = Field(sa_type=String(8))
    comment: str = Field(default="", sa_type=Text)
    decided_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    # The delegator a delegate acted for (their delegation was in force when they decided); None: their own role.
    on_behalf_of: str | None = Field(default=None, sa_type=String(100))


class AutomationToken(SQLModel, table=True):
    """A pipeline's proof that it filed a change (an automation of the directory files, and confirms, its own
    changes): only the SHA-256 of the token is kept; the token is shown once, to the operator who issued it."""

    __tablename__ = "automation_tokens"

    id: int | None = Field(default=None, primary_key=True)
    automation: str = Field(sa_type=String(100), index=True)
    token_sha256: str = Field(sa_type=String(64), unique=True)
    # The services whose changes it may file, read and wait on, comma-separated; `*` (tokens issued before
    # scopes, migration 0012): every service.
    services: str = Field(default="*", sa_type=Text, nullable=False)
    issued_by: str = Field(sa_type=String(100))
    issued_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    revoked_at: datetime | None = _optional_time()
    revoked_by: str | None = Field(default=None, sa_type=String(100))


class DelegationRecord(SQLModel, table=True):
    """A person's authority handed to a delegate for a period (`changeflow delegate`); ended early by `revoked_at`
    (a row is never deleted: the audit trail and every act of the delegate refer to it)."""

    __tablename__ = "delegations"
    __table_args__ = (Index("ix_delegation_delegate", "delegate", "ends_at"),)

    id: int | None = Field(default=None, primary_key=True)
    delegator: str = Field(sa_type=String(100), index=True)
    delegate: str = Field(sa_type=String(100))
    starts_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    ends_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    reason: str = Field(default="", sa_type=Text)
    recorded_by: str = Field(sa_type=String(100))
    recorded_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    revoked_at: datetime | None = _optional_time()
    revoked_by: str | None = Field(default=None, sa_type=String(100))


class AuditEvent(SQLModel, table=True):
    """Append-only, hash-chained. `hash` = SHA-256 over the canonical encoding of the event and `prev_hash`."""

    __tablename__ = "audit_events"
    # By action: the lockdown in force is the latest lockdown event, read at every filing and every start.
    __table_args__ = (Index("ix_audit_change_seq", "change_key", "seq"), Index("ix_audit_action_seq", "action", "seq"))

    seq: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    change_key: str | None = Field(default=None, sa_type=String(20))
    occurred_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    actor: str = Field(sa_type=String(100))
    action: str = Field(sa_type=String(32))
    from_state: str | None = Field(default=None, sa_type=String(24))
    to_state: str | None = Field(default=None, sa_type=String(24))
    data: str = Field(default="{}", sa_type=Text, description="Canonical JSON, stored exactly as hashed")
    prev_hash: str = Field(sa_type=String(64), unique=True)
    hash: str = Field(sa_type=String(64))


class AuditHead(SQLModel, table=True):
    """The chain's last link, kept so a deleted tail is detected; its row is also the append lock on PostgreSQL."""

    __tablename__ = "audit_head"

    id: int = Field(default=1, primary_key=True)
    seq: int = Field(default=0, sa_type=BigInteger)
    hash: str = Field(sa_type=String(64))


class MaintenanceWindow(SQLModel, table=True):
    __tablename__ = "maintenance_windows"
    __table_args__ = (Index("ix_window_start", "starts_at"),)

    id: int | None = Field(default=None, primary_key=True)
    title: str = Field(default="", sa_type=String(200))
    service: str | None = Field(default=None, sa_type=String(100), description="None: applies to every service")
    starts_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    ends_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    kind: str = Field(sa_type=String(16))
    freeze: bool = Field(default=False, description="A freeze (blackout) blocks non-emergency changes")
    environment: str | None = Field(default=None, sa_type=String(32), description="None: every environment")


class Notification(SQLModel, table=True):
    """The outbox: written first, sent after. The idempotency key makes a re-run or resume a no-op."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notification_state_due", "state", "next_attempt_at"),)

    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(sa_type=String(300), unique=True, description="change + event + recipient + round")
    change_key: str | None = Field(default=None, sa_type=String(20), index=True)
    event: str = Field(sa_type=String(64))
    recipient: str = Field(sa_type=String(100))
    channel: dict = Field(default_factory=dict, sa_type=JSON)
    subject: str = Field(sa_type=String(300))
    body_text: str = Field(sa_type=Text)
    body_markdown: str = Field(default="", sa_type=Text)
    body_html: str = Field(default="", sa_type=Text)
    state: str = Field(default="pending", sa_type=String(16))
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    last_error: str = Field(default="", sa_type=Text)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    sent_at: datetime | None = _optional_time()


class ChecklistResult(SQLModel, table=True):
    """One checklist item's outcome for a change, phase and implementation step, with its evidence."""

    __tablename__ = "checklist_results"
    __table_args__ = (UniqueConstraint("change_key", "phase", "step", "item_id", name="uq_checklist_result"),)

    id: int | None = Field(default=None, primary_key=True)
    change_key: str = Field(sa_type=String(20), index=True)
    phase: str = Field(sa_type=String(8))
    step: int = 0
    item_id: str = Field(sa_type=String(64))
    title: str = Field(sa_type=String(200))
    kind: str = Field(sa_type=String(16))
    required: bool = True
    passed: bool
    detail: str = Field(default="", sa_type=Text)
    evidence: dict = Field(default_factory=dict, sa_type=JSON)
    actor: str = Field(default="changeflow", sa_type=String(100))
    recorded_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class CanaryMeasurement(SQLModel, table=True):
    """One analysed value of a canary step (append-only): what every rollout decision was based on."""

    __tablename__ = "canary_measurements"
    __table_args__ = (Index("ix_canary_change_step", "change_key", "step"),)

    id: int | None = Field(default=None, primary_key=True)
    change_key: str = Field(sa_type=String(20))
    step: int
    weight: int
    bake: str = Field(sa_type=String(64), description="Which bake of the step (a resumed run bakes it again)")
    metric: str = Field(sa_type=String(64))
    version: str = Field(sa_type=String(16), description="canary or stable")
    value: float | None = None
    error: str | None = Field(default=None, sa_type=Text)
    threshold: float | None = None
    operator: str | None = Field(default=None, sa_type=String(2))
    taken_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class ActionItemRecord(SQLModel, table=True):
    """An action item of a post-implementation review (issue 33): its owner is reminded when it falls due and, while
    it stays open, the policy's ladder above them (`reminded`: the last rung told)."""

    __tablename__ = "action_items"
    __table_args__ = (UniqueConstraint("change_key", "number", name="uq_action_item"),
                      Index("ix_action_item_open_due", "done_at", "due_at"), Index("ix_action_item_owner", "owner"))

    id: int | None = Field(default=None, primary_key=True)
    change_key: str = Field(sa_type=String(20))
    number: int
    what: str = Field(sa_type=Text)
    owner: str = Field(sa_type=String(100))
    due_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    reviewer: str = Field(sa_type=String(100))
    reminded: int = Field(default=-1, description="The last rung of the ladder told (-1: none yet)")
    done_at: datetime | None = _optional_time()
    done_by: str | None = Field(default=None, sa_type=String(100))
    note: str = Field(default="", sa_type=Text)
