"""Where signed audit checkpoints are kept outside the database: an append-only JSON Lines file under HOME
(0600), one checkpoint per line. The database's writer (a DBA, an application role) cannot rewrite it; a reader
who can is caught by the signatures (no key) and by the second anchor, the Prefect artifact."""

from __future__ import annotations

import json
import os
from pathlib import Path

from sqlalchemy import select
from sqlmodel import Session

from ..domain import Checkpoint
from ._tables import AuditEvent, AuditHead


class CheckpointLog:
    def __init__(self, path: Path):
        self.path = path

    def append(self, checkpoint: Checkpoint) -> None:
        """One line, appended and synced to disk before the caller reports the checkpoint as taken."""
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (json.dumps(checkpoint.to_dict(), sort_keys=True) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self) -> tuple[list[Checkpoint], list[str]]:
        """The checkpoints, and a problem per line that is not one (a truncated write, an edit)."""
        if not self.path.exists():
            return [], []
        checkpoints, problems = [], []
        for number, line in enumerate(self.path.read_text().splitlines(), start=1):
            try:
                checkpoints.append(Checkpoint.from_dict(json.loads(line)))
            except (ValueError, KeyError, TypeError) as exc:
                problems.append(f"{self.path.name} line {number} is not a checkpoint ({type(exc).__name__})")
        return checkpoints, problems

    def last(self) -> Checkpoint | None:
        checkpoints, _ = self.read()
        return max(checkpoints, key=lambda c: c.seq, default=None)


def chain_hashes_at(session: Session, seqs: list[int]) -> dict[int, str]:
    """The stored hash of the events at `seqs` (verify has recomputed them when the chain is intact)."""
    if not seqs:
        return {}
    rows = session.execute(select(AuditEvent.seq, AuditEvent.hash).where(AuditEvent.seq.in_(seqs)))  # type: ignore[attr-defined]
    return {int(seq): str(digest) for seq, digest in rows}


def chain_head(session: Session) -> tuple[int, str]:
    """The chain's last link as audit_head records it (seq 0 before the first event)."""
    row = session.execute(select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1)).first()
    return (row[0], row[1]) if row else (0, "")
