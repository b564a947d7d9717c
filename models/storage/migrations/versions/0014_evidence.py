"""Evidence and category (issue 31): a change may carry its UAT sign-off and a link to its documentation (required
where a type's policy says so: major changes), and its category (corrective, adaptive, perfective, preventive).
Rows from before keep NULL: none given.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("change_requests") as batch:
        batch.add_column(sa.Column("uat_signoff", sa.Text, nullable=True))
        batch.add_column(sa.Column("documentation_link", sa.String(500), nullable=True))
        batch.add_column(sa.Column("category", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("change_requests") as batch:
        batch.drop_column("category")
        batch.drop_column("documentation_link")
        batch.drop_column("uat_signoff")
