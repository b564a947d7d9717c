"""Builders shared by the tests."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from sqlalchemy import select

from models import (DEFAULTS_DIR, GENESIS_HASH, HASH_SCHEME, AuditEvent, ChangeTypeRules, Database, Services,
                    WindowSpec, change_type, event_hash, load_org, next_window, verify_chain)

SECRET = b"test-secret"
# The change types the shipped policies.yaml defines, and their rules (the code knows no type by name).
SHIPPED_TYPES = ("emergency", "standard", "major")
SHIPPED_RULES: dict[str, ChangeTypeRules] = {
    name: change_type(load_org(DEFAULTS_DIR).policies, name) for name in SHIPPED_TYPES}



def next_shipped_window(kind: str, after: datetime) -> WindowSpec:
    """The next `kind` window of the shipped policies.yaml opening at or after `after`."""
    return next_window(load_org(DEFAULTS_DIR).policies.windows, kind, after)


# A routine change's answers to every risk question (low risk): a request must answer them all (issue 30). The
# yes / no answers as the run form posts them (its schema, which Prefect enforces, offers "yes" and "no").
ROUTINE_RISK = {"users_affected": "few", "complexity": "low", "backout_difficulty": "easy",
                "tested_in_staging": "yes", "touches_data": "no"}


def _evidence(overrides: dict, evidence: str) -> dict:
    """The test evidence a type's policy requires (issue 31); a change from a template takes the template's, as
    one from a pre-approved template must to stay the reviewed recipe."""
    return {} if overrides.get("template") else {"test_evidence": evidence}


def standard_request(**overrides) -> dict:
    return {
        "type": "standard",
        "title": "Upgrade payments API to 2.4",
        "service": "payments",
        "requester": "grace",
        "implementation_plan": "deploy 2.4",
        "rollback_plan": "redeploy 2.3",
        **_evidence(overrides, "staging run 812 green"),
        "risk": ROUTINE_RISK,
        **overrides,
    }


def emergency_request(**overrides) -> dict:
    return {
        "type": "emergency",
        "title": "Hotfix for checkout outage",
        "service": "checkout",
        "requester": "bob",
        "incident_id": "INC-1001",
        "incident_severity": "P1",
        "risk": ROUTINE_RISK,
        **overrides,
    }


def major_request(**overrides) -> dict:
    return {
        "type": "major",
        "title": "Migrate payments database to PostgreSQL 16",
        "service": "payments",
        "requester": "grace",
        "rollback_plan": "restore from snapshot",
        **_evidence(overrides, "full suite green on the migrated copy"),
        "uat_signoff": "UAT-88, signed off by the payments product owner",
        "documentation_link": "https://wiki.example.com/payments/pg16",
        "risk": ROUTINE_RISK,
        **overrides,
    }


class Clock:
    """A clock a test sets by hand (`clock.at = ...`), given to `Services.build(..., clock=clock)`."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def approve(services: Services, key: str, approver: str, **kwargs):
    return services.approvals.decide(key, approver=approver, decision="approve",
                                     code=services.approvals.approval_code_for(key, approver), **kwargs)


def awaiting_review(services: Services, *, by: str = "bob", **overrides):
    """An emergency change (bob's), approved by erin, fixed by `by` and waiting for its post-implementation review,
    moved there through the services without a run."""
    from models import ChangeState

    change = services.approvals.request_approval(services.changes.submit(emergency_request(**overrides)).key)
    approve(services, change.key, "erin")
    for target in (ChangeState.implementing, ChangeState.verifying, ChangeState.completed, ChangeState.review_pending):
        change = services.changes.transition(change.key, target, actor=by, reason="hotfix")
    return change


