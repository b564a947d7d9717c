"""Signed checkpoints catch what the hash chain alone cannot: an insider with write access to the database who
drops the guards, rewrites events and recomputes every later hash and `audit_head` (issue 14). Each attack runs
on SQLite and PostgreSQL; the checkpoint key and file live in HOME, out of the database's reach."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from models import Act, AuditAnchors, AuditEvent, PolicyViolation, Settings, event_hash, verify_chain
from tests.helpers import approve, lift_guards, rewrite_history, standard_request, verify_offline


def _history(services, changes: int = 2) -> None:
    for _ in range(changes):
        change = services.approvals.request_approval(services.changes.submit(standard_request()).key)
        approve(services, change.key, "alice")
        approve(services, change.key, "bob")


ATTACKS = {
    "rewrite-an-approver": ["UPDATE audit_events SET actor = 'mallory' WHERE seq = (SELECT MIN(seq) FROM "
                            "audit_events WHERE action = 'approval')"],
    "delete-a-refusal-and-renumber": ["DELETE FROM audit_events WHERE seq = (SELECT MIN(seq) FROM audit_events "
                                      "WHERE action = 'approval_refused')"],
    "insert-a-forged-approval": ["UPDATE audit_events SET seq = seq + 1000 WHERE seq >= 5",
                                 "INSERT INTO audit_events (seq, change_key, occurred_at, actor, action, data, "
                                 "prev_hash, hash) SELECT 5, change_key, occurred_at, 'erin', 'approval', '{}', '', '' "
                                 "FROM audit_events WHERE seq = 4"],
    "delete-the-last-event": ["DELETE FROM audit_events WHERE seq = (SELECT MAX(seq) FROM audit_events)"],
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_rechained_rewrite_older_than_the_last_checkpoint_is_caught(services, insider, cli_env, attack):
    _history(services)
    # A self-approval attempt: refused and recorded (the refusal an insider would like to erase).
    change = services.approvals.request_approval(services.changes.submit(standard_request()).key)
    with pytest.raises(PolicyViolation, match="self-approval"):
        approve(services, change.key, change.requester)
    signed = cli_env("audit", "checkpoint")
    assert signed.exit_code == 0 and "checkpoint signed" in signed.output, signed.output
    assert cli_env("audit", "verify").exit_code == 0

    rewrite_history(insider, *ATTACKS[attack])
    result = cli_env("audit", "verify")
    assert result.exit_code == 1, result.output
    assert "audit chain intact" in result.output  # the chain alone is fooled ...
    assert "audit checkpoint:" in result.output  # ... the signed checkpoint is not
    assert ("was rewritten after the checkpoint" in result.output) or ("were deleted" in result.output)


def test_events_after_the_last_checkpoint_are_reported_as_not_yet_anchored(services, cli_env):
    _history(services, changes=1)
    cli_env("audit", "checkpoint")
    _history(services, changes=1)
    result = cli_env("audit", "verify")
    assert result.exit_code == 0, result.output
    assert "1 signed checkpoints hold" in result.output and "events since are not anchored yet" in result.output


def test_an_edited_checkpoint_file_fails_its_signature(services, insider, cli_env):
    _history(services, changes=1)
    cli_env("audit", "checkpoint")
    settings = Settings()
    line = json.loads(settings.checkpoint_file.read_text())
    rewrite_history(insider, "UPDATE audit_events SET actor = 'mallory' WHERE seq = 2")
    with services.db.read() as session:
        line["hash"] = session.execute(select(AuditEvent.hash).where(AuditEvent.seq == line["seq"])).scalar_one()
    settings.checkpoint_file.write_text(json.dumps(line) + "\n")  # the insider also "fixes" the checkpoint
    result = cli_env("audit", "verify")
    assert result.exit_code == 1
    assert "has no valid signature" in result.output


def test_a_checkpoint_file_rewritten_without_the_other_anchor_is_caught(services, insider, cli_env):
    """The file and the Prefect artifact hold the same signed checkpoints: losing one from the file (the only
    rewrite possible without the key) is caught by the other, and a rewrite of the chain by either."""
    _history(services, changes=1)
    cli_env("audit", "checkpoint")
    settings = Settings()
    anchors = AuditAnchors.from_settings(settings, services.db)
    published = anchors.log.read()[0]  # what the sweep also published as artifacts
    settings.checkpoint_file.write_text("")  # the file is emptied ...
    rewrite_history(insider, "UPDATE audit_events SET actor = 'mallory' WHERE seq = 2")
    with services.db.read() as session:
        chain = verify_chain(session)
    report = anchors.verify(chain, elsewhere=published)
    assert not report.ok
    assert any("missing from audit-checkpoints.jsonl" in p for p in report.problems)
    assert any("was rewritten after the checkpoint" in p for p in report.problems)
    # ... and the other way round: the artifacts gone, the file still holds.
    anchors.log.append(published[0])
    report = anchors.verify(chain, elsewhere=[])
    assert any("was rewritten after the checkpoint" in p for p in report.problems)


def test_checkpoints_fall_due_by_count_and_by_time(services, tmp_path):
    from datetime import timedelta

    from models import CheckpointLog, utcnow

    now = [utcnow()]
    settings = Settings(home=tmp_path / "anchors")
    settings.ensure_signing_key()
    anchors = AuditAnchors(services.db, CheckpointLog(settings.checkpoint_file), settings.signing_key_file,
                           settings.public_key_file, every_events=20, every=timedelta(minutes=5),
                           clock=lambda: now[0])
    _history(services, changes=1)
    assert anchors.checkpoint() is not None  # the first one is due at once
    assert anchors.checkpoint() is None  # nothing new
    _history(services, changes=1)  # 6 events: neither 20 events nor 5 minutes
    assert anchors.checkpoint() is None
    now[0] += timedelta(minutes=5)
    assert anchors.checkpoint() is not None
    _history(services, changes=4)  # 24 events
    assert anchors.checkpoint() is not None
    assert len(anchors.log.read()[0]) == 3


ROW_ATTACKS = {
    "close-a-change": (["UPDATE change_requests SET state = 'closed' WHERE id = 1"],
                       "its row says state closed but its last recorded transition"),
    "requester-becomes-the-approver": (["UPDATE change_requests SET requester = 'alice' WHERE id = 1"],
                                       "its row names requester alice but its filing event records grace"),
    "forged-approval-row": (["INSERT INTO approvals (change_id, round, approver, role, decision, comment, decided_at) "
                             "SELECT id, 1, 'erin', 'team_lead', 'approve', '', created_at FROM change_requests "
                             "WHERE id = 3"], "(CHG-000003: approve by erin, round 1) has no decision event"),
    "rewrite-the-approved-plan": (["UPDATE change_requests SET implementation_plan = 'drop the old tables' "
                                   "WHERE id = 1"], "change CHG-000001: its content (type, title, service, dates"),
    "move-the-date-out-of-the-freeze": (["UPDATE change_requests SET planned_start = created_at WHERE id = 2"],
                                        "change CHG-000002: its content (type, title, service, dates"),
    # Issue 32: the environment decides windows, notice and approvers; a change relabelled to one with fewer, or
    # its staging proof swapped, is content edited after approval.
    "production-change-relabelled-development": (["UPDATE change_requests SET environment = 'development' "
                                                  "WHERE id = 1"], "change CHG-000001: its content (type, title"),
    "environment-erased": (["UPDATE change_requests SET environment = NULL WHERE id = 2"],
                           "change CHG-000002: its content (type, title"),
    "release-swapped": (["UPDATE change_requests SET release = '9.9', promoted_from = 'CHG-000002' WHERE id = 1"],
                        "change CHG-000001: its content (type, title"),
    "delete-a-rejection-and-approve": (["DELETE FROM approvals WHERE decision = 'reject'",
                                        "UPDATE change_requests SET state = 'approved' WHERE id = 3"],
                                       "rejection of CHG-000003 by alice, but its approvals row is gone"),
}


@pytest.mark.parametrize("attack", list(ROW_ATTACKS))
def test_change_and_approval_rows_edited_outside_changeflow_are_caught(services, insider, cli_env, attack):
    _history(services)  # CHG-000001 and -000002 approved
    rejected = services.approvals.request_approval(services.changes.submit(standard_request()).key)
    services.approvals.decide(rejected.key, approver="alice", decision="reject", comment="not now",
                              code=services.approvals.approval_code_for(rejected.key, "alice"))
    assert cli_env("audit", "verify").exit_code == 0
    statements, named = ROW_ATTACKS[attack]
    with insider.write_engine.connect() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)
        conn.commit()
    result = cli_env("audit", "verify")
    assert result.exit_code == 1, result.output
    assert "audit record:" in result.output and named in result.output, result.output
    # Compliance does not take the edited rows of the changes in its range on trust either. (The range is
    # the changes implemented in it: mark them implemented, a column the reconciliation does not look at.)
    with insider.write_engine.connect() as conn:
        conn.exec_driver_sql("UPDATE change_requests SET implemented_at = created_at")
        conn.commit()
    report = cli_env("report", "compliance", "--format", "json")
    assert "record_not_in_audit_trail" in report.output, report.output


def _checked_and_measured(services) -> str:
    """A change whose pre-checklist verdict and first canary step's decision are on the record."""
    from models import ItemOutcome, ManualItem, phase_verdict

    change = services.approvals.request_approval(services.changes.submit(standard_request()).key)
    items = [ManualItem(id="backup-taken", title="Backup taken"), ManualItem(id="on-call-told", title="On call told")]
    outcomes = [ItemOutcome(item_id="backup-taken", passed=False, required=True, detail="no backup"),
                ItemOutcome(item_id="on-call-told", passed=True, required=True)]
    for item, outcome in zip(items, outcomes):
        services.checklists.record_check(change.key, phase="pre", step=0, item=item, outcome=outcome)
    services.checklists.record_phase(change.key, phase_verdict("pre", outcomes), step=0)
    rows = [{"step": 1, "weight": 10, "bake": "b1", "metric": "error_rate", "version": version, "value": value,
             "threshold": 0.05, "operator": "<"} for version, value in (("canary", 0.31), ("stable", 0.01))]
    services.canary.record_measurements(change.key, rows)
    services.canary.record_decision(change.key, step=1, bake="b1", decision={"action": "rollback"})
    return change.key


