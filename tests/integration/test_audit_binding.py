"""Issue 28: the audit trail binds what a report or a gate reads, and its hash cannot be re-split.

The attacker is a database administrator without access to HOME: they can edit any row and lift any guard, but
cannot sign a checkpoint. Each attack runs on SQLite and PostgreSQL and must be named by `audit verify`, by the
compliance report and by `audit verify-bundle` on an export made after the attack."""

from __future__ import annotations

import json

import pytest

from models import HASH_SCHEME, InputError, event_hash, restore_guards, utcnow
from tests.helpers import approve, lift_guards, rewrite_history, standard_request, verify_offline

RESPLIT_NAME = "bob\x1fapproval\x1f\x1fx"


def _history(services) -> dict[str, str]:
    """CHG-000001 approved and failed, CHG-000002 approved and completed, CHG-000003 approved by its team lead
    only, and a freeze."""
    keys = {}
    for name, outcome in (("failed", "failed"), ("completed", "completed")):
        change = services.approvals.request_approval(services.changes.submit(standard_request(title=name)).key)
        approve(services, change.key, "alice")
        approve(services, change.key, "bob")
        for state in ("scheduled", "implementing", "verifying" if outcome == "completed" else None, outcome):
            if state:
                services.changes.transition(change.key, state, actor="ops", reason="test history")
        keys[name] = change.key
    waiting = services.approvals.request_approval(services.changes.submit(standard_request(title="half")).key)
    approve(services, waiting.key, "alice")
    keys["half"] = waiting.key
    now = utcnow()
    services.scheduling.add_window(starts_at=now.replace(year=now.year + 1), ends_at=now.replace(year=now.year + 2),
                                   title="Year-end freeze", freeze=True, actor="dave")
    return keys


def _true(db) -> str:
    return "1" if db.dialect == "sqlite" else "true"


ROW_EDITS = {
    "failure-turned-success": ("UPDATE change_requests SET outcome = 'succeeded' WHERE outcome = 'failed'",
                               "its row says outcome succeeded but its events record failed"),
    "implementation-moved": ("UPDATE change_requests SET implemented_at = created_at WHERE id = 2",
                             "CHG-000002: its row says implemented_at"),
    "end-moved": ("UPDATE change_requests SET ended_at = created_at WHERE id = 2",
                  "CHG-000002: its row says ended_at"),
    "approval-role-changed": ("UPDATE approvals SET role = 'peer_reviewer' WHERE approver = 'alice' AND change_id = 1",
                              "(CHG-000001: approve by alice) says role 'peer_reviewer' where event"),
    "second-row-for-the-missing-role": (
        # (One row per person and round: the forged one goes in another round, which the row check alone let by.)
        "INSERT INTO approvals (change_id, round, approver, role, decision, comment, decided_at) SELECT change_id, "
        "round + 1, approver, 'peer_reviewer', decision, comment, decided_at FROM approvals WHERE change_id = 1 "
        "AND approver = 'alice'",
        "is a second row for a decision the audit trail records once"),
    "freeze-deleted": ("DELETE FROM maintenance_windows WHERE \"freeze\" = {true}",
                       "freeze 1 (Year-end freeze) that event"),
    "freeze-moved": ("UPDATE maintenance_windows SET starts_at = ends_at", "freeze 1 (Year-end freeze) says starts_at"),
}


@pytest.mark.parametrize("edit", list(ROW_EDITS))
def test_a_row_a_report_or_gate_reads_edited_outside_changeflow_is_named_everywhere(services, insider, cli_env,
                                                                                       tmp_path, edit):
    _history(services)
    assert cli_env("audit", "verify").exit_code == 0
    assert cli_env("audit", "checkpoint").exit_code == 0
    statement, named = ROW_EDITS[edit]
    with insider.write_engine.connect() as conn:
        conn.exec_driver_sql(statement.format(true=_true(insider)))
        conn.commit()

    verified = cli_env("audit", "verify")
    assert verified.exit_code == 1 and "audit record:" in verified.output and named in verified.output, \
        verified.output
    compliance = json.loads(cli_env("report", "compliance", "--format", "json").stdout)
    assert any(f["kind"] == "record_not_in_audit_trail" and named in f["detail"] for f in compliance), compliance
    bundle = tmp_path / "bundle.jsonl"
    assert cli_env("audit", "export", bundle, "--since", "2020-01-01T00:00:00Z").exit_code == 0
    offline = verify_offline(bundle)
    assert offline.returncode == 1, offline.stdout + offline.stderr


