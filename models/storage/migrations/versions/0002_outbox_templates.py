"""Notification outbox; change template and approval-request time on change requests.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("change_requests") as batch:
        batch.add_column(sa.Column("template", sa.String(100)))
        batch.add_column(sa.Column("approval_requested_at", sa.DateTime))
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("idempotency_key", sa.String(300), nullable=False, unique=True),
        sa.Column("change_key", sa.String(20)),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("recipient", sa.String(100), nullable=False),
        sa.Column("channel", sa.JSON, nullable=False),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("body_text", sa.Text, nullable=False),
        sa.Column("body_markdown", sa.Text, nullable=False),
        sa.Column("body_html", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime, nullable=False),
        sa.Column("last_error", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("sent_at", sa.DateTime),
    )
    op.create_index("ix_notifications_change_key", "notifications", ["change_key"])
    op.create_index("ix_notification_state_due", "notifications", ["state", "next_attempt_at"])


def downgrade() -> None:
    op.drop_table("notifications")
    with op.batch_alter_table("change_requests") as batch:
        batch.drop_column("approval_requested_at")
        batch.drop_column("template")
