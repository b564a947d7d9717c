"""Shared fixtures: real SQLite files, a real PostgreSQL (fresh schema per test), the example org config.

Nothing here talks to Prefect: the folders that do (flows/, e2e/) import tests.prefect_env in their own conftest."""

from __future__ import annotations

import functools
import json
import os
import time
import uuid
from dataclasses import dataclass

import pytest
import sqlalchemy
import typer.main
import typer.testing

from models import DEFAULTS_DIR, Services, Database, create_restricted_roles, load_org
from models import normalise_database_url

from tests.helpers import SECRET, Clock, migrated_sqlite

# typer builds the click command tree from every command's signature on each CliRunner.invoke: half the CPU of an
# in-process CLI call (6.3 of 12.3 s for 300 `submit`s in the hostile-input trial). A `changeflow` process builds
# it once; a test process now does too (the tree holds no state between invocations: click makes a new Context).
typer.testing._get_command = functools.cache(typer.main.get_command)

# Wide, stable tables for CLI output assertions (Rich reads COLUMNS when the CLI's console is created).
os.environ.setdefault("COLUMNS", "200")

POSTGRES_URL = os.environ.get("CHANGEFLOW_TEST_POSTGRES_URL")
needs_postgres = pytest.mark.skipif(
    not POSTGRES_URL, reason="set CHANGEFLOW_TEST_POSTGRES_URL=postgresql://user@127.0.0.1:5432/db to run"
)


@pytest.fixture(scope="session")
def org():
    return load_org(DEFAULTS_DIR)


def _sqlite(tmp_path) -> Database:
    return migrated_sqlite(tmp_path / "changeflow.db")


class _PostgresSchemas:
    """One fresh schema per test database, dropped afterwards, so runs never see each other's rows.

    The tests connect as the restricted application role that `changeflow db roles` sets up (issue 14): the
    schema belongs to a migration owner role, so a test that needed more than production grants would fail.
    The superuser connection plays the insider (and the migration owner) where a test needs one."""

    def __init__(self, url: str):
        self.url = normalise_database_url(url)
        self.admin = sqlalchemy.create_engine(self.url, isolation_level="AUTOCOMMIT")
        suffix = uuid.uuid4().hex[:8]  # per test session: a CI run and a local run may share the server
        self.owner, self.app = f"cf_test_owner_{suffix}", f"cf_test_app_{suffix}"

    def create(self) -> tuple[Database, str]:
        """A schema reached as the superuser, for tests that set up roles themselves."""
        schema = f"cf_test_{uuid.uuid4().hex[:12]}"
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        # The search path rides in the URL so a CLI subprocess given CHANGEFLOW_DATABASE_URL lands in it too.
        return Database(f"{self.url}?options=-csearch_path%3D{schema}"), schema

    def create_restricted(self) -> tuple[Database, Database, str]:
        """(as the application role, as the superuser, schema): migrated by the owner, then handed over."""
        insider, schema = self.create()
        insider.migrate()
        create_restricted_roles(insider.write_engine, owner=self.owner, app=self.app)
        as_app = sqlalchemy.engine.make_url(insider.url).set(username=self.app)
        return Database(as_app.render_as_string(hide_password=False)), insider, schema

    def drop(self, schema: str) -> None:
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    def drop_roles(self) -> None:
        with self.admin.connect() as conn:
            for role in (self.app, self.owner):
                if conn.exec_driver_sql(f"SELECT 1 FROM pg_roles WHERE rolname = '{role}'").first():
                    conn.exec_driver_sql(f"DROP OWNED BY {role}")
                    conn.exec_driver_sql(f"DROP ROLE {role}")


@pytest.fixture(scope="session")
def postgres_schemas():
    if not POSTGRES_URL:
        pytest.skip("set CHANGEFLOW_TEST_POSTGRES_URL to run the PostgreSQL tests")
    schemas = _PostgresSchemas(POSTGRES_URL)
    yield schemas
    schemas.drop_roles()
    schemas.admin.dispose()


@dataclass(frozen=True)
class Databases:
    app: Database  # what changeflow connects as
    insider: Database  # full rights: the attacker of the tamper tests, the owner who runs `db upgrade`


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, needs_postgres])])
def databases(request, tmp_path):
    """The change database, on each backend we support."""
    if request.param == "sqlite":
        database = _sqlite(tmp_path)
        yield Databases(database, database)
        database.dispose()
        return
    schemas = request.getfixturevalue("postgres_schemas")
    database, insider, schema = schemas.create_restricted()
    yield Databases(database, insider)
    database.dispose()
    insider.dispose()
    schemas.drop(schema)


@pytest.fixture
def db(databases):
    return databases.app


@pytest.fixture
def insider(databases):
    """The database as someone with more than changeflow's rights: on PostgreSQL the superuser."""
    return databases.insider


@pytest.fixture
def sqlite_db(tmp_path):
    database = _sqlite(tmp_path)
    yield database
    database.dispose()


@pytest.fixture
def services(db, org):
    return Services.build(db, org, SECRET)


@pytest.fixture
def clock(request):
    """A clock the test sets by hand (`clock.at = ...`), starting at its module's `T0`."""
    return Clock(request.module.T0)


@pytest.fixture
def at_t0(db, org, clock):
    """The services on that clock."""
    return Services.build(db, org, SECRET, clock=clock)


