"""Lockdown (issue 32): its state is the latest lockdown event of the audit trail, read at every filing and every
start, so the trail is searched by action.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_audit_action_seq", "audit_events", ["action", "seq"])


def downgrade() -> None:
    op.drop_index("ix_audit_action_seq", table_name="audit_events")
