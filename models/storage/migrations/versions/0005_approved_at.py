"""When a change was approved: the SLA report reads it instead of scanning transition events.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("change_requests") as batch:
        batch.add_column(sa.Column("approved_at", sa.DateTime))
    op.create_index("ix_change_approval_requested", "change_requests", ["approval_requested_at"])
    # Backfill from the audit trail, which is the record of when each change was approved.
    op.execute(
        "UPDATE change_requests SET approved_at = (SELECT MAX(occurred_at) FROM audit_events "
        "WHERE audit_events.change_key = change_requests.key AND audit_events.action = 'transition' "
        "AND audit_events.to_state = 'approved')"
    )


def downgrade() -> None:
    op.drop_index("ix_change_approval_requested", "change_requests")
    with op.batch_alter_table("change_requests") as batch:
        batch.drop_column("approved_at")
