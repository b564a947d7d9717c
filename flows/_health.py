"""One health report for `changeflow doctor` and the endpoint's `/healthz` (issue 31): what changeflow keeps
(`models.HealthService`: database, audit guards, outbox, checkpoints) and the Prefect side it runs on (the API,
the work pool's worker heartbeat), each check named."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import httpx

from models import AuditAnchors, HealthCheck, HealthReport, HealthService, Services, Settings, utcnow


def _prefect_client(settings: Settings) -> httpx.Client:
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL

    auth_string = PREFECT_API_AUTH_STRING.value()
    auth = httpx.BasicAuth(*auth_string.get_secret_value().split(":", 1)) if auth_string else None
    return httpx.Client(base_url=str(PREFECT_API_URL.value() or ""), auth=auth, timeout=settings.http_timeout_s)


def prefect_checks(settings: Settings, pool: str) -> list[HealthCheck]:
    """The Prefect API answers its health check, and some worker of `pool` sent a heartbeat lately. Plain HTTP
    with the settings' timeout: Prefect's own client retries a dead server for half a minute."""
    silent_after = timedelta(seconds=settings.health_worker_silent_after_s)
    try:
        with _prefect_client(settings) as api:
            api.get("/health").raise_for_status()
            workers = api.post(f"/work_pools/{pool}/workers/filter", json={"limit": 100})
    except httpx.HTTPError as exc:
        return [HealthCheck("prefect", False, f"{api.base_url}: {type(exc).__name__}: {str(exc)[:200]}"),
                HealthCheck("worker", False, "unknown: Prefect does not answer")]
    prefect = HealthCheck("prefect", True, f"{api.base_url} answers")
    if workers.status_code == 404:
        return [prefect, HealthCheck("worker", False, f"no work pool named {pool!r}: nothing runs the flows")]
    if workers.status_code != 200:
        return [prefect, HealthCheck("worker", False, f"the work pool {pool!r}: HTTP {workers.status_code}")]
    beats = [datetime.fromisoformat(w["last_heartbeat_time"]) for w in workers.json() if w.get("last_heartbeat_time")]
    now = datetime.now(timezone.utc)
    if not beats:
        worker = HealthCheck("worker", False, f"no worker has ever polled the work pool {pool!r}")
    elif now - max(beats) > silent_after:
        worker = HealthCheck("worker", False, f"every worker of the work pool {pool!r} is silent: the last heartbeat "
                             f"was {int((now - max(beats)).total_seconds())} s ago (more than {silent_after})")
    else:
        worker = HealthCheck("worker", True, f"{pool!r}: last heartbeat {int((now - max(beats)).total_seconds())} s "
                             "ago")
    return [prefect, worker]


def health_report(services: Services, settings: Settings, pool: str) -> HealthReport:
    """Every check, in the order an operator would look: the database first, Prefect last."""
    health = HealthService(services.db, AuditAnchors.from_settings(settings, services.db), utcnow)
    return HealthReport((
        health.database(),
        health.guards(),
        health.outbox(timedelta(seconds=settings.health_outbox_max_wait_s)),
        health.checkpoint(grace=timedelta(seconds=2 * settings.sweep_interval_s)),
        *prefect_checks(settings, pool),
    ))
