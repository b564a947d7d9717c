"""Canary rollouts: the plan on the change, and every measurement a rollout decision was based on.

Measurements are evidence, so like the audit trail they are append-only (the database refuses UPDATE and
DELETE).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_SQLITE_TRIGGERS = [
    """CREATE TRIGGER canary_measurements_no_update BEFORE UPDATE ON canary_measurements
       BEGIN SELECT RAISE(ABORT, 'canary_measurements is append-only'); END""",
    """CREATE TRIGGER canary_measurements_no_delete BEFORE DELETE ON canary_measurements
       BEGIN SELECT RAISE(ABORT, 'canary_measurements is append-only'); END""",
]
_PG_TRIGGERS = [
    """CREATE TRIGGER canary_measurements_no_change BEFORE UPDATE OR DELETE ON canary_measurements
       FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()""",
]


def upgrade() -> None:
    with op.batch_alter_table("change_requests") as batch:
        batch.add_column(sa.Column("canary", sa.JSON))
    op.create_table(
        "canary_measurements",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("change_key", sa.String(20), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("weight", sa.Integer, nullable=False),
        sa.Column("bake", sa.String(64), nullable=False),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("version", sa.String(16), nullable=False),
        sa.Column("value", sa.Float),
        sa.Column("error", sa.Text),
        sa.Column("threshold", sa.Float),
        sa.Column("operator", sa.String(2)),
        sa.Column("taken_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_canary_change_step", "canary_measurements", ["change_key", "step"])
    dialect = op.get_bind().dialect.name
    for statement in {"sqlite": _SQLITE_TRIGGERS, "postgresql": _PG_TRIGGERS}.get(dialect, []):
        op.execute(statement)


def downgrade() -> None:
    op.drop_table("canary_measurements")
    with op.batch_alter_table("change_requests") as batch:
        batch.drop_column("canary")
