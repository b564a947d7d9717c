"""The notification outbox: list what was sent or failed, and retry."""

from __future__ import annotations

from typing import Any, Optional

import typer
from rich import box
from rich.table import Table

from models import InputError
from notifications import Notifier, describe_target

from ._context import context
from ._options import JsonOption
from ._output import console, exits_cleanly, print_json


notifications_app = typer.Typer(help="The notification outbox.", invoke_without_command=True)


@notifications_app.callback()
@exits_cleanly
def notifications_list(
    ctx: typer.Context,
    state: Optional[str] = typer.Option(None, help="pending, sending, sent or failed."),
    change: Optional[str] = typer.Option(None, help="Only this change."),
    limit: int = typer.Option(50, min=1, max=10_000),
    json_output: bool = JsonOption,
) -> None:
    """List notifications, newest first (webhook URLs masked)."""
    if ctx.invoked_subcommand is not None:
        return
    if state is not None and state not in ("pending", "sending", "sent", "failed"):
        raise InputError(f"--state: {state!r} is not one of pending, sending, sent, failed")
    app_ctx = context()
    rows = Notifier(app_ctx.services, app_ctx.settings).outbox.list(state=state, change_key=change, limit=limit)
    data: list[dict[str, Any]] = [{"id": n.id, "change": n.change_key, "event": n.event, "recipient": n.recipient,
             "channel": describe_target(n.channel), "state": n.state, "attempts": n.attempts,
             "created_at": n.created_at.isoformat(), "sent_at": n.sent_at.isoformat() if n.sent_at else None,
             "last_error": n.last_error} for n in rows]
    if json_output:
        print_json(data)
        return
    table = Table(title=f"notifications ({len(data)})", box=box.SIMPLE_HEAD)
    for column in ("id", "change", "event", "to", "channel", "state", "tries", "error"):
        table.add_column(column)
    for row in data:
        table.add_row(str(row["id"]), row["change"] or "-", row["event"], row["recipient"], row["channel"],
                      row["state"], str(row["attempts"]), row["last_error"][:60])
    console.print(table)


@notifications_app.command("retry")
@exits_cleanly
def notifications_retry(notification_id: int = typer.Argument(..., help="Notification id (see the listing).")) -> None:
    """Queue a failed notification again and try to send it now."""
    app_ctx = context()
    notifier = Notifier(app_ctx.services, app_ctx.settings)
    row = notifier.outbox.retry(notification_id)
    notifier.deliver(change_key=row.change_key)
    after = next(n for n in notifier.outbox.list(change_key=row.change_key, limit=10_000) if n.id == notification_id)
    console.print(f"notification {notification_id}: {after.state}"
                  + (f" ({after.last_error})" if after.last_error else ""))
    if after.state == "failed":
        raise typer.Exit(1)
