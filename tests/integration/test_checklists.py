"""Checklist definitions, each check kind against real local targets, and the phase verdict."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml

from flows._checks import CHECKS
from models import ConfigError
from models import Checklist, ItemOutcome, Status, load_checklists, phase_verdict
from tests.conftest import POSTGRES_URL, needs_postgres
from tests.receivers import start_health_server


@pytest.fixture(scope="module")
def health():
    server = start_health_server()
    yield server.url
    server.stop()


def item(**fields):
    return Checklist.model_validate({"pre": [{"id": "x", "title": "check", **fields}]}).pre[0]


def run(**fields):
    definition = item(**fields)
    return CHECKS[definition.kind](definition)


def test_phase_verdict_is_the_worst_item():
    ok = ItemOutcome(item_id="a", passed=True, required=True)
    advisory = ItemOutcome(item_id="b", passed=False, required=False)
    required = ItemOutcome(item_id="c", passed=False, required=True)
    assert phase_verdict("pre", [ok]).status is Status.passed
    verdict = phase_verdict("pre", [ok, advisory])
    assert verdict.status is Status.advisory_failed and verdict.ok and verdict.failed_advisory == ["b"]
    verdict = phase_verdict("pre", [advisory, required, ok])
    assert verdict.status is Status.failed and not verdict.ok and verdict.failed_required == ["c"]


def test_default_checklists_load(tmp_path):
    from models import DEFAULTS_DIR

    checklists = load_checklists(DEFAULTS_DIR / "checklists.yaml")
    maintenance = checklists["maintenance"]
    assert [i.id for i in maintenance.pre][:3] == ["stakeholders-notified", "staging-evidence", "rollback-ready"]
    assert {i.kind for i in maintenance.pre + maintenance.during + maintenance.post} == {"manual", "service_health",
                                                                                        "changeflow_backup"}


@pytest.mark.parametrize(("body", "message"), [
    ({"c": {"pre": [{"id": "a", "title": "t", "kind": "teleport"}]}}, "c.pre.0: Input tag 'teleport'"),
    ({"c": {"pre": [{"id": "a", "title": "t", "kind": "http"}]}}, "c.pre.0.http.url: Field required"),
    ({"c": {"pre": [{"id": "a", "title": "t", "kind": "manual"}], "post": [{"id": "a", "title": "u",
                                                                            "kind": "manual"}]}},
     "item id 'a' is used twice"),
    ({"c": {"pre": [{"id": "a", "title": "t", "kind": "backup_fresh", "max_age_hours": 1}]}},
     "give exactly one of path_glob or timestamp_url"),
])
def test_invalid_checklists_are_refused_naming_the_item(tmp_path, body, message):
    path = tmp_path / "checklists.yaml"
    path.write_text(yaml.safe_dump(body))
    with pytest.raises(ConfigError) as raised:
        load_checklists(path)
    assert message in str(raised.value)


def test_http_check_healthy_slow_and_failing(health):
    healthy = run(kind="http", url=f"{health}/healthy", json_field="db.connected", json_value=True)
    assert healthy.passed and healthy.evidence["status"] == 200
    slow = run(kind="http", url=f"{health}/slow", max_latency_ms=500)
    assert not slow.passed and "slower than 500 ms" in slow.detail and slow.evidence["latency_ms"] >= 1400
    failing = run(kind="http", url=f"{health}/failing")
    assert not failing.passed and failing.detail == "HTTP 503, expected 200" and '"down"' in failing.evidence["body"]
    timeout = run(kind="http", url=f"{health}/slow", timeout_s=0.3)
    assert not timeout.passed and "ReadTimeout" in timeout.detail


def test_command_check_success_and_timeout():
    ok = run(kind="command", command="echo all good")
    assert ok.passed and ok.evidence["output"].strip() == "all good"
    started = time.monotonic()
    slow = run(kind="command", command="sleep 5", timeout_s=0.5)
    assert not slow.passed and slow.detail == "timed out" and time.monotonic() - started < 3
    failing = run(kind="command", command="echo broken >&2; exit 4")
    assert not failing.passed and failing.detail == "exit 4" and "broken" in failing.evidence["output"]


def test_sql_check_against_sqlite(tmp_path):
    import sqlite3

    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE jobs (state TEXT)")
        conn.executemany("INSERT INTO jobs VALUES (?)", [("done",), ("done",), ("stuck",)])
    url = f"sqlite:///{path}"
    assert run(kind="sql", database_url=url, query="SELECT COUNT(*) FROM jobs WHERE state = 'stuck'", expect=1).passed
    wrong = run(kind="sql", database_url=url, query="SELECT COUNT(*) FROM jobs", expect=0)
    assert not wrong.passed and wrong.detail == "returned 3, expected 0"
    refused = run(kind="sql", database_url=url, query="DELETE FROM jobs")
    assert not refused.passed and "query failed" in refused.detail
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 3, "the check must be read-only"


@needs_postgres
@pytest.mark.postgres
def test_sql_check_against_postgresql():
    assert run(kind="sql", database_url=POSTGRES_URL, query="SELECT 1 + 1", expect=2).passed
    refused = run(kind="sql", database_url=POSTGRES_URL, query="CREATE TABLE cf_should_not_exist (x int)")
    assert not refused.passed and "read-only" in refused.evidence["error"]


def test_backup_fresh_and_stale(tmp_path):
    fresh, stale = tmp_path / "fresh", tmp_path / "stale"
    fresh.mkdir()
    stale.mkdir()
    (fresh / "db-1.dump").write_text("x")
    old = stale / "db-0.dump"
    old.write_text("x")
    two_days_ago = time.time() - 48 * 3600
    os.utime(old, (two_days_ago, two_days_ago))
    ok = run(kind="backup_fresh", path_glob=str(fresh / "*.dump"), max_age_hours=26)
    assert ok.passed and ok.evidence["file"].endswith("db-1.dump")
    too_old = run(kind="backup_fresh", path_glob=str(stale / "*.dump"), max_age_hours=26)
    assert not too_old.passed and "48.0 h old (limit 26 h)" in too_old.detail
    missing = run(kind="backup_fresh", path_glob=str(tmp_path / "none" / "*.dump"), max_age_hours=26)
    assert not missing.passed and "no file matches" in missing.detail
    assert Path(ok.evidence["file"]).exists()


def test_metric_check_against_a_prometheus_http_api():
    """A local server speaking Prometheus' instant-query API (the canary issue brings the real Prometheus)."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs, urlsplit

    seen = []

    class Prometheus(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            query = parse_qs(urlsplit(self.path).query)["query"][0]
            seen.append(query)
            value = "0.02" if "errors" in query else "NaN"
            body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
                {"metric": {}, "value": [1764230400, value]}] if "missing" not in query else []}}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Prometheus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        ok = run(kind="metric", prometheus_url=url, query='rate(errors_total{job="api"}[5m])', operator="<",
                 threshold=0.05)
        assert ok.passed and ok.evidence["value"] == 0.02 and seen[-1] == 'rate(errors_total{job="api"}[5m])'
        breach = run(kind="metric", prometheus_url=url, query="errors", operator="<", threshold=0.01)
        assert not breach.passed and breach.detail == "0.02 < 0.01 is False"
        empty = run(kind="metric", prometheus_url=url, query="missing", threshold=1)
        assert not empty.passed and "no value" in empty.detail
        nan = run(kind="metric", prometheus_url=url, query="latency", threshold=1)
        assert not nan.passed, "NaN compares false: no data is not a pass"
    finally:
        server.shutdown()
        server.server_close()


