"""Outcome time for DORA figures; indexes for keyset pages and reports.

ix_change_created_id serves the log's keyset pagination (created_at, id); ix_change_implemented the
reports' time ranges; ix_change_service_ended "next successful change on this service" for time to restore.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("change_requests") as batch:
        batch.add_column(sa.Column("ended_at", sa.DateTime))
    op.create_index("ix_change_created_id", "change_requests", ["created_at", "id"])
    op.create_index("ix_change_implemented", "change_requests", ["implemented_at"])
    op.create_index("ix_change_service_ended", "change_requests", ["service", "ended_at"])


def downgrade() -> None:
    op.drop_index("ix_change_service_ended", "change_requests")
    op.drop_index("ix_change_implemented", "change_requests")
    op.drop_index("ix_change_created_id", "change_requests")
    with op.batch_alter_table("change_requests") as batch:
        batch.drop_column("ended_at")
