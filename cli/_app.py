"""The `changeflow` command: the root Typer assembles one group per file (httpx-style private modules)."""

from __future__ import annotations

import os

import typer

from . import _audit, _calendar, _changes, _decisions, _delegations, _doctor, _notifications, _policy, _setup, _wait
from ._endpoint import endpoint
from ._lockdown import lockdown_app
from ._options import checked_settings
from ._output import exits_cleanly
from ._stack_file import connect_to_running_stack
from ._tokens import token_app
from ._up import up
from ._worker import worker
from .dev import play_demo

app = typer.Typer(help="changeflow: change and maintenance management on Prefect.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
# Commands at the top level (`changeflow submit`, `changeflow approve`, ...).
for group in (_setup.app, _doctor.app, _changes.app, _wait.app, _decisions.app, _delegations.app, _calendar.app,
              _audit.app):
    app.add_typer(group)
# Groups (`changeflow db upgrade`, `changeflow audit verify`, ...).
app.add_typer(_setup.db_app, name="db")
app.add_typer(_audit.audit_app, name="audit")
app.add_typer(_policy.policy_app, name="policy")
app.add_typer(_calendar.window_app, name="window")
app.add_typer(_notifications.notifications_app, name="notifications")
app.add_typer(token_app, name="token")
app.add_typer(lockdown_app, name="lockdown")
# Local stacks: the Prefect UI for a person (`up`) and the whole-story demo (`demo`, dev tooling).
app.command()(exits_cleanly(up))
app.command()(exits_cleanly(endpoint))
app.command()(worker)


@app.callback()
def _find_the_stack(ctx: typer.Context) -> None:
    """Before any command: a Prefect server started by `changeflow up` in another shell is the one to use
    (`up` and `demo` start their own)."""
    # What changeflow and the processes it starts write (its config, databases, Prefect's, the logs) is its owner's
    # alone, whatever the umask (issue 28: under umask 000 the config directory was 0777).
    os.umask(os.umask(0) | 0o077)
    settings = exits_cleanly(checked_settings)()  # a bad CHANGEFLOW_ variable: exit 2 naming it, for every command
    if ctx.invoked_subcommand in ("up", "demo", "worker"):  # (a worker is started with its stack's address)
        return
    connect_to_running_stack(settings.home)


@app.command()
def demo(keep: bool = typer.Option(False, help="Keep the throw-away HOME for a look afterwards.")) -> None:
    """Play every scenario through the real flows on a local Prefect server, then stop everything."""
    play_demo(app, keep)
