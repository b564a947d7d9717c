"""Audit bundles: what an external auditor takes away and checks with no database (issue 14).

`changeflow audit export --since --until FILE` writes JSON Lines: a header (range, the public key, the anchor),
the signed checkpoints, the events from the last checkpoint before the range to the range's last event (the ones
before `since` are there so the chain links from a signed point), and the change, approval, checklist result and
canary measurement rows of the changes the range touches. `changeflow audit verify-bundle FILE` recomputes the
chain from the anchor, checks every checkpoint's signature and hash, and reconciles the rows with the events,
using only the file.

The public key travels in the bundle for convenience; an auditor compares its key id with the one published
out of band (`changeflow audit verify` prints it), or passes the key they hold with `--public-key`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key
from sqlalchemy import func, select

from ..domain import Checkpoint, InputError, checkpoint_problems, key_id
from ..storage import (
    GENESIS_HASH,
    Approval,
    AuditEvent,
    CanaryMeasurement,
    ChangeRequest,
    ChecklistResult,
    Database,
    MaintenanceWindow,
    CONTENT,
    STAMP_COLUMNS,
    approval_mismatches,
    chain_head,
    chain_rows,
    content_values,
    derived_columns,
    digest_of_content,
    window_mismatches,
    rows_against_events,
    verify_rows,
)
from ._anchors import AuditAnchors

FORMAT = "changeflow-audit-bundle/2"
# Rows bound to the chain by their phase verdict or step decision (digests in the event), under these kinds.
_BOUND_KIND: dict[type, str] = {ChecklistResult: "checklist_result", CanaryMeasurement: "canary_measurement"}
_TIME_FIELD = {ChecklistResult: "recorded_at", CanaryMeasurement: "taken_at"}
EVENT_FIELDS = ("seq", "change_key", "occurred_at", "actor", "action", "from_state", "to_state", "data",
                "prev_hash", "hash")


@dataclass(frozen=True)
class ExportSummary:
    path: Path
    events: int
    in_range: int
    changes: int
    checkpoints: int
    anchor_seq: int


@dataclass
class BundleReport:
    key_id: str
    events: int
    checkpoints: int
    unanchored: int
    problems: list[str] = field(default_factory=list)
    witnessed: int = 0  # checkpoints a witness received that the bundle was checked against

    @property
    def ok(self) -> bool:
        return not self.problems


def export_bundle(db: Database, anchors: AuditAnchors, since: datetime, until: datetime, path: Path) -> ExportSummary:
    public_key = anchors.public_key()
    if public_key is None:
        raise InputError("audit export: no public key in HOME: run `changeflow init` first", [("home", "no key")])
    with db.read() as session:
        first, last = session.execute(select(func.min(AuditEvent.seq), func.max(AuditEvent.seq))
                                      .where(AuditEvent.occurred_at >= since, AuditEvent.occurred_at < until)).one()
        if first is None:
            raise InputError("--since/--until: no audit event in that range", [("since", "no events")])
        valid = anchors.signed_checkpoints()
        anchor = max((c for c in valid if c.seq < first), key=lambda c: c.seq, default=None)
        start = anchor.seq + 1 if anchor else 1
        # Every signed checkpoint from the anchor on and the events up to the head (issue 28): a chain cut back
        # behind a later checkpoint, with its head moved back, fails the bundle as it fails `audit verify`.
        checkpoints = sorted({c.seq: c for c in valid if c.seq >= start - 1}.values(), key=lambda c: c.seq)
        head_seq, head_hash = chain_head(session)
        events = list(chain_rows(session, start, head_seq))
        keys = sorted({row[1] for row in events if row[1] and first <= row[0] <= last})
        changes = list(session.execute(select(ChangeRequest).where(ChangeRequest.key.in_(keys))).scalars())  # type: ignore[attr-defined]
        approvals = list(session.execute(select(Approval, ChangeRequest.key)
                                          .join(ChangeRequest, ChangeRequest.id == Approval.change_id)
                                          .where(ChangeRequest.key.in_(keys))).all())  # type: ignore[attr-defined]
        bound_rows = [row for table in (ChecklistResult, CanaryMeasurement) for row in session.execute(
            select(table).where(table.change_key.in_(keys)).order_by(table.id)).scalars()]  # type: ignore[attr-defined]
        windows = list(session.execute(select(MaintenanceWindow).order_by(MaintenanceWindow.id)).scalars())
    header = {"kind": "header", "format": FORMAT, "since": since.isoformat(), "until": until.isoformat(),
              "first_seq_in_range": first, "last_seq_in_range": last, "last_seq": head_seq,
              "chain_head": {"seq": head_seq, "hash": head_hash},
              "anchor": anchor.to_dict() if anchor else None, "key_id": key_id(public_key),
              "public_key": public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()}
    with path.open("w") as out:
        out.write(json.dumps(header) + "\n")
        for checkpoint in checkpoints:
            out.write(json.dumps({"kind": "checkpoint", **checkpoint.to_dict()}) + "\n")
        for row in events:
            out.write(json.dumps({"kind": "event", **dict(zip(EVENT_FIELDS, row))}) + "\n")
        for change in changes:
            out.write(json.dumps({"kind": "change", "key": change.key, "state": change.state,
                                  "requester": change.requester, "type": change.type, "service": change.service,
                                  "title": change.title, "content": content_values(change),
                                  **{column: _canonical(getattr(change, column)) for column in STAMP_COLUMNS}})
                      + "\n")
        for approval, key in approvals:
            out.write(json.dumps({"kind": "approval", "id": approval.id, "change_key": key,
                                  "approver": approval.approver, "role": approval.role,
                                  "decision": approval.decision, "round": approval.round,
                                  "comment": approval.comment, "on_behalf_of": approval.on_behalf_of,
                                  "decided_at": _canonical(approval.decided_at)}) + "\n")
        for row in bound_rows:
            out.write(json.dumps({"kind": _BOUND_KIND[type(row)], "row": row.model_dump(mode="json")}) + "\n")
        for window in windows:
            out.write(json.dumps({"kind": "window", "row": window.model_dump(mode="json")}) + "\n")
    in_range = sum(1 for row in events if first <= row[0] <= last)
    return ExportSummary(path, len(events), in_range, len(changes), len(checkpoints), anchor.seq if anchor else 0)


def _canonical(value: object) -> object:
    """Times as the chain writes them (YYYY-MM-DDTHH:MM:SS.ffffffZ), so a bundle compares strings."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value


