"""Issue 28's smaller findings, each tried as the report found it: a cursor at the date limits, a change type
nobody defined, a permissive umask, and a withdrawal that lost a race with a rejection."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from models import AuditAction, PolicyViolation, decode_data, events_for
from tests.helpers import standard_request


def _cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.mark.parametrize("raw", ["9999-12-31T23:59:59.999999+00:00|1", "0001-01-01T00:00:00+14:00|1",
                                 "0001-01-01T00:00:00-12:00|7"])
def test_a_cursor_at_the_date_limits_exits_2_naming_it(cli_env, raw):
    result = cli_env("log", "--after", _cursor(raw))
    assert result.exit_code == 2, result.output
    assert "--after: not a cursor printed by a previous page" in result.output
    assert "Traceback" not in result.output


def test_log_refuses_a_change_type_nobody_defined(cli_env):
    result = cli_env("log", "--type", "urgent")
    assert result.exit_code == 2, result.output
    assert "--type: no change type named 'urgent' (emergency, standard, major)" in result.output
    assert cli_env("log", "--type", "standard").exit_code == 0


def test_what_changeflow_writes_is_its_owners_alone_under_umask_000(tmp_path):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHANGEFLOW_", "PREFECT_"))}
    env["CHANGEFLOW_HOME"] = str(home)
    done = subprocess.run([str(Path(sys.executable).parent / "changeflow"), "init"], env=env, capture_output=True,
                          text=True, umask=0o000, timeout=120)
    assert done.returncode == 0, done.stderr
    written = [home, *home.rglob("*")]
    assert len(written) > 8  # the config files, the key pair, the secret, the database
    loose = {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode)) for p in written
             if stat.S_IMODE(p.stat().st_mode) & 0o077}
    assert loose == {}, loose


def test_a_withdrawal_that_lost_the_race_with_a_rejection_is_refused_on_the_record(services):
    from models import Act

    change = services.approvals.request_approval(services.changes.submit(standard_request()).key)
    services.approvals.decide(change.key, approver="alice", decision="reject", comment="not now",
                              code=services.approvals.approval_code_for(change.key, "alice"))
    with pytest.raises(PolicyViolation, match="cancel: "):
        services.amendments.withdraw(change.key, person="grace", reason="no longer needed",
                                     code=services.approvals.approval_code_for(change.key, "grace", Act.withdraw))
    with services.db.read() as session:
        refused = [decode_data(e) for e in events_for(session, change.key)
                   if e.action == AuditAction.cancel_refused.value]
    assert len(refused) == 1 and "rejected" in refused[0]["refusal"], refused
    assert services.changes.get(change.key).state == "rejected"