BOUND_ROW_ATTACKS = {
    "failed-check-turned-passed": (["UPDATE checklist_results SET passed = {true}, detail = 'ok' "
                                    "WHERE item_id = 'backup-taken'"],
                                   "checklist result CHG-000001 pre/0 item backup-taken differs from what event"),
    "failed-check-deleted": (["DELETE FROM checklist_results WHERE item_id = 'backup-taken'"],
                             "checklist result CHG-000001 pre/0 item backup-taken that event"),
    "check-added-after-the-verdict": (["INSERT INTO checklist_results (change_key, phase, step, item_id, title, kind, "
                                       "required, passed, detail, evidence, actor, recorded_at) SELECT change_key, "
                                       "phase, step, 'extra', title, kind, required, passed, detail, evidence, actor, "
                                       "recorded_at FROM checklist_results WHERE item_id = 'on-call-told'"],
                                      "item extra was added after event"),
    "canary-measurement-softened": (["UPDATE canary_measurements SET value = 0.01 WHERE version = 'canary'"],
                                    "canary measurement CHG-000001 step 1 bake b1 row 1 differs from what event"),
    "canary-measurement-deleted": (["DELETE FROM canary_measurements WHERE version = 'canary'"],
                                   "canary measurement CHG-000001 step 1 bake b1 row 1 that event"),
}


