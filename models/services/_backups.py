"""Backups of changeflow's own evidence (issue 31): the change database and the audit checkpoint file, copied
consistently and proved by loading the copy into a throw-away database and verifying it there as `audit verify`
does (the chain, every row the reports and gates read, the guards, the signed checkpoints), before anyone relies on
it. A restore proves the backup the same way first."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from ..config import Settings
from ..domain import InputError, utcnow
from ..storage import (CheckpointLog, Database, chain_head, copy_database, copy_file_name, guard_problems,
                       load_copy, record_problems, scratch_copy, verify_chain)
from ._anchors import AuditAnchors

MANIFEST = "manifest.json"
CHECKPOINTS = "audit-checkpoints.jsonl"


@dataclass(frozen=True)
class BackupReport:
    folder: Path
    events: int = 0
    checkpoints: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class BackupService:
    def __init__(self, db: Database, settings: Settings):
        self._db = db
        self._settings = settings

    def backup(self, into: Path) -> BackupReport:
        """A new folder `backup-<UTC time>` under `into` (0700) with the database copy, the checkpoint file and a
        manifest of their digests and the chain's head; then the copy is proved (`verify`)."""
        started = time.monotonic()
        folder = into / f"backup-{utcnow():%Y%m%dT%H%M%S%fZ}"
        folder.mkdir(parents=True, mode=0o700)
        try:
            copy = copy_database(self._db, folder)
            checkpoints = folder / CHECKPOINTS
            if self._settings.checkpoint_file.exists():
                shutil.copyfile(self._settings.checkpoint_file, checkpoints)
            else:
                checkpoints.touch()
            checkpoints.chmod(0o600)
            # The head the copy holds (read from the copy: events written meanwhile may or may not be in it).
            with scratch_copy(copy, self._db) as scratch, scratch.read() as session:
                head_seq, head_hash = chain_head(session)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)  # no half-made backup left to be mistaken for one
            raise
        manifest = {"format": 1, "dialect": self._db.dialect, "created_at": utcnow().isoformat(),
                    "head": {"seq": head_seq, "hash": head_hash},
                    "files": {path.name: _digest(path) for path in (copy, checkpoints)}}
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))
        (folder / MANIFEST).chmod(0o600)
        report = self.verify(folder)
        return BackupReport(folder, report.events, report.checkpoints, time.monotonic() - started, report.problems)

    def verify(self, folder: Path) -> BackupReport:
        """Prove a backup: its files are the ones its manifest names, and its copy, loaded into a throw-away
        database, verifies as `audit verify` would, up to the head the manifest recorded, against its checkpoint
        file and the public key of this HOME (the one you hold, not one the backup could bring)."""
        started = time.monotonic()
        manifest_file = folder / MANIFEST
        if not manifest_file.is_file():
            raise InputError(f"backup: {folder} holds no {MANIFEST} (not a changeflow backup)", [("backup",
                                                                                                  "no manifest")])
        manifest = json.loads(manifest_file.read_text())
        copy = folder / copy_file_name(self._db)
        if manifest.get("dialect") != self._db.dialect or not copy.is_file():
            raise InputError(f"backup: {folder} is a {manifest.get('dialect')} backup; this database is "
                             f"{self._db.dialect}", [("backup", "other database kind")])
        problems = [f"{name}: its digest is not the manifest's (the file was changed after the backup)"
                    for name, digest in manifest["files"].items() if _digest(folder / name) != digest]
        if problems:
            return BackupReport(folder, problems=problems, seconds=time.monotonic() - started)
        with scratch_copy(copy, self._db) as scratch:
            with scratch.read() as session:
                chain = verify_chain(session)
                if not chain.ok:
                    problems.append(f"audit chain broken at event {chain.first_broken_seq}: {chain.reason}")
                problems += [f"audit record: {problem}" for problem in record_problems(session)]
                head = chain_head(session)
            problems += [f"audit guard: {problem}" for problem in guard_problems(scratch.read_engine)]
            if list(head) != [manifest["head"]["seq"], manifest["head"]["hash"]]:
                problems.append(f"the copy's chain ends at event {head[0]}, not at event {manifest['head']['seq']} "
                                "as when it was made")
            anchors = AuditAnchors(scratch, CheckpointLog(folder / CHECKPOINTS), self._settings.signing_key_file,
                                   self._settings.public_key_file, every_events=1, every=timedelta(0))
            anchored = anchors.verify(chain)
        problems += [f"audit checkpoint: {problem}" for problem in anchored.problems]
        return BackupReport(folder, chain.count, anchored.checkpoints, time.monotonic() - started, problems)

    def restore(self, folder: Path, *, replace: bool = False) -> BackupReport:
        """Prove the backup, then load it into this HOME's database and checkpoint file. A database that holds
        changes is replaced only when asked (`replace`): a restore is the last step of a recovery, never a slip."""
        report = self.verify(folder)
        if not report.ok:
            return report
        with self._db.read() as session:
            held = chain_head(session)[0]
        if held and not replace:
            raise InputError(f"backup: the database already holds {held} audit events; restoring replaces them "
                             "(--replace, after taking a backup of it)", [("replace", "not given")])
        load_copy(folder / copy_file_name(self._db), self._db)
        shutil.copyfile(folder / CHECKPOINTS, self._settings.checkpoint_file)
        self._settings.checkpoint_file.chmod(0o600)
        return report


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()
