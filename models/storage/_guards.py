"""The database's own guards: triggers that make the audit trail and the canary measurements append-only.

An insider with write access can drop them, disable them, or (PostgreSQL) skip them for a session with
`SET session_replication_role = replica`. So they report themselves: `audit verify` fails while one is missing or
disabled, and `changeflow db upgrade` restores them. On PostgreSQL they are restored `ENABLE ALWAYS`, which fires
even in replica mode.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import Engine


@dataclass(frozen=True)
class Guard:
    name: str
    table: str
    sqlite: str
    postgresql: str


_PG_FUNCTION = """CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION 'audit events are append-only'; END $$"""


# The triggers on the tables of this connection's schema (several changeflow schemas may share a database).
_PG_TRIGGERS = """SELECT t.tgname, t.tgenabled FROM pg_trigger t
    JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE NOT t.tgisinternal AND n.nspname = current_schema()"""


def _sqlite(name: str, table: str, verb: str) -> str:
    return (f"CREATE TRIGGER {name} BEFORE {verb} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END")


# The names the migrations (0001, 0006) created; each dialect has its own set.
GUARDS = {
    "sqlite": [
        Guard("audit_events_no_update", "audit_events", _sqlite("audit_events_no_update", "audit_events", "UPDATE"),
              ""),
        Guard("audit_events_no_delete", "audit_events", _sqlite("audit_events_no_delete", "audit_events", "DELETE"),
              ""),
        Guard("canary_measurements_no_update", "canary_measurements",
              _sqlite("canary_measurements_no_update", "canary_measurements", "UPDATE"), ""),
        Guard("canary_measurements_no_delete", "canary_measurements",
              _sqlite("canary_measurements_no_delete", "canary_measurements", "DELETE"), ""),
    ],
    "postgresql": [
        Guard("audit_events_no_change", "audit_events", "",
              "CREATE TRIGGER audit_events_no_change BEFORE UPDATE OR DELETE ON audit_events "
              "FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()"),
        Guard("audit_events_no_truncate", "audit_events", "",
              "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events "
              "FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()"),
        Guard("canary_measurements_no_change", "canary_measurements", "",
              "CREATE TRIGGER canary_measurements_no_change BEFORE UPDATE OR DELETE ON canary_measurements "
              "FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()"),
    ],
}


def guard_problems(engine: Engine) -> list[str]:
    """Each guard that is missing, or (PostgreSQL) not enabled ALWAYS, so replica mode would skip it."""
    dialect = engine.dialect.name
    with engine.connect() as conn:
        if dialect == "sqlite":
            triggers = conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))
            present = {row[0]: "A" for row in triggers}
        elif dialect == "postgresql":
            present = {row[0]: row[1] for row in conn.execute(text(_PG_TRIGGERS))}
        else:
            return []
    problems = []
    for guard in GUARDS.get(dialect, []):
        state = present.get(guard.name)
        if state is None:
            problems.append(f"trigger {guard.name} on {guard.table} is missing")
        elif state == "D":
            problems.append(f"trigger {guard.name} on {guard.table} is disabled")
        elif state != "A":
            problems.append(f"trigger {guard.name} on {guard.table} does not fire in replica mode "
                            "(session_replication_role = replica skips it)")
    return problems


def restore_guards(engine: Engine) -> list[str]:
    """Recreate missing guards and enable all of them ALWAYS; returns what was repaired."""
    repaired = guard_problems(engine)
    if not repaired:
        return []
    dialect = engine.dialect.name
    with engine.begin() as conn:
        if dialect == "sqlite":
            present = {row[0] for row in conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))}
        else:
            conn.execute(text(_PG_FUNCTION))
            present = {row[0] for row in conn.execute(text(_PG_TRIGGERS))}
        for guard in GUARDS.get(dialect, []):
            if guard.name not in present:
                conn.execute(text(guard.sqlite if dialect == "sqlite" else guard.postgresql))
            if dialect == "postgresql":
                conn.execute(text(f"ALTER TABLE {guard.table} ENABLE ALWAYS TRIGGER {guard.name}"))
    return repaired