def test_every_automated_item_kind_has_a_checker():
    """The kinds a checklist may declare (models.domain) and the checkers that run them (flows) stay in step."""
    import typing

    from flows._checks import CHECKS
    from models import ChecklistItem

    union = typing.get_args(ChecklistItem)[0]
    declared = {typing.get_args(item.model_fields["kind"].annotation)[0] for item in typing.get_args(union)}
    assert declared - {"manual"} == set(CHECKS), "each automated kind needs exactly one checker in flows/_checks.py"


def test_the_shipped_maintenance_backup_check_backs_changeflow_up_and_proves_it(cli_env, db):
    """Issue 31: the shipped window's "Backup verified" looked for /var/backups/*.dump, which a fresh machine does
    not have, so the default weekly window cancelled itself. It now takes changeflow's own backup and proves it."""
    from models import DEFAULTS_DIR

    from flows._wiring import wiring

    (item,) = [i for i in load_checklists(DEFAULTS_DIR / "checklists.yaml")["maintenance"].pre
               if i.id == "backup-verified"]
    wiring.cache_clear()  # the worker process's wiring, built from this test's HOME and database
    try:
        outcome = CHECKS[item.kind](item)
    finally:
        wiring.cache_clear()
    if db.is_sqlite:
        assert outcome.passed and "backed up and proved" in outcome.detail, outcome
        assert (Path(outcome.evidence["backup"]) / "manifest.json").is_file()
    else:
        # changeflow's application role may not create the throw-away database the proof needs: the item fails,
        # saying so, and the window does not run on an unproved backup.
        assert not outcome.passed and "CREATEDB" in outcome.detail, outcome


def test_the_smoke_test_probes_the_health_url_the_directory_gives_the_changes_service(health, org):
    """Issue 31: the shipped smoke test was `command: "true"` and the health checks a fixed 127.0.0.1:8080 that a
    fresh machine does not serve. A service_health item probes the URL directory.yaml gives the change's own
    service; a service with none fails the item, saying so (never a pass that proved nothing)."""
    from types import SimpleNamespace

    from models import DEFAULTS_DIR

    services = {**org.directory.services,
                "payments": org.directory.services["payments"].model_copy(update={"health": f"{health}/healthy"}),
                "checkout": org.directory.services["checkout"].model_copy(update={"health": f"{health}/failing"})}
    org = org.model_copy(update={"directory": org.directory.model_copy(update={"services": services})})
    shipped = load_checklists(DEFAULTS_DIR / "checklists.yaml")
    assert {i.kind for phase in ("pre", "post") for i in shipped["automated"].items(phase)} == {"service_health"}
    outcomes = {}
    for service in ("payments", "checkout", "reporting"):
        change = SimpleNamespace(checklist="maintenance", service=service)
        (smoke,) = [i for i in org.checklist_of(change).post if i.id == "smoke-tests"]
        outcomes[service] = CHECKS[smoke.kind](smoke)
    assert outcomes["payments"].passed and outcomes["payments"].detail.startswith("payments: HTTP 200")
    assert outcomes["payments"].evidence["url"] == f"{health}/healthy"
    assert not outcomes["checkout"].passed and outcomes["checkout"].detail == "checkout: HTTP 503, expected 200"
    assert not outcomes["reporting"].passed
    assert outcomes["reporting"].detail.startswith("directory.yaml gives reporting no health URL")
    # Shipped: platform, changeflow's own, is probed at its approval endpoint's /healthz under `changeflow up`.
    (platform,) = [i for i in org.checklist_of(SimpleNamespace(checklist="maintenance", service="platform")).post
                   if i.id == "smoke-tests"]
    assert platform.url == "http://127.0.0.1:4280/healthz"
