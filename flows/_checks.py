"""Automated checklist checks against the outside world. Each returns an ItemOutcome with its evidence and
raises nothing for an ordinary failure (a failed check is a result, not an error)."""

from __future__ import annotations

from typing import Any, Callable

import glob
import os
import time
from datetime import datetime, timezone

import httpx
from sqlalchemy import create_engine, text

from flows._commands import run_command
from flows._wiring import wiring
from flows.metrics import MetricError, prometheus
from models import (
    BackupFreshItem,
    BackupService,
    ChangeflowBackupItem,
    ChangeflowError,
    CommandItem,
    compare,
    HttpItem,
    ItemOutcome,
    MetricItem,
    normalise_database_url,
    ServiceHealthItem,
    SqlItem,
)


def _outcome(item, passed: bool, detail: str, **evidence) -> ItemOutcome:
    return ItemOutcome(item_id=item.id, passed=passed, required=item.required, detail=detail, evidence=evidence)


def _dig(data, dotted: str):
    for part in dotted.split("."):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def check_http(item: HttpItem) -> ItemOutcome:
    started = time.perf_counter()
    try:
        response = httpx.get(item.url, timeout=item.timeout_s)
    except httpx.HTTPError as exc:
        return _outcome(item, False, f"{type(exc).__name__} after {time.perf_counter() - started:.2f} s",
                        url=item.url, error=type(exc).__name__)
    latency_ms = (time.perf_counter() - started) * 1000
    evidence = {"url": item.url, "status": response.status_code, "latency_ms": round(latency_ms, 1),
                "body": response.text[:500]}
    if response.status_code != item.expect_status:
        return _outcome(item, False, f"HTTP {response.status_code}, expected {item.expect_status}", **evidence)
    if item.max_latency_ms is not None and latency_ms > item.max_latency_ms:
        return _outcome(item, False, f"{latency_ms:.0f} ms, slower than {item.max_latency_ms:g} ms", **evidence)
    if item.body_contains is not None and item.body_contains not in response.text:
        return _outcome(item, False, f"body does not contain {item.body_contains!r}", **evidence)
    if item.json_field is not None:
        try:
            value = _dig(response.json(), item.json_field)
        except (ValueError, KeyError, IndexError, TypeError):
            return _outcome(item, False, f"no JSON field {item.json_field}", **evidence)
        if item.json_value is not None and value != item.json_value:
            return _outcome(item, False, f"{item.json_field} = {value!r}, expected {item.json_value!r}", **evidence)
    return _outcome(item, True, f"HTTP {response.status_code} in {latency_ms:.0f} ms", **evidence)


def check_service_health(item: ServiceHealthItem) -> ItemOutcome:
    """The service's health URL from the directory (filled in when its change's checklist was read)."""
    if item.url is None:
        return _outcome(item, False, f"directory.yaml gives {item.service or 'the service'} no health URL "
                        "(services.<name>.health): nothing to probe", service=item.service)
    probed = check_http(HttpItem(kind="http", id=item.id, title=item.title, required=item.required,
                                 timeout_s=item.timeout_s, retries=item.retries, url=item.url,
                                 expect_status=item.expect_status))
    return probed.model_copy(update={"detail": f"{item.service}: {probed.detail}",
                                     "evidence": {**probed.evidence, "service": item.service}})


def check_command(item: CommandItem) -> ItemOutcome:
    result = run_command(item.command, timeout_s=item.timeout_s)
    detail = "exit 0" if result.ok else ("timed out" if result.timed_out else f"exit {result.exit_code}")
    return _outcome(item, result.ok, detail, **result.evidence())


def check_sql(item: SqlItem) -> ItemOutcome:
    engine = create_engine(normalise_database_url(item.database_url))
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                conn.exec_driver_sql(f"SET LOCAL statement_timeout = {int(item.timeout_s * 1000)}")
            elif engine.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA query_only = ON")
            value = conn.execute(text(item.query)).scalar()
            conn.rollback()
    except Exception as exc:  # noqa: BLE001 - a failing query is a failed check with its reason
        return _outcome(item, False, f"query failed: {type(exc).__name__}", query=item.query,
                        error=str(exc).splitlines()[0][:300])
    finally:
        engine.dispose()
    passed = item.expect is None or str(value) == str(item.expect)
    detail = f"returned {value!r}" + ("" if passed else f", expected {item.expect!r}")
    return _outcome(item, passed, detail, query=item.query, value=str(value))


def check_backup_fresh(item: BackupFreshItem) -> ItemOutcome:
    now = datetime.now(timezone.utc)
    if item.path_glob:
        files = glob.glob(os.path.expanduser(item.path_glob))
        if not files:
            return _outcome(item, False, f"no file matches {item.path_glob}", glob=item.path_glob)
        newest = max(files, key=os.path.getmtime)
        taken = datetime.fromtimestamp(os.path.getmtime(newest), timezone.utc)
        source = {"file": newest}
    else:
        try:
            taken = datetime.fromisoformat(httpx.get(item.timestamp_url, timeout=item.timeout_s).text.strip())
        except (httpx.HTTPError, ValueError) as exc:
            return _outcome(item, False, f"no timestamp from {item.timestamp_url}: {type(exc).__name__}")
        taken = taken if taken.tzinfo else taken.replace(tzinfo=timezone.utc)
        source = {"url": item.timestamp_url}
    age_h = (now - taken).total_seconds() / 3600
    passed = age_h <= item.max_age_hours
    return _outcome(item, passed, f"newest backup is {age_h:.1f} h old (limit {item.max_age_hours:g} h)",
                    taken_at=taken.isoformat(), age_hours=round(age_h, 2), **source)




def check_changeflow_backup(item: ChangeflowBackupItem) -> ItemOutcome:
    rt = wiring()
    try:
        report = BackupService(rt.services.db, rt.settings).backup(rt.settings.home / "backups")
    except ChangeflowError as exc:
        return _outcome(item, False, f"no backup: {exc}")
    if not report.ok:
        return _outcome(item, False, f"the backup does not verify: {'; '.join(report.problems)[:500]}",
                        backup=str(report.folder))
    return _outcome(item, True, f"backed up and proved: {report.events} events, {report.checkpoints} signed "
                                f"checkpoints hold ({report.seconds:.1f} s)", backup=str(report.folder))


def check_metric(item: MetricItem) -> ItemOutcome:
    try:
        value = prometheus.instant(item.prometheus_url, item.query, timeout_s=item.timeout_s)
    except (MetricError, ValueError) as exc:
        return _outcome(item, False, f"no value for the query: {exc}", query=item.query)
    passed = compare(value, item.operator, item.threshold)
    return _outcome(item, passed, f"{value:g} {item.operator} {item.threshold:g} is {passed}", query=item.query,
                    value=value)


# The registry of automated checklist kinds: a kind declared in models.domain's ChecklistItem without an entry
# here fails tests/test_checklists.py::test_every_automated_item_kind_has_a_checker.
CHECKS: dict[str, Callable[[Any], ItemOutcome]] = {
    "http": check_http, "command": check_command, "sql": check_sql, "backup_fresh": check_backup_fresh,
    "changeflow_backup": check_changeflow_backup, "metric": check_metric, "service_health": check_service_health}