def verify_bundle(path: Path, public_key_pem: bytes | None = None, witness: Path | None = None) -> BundleReport:
    """Everything checked from the file alone (and, if given, the public key the auditor holds and what a witness
    received: `witness`, the checkpoints as its webhook or mailbox got them, one JSON object a line)."""
    lines: dict[str, list[dict[str, Any]]] = defaultdict(list)
    try:
        for line in path.read_text().splitlines():
            record = json.loads(line)
            lines[record.pop("kind")].append(record)
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        raise InputError(f"bundle: {path} is not an audit bundle ({exc})", [("bundle", "unreadable")]) from None
    if len(lines["header"]) != 1 or lines["header"][0].get("format") != FORMAT:
        found = lines["header"][0].get("format") if len(lines["header"]) == 1 else None
        raise InputError(f"bundle: {path} has no {FORMAT} header" + (
            f" (it is {found}, which does not reach the chain's head: export it again)" if found else ""),
            [("bundle", "no header")])
    header = lines["header"][0]
    key = load_pem_public_key(public_key_pem or header["public_key"].encode())
    if not isinstance(key, Ed25519PublicKey):
        raise InputError("public key: not an Ed25519 key", [("public_key", "wrong type")])
    report = BundleReport(key_id(key), len(lines["event"]), len(lines["checkpoint"]), 0)
    if header["key_id"] != report.key_id:
        report.problems.append(f"the bundle was exported under key {header['key_id']}, not the key given "
                               f"({report.key_id})")
    anchor = Checkpoint.from_dict(header["anchor"]) if header["anchor"] else None
    if anchor is not None and not anchor.signed_by(key):
        report.problems.append(f"the anchor checkpoint of event {anchor.seq} has no valid signature")
    start = (anchor.seq, anchor.hash) if anchor else (0, GENESIS_HASH)
    rows = [tuple(event[name] for name in EVENT_FIELDS) for event in lines["event"]]
    head = header["chain_head"]
    chain = verify_rows(rows, (head["seq"], head["hash"]), start)
    if not chain.ok:
        report.problems.append(f"event {chain.first_broken_seq}: {chain.reason}")
    checkpoints = [Checkpoint.from_dict(c) for c in lines["checkpoint"]]
    hashes = {event["seq"]: event["hash"] for event in lines["event"]}
    if anchor is not None:
        hashes[anchor.seq] = anchor.hash
    report.problems += checkpoint_problems(checkpoints, key, chain.count, hashes)
    if witness is not None:
        report.witnessed, problems = _witness_problems(witness, key, chain.count, hashes, checkpoints)
        report.problems += problems
    anchored = max([c.seq for c in checkpoints if c.signed_by(key)] + [start[0]])
    report.unanchored = max(chain.count - anchored, 0)
    report.problems += _row_problems(lines)
    report.problems += _bound_problems(lines, every_event=start[0] == 0)
    report.problems += list(rows_against_events(
        ((e["seq"], e["change_key"], e["action"], e["data"]) for e in lines["event"]),
        _rebuilt(ChecklistResult, lines["checklist_result"]), _rebuilt(CanaryMeasurement, lines["canary_measurement"])))
    return report


