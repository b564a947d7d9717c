"""Policy what-if (issue 34): the changes filed in a range judged under a proposed policy set and under the current
one, with the domain's rules (`models.domain._what_if.judge`), and what differs. Read only: it writes nothing."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, get_args

from sqlalchemy import select

from ..domain import (AuditAction, Decision, Directory, Ended, EndedHistory, FiledChange, GivenApproval, Judge,
                      PolicySet, RequiredField, WindowSpec, differences)
from ..storage import Approval, AuditEvent, ChangeRequest, MaintenanceWindow, decode_data, ended_changes
from ._unit_of_work import UnitOfWork

# Filed changes read per query: a quarter of the 1M-change history is about 80,000.
_PAGE = 5_000
# What the rules read of a filed change: who, what, when, and every field a type's policy may require.
_COLUMNS = [ChangeRequest.__table__.c[name] for name in dict.fromkeys((  # type: ignore[attr-defined]
    "id", "key", "title", "service", "type", "environment", "created_at", "planned_start", "planned_end",
    "risk_score", "risk_level", "approval_round", "approved_at", "template", *get_args(RequiredField)))]


@dataclass(frozen=True)
class WhatIfRow:
    key: str
    title: str
    service: str
    type: str
    differences: tuple[str, ...]
    added_wait: timedelta | None  # how much earlier it would have had to be filed (a longer notice)


@dataclass(frozen=True)
class WhatIfReport:
    since: datetime
    until: datetime
    changes: int  # judged
    rows: list[WhatIfRow]  # those the proposed policy would have treated differently, by filing
    refused: int
    approvals_changed: int
    risk_moved: int
    approvers_short: int
    score_rules: int  # those a score rule gave more approvals
    added_wait_median: timedelta | None
    added_wait_p90: timedelta | None


@dataclass(frozen=True)
class Replay:
    """The policy in force replayed over the record: how many changes were judged, and each way a judgement
    differs from what was recorded (`"KEY: what"`)."""

    changes: int
    differences: list[str]


class WhatIfService:
    def __init__(self, uow: UnitOfWork):
        self._uow = uow

    def compare(self, proposed: PolicySet, directory: Directory, since: datetime, until: datetime,
                service: str | None = None, freezes: Sequence[WindowSpec] = ()) -> WhatIfReport:
        """Every change filed in [since, until) (of `service`), judged under the current policy set and directory
        and under `proposed` / `directory` with the proposed `freezes` beside the recorded ones, and what would have
        been decided differently."""
        current, people = self._uow.org.policies, self._uow.org.directory
        rows: list[WhatIfRow] = []
        judged = 0
        recorded = self._recorded_windows(since)
        histories = self._histories(since, until, current, proposed)
        judge_now, judge_proposed = Judge(current, people, histories), Judge(proposed, directory, histories)
        for change, filed in self._filed(since, until, service):
            judged += 1
            windows, frozen = _of(recorded, change)
            proposed_freezes = [f for f in freezes if f.service in (None, change.service)]
            found = differences(judge_now(filed, windows, frozen),
                                after := judge_proposed(filed, windows, [*frozen, *proposed_freezes]))
            if found:
                rows.append(WhatIfRow(change.key or "", change.title, change.service, change.type, tuple(found),
                                      after.added_wait))
        waits = sorted(r.added_wait for r in rows if r.added_wait is not None)
        return WhatIfReport(
            since=since, until=until, changes=judged, rows=rows,
            refused=sum(any(d.startswith("refused:") for d in r.differences) for r in rows),
            approvals_changed=sum(any(d.startswith("approvals ") for d in r.differences) for r in rows),
            risk_moved=sum(any(d.startswith("risk ") for d in r.differences) for r in rows),
            score_rules=sum(any(d.startswith("score rule: ") for d in r.differences) for r in rows),
            approvers_short=sum("its approvers would not have sufficed" in r.differences for r in rows),
            added_wait_median=waits[(len(waits) - 1) // 2] if waits else None,  # the lower median: a wait one had
            added_wait_p90=waits[min(len(waits) - 1, int(len(waits) * 0.9))] if waits else None)

    def replay(self, since: datetime, until: datetime) -> Replay:
        """The current policy replayed over the record: each way its judgement differs from what was recorded
        (accepted at submit, the risk level, enough approvers for an approved change). Empty: it reproduces the
        record, the proof that the replay applies the rules submission applied."""
        policies, directory = self._uow.org.policies, self._uow.org.directory
        found = []
        judged = 0
        recorded = self._recorded_windows(since)
        judge = Judge(policies, directory, self._histories(since, until, policies))
        for change, filed in self._filed(since, until, None):
            judged += 1
            judgement = judge(filed, *_of(recorded, change))
            found += [f"{change.key}: {reason}" for reason in judgement.refused]
            level = getattr(judgement.risk_level, "value", judgement.risk_level)
            if level != change.risk_level:
                found.append(f"{change.key}: risk {level}, recorded {change.risk_level}")
            if judgement.approvers_suffice is False and change.approved_at is not None:
                found.append(f"{change.key}: approved by too few under its policy")
        return Replay(judged, found)

    def _histories(self, since: datetime, until: datetime, *policy_sets: PolicySet) -> dict[str, EndedHistory]:
        """Each service's ended changes, from the longest score window before `since` on, where a score rule of
        one of `policy_sets` reads them (none: empty, nothing read)."""
        with_rules = [p.score.window for p in policy_sets if p.score.rules or p.score.pre_approval]
        if not with_rules:
            return {}
        with self._uow.read() as session:
            ended = ended_changes(session, since - max(with_rules), until)
        by_service: dict[str, list[Ended]] = defaultdict(list)
        for e in ended:
            by_service[e.service].append(e)
        return {service: EndedHistory(rows) for service, rows in by_service.items()}

    def _recorded_windows(self, since: datetime) -> list[tuple[MaintenanceWindow, datetime | None]]:
        """The ad hoc windows and freezes that end after `since` (those a change of the range may have been planned
        in or against, besides its environment's recurring windows), each with when it was declared: a freeze
        declared after a change was filed did not refuse it at submit."""
        with self._uow.read() as session:
            windows = list(session.execute(select(MaintenanceWindow).where(
                MaintenanceWindow.ends_at > since)).scalars())
            declared = {}
            for event in session.execute(select(AuditEvent).where(
                    AuditEvent.action == AuditAction.policy_decision.value, AuditEvent.change_key.is_(None),
                    AuditEvent.data.contains('"window"'))).scalars():
                declared.setdefault(decode_data(event).get("window"), event.occurred_at)
        return [(window, declared.get(window.id)) for window in windows]

    def _filed(self, since: datetime, until: datetime, service: str | None):
        """(row, FiledChange) for each change filed in the range, with the approvals of its last round, read a
        page at a time (by id, so a long range never holds every row at once)."""
        after_id = 0
        while True:
            with self._uow.read() as session:
                # Plain rows of the columns the rules read, not ORM objects: a quarter of the 1M history is 80,000
                # changes, and building an object for each was half the time.
                query = select(*_COLUMNS).where(
                    ChangeRequest.created_at >= since, ChangeRequest.created_at < until, ChangeRequest.id > after_id)
                if service is not None:
                    query = query.where(ChangeRequest.service == service)
                changes = list(session.execute(query.order_by(ChangeRequest.id).limit(_PAGE)))
                if not changes:
                    return
                given: dict[int, list[GivenApproval]] = defaultdict(list)
                rounds = {c.id: c.approval_round for c in changes}
                for approval in session.execute(select(
                        Approval.change_id, Approval.round, Approval.approver, Approval.role, Approval.on_behalf_of,
                ).where(Approval.change_id.in_(list(rounds)), Approval.decision == Decision.approve.value)):
                    if approval.round == rounds[approval.change_id]:
                        given[approval.change_id].append(GivenApproval(
                            approval.approver, approval.role, Decision.approve, approval.on_behalf_of))
            for change in changes:
                yield change, FiledChange(
                    key=change.key or "", type=change.type, environment=change.environment,
                    created_at=change.created_at, planned_start=change.planned_start,
                    planned_end=change.planned_end, risk_score=change.risk_score,
                    request=change, approvals=tuple(given[change.id]), service=change.service,
                    template=change.template)
            after_id = changes[-1].id


def _of(recorded: list[tuple[MaintenanceWindow, datetime | None]],
        change: Any) -> tuple[list[WindowSpec], list[WindowSpec]]:
    """(ad hoc windows, freezes) that held for `change`: of its service or every one, of its environment or every
    one; the freezes declared by the time it was filed (one declared later stops it at its window gate, not at
    submit)."""
    windows, freezes = [], []
    for w, declared in recorded:
        if w.service not in (None, change.service) or w.environment not in (None, change.environment):
            continue
        spec = WindowSpec(w.kind, w.starts_at, w.ends_at, w.title, w.service, freeze=w.freeze)
        if not w.freeze:
            windows.append(spec)
        elif declared is None or declared <= change.created_at:
            freezes.append(spec)
    return windows, freezes
