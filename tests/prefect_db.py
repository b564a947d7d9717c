"""A test stack's Prefect server starts from a copy of a database a server has already created, not from nothing.

Why: a Prefect server's first start creates its SQLite database (migrations, block types): 9 CPU-s and 10 s of a
start of 5 CPU-s and 5 s otherwise (measured side by side, 2026-12-06), and the suite starts about 25 servers
on two cores. The first stack of the suite keeps its database, as its server left it at its first health check,
as the template of every later one (one file per Prefect version in the temporary folder, written atomically).
A stack restarted on its own database (a kill test) keeps its database, of course.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from contextlib import closing
from importlib.metadata import version
from pathlib import Path

from cli.dev import Stack, start_server

# (Not `import prefect`: Prefect reads its settings when first imported, and tests.prefect_env sets them first.)
TEMPLATE = Path(tempfile.gettempdir()) / f"changeflow-prefect-{version('prefect')}-fresh.db"


def start_seeded_server(stack: Stack, port: int, logs: Path) -> None:
    """`start_server`, its PREFECT_HOME given the template first (once it exists)."""
    database = Path(stack.env["PREFECT_HOME"]) / "prefect.db"
    seeded = TEMPLATE.exists() and not database.exists()
    if seeded:
        database.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(TEMPLATE, database)
    start_server(stack, port, logs)
    if not seeded and not TEMPLATE.exists() and database.exists():
        _keep_as_template(database)


def _keep_as_template(database: Path) -> None:
    # SQLite's online backup: a consistent copy of a database its server has open (WAL included).
    partial = TEMPLATE.with_suffix(f".{os.getpid()}.part")
    with closing(sqlite3.connect(database)) as source, closing(sqlite3.connect(partial)) as copy:
        source.backup(copy)
    os.replace(partial, TEMPLATE)  # atomic: a stack starting meanwhile sees no file or a whole one
