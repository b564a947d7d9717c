"""Rows the chain vouches for (issue 14): the filing and amendment events carry a digest of the change's
content as they left it; a checklist phase's verdict event and a canary step's decision event carry a digest of
every row they were based on. A planned date moved out of a freeze, a plan rewritten, a `checklist_results` row
turned from failed to passed, a deleted or added result, or an edited canary measurement then no longer matches
the event that the chain and its signed checkpoints protect.

A phase still in progress, or a bake not yet decided, has no event yet: its rows are not bound until then (the
same exposure as events after the last checkpoint). Events written before the digests existed carry none and
are skipped."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import ColumnElement, select
from sqlmodel import Session

from ._audit import _iso, canonical_json
from ._tables import AuditEvent, CanaryMeasurement, ChangeRequest, ChecklistResult

# The keys under which an event's data holds the digests of its rows, and of the change's content.
ROWS = "rows"
CONTENT = "content"

# What a person asked for and approvers approved: changed only by filing and amending, both of which record
# the digest. (State, timestamps, the approval round and the run id change with every transition.)
CONTENT_FIELDS = ("type", "title", "description", "service", "requester", "risk_level", "risk_score",
                  "risk_reasons", "risk_answers", "impact", "planned_start", "planned_end", "implementation_plan",
                  "rollback_plan", "test_evidence", "incident_id", "incident_severity", "template", "checklist",
                  "canary", "policy_version", "environment", "release", "promoted_from", "rolls_back",
                  "uat_signoff", "documentation_link", "category")
# Fields added after digests were first recorded: a digest covers them only when one is set, so a change filed
# before they existed (all None) keeps the digest its filing recorded.
_ADDED_FROM = CONTENT_FIELDS.index("environment")

_CHECKLIST_PHASE = "checklist_phase"
_CANARY_DECISION = "canary_decision"
# A post-change watch's verdict binds its measurements (step 0 of the change's) as a canary decision binds a bake's.
_WATCH_DECISION = "watch_decision"


def _digest(fields: list) -> str:
    # 128 bits: forging a row to match a stored digest is a second-preimage search, not a birthday attack.
    return hashlib.sha256(canonical_json(fields).encode()).hexdigest()[:32]


def checklist_row_digest(row: ChecklistResult) -> str:
    return _digest([row.phase, row.step, row.item_id, row.title, row.kind, bool(row.required), bool(row.passed),
                    row.detail, row.evidence, row.actor, _iso(row.recorded_at)])


def measurement_row_digest(row: CanaryMeasurement) -> str:
    return _digest([row.step, row.weight, row.bake, row.metric, row.version, row.value, row.error, row.threshold,
                    row.operator, _iso(row.taken_at)])


def _plain(value: object) -> object:
    """The value as it reads back from either database: times in UTC, enums and tuples as JSON has them."""
    if isinstance(value, datetime):
        return _iso(value if value.tzinfo else value.replace(tzinfo=timezone.utc))
    return json.loads(canonical_json(value))


def change_content_digest(change: ChangeRequest) -> str:
    return _content_digest([getattr(change, name) for name in CONTENT_FIELDS])


def content_values(change: ChangeRequest) -> list:
    """The CONTENT_FIELDS' values as JSON holds them: what an offline bundle carries to check the digest."""
    return [_plain(getattr(change, name)) for name in CONTENT_FIELDS]


def digest_of_content(values: Iterable) -> str:
    """The content digest of values from a row object, a plain result row or a bundle."""
    return _content_digest(values)


def _content_digest(values: Iterable) -> str:
    """Of the CONTENT_FIELDS' values, in that order (from a row object or a plain result row; a bundle written
    before the added fields carries none of them)."""
    plain = [_plain(value) for value in values]
    added = {name: value for name, value in zip(CONTENT_FIELDS[_ADDED_FROM:], plain[_ADDED_FROM:])
             if value is not None}
    return _digest(plain[:_ADDED_FROM] + ([added] if added else []))


def checklist_rows_bound(rows: Iterable[ChecklistResult]) -> dict[str, str]:
    """What a phase verdict event records: each item's row digest, by item id."""
    return {row.item_id: checklist_row_digest(row) for row in rows}


def measurement_rows_bound(rows: Iterable[CanaryMeasurement]) -> dict[str, str]:
    """What a canary decision event records: each measurement's row digest, by row id."""
    return {str(row.id): measurement_row_digest(row) for row in rows}


@dataclass(frozen=True)
class _Binding:
    seq: int
    digests: dict[str, str]


