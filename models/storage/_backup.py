"""Consistent copies of the change database (issue 31): SQLite's online backup API, or `pg_dump` of changeflow's
schema; loaded back into a database, or into a throw-away one to prove the copy before anyone relies on it."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote

from sqlalchemy import create_engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.engine import make_url

from ..domain import ChangeflowError
from ._db import Database

SQLITE_COPY = "changeflow.db"
POSTGRES_COPY = "changeflow.dump"


class BackupError(ChangeflowError):
    """A copy could not be made or loaded (the tool's own words attached): exit 1."""


def copy_file_name(db: Database) -> str:
    return SQLITE_COPY if db.is_sqlite else POSTGRES_COPY


def copy_database(db: Database, folder: Path) -> Path:
    """Write a consistent copy of `db` into `folder` while it stays in use; returns the file."""
    target = folder / copy_file_name(db)
    if db.is_sqlite:
        # The online backup API copies page by page under SQLite's own locking: a consistent snapshot even while
        # the worker and the endpoint write (a file copy could catch a half-written transaction).
        source = sqlite3.connect(_sqlite_path(db.url))
        copy = sqlite3.connect(target)
        try:
            with copy:
                source.backup(copy)
        finally:
            copy.close()
            source.close()
    else:
        _run(["pg_dump", "--format=custom", "--no-owner", "--no-privileges", f"--schema={schema_of(db.url)}",
              f"--file={target}", libpq_url(db.url)])
    target.chmod(0o600)
    return target


def load_copy(copy: Path, db: Database) -> None:
    """Replace what `db` holds with the copy (SQLite: the file, under the backup API; PostgreSQL: the schema's
    objects, dropped and made again by `pg_restore --clean`)."""
    if db.is_sqlite:
        db.dispose()
        source = sqlite3.connect(copy)
        target = sqlite3.connect(_sqlite_path(db.url))
        try:
            with target:
                source.backup(target)
        finally:
            target.close()
            source.close()
    else:
        db.dispose()
        _run(["pg_restore", "--clean", "--if-exists", "--no-owner", "--no-privileges", "--single-transaction",
              f"--dbname={libpq_url(db.url, with_options=False)}", str(copy)])


@contextmanager
def scratch_copy(copy: Path, like: Database) -> Iterator[Database]:
    """The copy loaded into a throw-away database of the same kind as `like` (a temporary SQLite file, or a new
    PostgreSQL database on the same server), dropped afterwards."""
    if like.is_sqlite:
        with tempfile.TemporaryDirectory(prefix="changeflow-restore-") as folder:
            path = Path(folder) / SQLITE_COPY
            shutil.copyfile(copy, path)
            scratch = Database(f"sqlite:///{path}")
            try:
                yield scratch
            finally:
                scratch.dispose()
        return
    name = f"changeflow_restore_{uuid.uuid4().hex[:12]}"
    url = make_url(like.url)
    admin = create_engine(url.set(query={}), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except SQLAlchemyError as exc:
        admin.dispose()
        raise BackupError("a backup is proved in a throw-away database, and this role may not create one: run it "
                          f"as the schema's owner or a role with CREATEDB ({str(exc.orig or exc).strip()})") from None
    try:
        scratch_url = url.set(database=name)
        _run(["pg_restore", "--no-owner", "--no-privileges", "--single-transaction",
              f"--dbname={libpq_url(scratch_url.render_as_string(hide_password=False), with_options=False)}",
              str(copy)])
        scratch = Database(scratch_url.render_as_string(hide_password=False))
        try:
            yield scratch
        finally:
            scratch.dispose()
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def schema_of(url: str) -> str:
    """The schema changeflow's tables live in: the URL's `options=-csearch_path=...`, else public."""
    options = unquote(str(make_url(url).query.get("options", "")))
    for option in options.split():
        if option.startswith("-csearch_path="):
            return option.split("=", 1)[1].split(",")[0].strip('"')
    return "public"


def libpq_url(url: str, *, with_options: bool = True) -> str:
    """The SQLAlchemy URL as the PostgreSQL tools take it (no driver name; the search path kept or not)."""
    parsed = make_url(url).set(drivername="postgresql")
    if not with_options:
        parsed = parsed.set(query={})
    return parsed.render_as_string(hide_password=False)


def _sqlite_path(url: str) -> str:
    return url.split("///", 1)[-1]


def _run(command: list[str]) -> None:
    if shutil.which(command[0]) is None:
        raise BackupError(f"{command[0]} is not installed (apt-get install postgresql-client)")
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise BackupError(f"{command[0]} failed: {(done.stderr or done.stdout).strip()[-2000:]}")
