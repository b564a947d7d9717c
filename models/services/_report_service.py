"""Reports as a registry: one entry per report (its output fields and the function that computes it), used by
the CLI and the audit-report flow alike. A new report is one entry here plus its function."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable

from sqlmodel import Session

from ..domain import InputError, Org, utcnow
from ._reports import compliance, dora, refusals, sla
from ._unit_of_work import UnitOfWork

ReportRows = list[dict[str, Any]]


@dataclass(frozen=True)
class Report:
    name: str
    fields: tuple[str, ...]
    # (session, org, since, until, service, chain anchor: the last signed checkpoint's seq and hash, or None)
    compute: Callable[[Session, Org, datetime, datetime, str | None, tuple[int, str] | None], ReportRows]


@dataclass(frozen=True)
class ReportResult:
    name: str
    rows: ReportRows
    fields: tuple[str, ...]


REPORTS: dict[str, Report] = {report.name: report for report in (
    Report("dora", ("service", "deployments", "deployments_per_day", "lead_time_median_h", "lead_time_p90_h",
                    "implemented", "failed", "change_failure_rate", "time_to_restore_median_h",
                    "unrestored_failures"),
           lambda session, _org, since, until, service, _anchor: dora(session, since, until, service)),
    Report("compliance", ("kind", "change", "detail"),
           lambda session, org, since, until, service, anchor: compliance(session, org, since, until, service,
                                                                          chain_anchor=anchor)),
    Report("sla", ("type", "requested", "approved", "sla_h", "median_h", "max_h", "breaches", "escalations"),
           lambda session, org, since, until, service, _anchor: sla(session, org, since, until, service)),
    Report("refusals", ("at", "kind", "change", "who", "why"),
           lambda session, _org, since, until, service, _anchor: refusals(session, since, until, service)),
)}


class ReportService:
    def __init__(self, uow: UnitOfWork):
        self._uow = uow

    def run(self, name: str, since: datetime | None = None, until: datetime | None = None,
            on_service: str | None = None, chain_anchor: tuple[int, str] | None = None) -> ReportResult:
        """`chain_anchor`: the last valid signed checkpoint (seq, hash); the compliance report then verifies the
        audit chain only after it instead of from the first event."""
        report = REPORTS.get(name)
        if report is None:
            raise InputError(f"report: {name!r} is not one of {', '.join(REPORTS)}", [("report", "unknown")])
        until = until or utcnow()
        since = since or until - timedelta(days=365)
        if since >= until:
            raise InputError("--since: must be before --until", [("since", "after until")])
        with self._uow.read() as session:
            rows = report.compute(session, self._uow.org, since, until, on_service, chain_anchor)
        return ReportResult(name, rows, report.fields)
