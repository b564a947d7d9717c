"""For auditors: `audit verify` and `report`."""

from __future__ import annotations

from typing import Optional

import typer

from models import guard_problems, verify_chain

from ._context import context
from ._options import JsonOption, OutputFormat, parse_time
from ._output import console, exits_cleanly, print_error, print_json
from ._render import emit_rows


app = typer.Typer()


@app.command()
@exits_cleanly
def report(
    name: str = typer.Argument(..., help="dora, compliance or sla."),
    since: Optional[str] = typer.Option(None, help="Start of the range (default: a year before --until)."),
    until: Optional[str] = typer.Option(None, help="End of the range (default: now)."),
    service: Optional[str] = typer.Option(None, help="Only this service."),
    output: OutputFormat = typer.Option(OutputFormat.table, "--format", help="table, json or csv."),
) -> None:
    """DORA figures, compliance findings or approval SLAs over a time range."""
    result = context().services.reports.run(name, parse_time(since, "since"), parse_time(until, "until"), service)
    rows, fields = result.rows, result.fields
    emit_rows(rows, fields, output, f"{name} report ({len(rows)} rows)",
              optional_in_table=tuple(f for f in fields if f.endswith(("_p90_h", "_per_day", "unrestored_failures"))))


audit_app = typer.Typer(help="The tamper-evident audit trail.", no_args_is_help=True)


@audit_app.command("verify")
@exits_cleanly
def audit_verify(json_output: bool = JsonOption) -> None:
    """Recompute the audit hash chain: exit 0 when intact, 1 naming the first broken event."""
    ctx = context()
    with ctx.db.read() as session:
        result = verify_chain(session)
    # A chain that verifies today proves little if the guards that keep it append-only are gone.
    guards = guard_problems(ctx.db.read_engine)
    if json_output:
        print_json({**result.__dict__, "guard_problems": guards})
    elif result.ok:
        console.print(f"audit chain intact: {result.count} events")
    else:
        print_error(f"audit chain broken at event {result.first_broken_seq}: {result.reason}")
    for problem in guards if not json_output else []:
        print_error(f"audit guard: {problem} (`changeflow db upgrade` restores it)")
    if not result.ok or guards:
        raise typer.Exit(1)
