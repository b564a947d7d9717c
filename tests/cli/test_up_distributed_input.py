"""`changeflow up --distributed` checks every piece of the layout before it starts anything: what is missing or
wrong is named (exit 2), never a traceback, and nothing is written (HOME is not even created)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import POSTGRES_URL

REDIS = "redis://127.0.0.1:6379/0"


def up_distributed(tmp_path: Path, *args: str, records: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CHANGEFLOW_"))}
    env.update(CHANGEFLOW_HOME=str(tmp_path / "home"), PREFECT_HOME=str(tmp_path / "prefect-client"))
    if records:
        env["CHANGEFLOW_DATABASE_URL"] = records
    changeflow = str(Path(sys.executable).parent / "changeflow")
    return subprocess.run([changeflow, "up", "--distributed", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def assert_refused(result: subprocess.CompletedProcess, tmp_path: Path, *messages: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    for message in messages:
        assert message in output, output
    assert "Traceback" not in output
    assert not (tmp_path / "home").exists(), "something was written"


def test_without_the_urls_both_are_named(tmp_path):
    assert_refused(up_distributed(tmp_path), tmp_path, "--prefect-database-url: missing",
                   "--redis-url: missing")


def test_change_records_on_sqlite_are_refused(tmp_path):
    result = up_distributed(tmp_path, "--prefect-database-url", "postgresql://nobody@127.0.0.1:1/prefect",
                            "--redis-url", "redis://127.0.0.1:1/0")
    assert_refused(result, tmp_path, "CHANGEFLOW_DATABASE_URL: the change records need PostgreSQL",
                   "--prefect-database-url: cannot connect", "--redis-url: Redis does not answer at redis://127.0.0.1:1/0")


def test_a_redis_url_that_is_not_one_is_named(tmp_path):
    result = up_distributed(tmp_path, "--prefect-database-url", "postgresql://x@127.0.0.1/p", "--redis-url",
                            "http://127.0.0.1:6379")
    assert_refused(result, tmp_path, "--redis-url: 'http://127.0.0.1:6379' is not a Redis URL")


@pytest.mark.skipif(not POSTGRES_URL, reason="needs CHANGEFLOW_TEST_POSTGRES_URL")
def test_prefect_sharing_the_change_records_database_is_refused(tmp_path):
    result = up_distributed(tmp_path, "--prefect-database-url", POSTGRES_URL, "--redis-url", REDIS,
                            records=POSTGRES_URL)
    assert_refused(result, tmp_path, "--prefect-database-url: must be another database than the change records")


@pytest.mark.skipif(not POSTGRES_URL, reason="needs CHANGEFLOW_TEST_POSTGRES_URL")
def test_a_prefect_database_that_does_not_exist_is_named(tmp_path):
    base = POSTGRES_URL.rsplit("/", 1)[0]
    result = up_distributed(tmp_path, "--prefect-database-url", f"{base}/no_such_prefect_db", "--redis-url", REDIS,
                            records=POSTGRES_URL)
    assert_refused(result, tmp_path, "--prefect-database-url: cannot connect",
                   'database "no_such_prefect_db" does not exist')
