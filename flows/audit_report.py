"""The audit-report deployment: an auditor runs a report from the Prefect UI and reads it as artifacts."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import Field

from flows._anchors import publish_verification
from flows._runtime import runtime
from models import REPORTS


# The run form offers the registered reports as choices.
ReportName = Literal[tuple(REPORTS)]  # type: ignore[misc]


@flow(name="audit-report", log_prints=True)
def audit_report(
    report: Annotated[ReportName, Field(description="dora, compliance, sla or refusals")] = "compliance",  # type: ignore[valid-type]
    since: Annotated[datetime | None, Field(description="Start of the range (default: a year ago)")] = None,
    until: Annotated[datetime | None, Field(description="End of the range (default: now)")] = None,
    service: Annotated[str | None, Field(description="Only this service")] = None,
) -> int:
    # The latest signed checkpoint and whether the chain holds against it, beside the report.
    anchor = publish_verification().latest
    result = runtime().services.reports.run(report, since, until, service,
                                            chain_anchor=(anchor.seq, anchor.hash) if anchor else None)
    rows, fields = result.rows, result.fields
    create_table_artifact(key=f"{report}-report", table=[{f: row.get(f) for f in fields} for row in rows],
                          description=f"{report} report")
    lines = [f"# {report} report", "", f"range: {since or 'a year ago'} to {until or 'now'}"
             + (f", service {service}" if service else ""), "",
             "| " + " | ".join(fields) + " |", "|" + "---|" * len(fields)]
    lines += ["| " + " | ".join("" if row.get(f) is None else str(row.get(f)) for f in fields) + " |" for row in rows]
    if not rows:
        lines.append("\nNo rows." + (" No compliance findings." if report == "compliance" else ""))
    create_markdown_artifact(key=f"{report}-report-summary", markdown="\n".join(lines),
                             description=f"{report} report")
    return len(rows)
