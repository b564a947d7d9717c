"""Builders shared by the tests."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from models import DEFAULTS_DIR, ChangeTypeRules, Database, Services, change_type, load_org

SECRET = b"test-secret"
# The change types the shipped policies.yaml defines, and their rules (the code knows no type by name).
SHIPPED_TYPES = ("emergency", "standard", "major")
SHIPPED_RULES: dict[str, ChangeTypeRules] = {
    name: change_type(load_org(DEFAULTS_DIR).policies, name) for name in SHIPPED_TYPES}


def standard_request(**overrides) -> dict:
    return {
        "type": "standard",
        "title": "Upgrade payments API to 2.4",
        "service": "payments",
        "requester": "grace",
        "implementation_plan": "deploy 2.4",
        "rollback_plan": "redeploy 2.3",
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
        **overrides,
    }


def major_request(**overrides) -> dict:
    return {
        "type": "major",
        "title": "Migrate payments database to PostgreSQL 16",
        "service": "payments",
        "requester": "grace",
        "rollback_plan": "restore from snapshot",
        **overrides,
    }


def approve(services: Services, key: str, approver: str, **kwargs):
    return services.approvals.decide(key, approver=approver, decision="approve",
                                     code=services.approvals.approval_code_for(key, approver), **kwargs)


def wait_until(predicate, timeout_s: float, what: str):
    """The first truthy value of `predicate()`, polled every 0.3 s; AssertionError naming `what` on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


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
