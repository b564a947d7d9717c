"""The moment the escalation sweep next has something to do for a change awaiting approval: the sweep reads the
changes due now through an index instead of every waiting change (issue 15: 10,000 suspended changes).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("change_requests") as batch:
        batch.add_column(sa.Column("escalation_due_at", sa.DateTime))
    op.create_index("ix_change_escalation_due", "change_requests", ["state", "escalation_due_at"])
    # Changes already waiting are due at once: the first sweep after the upgrade handles each and stores its
    # next moment.
    op.execute("UPDATE change_requests SET escalation_due_at = approval_requested_at "
               "WHERE state = 'awaiting_approval' AND approval_requested_at IS NOT NULL")


def downgrade() -> None:
    op.drop_index("ix_change_escalation_due", "change_requests")
    with op.batch_alter_table("change_requests") as batch:
        batch.drop_column("escalation_due_at")
