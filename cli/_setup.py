"""Setting up: `init`, `db upgrade`, `policy show`."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import typer

from models import (
    BackupReport,
    BackupService,
    DEFAULTS_DIR,
    install_runbooks,
    InputError,
    Settings,
    create_restricted_roles,
    restore_guards,
    upgrade_database,
)

from ._context import context
from ._output import console, exits_cleanly, print_error


CONFIG_FILES = ("directory.yaml", "policies.yaml", "checklists.yaml", "templates.yaml", "maintenance.yaml")

app = typer.Typer()


@app.command()
@exits_cleanly
def init(force: bool = typer.Option(False, help="Overwrite config files that already exist.")) -> None:
    """Create HOME, the secret, the example organisation config and the database."""
    settings = Settings()
    settings.ensure_home()
    wrote_secret = settings.ensure_secret_file()
    wrote_key = settings.ensure_signing_key()
    settings.config_dir.mkdir(parents=True, exist_ok=True)
    installed = []
    for name in CONFIG_FILES:
        target = settings.config_dir / name
        if force or not target.exists():
            shutil.copyfile(DEFAULTS_DIR / name, target)
            installed.append(name)
    installed += install_runbooks(settings.config_dir, force=force)
    ctx = context()
    revision = upgrade_database(ctx.db)
    ctx.org  # noqa: B018 (reading it validates the config now, not at the first approval)
    console.print(f"home:     {settings.home}")
    console.print(f"secret:   {settings.secret_file if not settings.secret else 'CHANGEFLOW_SECRET'}"
                  f"{' (new)' if wrote_secret else ''}")
    console.print(f"audit key: {settings.signing_key_file}{' (new)' if wrote_key else ''}; public half for "
                  f"auditors: {settings.public_key_file}")
    console.print(f"config:   {settings.config_dir} ({', '.join(installed) or 'kept existing files'})")
    console.print(f"database: {ctx.db.url} (schema {revision})")


db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)


@db_app.command("upgrade")
@exits_cleanly
def db_upgrade() -> None:
    """Apply pending database migrations and restore the append-only guards if someone removed them."""
    ctx = context()
    revision = upgrade_database(ctx.db)
    for repaired in restore_guards(ctx.db.write_engine):
        console.print(f"restored: {repaired}")
    console.print(f"database at schema {revision}: {ctx.db.url}")


@db_app.command("backup")
@exits_cleanly
def db_backup(
    to: Optional[Path] = typer.Option(None, "--to", help="Folder to write the backup under (default: HOME/backups)."),
) -> None:
    """A consistent copy of the change database and the audit checkpoint file, proved by loading it into a
    throw-away database and verifying it there: exit 0 when the backup holds, 1 naming what does not."""
    ctx = context()
    report = BackupService(ctx.db, ctx.settings).backup(to or ctx.settings.home / "backups")
    _backup_verdict(report, "backup written and verified")


@db_app.command("verify-backup")
@exits_cleanly
def db_verify_backup(folder: Path = typer.Argument(..., help="A folder `db backup` wrote.")) -> None:
    """Prove a backup again: its files as its manifest names them, and its copy verified in a throw-away
    database against the checkpoints and this HOME's public key."""
    ctx = context()
    _backup_verdict(BackupService(ctx.db, ctx.settings).verify(folder), "backup verified")


@db_app.command("restore")
@exits_cleanly
def db_restore(
    folder: Path = typer.Argument(..., help="A folder `db backup` wrote."),
    replace: bool = typer.Option(False, "--replace", help="Replace a database that already holds changes."),
) -> None:
    """Load a backup into this HOME's database and checkpoint file, after proving it (nothing is loaded from a
    backup that does not verify)."""
    ctx = context()
    _backup_verdict(BackupService(ctx.db, ctx.settings).restore(folder, replace=replace), "restored")


def _backup_verdict(report: BackupReport, done: str) -> None:
    for problem in report.problems:
        print_error(f"backup {report.folder.name}: {problem}")
    if not report.ok:
        raise typer.Exit(1)
    console.print(f"{done}: {report.folder} ({report.events} events, {report.checkpoints} signed checkpoints hold; "
                  f"{report.seconds:.1f} s)")


@db_app.command("roles")
@exits_cleanly
def db_roles(
    owner: str = typer.Option("changeflow_owner", help="Role that owns the schema (migrations run as it)."),
    app: str = typer.Option("changeflow_app", help="Role changeflow's processes log in as."),
) -> None:
    """PostgreSQL: give the schema to a migration owner role and create the restricted application role (run once
    as a superuser, with CHANGEFLOW_DATABASE_URL naming the schema); then point every process at the app role."""
    ctx = context()
    if ctx.db.dialect != "postgresql":
        raise InputError("database_url: roles are a PostgreSQL setup (SQLite has no roles)", [("database_url",
                                                                                               "sqlite")])
    upgrade_database(ctx.db)
    try:
        done = create_restricted_roles(ctx.db.write_engine, owner=owner, app=app)
    except ValueError as exc:
        raise InputError(f"--owner/--app: {exc}", [("role", "invalid")]) from None
    for line in done:
        console.print(line)
