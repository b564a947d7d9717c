"""Delegations (issue 27): a person's authority handed to a delegate for a period, and on each approval whom a
delegate acted for; automation tokens, a pipeline's proof that it filed its change (only their SHA-256).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.add_column(sa.Column("on_behalf_of", sa.String(100)))
    op.create_table(
        "delegations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("delegator", sa.String(100), nullable=False),
        sa.Column("delegate", sa.String(100), nullable=False),
        sa.Column("starts_at", sa.DateTime, nullable=False),
        sa.Column("ends_at", sa.DateTime, nullable=False),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("recorded_by", sa.String(100), nullable=False),
        sa.Column("recorded_at", sa.DateTime, nullable=False),
        sa.Column("revoked_at", sa.DateTime),
        sa.Column("revoked_by", sa.String(100)),
    )
    op.create_index("ix_delegations_delegator", "delegations", ["delegator"])
    op.create_index("ix_delegation_delegate", "delegations", ["delegate", "ends_at"])
    op.create_table(
        "automation_tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("automation", sa.String(100), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("issued_by", sa.String(100), nullable=False),
        sa.Column("issued_at", sa.DateTime, nullable=False),
        sa.Column("revoked_at", sa.DateTime),
        sa.Column("revoked_by", sa.String(100)),
    )
    op.create_index("ix_automation_tokens_automation", "automation_tokens", ["automation"])


def downgrade() -> None:
    op.drop_table("automation_tokens")
    op.drop_table("delegations")
    with op.batch_alter_table("approvals") as batch:
        batch.drop_column("on_behalf_of")
