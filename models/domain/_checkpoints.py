"""Signed checkpoints of the audit chain: the head (seq, hash, time) signed with Ed25519 by a key that lives
outside the database, kept where the database's writer cannot rewrite it (issue 14).

The hash chain alone catches naive edits; someone who can write the database can also recompute every later
hash and move `audit_head`. A checkpoint fixes the chain's hash at a seq: if any event at or before it is
rewritten afterwards, the recomputed hash at that seq differs from the signed one. The statement format follows
Trillian's checkpoints (an origin line, the size, the root hash), with the time added.

Pure: no database, no files; the caller reads the chain's hashes and the stored checkpoints.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

CHECKPOINT_ORIGIN = "changeflow audit chain v1"


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short name of the public key (first 8 bytes of its SHA-256), stored with each checkpoint."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _at(at: datetime) -> str:
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: str
    at: datetime
    key_id: str
    signature: str  # base64 of the Ed25519 signature over statement()

    def statement(self) -> bytes:
        return f"{CHECKPOINT_ORIGIN}\n{self.seq}\n{self.hash}\n{_at(self.at)}\n".encode()

    def to_dict(self) -> dict[str, object]:
        return {"seq": self.seq, "hash": self.hash, "at": _at(self.at), "key_id": self.key_id,
                "signature": self.signature}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Checkpoint":
        return cls(seq=int(data["seq"]), hash=str(data["hash"]),
                   at=datetime.strptime(data["at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc),
                   key_id=str(data["key_id"]), signature=str(data["signature"]))

    def signed_by(self, public_key: Ed25519PublicKey) -> bool:
        try:
            public_key.verify(base64.b64decode(self.signature, validate=True), self.statement())
        except (InvalidSignature, ValueError):
            return False
        return True


def sign_checkpoint(private_key: Ed25519PrivateKey, seq: int, chain_hash: str, at: datetime) -> Checkpoint:
    unsigned = Checkpoint(seq, chain_hash, at, key_id(private_key.public_key()), "")
    return Checkpoint(seq, chain_hash, at, unsigned.key_id,
                      base64.b64encode(private_key.sign(unsigned.statement())).decode())


def checkpoint_due(last: Checkpoint | None, head_seq: int, now: datetime, *, every_events: int,
                   every: timedelta) -> bool:
    """A new checkpoint after `every_events` events, or once `every` has passed with anything new."""
    if head_seq == 0 or (last is not None and head_seq <= last.seq):
        return False
    return last is None or head_seq - last.seq >= every_events or now - last.at >= every


def checkpoint_problems(checkpoints: list[Checkpoint], public_key: Ed25519PublicKey, chain_length: int,
                        hash_at: dict[int, str]) -> list[str]:
    """What is wrong between the chain (its length and its hash at each checkpoint's seq, as recomputed by
    verify) and the signed checkpoints; each problem names the events concerned. Empty: every checkpoint
    holds."""
    problems: list[str] = []
    last_good = 0
    for checkpoint in sorted(checkpoints, key=lambda c: c.seq):
        when = _at(checkpoint.at)
        if not checkpoint.signed_by(public_key):
            problems.append(f"checkpoint of event {checkpoint.seq} ({when}) has no valid signature: it was not "
                            "written by changeflow's audit key")
            continue
        if checkpoint.seq > chain_length:
            problems.append(f"events {chain_length + 1}-{checkpoint.seq} were deleted: the checkpoint signed at "
                            f"{when} anchors event {checkpoint.seq} but the chain ends at event {chain_length}")
            continue
        if hash_at.get(checkpoint.seq) != checkpoint.hash:
            problems.append(f"an event among {last_good + 1}-{checkpoint.seq} was rewritten after the checkpoint "
                            f"signed at {when}: the chain's hash at event {checkpoint.seq} is not the signed one")
            continue
        last_good = max(last_good, checkpoint.seq)
    return problems