def _rebuilt(table: type, lines: list[dict[str, Any]]) -> list:
    """Rows of the bundle as the table's objects (no database), so the same digest function checks them."""
    time_field = _TIME_FIELD[table]
    # Under "row": a checklist result has a `kind` column of its own.
    return [table(**{**line["row"], time_field: datetime.fromisoformat(line["row"][time_field])}) for line in lines]


def _row_problems(lines: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The rows against the bundle's events (which reach the chain's head): requesters, states, approvals both
    ways."""
    events = lines["event"]
    problems = []
    filed = {e["change_key"]: e["actor"] for e in events if e["action"] == "submitted"}
    last_state: dict[str, str] = {}
    for event in events:
        if event["action"] == "transition":
            last_state[event["change_key"]] = event["to_state"]
    for change in lines["change"]:
        key = change["key"]
        if key in filed and filed[key] != change["requester"]:
            problems.append(f"change {key}: requester {change['requester']} but filed by {filed[key]}")
        if key in filed and last_state.get(key, "submitted") != change["state"]:
            problems.append(f"change {key}: state {change['state']} but its last transition is to "
                            f"{last_state.get(key, 'submitted')}")
    decisions = defaultdict(int)
    for event in events:
        if event["action"] in ("approval", "rejection"):
            decisions[(event["change_key"], event["actor"],
                       "approve" if event["action"] == "approval" else "reject")] += 1
    for approval in lines["approval"]:
        if decisions[(approval["change_key"], approval["approver"], approval["decision"])] == 0 and \
                approval["change_key"] in filed:
            problems.append(f"approval of {approval['change_key']} by {approval['approver']} "
                            f"({approval['decision']}) has no decision event in the bundle")
    return problems


def _bound_problems(lines: dict[str, list[dict[str, Any]]], *, every_event: bool) -> list[str]:
    """What `audit verify` checks beyond requesters and states, from the file: each change's content against the
    digest of its last filing or amendment, its outcome and times against its transitions, each approvals row
    against its decision event, and the maintenance windows against the events that added them (issue 28).
    Changes are checked where their filing is among the bundle's events (from the anchor to the head)."""
    events = lines["event"]
    problems: list[str] = []
    content: dict[str, tuple[int, str]] = {}
    for event in events:
        if event["action"] in ("submitted", "change_amended"):
            digest = json.loads(event["data"]).get(CONTENT)
            if digest:
                content[event["change_key"]] = (event["seq"], digest)
    derived = derived_columns((e["change_key"], e["action"], e["to_state"], e["occurred_at"]) for e in events)
    for change in lines["change"]:
        key = change["key"]
        if key in content and digest_of_content(change["content"]) != content[key][1]:
            problems.append(f"change {key}: its content differs from what event {content[key][0]} recorded")
        for column, expected in derived.get(key, {}).items():
            if change.get(column) != expected:
                problems.append(f"change {key}: {column} {change.get(column)} but its events record {expected}")
    recorded: dict[tuple, list[tuple[int, dict, datetime]]] = defaultdict(list)
    for event in events:
        if event["action"] in ("approval", "rejection"):
            recorded[(event["change_key"], event["actor"], event["action"])].append(
                (event["seq"], json.loads(event["data"]), datetime.fromisoformat(event["occurred_at"])))
    problems += approval_mismatches(
        [(a.get("id"), a["change_key"], a["approver"], a["decision"], a["round"], a["role"], a.get("comment", ""),
          a.get("on_behalf_of"), datetime.fromisoformat(a["decided_at"]))
         for a in lines["approval"] if a["change_key"] in derived], recorded)
    windows = [MaintenanceWindow(**{**line["row"], **{name: datetime.fromisoformat(line["row"][name])
                                                      for name in ("starts_at", "ends_at")}})
               for line in lines["window"]]
    problems += window_mismatches(((e["seq"], e["data"]) for e in events
                                   if e["action"] == "policy_decision" and e["change_key"] is None),
                                  windows, every_event=every_event)
    return problems


