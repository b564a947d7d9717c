"""The one database session factory: SQLite by default, PostgreSQL by URL.

SQLite: WAL, foreign keys, a busy timeout, and write transactions that take the lock up front
(BEGIN IMMEDIATE) so concurrent writers queue instead of failing half-way with `database is locked`.
"""

from __future__ import annotations

import os

import contextlib
import threading
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from ..domain import DatabaseBusy
from ..config import Settings, normalise_database_url


def _is_lock_error(exc: BaseException) -> bool:
    message = str(exc).lower()
    return "database is locked" in message or "database is busy" in message or "lock timeout" in message


class Database:
    """Engines and sessions for one database URL. `write()` for transactions that change data, `read()` otherwise."""

    def __init__(self, url: str, *, busy_timeout_s: float = 10.0, connect_args: dict | None = None):
        self.url = normalise_database_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        self._busy_timeout_s = busy_timeout_s
        self._migrated = False
        self._migrate_lock = threading.Lock()
        if self.is_sqlite:
            self._prepare_sqlite_dir()
            self.write_engine = self._sqlite_engine(immediate=True)
            self.read_engine = self._sqlite_engine(immediate=False)
        else:
            self.write_engine = create_engine(
                self.url, pool_pre_ping=True, pool_size=10, max_overflow=20, connect_args=connect_args or {}
            )
            self.read_engine = self.write_engine

    @classmethod
    def from_settings(cls, settings: Settings) -> "Database":
        return cls(settings.resolved_database_url, busy_timeout_s=settings.sqlite_busy_timeout_s)

    @property
    def dialect(self) -> str:
        return self.write_engine.dialect.name

    def _prepare_sqlite_dir(self) -> None:
        """The database holds approval codes in its outbox: its folder is private to the owner (0700 when we
        create it) and the file is created 0600 whatever the umask (SQLite gives its -wal and -shm files the
        main file's mode)."""
        path = self.url.split("///", 1)[-1]
        if path and path != ":memory:":
            file = Path(path).expanduser()
            if not file.parent.exists():
                file.parent.mkdir(parents=True, mode=0o700)
                file.parent.chmod(0o700)  # (mkdir's mode is filtered by the umask)
            if not file.exists():
                os.close(os.open(file, os.O_WRONLY | os.O_CREAT, 0o600))
                file.chmod(0o600)

    def _sqlite_engine(self, *, immediate: bool) -> Engine:
        engine = create_engine(
            self.url,
            connect_args={"timeout": self._busy_timeout_s, "check_same_thread": False},
            pool_size=10,
            max_overflow=20,
        )
        timeout_ms = int(self._busy_timeout_s * 1000)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection, _record):
            # Hand transaction control to SQLAlchemy's "begin" event below (pysqlite's own is deferred).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={timeout_ms}")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        begin_sql = "BEGIN IMMEDIATE" if immediate else "BEGIN"

        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            conn.exec_driver_sql(begin_sql)

        return engine

    def migrate(self) -> None:
        """Apply pending migrations once per process (every command that needs the database calls this)."""
        with self._migrate_lock:
            if self._migrated:
                return
            from ._migrate import upgrade

            upgrade(self)
            self._migrated = True

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction: commits on success, rolls back on any error; lock waits become DatabaseBusy."""
        self.migrate()
        try:
            with Session(self.write_engine, expire_on_commit=False) as session:
                with session.begin():
                    yield session
        except OperationalError as exc:
            if _is_lock_error(exc):
                raise DatabaseBusy(
                    f"the database stayed locked for {self._busy_timeout_s:.0f} s; nothing was written, try again"
                ) from exc
            raise

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        self.migrate()
        with Session(self.read_engine, expire_on_commit=False) as session:
            yield session

    def dispose(self) -> None:
        self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            self.read_engine.dispose()
