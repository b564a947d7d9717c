"""Maintenance windows and freezes: `window add` and the `calendar`."""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta
from typing import Optional

import typer
from rich import box
from rich.table import Table

from models import utcnow

from ._context import context
from ._options import JsonOption, required_time
from ._output import console, exits_cleanly, print_json
from ._render import change_row


app = typer.Typer()


@app.command()
@exits_cleanly
def calendar(days: int = typer.Option(14, min=1, max=366, help="How many days ahead."),
             environment: Optional[str] = typer.Option(
                 None, help="Whose windows and changes (policies.yaml environments; default: the first)."),
             json_output: bool = JsonOption) -> None:
    """Maintenance windows, freezes and the changes planned in them (a change filed without a date in its next
    allowed window, marked undated), for one environment."""
    start = utcnow()
    shown = context().services.calendar.calendar(start, start + timedelta(days=days), environment)
    entries = [{**asdict(e), "changes": list(e.changes), "undated": list(e.undated)} for e in shown.entries]
    changes = shown.changes
    if json_output:
        print_json({"environment": shown.environment, "windows": entries, "changes": [
            {**change_row(c), "planned_start": c.planned_start, "planned_end": c.planned_end} for c in changes],
            "undated": [change_row(c) for c in shown.undated]})
        return
    table = Table(title=f"{shown.environment} calendar, next {days} days", box=box.SIMPLE_HEAD)
    for column in ("from", "to", "kind", "title", "service", "changes"):
        table.add_column(column)
    for e in entries:
        table.add_row(f"{e['starts_at']:%a %Y-%m-%d %H:%M}", f"{e['ends_at']:%a %Y-%m-%d %H:%M}",
                      f"[red]{e['kind']}[/]" if e["freeze"] else e["kind"], e["title"], e["service"] or "all",
                      ", ".join([*e["changes"], *(f"{key} (undated)" for key in e["undated"])]))
    console.print(table)
    if changes:
        console.print("planned changes: " + ", ".join(
            f"{c.key} {c.service} {c.planned_start:%Y-%m-%d %H:%M} ({c.state})" for c in changes))
    if shown.undated:
        console.print("filed without a date, in their next allowed window: " + ", ".join(
            f"{c.key} {c.service} ({c.state})" for c in shown.undated))


window_app = typer.Typer(help="Ad hoc maintenance windows and freezes.", no_args_is_help=True)


@window_app.command("add")
@exits_cleanly
def window_add(
    start: str = typer.Option(..., help="Start (ISO time, UTC when no offset)."),
    end: str = typer.Option(..., help="End (ISO time)."),
    title: str = typer.Option("", help="What it is, e.g. 'Year-end freeze'."),
    service: Optional[str] = typer.Option(None, help="Only this service (default: all)."),
    freeze: bool = typer.Option(False, "--freeze", help="A freeze: blocks non-emergency changes."),
    environment: Optional[str] = typer.Option(
        None, help="Only changes in this environment (policies.yaml environments; default: every one)."),
    actor: str = typer.Option("changeflow", "--as", help="Who adds it (for the audit trail)."),
) -> None:
    """Add an ad hoc maintenance window, or a freeze with --freeze."""
    window = context().services.scheduling.add_window(
        starts_at=required_time(start, "start"), ends_at=required_time(end, "end"), title=title, service=service,
        freeze=freeze, kind="ad_hoc", actor=actor, environment=environment)
    console.print(f"{'freeze' if window.freeze else 'window'} {window.id}: {window.starts_at:%Y-%m-%d %H:%M} to "
                  f"{window.ends_at:%Y-%m-%d %H:%M} UTC {window.title}"
                  + (f" ({window.environment} only)" if window.environment else ""))
