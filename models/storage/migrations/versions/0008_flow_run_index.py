"""Find a change by its Prefect flow run: the escalation sweep reconciles dead runs it reads from Prefect, so its
cost follows the runs that died, not the open changes (issue 16, issue 15).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_change_flow_run", "change_requests", ["flow_run_id"])


def downgrade() -> None:
    op.drop_index("ix_change_flow_run", "change_requests")