@pytest.fixture
def cli_env(db, tmp_path, monkeypatch):
    """Environment for `changeflow` commands run in-process: a fresh HOME with the example config."""
    from typer.testing import CliRunner

    from cli import app

    home = tmp_path / "home"
    monkeypatch.setenv("CHANGEFLOW_HOME", str(home))
    monkeypatch.setenv("CHANGEFLOW_DATABASE_URL", db.url)
    monkeypatch.setenv("CHANGEFLOW_SECRET", SECRET.decode())
    runner = CliRunner()
    result = runner.invoke(app, ["init"])
    assert result.exit_code == 0, result.output

    def run(*args: str):
        return runner.invoke(app, [str(a) for a in args])

    return run


# Stacks that tests share: the xdist worker's one Prefect server and runner (flow_stack), a module's kill stack,
# the canary lab. `make test` runs with --dist loadgroup: the tests of a module that uses one stay together on one
# worker, in file order; every other test goes wherever a worker is free (docs/development.md).
SHARED_STACKS = frozenset({"flow_stack", "kill_stack", "lab"})

# Tests that each keep a whole stack of their own busy with flow runs (up to 8 at once per worker). Side by side on
# two cores they starved one another: beside the load check and the distributed layout, a resumed run of the demo
# took more than its minute to start, twice (docs/development.md, "Flaky is a bug"). They take turns on one worker
# while the others run the rest.
BUSY_STACKS = frozenset({"tests.e2e.test_demo", "tests.e2e.test_load", "tests.e2e.test_distributed"})


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.module.__name__ in BUSY_STACKS:
            item.add_marker(pytest.mark.xdist_group("busy-stacks"))
        elif SHARED_STACKS & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
    longest_first(items)


class GroupsHold:
    """After xdist has read the groups: a grouped test whose id carries no `@group` would be handed out alone,
    and its module's stack started once per worker, silently (pytest 9.2 does that with xdist 3.8: its node ids
    no longer take xdist's suffix, pytest-xdist#1386; constraints.txt keeps pytest 9.1)."""

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config, items):
        # xdist defines `loadgroup` only in runs it distributes (`pytest tests/unit` alone has no such option).
        if not (getattr(config.option, "loadgroup", False) and os.environ.get("PYTEST_XDIST_WORKER")):
            return
        lost = [item.nodeid for item in items if item.get_closest_marker("xdist_group") and "@" not in item.nodeid]
        if lost:
            raise pytest.UsageError(f"--dist loadgroup did not group {len(lost)} tests (first: {lost[0]}): "
                                    "this pytest and pytest-xdist do not work together (pytest-xdist#1386)")


def pytest_configure(config):
    config.pluginmanager.register(GroupsHold(), "changeflow-groups-hold")


def longest_first(items: list[pytest.Item]) -> None:
    """Hand out the long waits first: the slow trials and kill stacks, then the groups on a shared stack, then
    the quick tests that fill the gaps (`--no-loadscope-reorder` keeps this order; xdist would otherwise start
    the groups with the most tests first and leave a 4-minute single test to the end). A group moves as one, so
    the tests of a module still run in file order."""
    def scope(item: pytest.Item) -> str:
        group = item.get_closest_marker("xdist_group")
        return group.args[0] if group else item.nodeid

    def tier(item: pytest.Item) -> int:
        return 0 if item.get_closest_marker("slow") else 1 if item.get_closest_marker("xdist_group") else 2

    first: dict[str, int] = {}
    for item in items:
        first[scope(item)] = min(first.get(scope(item), 2), tier(item))
    items.sort(key=lambda item: first[scope(item)])


# Where a run's time went, test by test and worker by worker: CHANGEFLOW_TEST_TIMELINE=FILE appends one JSON line
# per test (xdist worker, test id, start, end); benchmarks/suite_times.py --timeline FILE reads it.
TIMELINE = os.environ.get("CHANGEFLOW_TEST_TIMELINE")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    started = time.time()
    yield
    if TIMELINE:
        line = {"worker": os.environ.get("PYTEST_XDIST_WORKER", "main"), "test": item.nodeid.split("@")[0],
                "start": started, "end": time.time()}
        with open(TIMELINE, "a") as fh:
            fh.write(json.dumps(line) + "\n")


_postgres_passed = 0


def pytest_runtest_logreport(report):
    global _postgres_passed
    if report.when == "call" and report.passed and "postgres" in report.keywords:
        _postgres_passed += 1


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(
        f"PostgreSQL tests passed: {_postgres_passed}"
        + ("" if POSTGRES_URL else " (skipped: CHANGEFLOW_TEST_POSTGRES_URL not set)")
    )


@pytest.fixture
def cli_env_for(db, tmp_path, monkeypatch):
    """`changeflow` in-process against an existing database (the example config, the test secret)."""
    from typer.testing import CliRunner

    from cli import app

    monkeypatch.setenv("CHANGEFLOW_HOME", str(tmp_path / "cli-home"))
    monkeypatch.setenv("CHANGEFLOW_DATABASE_URL", db.url)
    monkeypatch.setenv("CHANGEFLOW_SECRET", SECRET.decode())
    runner = CliRunner()
    assert runner.invoke(app, ["init"]).exit_code == 0

    def bind(_service):
        return lambda *args: runner.invoke(app, [str(a) for a in args])

    return bind


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The sample service as v1 + v2, behind nginx and scraped by Prometheus where they are installed."""
    from cli.dev import Lab

    lab = Lab(tmp_path_factory.mktemp("canary-lab"))
    try:
        yield lab.start(prometheus=True)
    finally:
        lab.stop()
