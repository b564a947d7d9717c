"""`changeflow doctor`: is every piece changeflow needs up? One line per check, named (issue 31)."""

from __future__ import annotations

import typer
from rich import box
from rich.table import Table

from models import ChangeflowError, Services

from ._context import context
from ._options import JsonOption
from ._output import console, exits_cleanly, print_json
from .dev import WORK_POOL

app = typer.Typer()


class Unhealthy(ChangeflowError):
    exit_code = 1


@app.command()
@exits_cleanly
def doctor(
    pool: str = typer.Option(WORK_POOL, "--pool", help="The work pool whose workers must be heartbeating."),
    json_output: bool = JsonOption,
) -> None:
    """Check the database, the audit guards, the outbox, the audit checkpoints, the Prefect API and the worker:
    exit 0 when all hold, 1 naming each that does not."""
    from flows import health_report

    ctx = context()
    # Built as configured, not under the policy in force: that needs the database, which doctor may find down.
    services = Services.build(ctx.db, ctx.org, ctx.settings.secret_bytes())
    report = health_report(services, ctx.settings, pool)
    if json_output:
        print_json({"ok": report.ok, "checks": [check.__dict__ for check in report.checks]})
    else:
        table = Table(box=box.SIMPLE_HEAD)
        for column in ("check", "", "what it found"):
            table.add_column(column)
        for check in report.checks:
            table.add_row(check.name, "[green]ok[/]" if check.ok else "[red]FAIL[/]", check.detail)
        console.print(table)
    if not report.ok:
        raise Unhealthy(f"unhealthy: {', '.join(report.failing)}")
