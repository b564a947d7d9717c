"""`changeflow doctor` and the endpoint's `/healthz` name each dependency that is down (issue 31): the database,
the audit guards, the outbox, the audit checkpoints here, with no Prefect at all (which they name too); the Prefect
API and a silent worker in tests/flows/test_doctor.py."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from cli.dev import Stack, free_port, start_endpoint
from tests.helpers import ROUTINE_RISK, SECRET, wait_until

CHANGEFLOW = str(Path(sys.executable).parent / "changeflow")
REQUEST = {"type": "standard", "title": "Rotate TLS certificates on checkout", "service": "checkout",
           "test_evidence": "staging run green",
           "requester": "grace", "rollback_plan": "restore the previous bundle", "risk": ROUTINE_RISK}


@pytest.fixture
def home(tmp_path) -> dict[str, str]:
    """A fresh HOME on SQLite, and no Prefect server where PREFECT_API_URL points."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHANGEFLOW_", "PREFECT_"))}
    env.update(CHANGEFLOW_HOME=str(tmp_path / "home"), CHANGEFLOW_SECRET=SECRET.decode(),
               PREFECT_API_URL=f"http://127.0.0.1:{free_port()}/api", PREFECT_HOME=str(tmp_path / "prefect"))
    assert subprocess.run([CHANGEFLOW, "init"], env=env, capture_output=True).returncode == 0
    return env


def doctor(env: dict[str, str], *args: str) -> tuple[int, dict[str, tuple[bool, str]], str]:
    ran = subprocess.run([CHANGEFLOW, "doctor", "--json", *args], env=env, capture_output=True, text=True,
                         timeout=120)
    assert "Traceback" not in ran.stderr, ran.stderr
    checks = {c["name"]: (c["ok"], c["detail"]) for c in json.loads(ran.stdout)["checks"]}
    return ran.returncode, checks, ran.stderr


def test_doctor_names_prefect_down_and_holds_everything_else_on_a_fresh_home(home):
    code, checks, err = doctor(home)
    assert code == 1 and "unhealthy: prefect, worker" in err
    assert list(checks) == ["database", "audit guards", "outbox", "audit checkpoint", "prefect", "worker"]
    assert all(checks[name][0] for name in ("database", "audit guards", "outbox", "audit checkpoint")), checks
    prefect_check = checks["prefect"][1]
    assert "ConnectError" in prefect_check and home["PREFECT_API_URL"].removesuffix("/api") in prefect_check


def test_doctor_names_a_missing_audit_guard_and_a_database_it_cannot_reach(home, tmp_path):
    with sqlite3.connect(tmp_path / "home" / "changeflow.db") as db:  # the database's owner, at the side door
        (trigger,) = db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' LIMIT 1").fetchone()
        db.execute(f'DROP TRIGGER "{trigger}"')
    code, checks, err = doctor(home)
    assert code == 1 and "audit guards" in err
    assert not checks["audit guards"][0] and trigger in checks["audit guards"][1]

    gone = {**home, "CHANGEFLOW_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/changeflow"}
    code, checks, err = doctor(gone)
    assert code == 1 and "database" in err
    assert not checks["database"][0] and "postgresql" in checks["database"][1]


def test_doctor_names_an_outbox_nobody_sends_and_events_no_checkpoint_covers_until_one_is_signed(home, tmp_path):
    request = tmp_path / "request.yaml"
    request.write_text(yaml.safe_dump(REQUEST))
    # grace's only channel is a webhook nobody answers: her message stays in the outbox, retried later.
    directory = tmp_path / "home" / "config" / "directory.yaml"
    people = yaml.safe_load(directory.read_text())
    people["people"]["grace"]["channels"] = [{"type": "webhook", "url": f"http://127.0.0.1:{free_port()}/hook"}]
    directory.write_text(yaml.safe_dump(people, sort_keys=False))
    # Filed locally: a message for grace and audit events, and no sweep to send or sign them.
    assert subprocess.run([CHANGEFLOW, "submit", "--local", str(request)], env=home,
                          capture_output=True).returncode == 0
    strict = {**home, "CHANGEFLOW_HEALTH_OUTBOX_MAX_WAIT_S": "0.5", "CHANGEFLOW_AUDIT_CHECKPOINT_EVERY_S": "1",
              "CHANGEFLOW_SWEEP_INTERVAL_S": "5"}
    _code, checks = wait_until(lambda: (lambda r: r if not r[1]["audit checkpoint"][0] else None)(doctor(strict)[:2]),
                               60, "the events to outlive their checkpoint interval")
    assert not checks["outbox"][0] and "message(s) unsent" in checks["outbox"][1]
    assert "under no signed checkpoint" in checks["audit checkpoint"][1]
    signed = subprocess.run([CHANGEFLOW, "audit", "checkpoint"], env=home, capture_output=True, text=True)
    assert signed.returncode == 0, signed.stderr
    assert doctor(strict)[1]["audit checkpoint"][0], "a signed checkpoint covers them"


def test_healthz_answers_503_naming_what_is_down_and_livez_only_that_the_process_answers(home, tmp_path):
    stack = Stack(home["PREFECT_API_URL"], home)
    port = free_port()
    try:
        start_endpoint(stack, port, tmp_path / "logs")
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30)
        assert health.status_code == 503 and health.headers["cache-control"] == "no-store"
        assert health.json()["failing"] == ["prefect", "worker"]
        assert httpx.get(f"http://127.0.0.1:{port}/livez", timeout=10).text == "ok"
    finally:
        stack.stop()
