"""PostgreSQL: changeflow's processes connect as an application role that owns nothing (`changeflow db roles`).
It files and approves changes, and every way around the audit guards fails for it: drop a trigger, disable
it, skip it with session_replication_role, update or delete an event (issue 14)."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.exc import DBAPIError

from models import Database, Services, create_restricted_roles, verify_chain
from tests.conftest import needs_postgres
from tests.helpers import SECRET, approve, standard_request

pytestmark = [pytest.mark.postgres, needs_postgres]


@pytest.fixture
def app_database(postgres_schemas):
    database, schema = postgres_schemas.create()
    database.migrate()
    suffix = uuid.uuid4().hex[:8]
    owner, app = f"cf_owner_{suffix}", f"cf_app_{suffix}"
    create_restricted_roles(database.write_engine, owner=owner, app=app)
    as_app = Database(database.url.replace("postgresql+psycopg://postgres@", f"postgresql+psycopg://{app}@", 1))
    try:
        yield as_app, app
    finally:
        as_app.dispose()
        database.dispose()
        postgres_schemas.drop(schema)
        with postgres_schemas.admin.connect() as conn:
            for role in (app, owner):
                conn.exec_driver_sql(f"DROP OWNED BY {role}")
                conn.exec_driver_sql(f"DROP ROLE {role}")


ATTEMPTS = {
    "drop-trigger": "DROP TRIGGER audit_events_no_change ON audit_events",
    "disable-trigger": "ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_change",
    "disable-all-triggers": "ALTER TABLE audit_events DISABLE TRIGGER USER",
    "replica-mode": "SET session_replication_role = replica",
    "update-event": "UPDATE audit_events SET actor = 'mallory' WHERE seq = 1",
    "delete-event": "DELETE FROM audit_events WHERE seq = 1",
    "truncate": "TRUNCATE audit_events",
}


@pytest.mark.parametrize("attempt", list(ATTEMPTS))
def test_the_application_role_works_but_cannot_touch_the_guards(app_database, org, attempt):
    database, role = app_database
    services = Services.build(database, org, SECRET)
    change = services.approvals.request_approval(services.changes.submit(standard_request()).key)
    approve(services, change.key, "alice")
    with database.write_engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT current_user").scalar() == role
        with pytest.raises(DBAPIError, match="must be owner|permission denied"):
            conn.exec_driver_sql(ATTEMPTS[attempt])
    with database.read() as session:
        assert verify_chain(session).ok


@pytest.mark.parametrize("databases", ["postgres"], indirect=True)
def test_the_postgresql_tests_run_as_the_restricted_role(db):
    """The `db` fixture every PostgreSQL test uses hands out the application role, not the superuser: a code path
    that needed more than production grants would fail in the suite, not in production."""
    with db.write_engine.connect() as conn:
        user, superuser = conn.exec_driver_sql(
            "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user").one()
        owner = conn.exec_driver_sql("SELECT tableowner FROM pg_tables WHERE tablename = 'audit_events' "
                                     "AND schemaname = current_schema()").scalar_one()
    assert user.startswith("cf_test_app_") and not superuser
    assert owner.startswith("cf_test_owner_")
