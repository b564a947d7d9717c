"""Change records, approvals, the audit chain and maintenance windows.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

GENESIS_HASH = "0" * 64

_SQLITE_TRIGGERS = [
    """CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
       BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END""",
    """CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
       BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END""",
]

_PG_TRIGGERS = [
    """CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN RAISE EXCEPTION 'audit events are append-only'; END $$""",
    """CREATE TRIGGER audit_events_no_change BEFORE UPDATE OR DELETE ON audit_events
       FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()""",
    """CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
       FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()""",
]


def upgrade() -> None:
    op.create_table(
        "change_requests",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key", sa.String(20), unique=True),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("service", sa.String(100), nullable=False),
        sa.Column("requester", sa.String(100), nullable=False),
        sa.Column("risk_level", sa.String(8), nullable=False),
        sa.Column("risk_score", sa.Integer, nullable=False),
        sa.Column("risk_reasons", sa.JSON, nullable=False),
        sa.Column("risk_answers", sa.JSON, nullable=False),
        sa.Column("impact", sa.Text, nullable=False),
        sa.Column("planned_start", sa.DateTime),
        sa.Column("planned_end", sa.DateTime),
        sa.Column("implementation_plan", sa.Text, nullable=False),
        sa.Column("rollback_plan", sa.Text, nullable=False),
        sa.Column("test_evidence", sa.Text, nullable=False),
        sa.Column("incident_id", sa.String(100)),
        sa.Column("incident_severity", sa.String(2)),
        sa.Column("flow_run_id", sa.String(64)),
        sa.Column("policy_version", sa.String(64), nullable=False),
        sa.Column("approval_round", sa.Integer, nullable=False),
        sa.Column("review_due_at", sa.DateTime),
        sa.Column("idempotency_key", sa.String(128), unique=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("implemented_at", sa.DateTime),
        sa.Column("closed_at", sa.DateTime),
        sa.Column("outcome", sa.String(16)),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_index("ix_change_service_created", "change_requests", ["service", "created_at"])
    op.create_index("ix_change_state", "change_requests", ["state"])
    op.create_index("ix_change_type", "change_requests", ["type"])
    op.create_index("ix_change_requester", "change_requests", ["requester"])

    op.create_table(
        "approvals",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("change_id", sa.Integer, sa.ForeignKey("change_requests.id"), nullable=False),
        sa.Column("round", sa.Integer, nullable=False),
        sa.Column("approver", sa.String(100), nullable=False),
        sa.Column("role", sa.String(64), nullable=False),
        sa.Column("decision", sa.String(8), nullable=False),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("decided_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("change_id", "round", "approver", name="uq_approval_person_per_round"),
    )
    op.create_index("ix_approvals_change_id", "approvals", ["change_id"])
    op.create_index("ix_approval_approver", "approvals", ["approver"])

    op.create_table(
        "audit_events",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("change_key", sa.String(20)),
        sa.Column("occurred_at", sa.DateTime, nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("from_state", sa.String(24)),
        sa.Column("to_state", sa.String(24)),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_audit_change_seq", "audit_events", ["change_key", "seq"])

    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": GENESIS_HASH}])

    op.create_table(
        "maintenance_windows",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("service", sa.String(100)),
        sa.Column("starts_at", sa.DateTime, nullable=False),
        sa.Column("ends_at", sa.DateTime, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("freeze", sa.Boolean, nullable=False),
    )
    op.create_index("ix_window_start", "maintenance_windows", ["starts_at"])

    dialect = op.get_bind().dialect.name
    for statement in {"sqlite": _SQLITE_TRIGGERS, "postgresql": _PG_TRIGGERS}.get(dialect, []):
        op.execute(statement)


def downgrade() -> None:
    for table in ("maintenance_windows", "audit_head", "audit_events", "approvals", "change_requests"):
        op.drop_table(table)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS audit_events_append_only()")