def _witness_problems(path: Path, key: Ed25519PublicKey, chain_length: int, hash_at: dict[int, str],
                      checkpoints: list[Checkpoint]) -> tuple[int, list[str]]:
    """The bundle against what a witness received (issue 28): whoever can write HOME can rewrite the database,
    recompute the chain and re-sign every checkpoint in the file with the same key, and the bundle verifies; the
    checkpoints a witness received before that still carry the old hashes."""
    received: list[Checkpoint] = []
    problems: list[str] = []
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise InputError(f"--witness: cannot read {path} ({exc.strerror})", [("witness", "unreadable")]) from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            # A webhook's body or a file channel's line carries the checkpoint as its text; a bare line is one.
            received.append(Checkpoint.from_dict(json.loads(record["text"]) if "text" in record else record))
        except (ValueError, KeyError, TypeError):
            problems.append(f"witness line {number} is not a checkpoint changeflow sent")
    in_bundle = {c.seq: c.hash for c in checkpoints}
    checked = 0
    for checkpoint in received:
        when = checkpoint.to_dict()["at"]
        if not checkpoint.signed_by(key):
            problems.append(f"the witness's checkpoint of event {checkpoint.seq} ({when}) is not signed by this "
                            "audit key")
            continue
        ours = hash_at.get(checkpoint.seq, in_bundle.get(checkpoint.seq))
        if checkpoint.seq > chain_length:
            problems.append(f"the witness received a checkpoint of event {checkpoint.seq} ({when}) but the chain "
                            f"ends at event {chain_length}: events were deleted")
        elif ours is None:
            continue  # older than the bundle's anchor: nothing in the bundle to hold it against
        elif ours != checkpoint.hash:
            problems.append(f"the chain's hash at event {checkpoint.seq} is not the one the witness received at "
                            f"{when}: the events up to it were rewritten and the checkpoints signed again")
        checked += 1
    return checked, problems
