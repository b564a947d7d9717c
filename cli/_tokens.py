"""Automation tokens (issue 27): `changeflow token issue PIPELINE --service S --as OPERATOR` prints, once, the
token a pipeline proves its filings with (`changeflow submit request.yaml --token-env VAR`, or the pipeline API),
for the changes of its services only (issue 32); `token revoke ID` ends one."""

from __future__ import annotations

import typer

from ._context import context
from ._options import OutputFormat
from ._output import console, err_console, exits_cleanly, fmt_time
from ._render import emit_rows

token_app = typer.Typer(help="Tokens that prove a pipeline filed its change.", no_args_is_help=True)


@token_app.command("issue")
@exits_cleanly
def issue(
    automation: str = typer.Argument(..., help="The pipeline: an automation of directory.yaml `automations`."),
    operator: str = typer.Option(..., "--as", help="Who issues it: a person holding a `code_issuers` role."),
    services: list[str] = typer.Option(..., "--service", help="A service whose changes the pipeline files, reads "
                                       "and waits on (repeat for more); its changes to others are refused."),
) -> None:
    """Issue a token for a pipeline, scoped to services; printed once (changeflow keeps only its SHA-256), recorded."""
    issued = context().services.automation_tokens.issue(automation, operator=operator, services=services)
    err_console.print(f"token {issued.id} for {automation} ({', '.join(issued.services)}): store it in the "
                      "pipeline's secret store; it is not shown again")
    console.print(issued.token)


@token_app.command("list")
@exits_cleanly
def list_tokens(
    output: OutputFormat = typer.Option(OutputFormat.table, "--format", help="table, json or csv."),
) -> None:
    """Every token issued, with its automation, services and whether it was revoked (never the token itself)."""
    rows = [{"id": t.id, "automation": t.automation, "services": ",".join(t.services), "issued_by": t.issued_by,
             "issued_at": fmt_time(t.issued_at), "revoked_by": t.revoked_by or "",
             "revoked_at": fmt_time(t.revoked_at) if t.revoked_at else ""}
            for t in context().services.automation_tokens.issued()]
    emit_rows(rows, ("id", "automation", "services", "issued_by", "issued_at", "revoked_by", "revoked_at"), output,
              "automation tokens")


@token_app.command("revoke")
@exits_cleanly
def revoke(
    token_id: int = typer.Argument(..., help="The token's id (printed when it was issued)."),
    operator: str = typer.Option(..., "--as", help="Who revokes it: a person holding a `code_issuers` role."),
) -> None:
    """Revoke a pipeline's token: its filings are refused from now on."""
    context().services.automation_tokens.revoke(token_id, operator=operator)
    console.print(f"token {token_id} revoked")
