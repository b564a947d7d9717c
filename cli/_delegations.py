"""Delegation (issue 27): `delegate` records that a person hands their authority to a delegate for a period,
`delegations` lists them, `end-delegation` ends one early. Operators record them at the person's request."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from models import Delegation, DelegationView

from ._context import context
from ._options import JsonOption, parse_time, required_time
from ._output import console, exits_cleanly, fmt_time, print_json


app = typer.Typer()


def _row(d: DelegationView) -> dict:
    return {"id": d.id, "delegator": d.delegator, "delegate": d.delegate, "starts_at": d.starts_at.isoformat(),
            "ends_at": d.ends_at.isoformat(), "reason": d.reason, "recorded_by": d.recorded_by,
            "revoked_at": d.revoked_at.isoformat() if d.revoked_at else None}


@app.command()
@exits_cleanly
def delegate(
    person: str = typer.Argument(..., help="Who hands over their authority (a person of the directory)."),
    to: str = typer.Option(..., "--to", help="The delegate: acts for PERSON, proving who they are with their own "
                           "code."),
    until: str = typer.Option(..., "--until", help="When the delegation ends (ISO date or time, UTC unless given)."),
    starts: Optional[str] = typer.Option(None, "--from", help="When it starts (default: now)."),
    reason: str = typer.Option(..., "--reason", help="Why (leave, on-call swap): shown beside the delegate's acts."),
    operator: str = typer.Option(..., "--as", help="Who records it: a person holding a role of policies.yaml "
                                 "`delegation_recorders` (default: operator)."),
    json_output: bool = JsonOption,
) -> None:
    """Record that PERSON's approvals, confirmations and answers may be given by a delegate for a period. Every
    gate honours it: the delegate is asked, and acts for PERSON, never for the requester of their own change."""
    services = context().services
    start = parse_time(starts, "from") or services.delegations.now()
    recorded = services.delegations.record(
        Delegation(person, to, start, required_time(until, "until"), reason), operator=operator)
    if json_output:
        print_json(_row(recorded))
        return
    console.print(f"delegation {recorded.id}: {to} stands in for {person} from {fmt_time(recorded.starts_at)} "
                  f"until {fmt_time(recorded.ends_at)}")


@app.command()
@exits_cleanly
def delegations(
    include_ended: bool = typer.Option(False, "--all", help="Also the delegations that ended or were ended."),
    json_output: bool = JsonOption,
) -> None:
    """List delegations in force or to come."""
    rows = context().services.delegations.listed(include_ended=include_ended)
    if json_output:
        print_json([_row(d) for d in rows])
        return
    table = Table(title="delegations")
    for column in ("id", "delegator", "delegate", "from", "until", "reason", "recorded by", "ended"):
        table.add_column(column)
    for d in rows:
        table.add_row(str(d.id), d.delegator, d.delegate, fmt_time(d.starts_at), fmt_time(d.ends_at), d.reason,
                      d.recorded_by, fmt_time(d.revoked_at) if d.revoked_at else "")
    console.print(table)


@app.command("end-delegation")
@exits_cleanly
def end_delegation(
    delegation_id: int = typer.Argument(..., help="The delegation's id (`changeflow delegations`)."),
    operator: str = typer.Option(..., "--as", help="Who ends it: a person holding a `delegation_recorders` role."),
) -> None:
    """End a delegation now (it stays on record: the delegate's earlier acts refer to it)."""
    ended = context().services.delegations.revoke(delegation_id, operator=operator)
    console.print(f"delegation {ended.id} ({ended.delegate} for {ended.delegator}) ended")
