"""Checklist results; the checklist a change runs.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("change_requests") as batch:
        batch.add_column(sa.Column("checklist", sa.String(100)))
    op.create_table(
        "checklist_results",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("change_key", sa.String(20), nullable=False),
        sa.Column("phase", sa.String(8), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("item_id", sa.String(64), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("required", sa.Boolean, nullable=False),
        sa.Column("passed", sa.Boolean, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("evidence", sa.JSON, nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("recorded_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("change_key", "phase", "step", "item_id", name="uq_checklist_result"),
    )
    op.create_index("ix_checklist_results_change_key", "checklist_results", ["change_key"])


def downgrade() -> None:
    op.drop_table("checklist_results")
    with op.batch_alter_table("change_requests") as batch:
        batch.drop_column("checklist")
