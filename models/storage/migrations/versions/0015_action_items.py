"""Action items of post-implementation reviews (issue 33): what is to be done, by whom, by when; reminded when due and
escalated up the policy's ladder while open. And changes by when they ended: the score and DORA read a range of
them for every service (on PostgreSQL a year of the 1M history was a sequential scan).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "action_items",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("change_key", sa.String(20), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("what", sa.Text, nullable=False),
        sa.Column("owner", sa.String(100), nullable=False),
        sa.Column("due_at", sa.DateTime, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("reviewer", sa.String(100), nullable=False),
        sa.Column("reminded", sa.Integer, nullable=False, server_default="-1"),
        sa.Column("done_at", sa.DateTime, nullable=True),
        sa.Column("done_by", sa.String(100), nullable=True),
        sa.Column("note", sa.Text, nullable=False, server_default=""),
        sa.UniqueConstraint("change_key", "number", name="uq_action_item"),
    )
    op.create_index("ix_action_item_open_due", "action_items", ["done_at", "due_at"])
    op.create_index("ix_action_item_owner", "action_items", ["owner"])
    op.create_index("ix_change_ended", "change_requests", ["ended_at"])


def downgrade() -> None:
    op.drop_index("ix_change_ended", "change_requests")
    op.drop_index("ix_action_item_owner", "action_items")
    op.drop_index("ix_action_item_open_due", "action_items")
    op.drop_table("action_items")
