"""Storage: the database, its tables and migrations, the hash-chained audit trail and the change queries.
Everything that speaks SQLAlchemy lives here."""

from ._audit import (
    GENESIS_HASH,
    VerifyResult,
    append_event,
    lock_chain,
    canonical_json,
    chain_rows,
    decode_data,
    HASH_SCHEME,
    event_hash,
    events_for,
    latest_event_of,
    verify_chain,
    verify_rows,
)
from ._bound_records import STAMP_COLUMNS, approval_mismatches, derived_columns, window_mismatches
from ._checklist_store import insert_result
from ._backup import BackupError, copy_database, copy_file_name, load_copy, scratch_copy
from ._checkpoint_log import CheckpointLog, chain_hashes_at, chain_head
from ._db import Database
from ._guards import guard_problems, restore_guards
from ._migrate import SCHEMA_REVISION, head_revision
from ._migrate import upgrade as upgrade_database
from ._reconcile import record_problems
from ._roles import create_restricted_roles
from ._row_bindings import (
    CONTENT,
    CONTENT_FIELDS,
    ROWS,
    change_content_digest,
    content_values,
    digest_of_content,
    checklist_rows_bound,
    measurement_rows_bound,
    rows_against_events,
)
from ._outbox_rows import (
    claim_due_notifications,
    insert_notification_once,
    list_notifications,
    record_notification_failed,
    update_notification,
)
from ._queries import ChangeFilter, Page, decode_cursor, in_environment, query_changes
from ._outcomes import ended_changes, ended_tallies, without_jit
from ._tables import (
    ActionItemRecord,
    Approval,
    AutomationToken,
    AuditEvent,
    AuditHead,
    CanaryMeasurement,
    ChangeRequest,
    ChecklistResult,
    DelegationRecord,
    MaintenanceWindow,
    Notification,
)

__all__ = [
    "ActionItemRecord",
    "ended_changes",
    "ended_tallies",
    "without_jit",
    "CONTENT",
    "ROWS",
    "change_content_digest",
    "CONTENT_FIELDS",
    "content_values",
    "digest_of_content",
    "checklist_rows_bound",
    "measurement_rows_bound",
    "rows_against_events",
    "Approval",
    "AutomationToken",
    "AuditEvent",
    "AuditHead",
    "CanaryMeasurement",
    "ChangeFilter",
    "BackupError",
    "CheckpointLog",
    "copy_database",
    "copy_file_name",
    "load_copy",
    "scratch_copy",
    "ChangeRequest",
    "ChecklistResult",
    "DelegationRecord",
    "Database",
    "GENESIS_HASH",
    "MaintenanceWindow",
    "Notification",
    "Page",
    "SCHEMA_REVISION",
    "VerifyResult",
    "append_event",
    "lock_chain",
    "claim_due_notifications",
    "insert_notification_once",
    "list_notifications",
    "record_notification_failed",
    "update_notification",
    "canonical_json",
    "chain_hashes_at",
    "chain_rows",
    "create_restricted_roles",
    "chain_head",
    "decode_cursor",
    "decode_data",
    "HASH_SCHEME",
    "STAMP_COLUMNS",
    "approval_mismatches",
    "derived_columns",
    "window_mismatches",
    "event_hash",
    "events_for",
    "latest_event_of",
    "head_revision",
    "insert_result",
    "query_changes",
    "in_environment",
    "record_problems",
    "upgrade_database",
    "guard_problems",
    "restore_guards",
    "verify_chain",
    "verify_rows",
]
