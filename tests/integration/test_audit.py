"""The audit trail is append-only in the database and tamper-evident in `changeflow audit verify`."""

from __future__ import annotations

import pytest
import sqlalchemy
from sqlalchemy.exc import DBAPIError

from models import GENESIS_HASH, verify_chain
from tests.helpers import approve, emergency_request, standard_request


def _history(services, changes: int = 2) -> int:
    for _ in range(changes):
        change = services.approvals.request_approval(services.changes.submit(standard_request()).key)
        approve(services, change.key, "alice")
        approve(services, change.key, "bob")
    with services.db.read() as session:
        result = verify_chain(session)
    assert result.ok
    return result.count


def _tamper(db, *statements: str) -> None:
    """Act as an attacker with direct database access: lift the append-only guard, then edit."""
    with db.write_engine.connect() as conn:
        if db.dialect == "sqlite":
            conn.exec_driver_sql("DROP TRIGGER audit_events_no_update")
            conn.exec_driver_sql("DROP TRIGGER audit_events_no_delete")
        else:
            conn.exec_driver_sql("ALTER TABLE audit_events DISABLE TRIGGER USER")
        for statement in statements:
            conn.exec_driver_sql(statement)
        conn.commit()


def test_intact_chain_verifies_with_its_event_count(services, cli_env):
    count = _history(services)
    result = cli_env("audit", "verify")
    assert result.exit_code == 0, result.output
    assert f"audit chain intact: {count} events" in result.output


@pytest.mark.parametrize(
    ("statements", "first_broken", "reason"),
    [
        (["UPDATE audit_events SET actor = 'mallory' WHERE seq = 5"], 5, "event 5 was altered"),
        (["UPDATE audit_events SET data = '{}' WHERE seq = 3"], 3, "event 3 was altered"),
        (["DELETE FROM audit_events WHERE seq = 4"], 4, "event 4 is missing"),
        (
            [
                "UPDATE audit_events SET seq = -1 WHERE seq = 6",
                "UPDATE audit_events SET seq = 6 WHERE seq = 7",
                "UPDATE audit_events SET seq = 7 WHERE seq = -1",
            ],
            6,
            "event 6 does not link to event 5",
        ),
        (["DELETE FROM audit_events WHERE seq = (SELECT MAX(seq) FROM audit_events)"], 12,
         "the chain ends at event 11"),
    ],
    ids=["edit-actor", "edit-data", "delete", "swap", "delete-last"],
)
def test_tampering_with_any_row_is_named_by_verify(services, insider, cli_env, statements, first_broken, reason):
    assert _history(services) == 12
    _tamper(insider, *statements)
    result = cli_env("audit", "verify")
    assert result.exit_code == 1, result.output
    assert f"audit chain broken at event {first_broken}" in result.output
    assert reason in result.output


def test_database_refuses_to_update_or_delete_audit_events(services, insider):
    """Even for the schema's owner (the application role has no UPDATE or DELETE on the table at all)."""
    _history(services, changes=1)
    for statement in ("UPDATE audit_events SET actor = 'mallory' WHERE seq = 1",
                      "DELETE FROM audit_events WHERE seq = 1"):
        with pytest.raises(DBAPIError, match="append-only"):
            with insider.write_engine.begin() as conn:
                conn.exec_driver_sql(statement)
    with services.db.read() as session:
        assert verify_chain(session).ok


def test_first_event_links_to_the_genesis_hash(services):
    services.changes.submit(emergency_request())
    with services.db.read() as session:
        first = session.execute(sqlalchemy.text("SELECT prev_hash FROM audit_events WHERE seq = 1")).scalar_one()
    assert first == GENESIS_HASH


def test_verify_json_output(services, cli_env):
    _history(services, changes=1)
    result = cli_env("audit", "verify", "--json")
    assert result.exit_code == 0
    assert '"ok": true' in result.stdout


def _drop_or_disable_a_guard(db) -> str:
    with db.write_engine.begin() as conn:
        if db.dialect == "sqlite":
            conn.exec_driver_sql("DROP TRIGGER audit_events_no_delete")
            return "trigger audit_events_no_delete on audit_events is missing"
        conn.exec_driver_sql("ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_change")
        return "trigger audit_events_no_change on audit_events is disabled"


def test_a_removed_guard_fails_verify_and_db_upgrade_restores_it(services, insider, cli_env, monkeypatch):
    """Issue 14: once dropped, the triggers were not recreated and nothing reported their absence."""
    _history(services, changes=1)
    problem = _drop_or_disable_a_guard(insider)
    result = cli_env("audit", "verify")
    assert result.exit_code == 1 and problem in result.output, result.output
    assert "audit chain intact" in result.output  # the chain itself is fine: the guard is what is missing
    monkeypatch.setenv("CHANGEFLOW_DATABASE_URL", insider.url)  # `db upgrade` is the migration owner's job
    repaired = cli_env("db", "upgrade")
    assert repaired.exit_code == 0 and f"restored: {problem}" in repaired.output, repaired.output
    assert cli_env("audit", "verify").exit_code == 0
    with pytest.raises(DBAPIError, match="append-only"):
        with insider.write_engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM audit_events WHERE seq = 1")


@pytest.mark.postgres
def test_replica_mode_does_not_skip_the_guards_on_postgresql(services, insider):
    """Even for a superuser (the application role may not set session_replication_role at all)."""
    if services.db.dialect != "postgresql":
        pytest.skip("session_replication_role is PostgreSQL's")
    _history(services, changes=1)
    with pytest.raises(DBAPIError, match="append-only"):
        with insider.write_engine.begin() as conn:
            conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
            conn.exec_driver_sql("UPDATE audit_events SET actor = 'mallory' WHERE seq = 1")