@pytest.mark.parametrize("attack", list(BOUND_ROW_ATTACKS))
def test_checklist_results_and_canary_measurements_edited_after_their_decision_are_caught(services, insider,
                                                                                           cli_env, attack):
    _checked_and_measured(services)
    intact = cli_env("audit", "verify")
    assert intact.exit_code == 0, intact.output
    statements, named = BOUND_ROW_ATTACKS[attack]
    true = "1" if insider.dialect == "sqlite" else "true"
    with insider.write_engine.connect() as conn:
        if insider.dialect == "sqlite":  # the measurements' append-only guards, lifted by the insider
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS canary_measurements_no_update")
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS canary_measurements_no_delete")
        else:
            conn.exec_driver_sql("ALTER TABLE canary_measurements DISABLE TRIGGER USER")
        for statement in statements:
            conn.exec_driver_sql(statement.format(true=true))
        conn.commit()
    result = cli_env("audit", "verify")
    assert result.exit_code == 1, result.output
    assert "audit record:" in result.output and named in result.output, result.output


def test_a_phase_still_running_is_not_yet_bound_and_its_digests_stay_out_of_views(services, cli_env):
    key = _checked_and_measured(services)
    assert services.canary.decisions(key) == {1: {"step": 1, "bake": "b1", "action": "rollback"}}
    assert all("rows" not in step for step in services.changes.view(key).canary_steps)
    # A result of a phase with no verdict yet (the run is still waiting for a person) is nobody's to compare.
    from models import ItemOutcome, ManualItem

    services.checklists.record_check(key, phase="post", step=0, item=ManualItem(id="smoke", title="Smoke"),
                                     outcome=ItemOutcome(item_id="smoke", passed=True, required=True))
    assert cli_env("audit", "verify").exit_code == 0


