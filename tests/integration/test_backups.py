"""Backups of changeflow's own evidence (issue 31): a consistent copy of the change database and the checkpoint
file, proved in a throw-away database before anyone relies on it; a tampered backup fails its proof and is never
restored. On SQLite and PostgreSQL (as the schema's owner: the proof creates a scratch database)."""

from __future__ import annotations

import hashlib
import json
import sqlite3

import pytest
from sqlalchemy import text

from models import AuditAnchors, BackupService, InputError, Services, Settings, verify_chain
from tests.helpers import SECRET, approve, standard_request


@pytest.fixture
def home(tmp_path) -> Settings:
    settings = Settings(home=tmp_path / "home")
    settings.ensure_signing_key()
    return settings


def _changes(db) -> int:
    with db.read() as session:
        return session.execute(text("SELECT COUNT(*) FROM change_requests")).scalar_one()


def test_a_backup_is_proved_and_a_restore_brings_back_what_it_held(insider, org, home, tmp_path):
    services = Services.build(insider, org, SECRET)
    for n in range(3):
        change = services.approvals.request_approval(services.changes.submit(standard_request(title=f"c{n}")).key)
        approve(services, change.key, "alice")
    assert AuditAnchors.from_settings(home, insider).checkpoint(force=True) is not None
    backups = BackupService(insider, home)

    report = backups.backup(tmp_path / "backups")
    assert report.ok, report.problems
    with insider.read() as session:
        assert report.events == verify_chain(session).count and report.checkpoints == 1
    assert {p.name for p in report.folder.iterdir()} >= {"manifest.json", "audit-checkpoints.jsonl"}
    assert all(p.stat().st_mode & 0o077 == 0 for p in [report.folder, *report.folder.iterdir()])

    services.changes.submit(standard_request(title="after the backup"))
    with pytest.raises(InputError, match="already holds .* audit events; restoring replaces them"):
        backups.restore(report.folder)
    assert _changes(insider) == 4, "a refused restore changes nothing"
    restored = backups.restore(report.folder, replace=True)
    assert restored.ok, restored.problems
    assert _changes(insider) == 3
    with insider.read() as session:
        assert verify_chain(session).ok


def test_a_tampered_backup_fails_its_proof_and_is_never_restored(databases, org, home, tmp_path):
    insider = databases.insider
    services = Services.build(insider, org, SECRET)
    change = services.approvals.request_approval(services.changes.submit(standard_request()).key)
    approve(services, change.key, "alice")
    assert AuditAnchors.from_settings(home, insider).checkpoint(force=True) is not None
    backups = BackupService(insider, home)
    folder = backups.backup(tmp_path / "backups").folder
    manifest = json.loads((folder / "manifest.json").read_text())
    copy = next(folder / name for name in manifest["files"] if name != "audit-checkpoints.jsonl")
    original = copy.read_bytes()

    # A byte of the copy changed: its digest is not the manifest's.
    flipped = original[:-100] + bytes([original[-100] ^ 1]) + original[-99:]
    copy.write_bytes(flipped)
    assert any("digest is not the manifest's" in p for p in backups.verify(folder).problems)
    copy.write_bytes(original)

    # The manifest says the chain went further than the copy holds (a copy cut short, its manifest rewritten).
    (folder / "manifest.json").write_text(json.dumps({**manifest, "head": {"seq": 99, "hash": "0" * 64}}))
    assert any("not at event 99" in p for p in backups.verify(folder).problems)
    (folder / "manifest.json").write_text(json.dumps(manifest))

    if insider.is_sqlite:
        # An event of the copy edited with its guards lifted, and the manifest's digest recomputed to match: the
        # chain and the signed checkpoint still tell.
        edited = sqlite3.connect(copy)
        for trigger in ("audit_events_no_update", "audit_events_no_delete"):
            edited.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        edited.execute("UPDATE audit_events SET actor = 'mallory' WHERE seq = 1")
        edited.commit()
        edited.close()
        (folder / "manifest.json").write_text(json.dumps({**manifest, "files": {
            **manifest["files"], copy.name: hashlib.sha256(copy.read_bytes()).hexdigest()}}))
        problems = backups.verify(folder).problems
        assert any("audit chain broken at event 1" in p for p in problems), problems

    before = _changes(insider)
    services.changes.submit(standard_request(title="written after"))
    copy.write_bytes(flipped)
    report = backups.restore(folder, replace=True)
    assert not report.ok and _changes(insider) == before + 1, "nothing is loaded from a backup that does not verify"


def test_the_cli_backs_up_verifies_and_refuses_a_tampered_backup_with_exit_1(cli_env, db, tmp_path):
    request = tmp_path / "r.yaml"
    request.write_text(json.dumps(standard_request()))
    assert cli_env("submit", "--local", request).exit_code == 0
    made = cli_env("db", "backup", "--to", tmp_path / "backups")
    if not db.is_sqlite:
        # changeflow's application role may not create the throw-away database the proof needs: said, exit 1,
        # and no half-made backup left behind.
        assert made.exit_code == 1, made.output
        assert "run it as the schema's owner or a role with CREATEDB" in made.stderr, made.output
        assert not list((tmp_path / "backups").iterdir())
        return
    assert made.exit_code == 0 and "backup written and verified" in made.stdout, made.output
    folder = next((tmp_path / "backups").iterdir())
    assert cli_env("db", "verify-backup", folder).exit_code == 0
    (folder / "audit-checkpoints.jsonl").write_text('{"seq": 1}\n')
    refused = cli_env("db", "verify-backup", folder)
    assert refused.exit_code == 1 and "audit-checkpoints.jsonl: its digest is not the manifest's" in refused.stderr
    assert cli_env("db", "verify-backup", tmp_path).exit_code == 2  # not a backup: bad input
