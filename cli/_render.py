"""How changes, listings and audit events look on a terminal, and as JSON or CSV for scripts."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.table import Table

from models import ChangeRequest

from ._options import OutputFormat
from ._output import console, print_json

LOG_FIELDS = ("key", "type", "state", "service", "title", "requester", "risk_level", "outcome", "created_at",
              "implemented_at", "closed_at")


def change_row(change: ChangeRequest) -> dict[str, Any]:
    return {
        "key": change.key,
        "type": change.type,
        "state": change.state,
        "service": change.service,
        "environment": change.environment,
        "title": change.title,
        "requester": change.requester,
        "risk_level": change.risk_level,
        "created_at": change.created_at.isoformat(),
        "updated_at": change.updated_at.isoformat(),
    }


def log_row(change: ChangeRequest) -> dict[str, Any]:
    """The stable fields of `log --format json|csv` (documented in docs/audit.md)."""
    row = {name: getattr(change, name) for name in LOG_FIELDS}
    for name in ("created_at", "implemented_at", "closed_at"):
        row[name] = row[name].isoformat() if row[name] else None
    return row


def emit_rows(rows: list[dict], fields: tuple[str, ...], output: OutputFormat, title: str,
              optional_in_table: tuple[str, ...] = ()) -> None:
    """One renderer for every listing: a Rich table, a JSON list of objects, or CSV with a header row.

    JSON and CSV always carry every field; a table on a terminal too narrow for all of them leaves out
    `optional_in_table` and says so.
    """
    if output is OutputFormat.json:
        print_json(rows)
    elif output is OutputFormat.csv:
        import csv
        import sys

        writer = csv.DictWriter(sys.stdout, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    else:
        cells = {n: ["" if row.get(n) is None else
                     str(row[n])[:16].replace("T", " ") if n.endswith("_at") else str(row[n]) for row in rows]
                 for n in fields}
        widths = {n: max([len(n), *(len(c) for c in cells[n])]) for n in fields}
        shown = list(fields)

        # Columns plus 2 characters of padding each; free text counts with the 20 characters it needs at least.
        def needed(names: list[str]) -> int:
            return sum(min(widths[n], 20) if n in ("title", "detail") else widths[n] for n in names) + 2 * len(names)

        left_out = []
        for name in optional_in_table:
            if needed(shown) <= console.width:
                break
            shown.remove(name)
            left_out.append(name)
        table = Table(title=title, box=box.SIMPLE_HEAD)
        for name in shown:
            # Keys, states and times keep their width; free text gives way and is cut with an ellipsis.
            free_text = name in ("title", "detail")
            table.add_column(name, no_wrap=not free_text, overflow="ellipsis", max_width=48 if free_text else None,
                             min_width=None if free_text else min(widths[name], 16))
        for i in range(len(rows)):
            table.add_row(*(cells[n][i] for n in shown))
        console.print(table)
        if left_out:
            console.print(f"[dim]not shown at this width: {', '.join(left_out)} (see --format json or csv)[/]")


def event_summary(action: str, data: dict) -> str:
    """One readable line per audit event for the timeline."""
    if action == "submitted":
        return f"{data.get('type')} change, risk {data.get('risk_level')} ({data.get('risk_score')})"
    if action == "policy_decision":
        return "needs " + ", ".join(f"{r['count']} x {r['role']}" for r in data.get("required", []))
    if action in ("approval", "rejection"):
        comment = f": {data['comment']}" if data.get("comment") else ""
        return f"as {data.get('role')} (round {data.get('round')}){comment}"
    if action == "approval_refused":
        return f"refused: {data.get('reason')}"
    if action == "review_recorded":
        return str(data.get("summary", ""))
    if action == "watch_started":
        limits = ", ".join(f"{metric} {rule}" for metric, rule in data.get("limits", {}).items())
        breach = str(data.get("on_breach", "")).replace("_", " ")
        return (f"watched {data.get('duration_s', 0) / 3600:g} h by {data.get('analysis')} every "
                f"{data.get('interval_s')} s ({limits}); on a breach: {breach}")
    if action == "watch_decision":
        return f"{data.get('action')} after {data.get('measured')} measurements: {'; '.join(data.get('reasons', []))}"
    return str(data.get("reason") or ", ".join(f"{k}={v}" for k, v in data.items()))
