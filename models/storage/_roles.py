"""PostgreSQL roles that keep the guards out of the application's reach (issue 14): the schema and its tables
belong to a migration owner role that nobody logs in as day to day; changeflow's processes connect as an
application role that may read and write rows but is not the owner of anything, so it cannot drop or disable a
trigger, and, not being a superuser, cannot `SET session_replication_role`. `changeflow db roles` sets it up."""

from __future__ import annotations

import re

from sqlalchemy import text
from sqlalchemy.engine import Engine

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
APPEND_ONLY = ("audit_events", "canary_measurements")


def create_restricted_roles(engine: Engine, *, owner: str, app: str) -> list[str]:
    """Run by a superuser (or the schema's owner) on the connection's schema; idempotent. Returns what it did."""
    for name in (owner, app):
        if not _NAME.match(name):
            raise ValueError(f"role name {name!r}: lowercase letters, digits and underscores only")
    done = []
    with engine.begin() as conn:
        schema = conn.execute(text("SELECT current_schema()")).scalar_one()
        for role, login in ((owner, "NOLOGIN"), (app, "LOGIN")):
            conn.execute(text(f"DO $$ BEGIN CREATE ROLE {role} {login}; "
                              "EXCEPTION WHEN duplicate_object THEN NULL; END $$"))
        conn.execute(text(f'ALTER SCHEMA "{schema}" OWNER TO {owner}'))
        tables = conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = :s"), {"s": schema}).scalars()
        for table in tables:
            conn.execute(text(f'ALTER TABLE "{schema}"."{table}" OWNER TO {owner}'))
        conn.execute(text(f'ALTER FUNCTION "{schema}".audit_events_append_only() OWNER TO {owner}'))
        done.append(f"schema {schema} and its tables now belong to {owner}")
        conn.execute(text(f'GRANT USAGE ON SCHEMA "{schema}" TO {app}'))
        conn.execute(text(f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "{schema}" TO {app}'))
        conn.execute(text(f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA "{schema}" TO {app}'))
        # Append-only for the application too, a layer under the triggers.
        for table in APPEND_ONLY:
            conn.execute(text(f'REVOKE UPDATE, DELETE, TRUNCATE ON "{schema}"."{table}" FROM {app}'))
        done.append(f"{app} may read and write rows (append only on {', '.join(APPEND_ONLY)}), own nothing, "
                    "and cannot drop, disable or skip a trigger")
    return done