def wait_until(predicate, timeout_s: float, what: str):
    """The first truthy value of `predicate()`, polled every 0.3 s; AssertionError naming `what` on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@contextmanager
def backdated(db: Database, key: str, **columns):
    """The change's row with `columns` moved (back in time, for a sweep to act on), put back on leaving: `audit
    verify` derives the times a report reads from the events (issue 28), and the flow stack is shared, so a
    later test's verify must find the row as changeflow wrote it."""
    from sqlalchemy import update

    from models import ChangeRequest

    with db.write() as session:
        recorded = session.execute(select(*(getattr(ChangeRequest, name) for name in columns))
                                   .where(ChangeRequest.key == key)).one()
        session.execute(update(ChangeRequest).where(ChangeRequest.key == key).values(**columns))
    try:
        yield
    finally:
        with db.write() as session:
            session.execute(update(ChangeRequest).where(ChangeRequest.key == key)
                            .values(**dict(zip(columns, recorded))))


_MIGRATED_TEMPLATE: Path | None = None


def migrated_sqlite(path: Path) -> Database:
    """A SQLite database at `path` whose schema is at head: a copy of one this process migrated once. The nine
    migrations cost 0.15-0.6 s a database, and the stateful tests make one per example (500 of them); the copy
    is the same file the migrations write, triggers and guards included (tests of migrating itself start from
    an empty file through `changeflow db upgrade`)."""
    global _MIGRATED_TEMPLATE
    if _MIGRATED_TEMPLATE is None:
        template = Path(tempfile.mkdtemp(prefix="changeflow-schema-")) / "template.db"
        database = Database(f"sqlite:///{template}")
        database.migrate()
        database.dispose()  # the last connection closed: the write-ahead log is folded into the file
        _MIGRATED_TEMPLATE = template
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_MIGRATED_TEMPLATE, path)
    return Database(f"sqlite:///{path}")


# ---- the insider of the audit tests: the database with full rights, HOME out of reach ----------------------

def lift_guards(conn, dialect: str, table: str = "audit_events") -> None:
    """An insider's first move: the append-only guards of `table` off (its triggers dropped or disabled)."""
    if dialect == "sqlite":
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {table}_no_update")
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {table}_no_delete")
    else:
        conn.exec_driver_sql(f"ALTER TABLE {table} DISABLE TRIGGER USER")


def rewrite_history(db, *statements: str, scheme: int = HASH_SCHEME, fools_the_chain: bool = True) -> None:
    """The insider: lift the guards, edit, then recompute every hash from the first event and move audit_head,
    so that the chain on its own verifies again (`fools_the_chain`). `scheme` 1: the chain as changeflow hashed
    it before issue 28."""
    with db.write_engine.connect() as conn:
        lift_guards(conn, db.dialect)
        for statement in statements:
            conn.exec_driver_sql(statement)
        # prev_hash is unique (no forks): park every link on a placeholder before re-linking.
        conn.exec_driver_sql("UPDATE audit_events SET prev_hash = 'parked-' || CAST(seq AS VARCHAR(20)), "
                             "hash = 'parked-' || CAST(seq AS VARCHAR(20))")
        conn.commit()
    with db.read() as session:
        events = list(session.execute(select(AuditEvent).order_by(AuditEvent.seq)).scalars())
        rows = [(e.seq, e.change_key, e.occurred_at, e.actor, e.action, e.from_state, e.to_state, e.data)
                for e in events]
    with db.write_engine.connect() as conn:
        prev = GENESIS_HASH
        for number, (seq, change_key, occurred_at, actor, action, from_state, to_state, data) in enumerate(rows, 1):
            digest = event_hash(number, change_key, occurred_at, actor, action, from_state, to_state, data, prev,
                                scheme=scheme)
            conn.exec_driver_sql("UPDATE audit_events SET seq = %s, prev_hash = '%s', hash = '%s' WHERE seq = %s"
                                 % (number, prev, digest, seq))
            prev = digest
        conn.exec_driver_sql(f"UPDATE audit_head SET seq = {len(rows)}, hash = '{prev}' WHERE id = 1")
        conn.commit()
    if fools_the_chain:
        with db.read() as session:
            assert verify_chain(session).ok, "the rewrite must fool the chain alone"


def verify_offline(bundle, *extra) -> subprocess.CompletedProcess:
    """`changeflow audit verify-bundle` as an external auditor runs it: no HOME, no database, no secret."""
    import os
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHANGEFLOW_", "PREFECT_"))}
    env["CHANGEFLOW_HOME"] = str(bundle.parent / "auditor-home-that-does-not-exist")
    return subprocess.run([str(Path(sys.executable).parent / "changeflow"), "audit", "verify-bundle", str(bundle),
                           *extra], env=env, capture_output=True, text=True)
