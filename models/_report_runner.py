"""Runs a named report for the CLI and the audit-report flow alike."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from ._errors import InputError
from ._reports import compliance, dora, sla
from ._service import ChangeService
from ._types import utcnow

ReportName = Literal["dora", "compliance", "sla"]
REPORT_FIELDS = {
    "dora": ("service", "deployments", "deployments_per_day", "lead_time_median_h", "lead_time_p90_h",
             "implemented", "failed", "change_failure_rate", "time_to_restore_median_h", "unrestored_failures"),
    "compliance": ("kind", "change", "detail"),
    "sla": ("type", "requested", "approved", "sla_h", "median_h", "max_h", "breaches", "escalations"),
}


def run_report(service: ChangeService, name: str, since: datetime | None, until: datetime | None,
               on_service: str | None = None) -> tuple[list[dict], tuple[str, ...]]:
    if name not in REPORT_FIELDS:
        raise InputError(f"report: {name!r} is not one of {', '.join(REPORT_FIELDS)}", [("report", "unknown")])
    until = until or utcnow()
    since = since or until - timedelta(days=365)
    if since >= until:
        raise InputError("--since: must be before --until", [("since", "after until")])
    with service.db.read() as session:
        if name == "dora":
            rows = dora(session, since, until, on_service)
        elif name == "compliance":
            rows = compliance(session, service.org, since, until, on_service)
        else:
            rows = sla(session, service.org, since, until, on_service)
    return rows, REPORT_FIELDS[name]
