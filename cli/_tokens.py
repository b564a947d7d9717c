"""Automation tokens (issue 27): `changeflow token issue PIPELINE --as OPERATOR` prints, once, the token a pipeline
proves its filings with (`changeflow submit request.yaml --token-env VAR`); `token revoke ID` ends one."""

from __future__ import annotations

import typer

from ._context import context
from ._output import console, err_console, exits_cleanly

token_app = typer.Typer(help="Tokens that prove a pipeline filed its change.", no_args_is_help=True)


@token_app.command("issue")
@exits_cleanly
def issue(
    automation: str = typer.Argument(..., help="The pipeline: an automation of directory.yaml `automations`."),
    operator: str = typer.Option(..., "--as", help="Who issues it: a person holding a `code_issuers` role."),
) -> None:
    """Issue a token for a pipeline; printed once (changeflow keeps only its SHA-256), recorded."""
    issued = context().services.automation_tokens.issue(automation, operator=operator)
    err_console.print(f"token {issued.id} for {automation}: store it in the pipeline's secret store; it is not "
                      "shown again")
    console.print(issued.token)


@token_app.command("revoke")
@exits_cleanly
def revoke(
    token_id: int = typer.Argument(..., help="The token's id (printed when it was issued)."),
    operator: str = typer.Option(..., "--as", help="Who revokes it: a person holding a `code_issuers` role."),
) -> None:
    """Revoke a pipeline's token: its filings are refused from now on."""
    context().services.automation_tokens.revoke(token_id, operator=operator)
    console.print(f"token {token_id} revoked")
