"""Approval codes live in the database's outbox and the secret beside it: under any umask (000 included) the
HOME that `changeflow init` creates is 0700 and the database, its WAL and the secret are 0600 (issue 17)."""

from __future__ import annotations

import os
import stat

from typer.testing import CliRunner


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_init_under_umask_000_creates_a_private_home_database_and_secret(tmp_path, monkeypatch):
    from cli import app

    home = tmp_path / "home"
    monkeypatch.setenv("CHANGEFLOW_HOME", str(home))
    monkeypatch.delenv("CHANGEFLOW_SECRET", raising=False)
    monkeypatch.delenv("CHANGEFLOW_DATABASE_URL", raising=False)
    previous = os.umask(0)
    try:
        runner = CliRunner()
        assert runner.invoke(app, ["init"]).exit_code == 0
        request = tmp_path / "r.yaml"
        request.write_text("type: standard\ntitle: t\nservice: payments\nrequester: grace\nrollback_plan: r\n"
                           "test_evidence: staging run green\n"
                           "risk: {users_affected: few, complexity: low, backout_difficulty: easy, "
                           "tested_in_staging: true, touches_data: false}\n")
        assert runner.invoke(app, ["submit", "--local", str(request)]).exit_code == 0
    finally:
        os.umask(previous)
    assert mode(home) == 0o700
    assert mode(home / "secret") == 0o600
    assert mode(home / "changeflow.db") == 0o600
    wal = home / "changeflow.db-wal"
    assert not wal.exists() or mode(wal) == 0o600


def test_init_tightens_a_home_others_can_enter(tmp_path, monkeypatch):
    from cli import app

    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o777)
    monkeypatch.setenv("CHANGEFLOW_HOME", str(home))
    monkeypatch.setenv("CHANGEFLOW_SECRET", "s")
    monkeypatch.delenv("CHANGEFLOW_DATABASE_URL", raising=False)
    assert CliRunner().invoke(app, ["init"]).exit_code == 0
    assert mode(home) == 0o700


def test_a_second_shell_finds_the_stack_that_up_started_and_never_starts_a_temporary_server(tmp_path):
    from cli._stack_file import connect_to_running_stack, remove_stack_file, write_stack_file

    written = write_stack_file(tmp_path, api_url="http://127.0.0.1:4300/api", ui_url="http://127.0.0.1:4300")
    assert mode(written) == 0o600
    environ: dict[str, str] = {}
    assert connect_to_running_stack(tmp_path, environ) == "http://127.0.0.1:4300/api"
    assert environ["PREFECT_API_URL"] == "http://127.0.0.1:4300/api"
    assert environ["CHANGEFLOW_PREFECT_UI_URL"] == "http://127.0.0.1:4300"  # links name the right port
    assert environ["PREFECT_SERVER_ALLOW_EPHEMERAL_MODE"] == "false"
    # An explicit PREFECT_API_URL wins; with no stack and no URL nothing is invented.
    assert connect_to_running_stack(tmp_path, {"PREFECT_API_URL": "http://elsewhere/api"}) == "http://elsewhere/api"
    remove_stack_file(tmp_path)
    bare: dict[str, str] = {}
    assert connect_to_running_stack(tmp_path, bare) is None and "PREFECT_API_URL" not in bare
    # A file left behind by an `up` that was killed names a dead process: ignored.
    import json

    (tmp_path / "stack.json").write_text(json.dumps({"api_url": "http://127.0.0.1:1/api", "ui_url": "x",
                                                     "pid": 2**22 + 12345}))
    stale: dict[str, str] = {}
    assert connect_to_running_stack(tmp_path, stale) is None and "PREFECT_API_URL" not in stale
