"""Environments (issue 32): a change runs in one (production, staging, development: policies.yaml `environments`),
may name the release it ships and the change that shipped it in the environment before; a window or freeze may
hold for one environment only; a change may roll back a completed one. Rows from before keep NULL: the default
environment, every environment.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("change_requests") as batch:
        batch.add_column(sa.Column("environment", sa.String(32), nullable=True))
        batch.add_column(sa.Column("release", sa.String(100), nullable=True))
        batch.add_column(sa.Column("promoted_from", sa.String(20), nullable=True))
        batch.add_column(sa.Column("rolls_back", sa.String(20), nullable=True))
    op.create_index("ix_change_rolls_back", "change_requests", ["rolls_back"])
    with op.batch_alter_table("maintenance_windows") as batch:
        batch.add_column(sa.Column("environment", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("maintenance_windows") as batch:
        batch.drop_column("environment")
    op.drop_index("ix_change_rolls_back", "change_requests")
    with op.batch_alter_table("change_requests") as batch:
        batch.drop_column("rolls_back")
        batch.drop_column("promoted_from")
        batch.drop_column("release")
        batch.drop_column("environment")
