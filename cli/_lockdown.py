"""The incident button (issue 32): `changeflow lockdown on|off|status|code`. While a lockdown is on no change starts
and only the change types the policy admits are filed (policies.yaml `lockdown:`); each act is recorded and
announced to everyone in the directory."""

from __future__ import annotations

import typer

from models import InputError, Lockdown, LockdownResult

from ._context import context
from ._options import JsonOption
from ._output import console, exits_cleanly, fmt_time, print_json

lockdown_app = typer.Typer(help="The incident button: stop every change from starting, at once.",
                           no_args_is_help=True)

_AS = typer.Option(..., "--as", help="Who presses it: a person of a policies.yaml `lockdown.declared_by` role.")
_CODE = typer.Option(..., "--code", help="Your code for the next lockdown act (`changeflow lockdown code --for "
                     "YOU` sends it to your own channel); it works once.")
_REASON = typer.Option(..., "--reason", help="Why (announced to everyone and recorded).")


def _row(lockdown: Lockdown) -> dict:
    return {"on": lockdown.on, "by": lockdown.by or None, "since": lockdown.since.isoformat() if lockdown.since
            else None, "reason": lockdown.reason or None}


def _carry_out(result: LockdownResult) -> list[str]:
    """Everyone told, aborted canaries' runs stopped (flows/lockdown.py, the same as from the UI)."""
    from flows.lockdown import carry_out

    return carry_out(result, context().notifier)


@lockdown_app.command("on")
@exits_cleanly
def lockdown_on(person: str = _AS, code: str = _CODE, reason: str = _REASON) -> None:
    """Declare a lockdown: no implementation starts, submissions other than the admitted types (emergencies) are
    refused, and canaries being rolled out go back to stable (or hold, per policy)."""
    result = context().services.lockdown.declare(person=person, code=code, reason=reason)
    unreached = _carry_out(result)
    console.print(f"[bold red]lockdown on[/]: {result.lockdown.describe()}")
    if result.aborted:
        console.print("  canaries sent back to stable, their changes rolled back by the next sweep: "
                      + ", ".join(c.key for c in result.aborted))
    if unreached:
        console.print("  [yellow]their runs could not be reached[/]: press Cancel on them in the Prefect UI ("
                      + ", ".join(unreached) + "); each rolls back at its next step anyway")


@lockdown_app.command("off")
@exits_cleanly
def lockdown_off(person: str = _AS, code: str = _CODE, reason: str = _REASON) -> None:
    """Lift the lockdown: changes may be filed again, and a change waiting for its window starts at the next sweep
    once its window is open."""
    result = context().services.lockdown.lift(person=person, code=code, reason=reason)
    _carry_out(result)
    console.print(f"lockdown off: lifted by {person} at {fmt_time(result.lockdown.since)}")


@lockdown_app.command("status")
@exits_cleanly
def lockdown_status(json_output: bool = JsonOption) -> None:
    """Whether a lockdown is on, since when, by whom and why. Exit 0 either way."""
    lockdown = context().services.lockdown.status()
    if json_output:
        print_json(_row(lockdown))
        return
    console.print(lockdown.describe() if lockdown.on else
                  "no lockdown" + (f" (the last was lifted by {lockdown.by} at {fmt_time(lockdown.since)})"
                                   if lockdown.by else ""))


@lockdown_app.command("code")
@exits_cleanly
def lockdown_code(person: str = typer.Option(..., "--for", help="Whose code: it goes to their own channel only.")
                  ) -> None:
    """Send PERSON their code for the next lockdown act, to their own channel (never printed here)."""
    ctx = context()
    if person not in ctx.services.org.directory.people:
        raise InputError(f"--for: {person!r} is not in the approver directory", [("for", "unknown person")])
    sent = ctx.notifier.send_lockdown_code(person)
    ctx.notifier.deliver()
    console.print(f"{person}'s lockdown code " + ("sent to their channel" if sent else
                                                  "was already sent for the next lockdown act: see their channel"))
