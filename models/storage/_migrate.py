"""Alembic migrations, applied programmatically (`changeflow db upgrade`, or on first use)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine


class Database(Protocol):
    """What migrating needs of a database (models.storage.Database has it; no import, so no cycle)."""

    read_engine: Engine
    write_engine: Engine

    @property
    def dialect(self) -> str: ...

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# The newest migration's revision. Checked against Alembic's own head by a test; comparing with it lets a
# process that finds the schema current skip importing Alembic (a flow run starts a new process per run).
SCHEMA_REVISION = "0015"
# Arbitrary constant: serialises concurrent migrators on one PostgreSQL database.
_PG_MIGRATION_LOCK = 7_270_001


def _config():
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config()).get_current_head()


def current_revision(db: Database) -> str | None:
    with db.read_engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one_or_none()


def upgrade(db: Database) -> str:
    """Bring the schema to head; returns the revision now applied."""
    if current_revision(db) == SCHEMA_REVISION:
        return SCHEMA_REVISION
    from alembic import command

    head = head_revision()
    cfg = _config()
    with db.write_engine.begin() as conn:
        if db.dialect == "postgresql":
            conn.execute(text(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})"))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    return head