def test_an_amended_change_verifies_and_an_edit_after_the_amendment_is_caught(services, insider, cli_env):
    change = services.approvals.request_approval(services.changes.submit(standard_request()).key)
    services.amendments.amend(change.key, {"implementation_plan": "deploy 2.5"}, person="grace",
                              code=services.approvals.approval_code_for(change.key, "grace", Act.amend),
                              reason="2.4 was withdrawn")
    assert cli_env("audit", "verify").exit_code == 0
    with insider.write_engine.connect() as conn:
        conn.exec_driver_sql("UPDATE change_requests SET implementation_plan = 'deploy 2.4' WHERE id = 1")
        conn.commit()
    result = cli_env("audit", "verify")
    assert result.exit_code == 1 and "differs from what event" in result.output, result.output


def test_incremental_verification_starts_at_the_last_signed_checkpoint(services, insider, cli_env):
    _history(services)
    cli_env("audit", "checkpoint")
    _history(services, changes=1)
    quick = cli_env("audit", "verify", "--incremental")
    assert quick.exit_code == 0 and "recomputed after the checkpoint of event 12" in quick.output, quick.output
    report = cli_env("report", "compliance", "--format", "json")
    assert report.exit_code == 0 and "audit_chain_broken" not in report.output
    # A re-chained rewrite changes the hash at the checkpoint: the incremental form catches it too.
    rewrite_history(insider, "UPDATE audit_events SET actor = 'mallory' WHERE seq = 4")
    quick = cli_env("audit", "verify", "--incremental")
    assert quick.exit_code == 1
    assert "audit chain broken at event 12: event 12 no longer carries the hash of its signed checkpoint" \
        in quick.output, quick.output
    assert "audit_chain_broken" in cli_env("report", "compliance", "--format", "json").output


def test_an_edit_that_leaves_the_hashes_alone_is_caught_by_the_full_verification_only(services, insider, cli_env,
                                                                                       monkeypatch):
    """The documented limit of --incremental: it trusts the prefix it does not recompute."""
    _history(services)
    cli_env("audit", "checkpoint")
    with insider.write_engine.connect() as conn:
        lift_guards(conn, insider.dialect)
        # The policy decision (event 2): an edit the row reconciliation has nothing to compare with.
        conn.exec_driver_sql("UPDATE audit_events SET data = '{}' WHERE seq = 2")
        conn.commit()
    monkeypatch.setenv("CHANGEFLOW_DATABASE_URL", insider.url)
    assert cli_env("db", "upgrade").exit_code == 0  # the insider puts the guards back
    monkeypatch.setenv("CHANGEFLOW_DATABASE_URL", services.db.url)
    assert cli_env("audit", "verify", "--incremental").exit_code == 0
    full = cli_env("audit", "verify")
    assert full.exit_code == 1 and "audit chain broken at event 2: event 2 was altered" in full.output


def test_an_event_appended_behind_the_heads_back_is_named(services, insider, cli_env):
    _history(services)  # 12 events
    with services.db.read() as session:
        last = session.execute(select(AuditEvent).where(AuditEvent.seq == 12)).scalar_one()
        forged = event_hash(13, last.change_key, last.occurred_at, "erin", "approval", None, None, "{}", last.hash)
    with insider.write_engine.connect() as conn:
        conn.exec_driver_sql(
            "INSERT INTO audit_events (seq, change_key, occurred_at, actor, action, data, prev_hash, hash) "
            f"SELECT 13, change_key, occurred_at, 'erin', 'approval', '{{}}', '{last.hash}', '{forged}' "
            "FROM audit_events WHERE seq = 12")
        conn.commit()
    result = cli_env("audit", "verify")
    assert result.exit_code == 1
    assert "audit chain broken at event 13: the chain ends at event 13 but the head records event 12" \
        in result.output, result.output


def _bundle(services, cli_env, tmp_path):
    _history(services)
    cli_env("audit", "checkpoint")
    _history(services, changes=1)
    cli_env("audit", "checkpoint")
    bundle = tmp_path / "bundle.jsonl"
    exported = cli_env("audit", "export", bundle, "--since", "2020-01-01T00:00:00Z")
    assert exported.exit_code == 0, exported.output
    return bundle