def test_the_untouched_history_verifies_everywhere(services, cli_env, tmp_path):
    """The other side of the attacks above: every check passes on what changeflow itself wrote."""
    _history(services)
    assert cli_env("audit", "checkpoint").exit_code == 0
    verified = cli_env("audit", "verify")
    assert verified.exit_code == 0, verified.output
    compliance = json.loads(cli_env("report", "compliance", "--format", "json").stdout)
    assert not [f for f in compliance if f["kind"] in ("record_not_in_audit_trail", "audit_chain_broken")]
    bundle = tmp_path / "bundle.jsonl"
    assert cli_env("audit", "export", bundle, "--since", "2020-01-01T00:00:00Z").exit_code == 0
    offline = verify_offline(bundle)
    assert offline.returncode == 0, offline.stdout + offline.stderr


def test_a_truncated_chain_with_its_head_moved_back_fails_the_bundle(services, insider, cli_env, tmp_path):
    _history(services)
    assert cli_env("audit", "checkpoint").exit_code == 0
    with insider.read() as session:
        from sqlalchemy import text
        cut = session.execute(text("SELECT seq, prev_hash FROM audit_events WHERE action = 'approval' "
                                   "ORDER BY seq DESC LIMIT 1")).one()
    with insider.write_engine.connect() as conn:
        lift_guards(conn, insider.dialect)
        conn.exec_driver_sql(f"DELETE FROM audit_events WHERE seq >= {cut[0]}")
        conn.exec_driver_sql(f"UPDATE audit_head SET seq = {cut[0] - 1}, hash = '{cut[1]}' WHERE id = 1")
        conn.commit()
    assert cli_env("audit", "verify").exit_code == 1
    bundle = tmp_path / "bundle.jsonl"
    assert cli_env("audit", "export", bundle, "--since", "2020-01-01T00:00:00Z").exit_code == 0
    offline = verify_offline(bundle)
    assert offline.returncode == 1 and "were deleted" in offline.stdout + offline.stderr, \
        offline.stdout + offline.stderr


# ---- the hash encoding ----------------------------------------------------------------------------------------

def test_the_encoding_splits_one_way_only():
    """Under scheme 1 the refusal of a typed name and a forged approval hashed alike; under scheme 2 they do not."""
    at = "2026-12-06T10:00:00.000000Z"
    planted = (7, "CHG-000001", at, RESPLIT_NAME, "approval_refused", None, None, "{}", "0" * 64)
    resplit = (7, "CHG-000001", at, "bob", "approval", None, "x\x1fapproval_refused\x1f\x1f", "{}", "0" * 64)
    assert event_hash(*planted, scheme=1) == event_hash(*resplit, scheme=1)
    assert event_hash(*planted) != event_hash(*resplit)
    # None and "" are different values, and so are different hashes.
    assert event_hash(7, None, at, "a", "b", None, None, "{}", "0" * 64) != \
        event_hash(7, "", at, "a", "b", "", "", "{}", "0" * 64)


def test_a_chain_hashed_before_the_switch_verifies_and_continues_under_the_new_scheme(services, insider, cli_env):
    keys = _history(services)
    rewrite_history(insider, scheme=1)  # as changeflow wrote it before issue 28
    restore_guards(insider.write_engine)
    before = cli_env("audit", "verify")
    assert before.exit_code == 0, before.output
    approve(services, keys["half"], "bob")  # new events, under the current scheme
    after = cli_env("audit", "verify")
    assert after.exit_code == 0, after.output
    assert "events 1-" in after.output and "hashed under scheme 1" in after.output, after.output
    assert f"scheme {HASH_SCHEME}" in after.output, after.output


