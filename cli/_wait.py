"""A pipeline waits on a change's approval gate (issue 32): `changeflow wait KEY`, and `changeflow submit FILE
--wait`, which files and then waits the same way.

Exit codes, stable for scripts (docs/cli.md): 0 the change may proceed (it was approved), 1 it will not (rejected,
expired or cancelled), 2 bad input (an unknown key, a malformed --timeout), 3 still undecided when --timeout ran
out. Progress goes to stderr, one line whenever the state or what is still needed changes; with --json, stdout
holds only the final record."""

from __future__ import annotations

import time
from datetime import timedelta

import typer

from models import ChangeflowError, ChangeRequest, GateTarget, GateVerdict

from ._context import context
from ._options import JsonOption, positive_duration
from ._output import console, err_console, exits_cleanly, print_json
from ._render import change_row

app = typer.Typer()

DEFAULT_TIMEOUT = "2h"  # a pipeline's job usually has its own limit; this one says "not decided" clearly first


class GateRefused(ChangeflowError):
    exit_code = 1


class WaitTimedOut(ChangeflowError):
    exit_code = 3


def parse_timeout(value: str) -> timedelta:
    return positive_duration(value, "timeout")


UntilOption = typer.Option(GateTarget.approval, "--until", help="approval: exit 0 once approved (it runs in its "
                           "window); start: once its window opened and its run began the implementation (deploy now, "
                           "then `changeflow report-outcome`).")


def wait_for_gate(key: str, timeout: timedelta, json_output: bool, until: GateTarget = GateTarget.approval) -> None:
    """Read the change every `CHANGEFLOW_WAIT_POLL_S` until its gate says proceed or refused, or `timeout`."""
    ctx = context()
    poll_s = ctx.settings.wait_poll_s
    deadline = time.monotonic() + timeout.total_seconds()
    told = ""
    while True:
        status = ctx.services.gate_status.status(key, until)
        change, verdict = status.change, status.verdict
        if verdict is GateVerdict.pending:
            if status.waiting_for != told:
                err_console.print(f"{change.key}: waiting for {status.waiting_for}")
                told = status.waiting_for
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                _final(change, verdict, json_output)
                raise WaitTimedOut(f"{change.key} is still {change.state} after {timeout}: waiting for {told}")
            time.sleep(min(poll_s, remaining))
            continue
        _final(change, verdict, json_output)
        if verdict is GateVerdict.refused:
            raise GateRefused(f"{change.key} was {change.state}" + (f": {status.reason}" if status.reason else ""))
        return


def _final(change: ChangeRequest, verdict: GateVerdict, json_output: bool) -> None:
    if json_output:
        print_json({**change_row(change), "verdict": verdict.value,
                    "approved_at": change.approved_at.isoformat() if change.approved_at else None})
    elif verdict is GateVerdict.proceed:
        console.print(f"{change.key} approved: it may proceed ({change.state})")


@app.command()
@exits_cleanly
def wait(
    key: str = typer.Argument(..., help="Change key."),
    timeout: str = typer.Option(DEFAULT_TIMEOUT, "--timeout", help="Give up after this long (90s, 30m, 2h): exit 3."),
    until: GateTarget = UntilOption,
    json_output: bool = JsonOption,
) -> None:
    """Wait until a change may proceed (exit 0), will not (rejected, expired, cancelled: exit 1) or --timeout
    passes (exit 3): a pipeline's "may I deploy?"."""
    limit = parse_timeout(timeout)
    context().services.changes.get(key)  # an unknown key is bad input (exit 2) before any waiting
    wait_for_gate(key, limit, json_output, until)
