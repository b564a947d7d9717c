"""Automation tokens scoped to services (issue 32): a pipeline's token files, reads and waits on the changes of
the services it was issued for. Tokens issued before scopes existed keep `*`, every service, as they had.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("automation_tokens") as batch:
        batch.add_column(sa.Column("services", sa.Text, nullable=False, server_default="*"))


def downgrade() -> None:
    with op.batch_alter_table("automation_tokens") as batch:
        batch.drop_column("services")