def test_the_resplit_attack_on_a_chain_from_before_the_switch_is_caught(services, insider, cli_env, tmp_path):
    """The attack of issue 28, on a chain whose planted refusal was hashed under scheme 1 (a name with \\x1f was
    accepted then): the administrator moves the bytes so the refusal reads as bob's approval, and adds his row."""
    keys = _history(services)
    with insider.write_engine.connect() as conn:  # the refusal as the old code recorded it, typed name and all
        lift_guards(conn, insider.dialect)
        conn.exec_driver_sql(
            "INSERT INTO audit_events (seq, change_key, occurred_at, actor, action, data, prev_hash, hash) "
            f"SELECT seq + 1, change_key, occurred_at, '{RESPLIT_NAME}', 'approval_refused', '{{}}', 'x', 'x' "
            "FROM audit_events WHERE seq = (SELECT MAX(seq) FROM audit_events)")
        conn.commit()
    rewrite_history(insider, scheme=1, fools_the_chain=False)
    restore_guards(insider.write_engine)
    planted = cli_env("audit", "verify")  # scheme 1 accepted the name; scheme 2's verify names the event at once
    assert planted.exit_code == 1 and "a field holds its separator" in planted.output, planted.output
    with insider.write_engine.connect() as conn:
        lift_guards(conn, insider.dialect)
        conn.exec_driver_sql(f"UPDATE audit_events SET actor = 'bob', action = 'approval', from_state = '', "
                             f"to_state = 'x\x1fapproval_refused\x1f\x1f' WHERE actor = '{RESPLIT_NAME}'")
        conn.exec_driver_sql(
            "INSERT INTO approvals (change_id, round, approver, role, decision, comment, decided_at) "
            "SELECT change_id, round, 'bob', 'peer_reviewer', 'approve', '', decided_at FROM approvals "
            "WHERE change_id = 3")
        conn.commit()
    restore_guards(insider.write_engine)
    result = cli_env("audit", "verify")
    assert result.exit_code == 1, result.output
    assert "is hashed under scheme 1 and a field holds its separator" in result.output, result.output
    compliance = json.loads(cli_env("report", "compliance", "--format", "json").stdout)
    assert any(f["kind"] == "audit_chain_broken" for f in compliance), compliance
    bundle = tmp_path / "bundle.jsonl"
    assert cli_env("audit", "export", bundle, "--since", "2020-01-01T00:00:00Z").exit_code == 0
    offline = verify_offline(bundle)
    assert offline.returncode == 1 and "holds its separator" in offline.stdout + offline.stderr
    assert keys["half"] == "CHG-000003"


# ---- names with control characters: refused at every entry, nothing written ----------------------------------

def test_a_name_with_a_control_character_is_refused_by_every_service_and_nothing_is_written(services):
    change = services.approvals.request_approval(services.changes.submit(standard_request()).key)
    with services.db.read() as session:
        from sqlalchemy import func, select

        from models import AuditEvent
        events_before = session.execute(select(func.count()).select_from(AuditEvent)).scalar_one()
    attempts = {
        "approver": lambda: services.approvals.decide(change.key, approver=RESPLIT_NAME, decision="approve",
                                                      code="X"),
        "requester": lambda: services.approvals.confirm_filing(change.key, person="grace\x00", code="X"),
        "person": lambda: services.amendments.withdraw(change.key, person="bob\n", code="X", reason="why"),
        "operator": lambda: services.automation_tokens.issue("pipeline", operator="dave\x1b[2J",
                                                                        services=["payments"]),
    }
    for field, attempt in attempts.items():
        with pytest.raises(InputError) as refused:
            attempt()
        assert refused.value.problems[0].field == field
        assert "control character" in str(refused.value)
    with services.db.read() as session:
        assert session.execute(select(func.count()).select_from(AuditEvent)).scalar_one() == events_before


def test_the_cli_refuses_a_control_character_in_a_name_with_exit_2(services, cli_env):
    change = services.approvals.request_approval(services.changes.submit(standard_request()).key)
    result = cli_env("approve", change.key, "--as", RESPLIT_NAME, "--code", "K7Q2-M9XA-3BTD")
    assert result.exit_code == 2, result.output
    assert "approver: contains a control character (U+001F)" in result.output
    assert "Traceback" not in result.output


def test_a_control_character_can_never_reach_the_chain(services):
    """The last line behind the services: the storage refuses to hash such a name at all."""
    from models import append_event

    with pytest.raises(ValueError, match="actor: contains a control character"):
        with services.db.write() as session:
            append_event(session, actor="bob\x1fapproval", action="approval_refused")

