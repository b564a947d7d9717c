"""The audit-report deployment: an auditor runs a report from the Prefect UI and reads it as artifacts."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import Field

from flows._heartbeat import heartbeating
from flows._anchors import publish_verification
from flows._wiring import wiring
from models import REPORTS, Calendar, utcnow

CALENDAR_DAYS = 28
WINDOW, FREEZE, FREE = "█", "▒", "·"  # one character an hour in the calendar picture


# The run form offers the registered reports as choices.
ReportName = Literal[tuple(REPORTS)]  # type: ignore[misc]


@flow(name="audit-report", log_prints=True)
@heartbeating
def audit_report(
    report: Annotated[ReportName, Field(description="dora, compliance, sla, refusals, score…")] = "compliance",  # type: ignore[valid-type]
    since: Annotated[datetime | None, Field(description="Start of the range (default: a year ago)")] = None,
    until: Annotated[datetime | None, Field(description="End of the range (default: now)")] = None,
    service: Annotated[str | None, Field(description="Only this service")] = None,
) -> int:
    # The latest signed checkpoint and whether the chain holds against it, beside the report.
    anchor = publish_verification().latest
    result = wiring().services.reports.run(report, since, until, service,
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
    if report == "score":  # the weekly trend beside it, as a chart (issue 33)
        trend = wiring().services.reports.run("score-trend", since, until, service).rows
        create_markdown_artifact(key="score-trend", markdown=trend_chart(trend),
                                 description="change success, week by week")
    # Beside every report, the weeks ahead as a picture (issue 30): windows, freezes and the changes in them.
    start = utcnow()
    create_markdown_artifact(key="calendar", description=f"the next {CALENDAR_DAYS} days: windows, freezes, changes",
                             markdown=calendar_picture(wiring().services.calendar.calendar(
                                 start, start + timedelta(days=CALENDAR_DAYS))))
    return len(rows)


def trend_chart(weeks: list[dict]) -> str:
    """One bar a week: the share of the changes that ended that week that succeeded (40 characters: 100 %)."""
    lines = ["# Change success, week by week", "", "```"]
    for week in weeks:
        rate = week["success_rate"] or 0.0
        lines.append(f"{week['week']}  {'█' * round(rate * 40):<40}  {rate:6.1%} of {week['changes']}")
    lines.append("```" if weeks else "No change ended in the range.\n```")
    return "\n".join(lines)


def calendar_picture(calendar: Calendar) -> str:
    """One line a day, one character an hour (UTC): a window, a freeze or nothing, then what it is and the
    changes planned in it."""
    lines = [f"# Calendar, {calendar.start:%Y-%m-%d} to {calendar.end:%Y-%m-%d} (UTC)", "",
             f"{WINDOW} maintenance window, {FREEZE} freeze, one character an hour", "", "```",
             " " * 11 + "".join(f"{hour:<6}" for hour in range(0, 24, 6))]
    day = calendar.start.replace(hour=0, minute=0, second=0, microsecond=0)
    while day < calendar.end:
        hours = [FREE] * 24
        said = []
        for entry in calendar.entries:
            if entry.ends_at <= day or entry.starts_at >= day + timedelta(days=1):
                continue
            for hour in range(24):
                at = day + timedelta(hours=hour)
                if entry.starts_at < at + timedelta(hours=1) and entry.ends_at > at and hours[hour] != FREEZE:
                    hours[hour] = FREEZE if entry.freeze else WINDOW
            if entry.starts_at >= day:  # said on the day it starts
                said.append(f"{entry.starts_at:%H:%M} {entry.kind} {entry.title}"
                            + (f" ({entry.service})" if entry.service else "")
                            + (f": {', '.join(entry.changes)}" if entry.changes else "")
                            + (f" (undated: {', '.join(entry.undated)})" if entry.undated else ""))
        lines.append(f"{day:%a %m-%d}  {''.join(hours)}  {'; '.join(said)}".rstrip())
        day += timedelta(days=1)
    lines.append("```")
    if calendar.changes:
        lines += ["", "| change | service | planned (UTC) | state |", "|---|---|---|---|"]
        lines += [f"| {c.key} {c.title} | {c.service} | {c.planned_start:%a %Y-%m-%d %H:%M} | {c.state} |"
                  for c in calendar.changes if c.planned_start is not None]
    return "\n".join(lines) + "\n"