def content_problems(session: Session, scope: ColumnElement[bool] | None) -> Iterator[str]:
    """Each change whose content differs from the digest its last filing or amendment event recorded.
    `scope`: a condition on ChangeRequest (a report's changes), None for every change."""
    actions = ("submitted", "change_amended")
    content = [getattr(ChangeRequest, name) for name in CONTENT_FIELDS]
    if scope is None:
        # Everything: one pass over the events that carry a digest, then plain rows (not row objects) of the
        # changes, so a million changes cost seconds, not a minute.
        recorded: dict[str, tuple[int, str]] = {}
        for seq, key, raw in session.execute(
                select(AuditEvent.seq, AuditEvent.change_key, AuditEvent.data)
                .where(AuditEvent.action.in_(actions),  # type: ignore[attr-defined]
                       AuditEvent.data.contains(f'"{CONTENT}"'))  # type: ignore[attr-defined]
                .order_by(AuditEvent.seq).execution_options(yield_per=20_000)):
            digest = json.loads(raw).get(CONTENT)
            if digest:
                recorded[key] = (seq, digest)
        if not recorded:
            return
        for key, *values in session.execute(select(ChangeRequest.key, *content).order_by(ChangeRequest.id)
                                            .execution_options(yield_per=20_000)):
            if key in recorded and _content_digest(values) != recorded[key][1]:
                yield _content_problem(key, recorded[key][0])
        return
    # A report's changes: correlated through ix_audit_change_seq, so the cost follows the changes in scope.
    last = (select(AuditEvent.seq, AuditEvent.data)
            .where(AuditEvent.change_key == ChangeRequest.key,
                   AuditEvent.action.in_(actions))  # type: ignore[attr-defined]
            .order_by(AuditEvent.seq.desc()).limit(1))  # type: ignore[attr-defined]
    rows = session.execute(
        select(ChangeRequest.key, last.with_only_columns(AuditEvent.seq).scalar_subquery(),
               last.with_only_columns(AuditEvent.data).scalar_subquery(), *content)
        .where(scope).order_by(ChangeRequest.id).execution_options(yield_per=5_000))
    for key, seq, raw, *values in rows:
        if raw is None or CONTENT not in raw:  # events from before the digest existed carry none
            continue
        if _content_digest(values) != json.loads(raw)[CONTENT]:
            yield _content_problem(key, seq)


def _content_problem(key: str, seq: int) -> str:
    return (f"change {key}: its content (type, title, service, dates, plans, risk, template, checklist, canary) "
            f"differs from what event {seq} recorded: it was edited outside changeflow")


def bound_row_problems(session: Session, scope: ColumnElement[bool] | None) -> Iterator[str]:
    """Each row of a bound phase or bake that differs from its event, was added after it, or is gone.
    `scope`: a condition on ChangeRequest, None for every change."""
    def of_scope(table) -> list:
        query = select(table).order_by(table.id)
        if scope is not None:
            query = query.join(ChangeRequest, ChangeRequest.key == table.change_key).where(scope)
        return list(session.execute(query).scalars())

    results, measurements = of_scope(ChecklistResult), of_scope(CanaryMeasurement)
    bound = (_CHECKLIST_PHASE, _CANARY_DECISION, _WATCH_DECISION)
    columns = (AuditEvent.seq, AuditEvent.change_key, AuditEvent.action, AuditEvent.data)
    if scope is None:
        events = session.execute(select(*columns)
                                 .where(AuditEvent.action.in_(bound))).all()  # type: ignore[attr-defined]
    else:
        # The changes in scope, then their events through ix_audit_change_seq (a deleted row's event is found
        # although no row is left to point at it).
        keys = list(session.execute(select(ChangeRequest.key).where(scope)).scalars())
        events = []
        for start in range(0, len(keys), 1000):
            events += session.execute(select(*columns).where(
                AuditEvent.change_key.in_(keys[start:start + 1000]),  # type: ignore[union-attr]
                AuditEvent.action.in_(bound))).all()  # type: ignore[attr-defined]
    return rows_against_events(sorted(events), results, measurements)


def rows_against_events(events: Iterable[tuple[int, str | None, str, str]], results: Iterable[ChecklistResult],
                        measurements: Iterable[CanaryMeasurement]) -> Iterator[str]:
    """The check itself, over (seq, change_key, action, data) events and rows from anywhere: the database, or
    an auditor's bundle."""
    checklist: dict[tuple, _Binding] = {}
    canary: dict[tuple, _Binding] = {}
    for seq, change_key, action, raw in events:
        data = json.loads(raw)
        if ROWS not in data:
            continue
        # The first event per group is the one the run acted on (markers are written once).
        if action == _CHECKLIST_PHASE:
            checklist.setdefault((change_key, data.get("phase"), data.get("step")), _Binding(seq, data[ROWS]))
        elif action in (_CANARY_DECISION, _WATCH_DECISION):
            canary.setdefault((change_key, data.get("step"), data.get("bake")), _Binding(seq, data[ROWS]))
    yield from _check(
        "checklist result", checklist, results,
        group=lambda row: (row.change_key, row.phase, row.step),
        label=lambda group, name: f"{group[0]} {group[1]}/{group[2]} item {name}",
        name=lambda row: row.item_id, digest=checklist_row_digest)
    yield from _check(
        "canary measurement", canary, measurements,
        group=lambda row: (row.change_key, row.step, row.bake),
        label=lambda group, name: f"{group[0]} step {group[1]} bake {group[2]} row {name}",
        name=lambda row: str(row.id), digest=measurement_row_digest)


def _check(kind: str, bindings: dict[tuple, _Binding], rows, *, group, label, name, digest) -> Iterator[str]:
    seen: dict[tuple, set[str]] = {}
    for row in rows:
        key = group(row)
        binding = bindings.get(key)
        if binding is None:
            continue
        row_name = name(row)
        seen.setdefault(key, set()).add(row_name)
        recorded = binding.digests.get(row_name)
        if recorded is None:
            yield (f"{kind} {label(key, row_name)} was added after event {binding.seq} recorded the decision it "
                   "would have changed: it was written outside changeflow")
        elif recorded != digest(row):
            yield (f"{kind} {label(key, row_name)} differs from what event {binding.seq} recorded: "
                   "it was edited outside changeflow")
    for key, binding in bindings.items():
        for row_name in sorted(set(binding.digests) - seen.get(key, set())):
            yield f"{kind} {label(key, row_name)} that event {binding.seq} recorded is gone"