def test_an_exported_bundle_verifies_offline_and_names_what_was_edited_in_it(services, cli_env, tmp_path):
    bundle = _bundle(services, cli_env, tmp_path)
    intact = verify_offline(bundle, "--public-key", str(Settings().public_key_file))
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert "bundle intact: 18 events, 2 checkpoints hold" in intact.stdout
    lines = bundle.read_text().splitlines()
    for needle, replace, named in (('"actor": "alice"', '"actor": "mallory"', "bundle: event 4: event 4 was altered"),
                                   ('"requester": "grace"', '"requester": "alice"',
                                    "requester alice but filed by grace")):
        edited = tmp_path / "edited.jsonl"
        index = next(i for i, line in enumerate(lines) if needle in line)
        edited.write_text("\n".join(lines[:index] + [lines[index].replace(needle, replace)] + lines[index + 1:]))
        result = verify_offline(edited)
        assert result.returncode == 1 and named in result.stderr + result.stdout, result.stdout + result.stderr


def test_a_bundle_checked_against_another_key_fails(services, cli_env, tmp_path):
    bundle = _bundle(services, cli_env, tmp_path)
    other = Settings(home=tmp_path / "someone-else")
    other.ensure_signing_key()
    result = verify_offline(bundle, "--public-key", str(other.public_key_file))
    assert result.returncode == 1
    assert "has no valid signature" in result.stdout + result.stderr


def test_a_bundle_carries_the_checklist_results_and_measurements_and_names_an_edited_one(services, cli_env,
                                                                                          tmp_path):
    _checked_and_measured(services)
    cli_env("audit", "checkpoint")
    bundle = tmp_path / "bundle.jsonl"
    assert cli_env("audit", "export", bundle, "--since", "2020-01-01T00:00:00Z").exit_code == 0
    assert verify_offline(bundle).returncode == 0
    lines = bundle.read_text().splitlines()
    for kind, needle, replace, named in (
            ("checklist_result", '"passed": false', '"passed": true',
             "checklist result CHG-000001 pre/0 item backup-taken differs from what event"),
            ("canary_measurement", '"value": 0.31', '"value": 0.01',
             "canary measurement CHG-000001 step 1 bake b1 row 1 differs from what event")):
        index = next(i for i, line in enumerate(lines) if f"\"kind\": \"{kind}\"" in line and needle in line)
        edited = tmp_path / f"edited-{kind}.jsonl"
        edited.write_text("\n".join(lines[:index] + [lines[index].replace(needle, replace)] + lines[index + 1:]))
        result = verify_offline(edited)
        assert result.returncode == 1 and named in result.stdout + result.stderr, result.stdout + result.stderr


def test_a_checkpoint_file_signed_again_after_a_rewrite_passes_verify_but_not_the_witness(services, insider, cli_env,
                                                                                         tmp_path):
    """Issue 28: whoever can write HOME holds the signing key: they rewrite the database, re-chain it and sign
    the checkpoint file again, and `audit verify` and `verify-bundle` pass. The witness kept what it received."""
    import yaml
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from models import CheckpointLog, chain_head, restore_guards, sign_checkpoint, utcnow

    witnessed = tmp_path / "auditor" / "witness.jsonl"  # the auditor's mailbox, outside HOME
    directory_file = Settings().config_dir / "directory.yaml"
    directory = yaml.safe_load(directory_file.read_text())
    directory["witnesses"] = {"auditor": {"type": "file", "path": str(witnessed)}}
    directory_file.write_text(yaml.safe_dump(directory))
    _history(services)
    change = services.approvals.request_approval(services.changes.submit(standard_request()).key)
    with pytest.raises(PolicyViolation, match="self-approval"):
        approve(services, change.key, change.requester)  # a refusal the insider will erase
    signed = cli_env("audit", "checkpoint")
    assert "sent to 1 witness(es)" in signed.output, signed.output

    rewrite_history(insider, *ATTACKS["delete-a-refusal-and-renumber"])
    restore_guards(insider.write_engine)
    settings = Settings()
    key = load_pem_private_key(settings.signing_key_file.read_bytes(), password=None)
    with insider.read() as session:
        head = chain_head(session)
    settings.checkpoint_file.write_text("")
    CheckpointLog(settings.checkpoint_file).append(sign_checkpoint(key, head[0], head[1], utcnow()))
    assert cli_env("audit", "verify").exit_code == 0, "HOME's key re-signs what it likes"
    bundle = tmp_path / "bundle.jsonl"
    assert cli_env("audit", "export", bundle, "--since", "2020-01-01T00:00:00Z").exit_code == 0
    assert verify_offline(bundle).returncode == 0
    against = verify_offline(bundle, "--witness", str(witnessed))
    assert against.returncode == 1, against.stdout + against.stderr
    assert "the witness received a checkpoint of event" in against.stdout + against.stderr  # one event gone
