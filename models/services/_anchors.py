"""Anchors of the audit chain outside the database: signed checkpoints in HOME's checkpoint file (and, through
the flows, in Prefect artifacts), and the check of the chain against every one of them (issue 14).

What stays exposed: events after the last checkpoint, at most `audit_checkpoint_every_events` events or
`audit_checkpoint_every_s` seconds plus the sweep's interval; everything older is fixed by a signature the
database's writer cannot make.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable, Iterable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

from ..config import Settings
from ..domain import Checkpoint, checkpoint_due, checkpoint_problems, sign_checkpoint, utcnow
from ..storage import CheckpointLog, Database, VerifyResult, chain_hashes_at, chain_head


@dataclass(frozen=True)
class AnchorReport:
    checkpoints: int
    latest: Checkpoint | None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class AuditAnchors:
    def __init__(self, db: Database, log: CheckpointLog, key_file: Path, public_key_file: Path, *,
                 every_events: int, every: timedelta, clock: Callable[[], datetime] = utcnow):
        self._db = db
        self.log = log
        self._key_file = key_file
        self._public_key_file = public_key_file
        self._every_events = every_events
        self._every = every
        self._clock = clock

    @property
    def every(self) -> timedelta:
        """A checkpoint falls due this long after the last one when anything new was written."""
        return self._every

    @classmethod
    def from_settings(cls, settings: Settings, db: Database) -> "AuditAnchors":
        return cls(db, CheckpointLog(settings.checkpoint_file), settings.signing_key_file, settings.public_key_file,
                   every_events=settings.audit_checkpoint_every_events,
                   every=timedelta(seconds=settings.audit_checkpoint_every_s))

    def checkpoint(self, *, force: bool = False) -> Checkpoint | None:
        """Sign the chain's head when a checkpoint is due (or anything is new, with `force`); None otherwise or
        without a signing key (`changeflow init` creates one)."""
        if not self._key_file.exists():
            return None
        key = load_pem_private_key(self._key_file.read_bytes(), password=None)
        assert isinstance(key, Ed25519PrivateKey), f"{self._key_file} is not an Ed25519 key"
        last = self.log.last()
        with self._db.read() as session:
            head_seq, head_hash = chain_head(session)
        now = self._clock()
        due = checkpoint_due(last, head_seq, now, every_events=1 if force else self._every_events,
                             every=self._every)
        if not due:
            return None
        checkpoint = sign_checkpoint(key, head_seq, head_hash, now)
        self.log.append(checkpoint)
        return checkpoint

    def public_key(self) -> Ed25519PublicKey | None:
        if not self._public_key_file.exists():
            return None
        key = load_pem_public_key(self._public_key_file.read_bytes())
        return key if isinstance(key, Ed25519PublicKey) else None

    def signed_checkpoints(self) -> list[Checkpoint]:
        """The file's checkpoints whose signature holds under the public key (none without one)."""
        public_key = self.public_key()
        return [c for c in self.log.read()[0] if c.signed_by(public_key)] if public_key else []

    def latest_valid(self) -> Checkpoint | None:
        """The newest validly signed checkpoint in the file: where incremental verification starts."""
        return _newest(self.signed_checkpoints())

    def verify(self, chain: VerifyResult, elsewhere: Iterable[Checkpoint] = ()) -> AnchorReport:
        """The chain (as verify_chain recomputed it) against the checkpoint file and the checkpoints anchored
        `elsewhere` (Prefect artifacts): each must be validly signed and match the chain; one anchored elsewhere
        must also be in the file (a rewritten file is caught by the other anchor)."""
        public_key = self.public_key()
        in_file, problems = self.log.read()
        other = list(elsewhere)
        if public_key is None:
            return AnchorReport(0, None, problems + ([f"no public key at {self._public_key_file}: checkpoints cannot "
                                                       "be checked"] if in_file or other else []))
        known = {(c.seq, c.signature) for c in in_file}
        for checkpoint in other:
            if checkpoint.signed_by(public_key) and (checkpoint.seq, checkpoint.signature) not in known:
                problems.append(f"the checkpoint of event {checkpoint.seq} anchored in Prefect is missing from "
                                f"{self.log.path.name}: the checkpoint file was rewritten")
        unique = {(c.seq, c.signature): c for c in [*in_file, *other]}
        checkpoints = list(unique.values())
        with self._db.read() as session:
            hashes = chain_hashes_at(session, sorted({c.seq for c in checkpoints}))
        problems += checkpoint_problems(checkpoints, public_key, chain.count, hashes)
        return AnchorReport(len(checkpoints), _newest([c for c in checkpoints if c.signed_by(public_key)]), problems)


def _newest(checkpoints: list[Checkpoint]) -> Checkpoint | None:
    return max(checkpoints, key=lambda c: c.seq, default=None)
