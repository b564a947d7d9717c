"""Alembic migrations, applied programmatically (`changeflow db upgrade`, or on first use)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

if TYPE_CHECKING:
    from ._db import Database

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Arbitrary constant: serialises concurrent migrators on one PostgreSQL database.
_PG_MIGRATION_LOCK = 7_270_001


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str:
    return ScriptDirectory.from_config(_config()).get_current_head()


def current_revision(db: "Database") -> str | None:
    with db.read_engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(db: "Database") -> str:
    """Bring the schema to head; returns the revision now applied."""
    head = head_revision()
    if current_revision(db) == head:
        return head
    cfg = _config()
    with db.write_engine.begin() as conn:
        if db.dialect == "postgresql":
            conn.execute(text(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})"))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    return head
