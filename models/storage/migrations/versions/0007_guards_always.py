"""The append-only triggers fire ALWAYS on PostgreSQL (`SET session_replication_role = replica` skipped them).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_ALWAYS = [("audit_events", "audit_events_no_change"), ("audit_events", "audit_events_no_truncate"),
           ("canary_measurements", "canary_measurements_no_change")]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table, trigger in _ALWAYS:
            op.execute(f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {trigger}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table, trigger in _ALWAYS:
            op.execute(f"ALTER TABLE {table} ENABLE TRIGGER {trigger}")
