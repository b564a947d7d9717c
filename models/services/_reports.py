"""Reports over the change log: DORA figures, compliance findings, approval SLAs, refusals; and their registry
(`REPORTS`), which the CLI and the audit-report flow read.

Definitions (docs/audit.md repeats them):
- deployment frequency: changes whose outcome `succeeded` was recorded in the range, per day;
- lead time: submitted (created_at) -> completed (ended_at), median and p90 (nearest rank);
- change failure rate: (failed + rolled_back) / all outcomes recorded in the range;
- time to restore: a failure's ended_at -> the next succeeded change on the same service (median; failures
  with no later success are counted as unrestored).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable

from sqlalchemy import and_, case, func, or_, select, true
from sqlmodel import Session

from ..domain import FAILED_OUTCOMES, AuditAction, InputError, Org, change_type, scheduled_windows, utcnow
from ..storage import (
    ActionItemRecord,
    Approval,
    AuditEvent,
    ChangeRequest,
    MaintenanceWindow,
    Notification,
    decode_data,
    record_problems,
    verify_chain,
    without_jit,
)
from ._score_report import SCORE_FIELDS, TREND_FIELDS, score_rows, trend_rows
from ._unit_of_work import UnitOfWork



def _hours(delta: timedelta) -> float:
    return round(delta.total_seconds() / 3600, 4)


def p90(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[math.ceil(0.9 * len(ordered)) - 1]


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 4) if values else None


def _seconds_between(dialect: str, start, end):
    if dialect == "postgresql":
        return func.extract("epoch", end - start)
    return (func.julianday(end) - func.julianday(start)) * 86400.0


def dora(session: Session, since: datetime, until: datetime, service: str | None = None) -> list[dict]:
    """One row per service and an `(all)` row.

    The database does the per-change work: each change's lead time, and for each failure the next success on its
    service, one index seek per failure (ix_change_service_ended: failures are a few percent of a year, and the
    seek stops at the first later success). A window over every change of the range did the same in 2.5 s on a
    year of the 1M history (issue 33). Python only aggregates numbers.
    """
    t = ChangeRequest.__table__.c
    dialect = session.get_bind().dialect.name
    without_jit(session)
    # A change that completed and was rolled back afterwards (`changeflow rollback`, issue 32) failed, whatever
    # its own row says: the rollback that worked names it. (Uncorrelated: evaluated once.)
    reverting = ChangeRequest.__table__.alias("reverting")
    reverted = select(reverting.c.rolls_back).where(reverting.c.rolls_back.is_not(None),
                                                    reverting.c.outcome == "succeeded")
    outcome = case((t.key.in_(reverted), "rolled_back"), else_=t.outcome)
    # The next success on the service after a failure, in (ended_at, id) order; one not reverted since.
    later = ChangeRequest.__table__.alias("later")
    next_success = (select(later.c.ended_at)
                    .where(later.c.service == t.service, later.c.ended_at >= t.ended_at,
                           or_(later.c.ended_at > t.ended_at, later.c.id > t.id),
                           later.c.outcome == "succeeded", later.c.key.not_in(reverted))
                    .order_by(later.c.ended_at, later.c.id).limit(1).scalar_subquery())
    # Only a failure looks for its restoration (CASE evaluates its branch on demand).
    restored_at = case((outcome.in_(FAILED_OUTCOMES), next_success))
    query = select(t.service, outcome, _seconds_between(dialect, t.created_at, t.ended_at),
                   _seconds_between(dialect, t.ended_at, restored_at)
                   ).where(t.ended_at >= since, t.ended_at < until, t.outcome.is_not(None))
    if service:
        query = query.where(t.service == service)
    rows = session.execute(query).all()
    days = max((until - since).total_seconds() / 86400, 1e-9)
    groups: dict[str, list] = defaultdict(list)
    for row in rows:
        groups[row[0]].append(row)
    result = [_dora_row(name, group, days) for name, group in sorted(groups.items())]
    result.append(_dora_row("(all)", rows, days))
    return result


def _dora_row(name: str, rows: list, days: float) -> dict:
    lead = [round(float(r[2]) / 3600, 4) for r in rows if r[1] == "succeeded"]
    failures = [r for r in rows if r[1] in FAILED_OUTCOMES]
    restores = [round(float(r[3]) / 3600, 4) for r in failures if r[3] is not None]
    return {
        "service": name,
        "deployments": len(lead),
        "deployments_per_day": round(len(lead) / days, 4),
        "lead_time_median_h": _median(lead),
        "lead_time_p90_h": p90(lead),
        "implemented": len(rows),
        "failed": len(failures),
        "change_failure_rate": round(len(failures) / len(rows), 4) if rows else None,
        "time_to_restore_median_h": _median(restores),
        "unrestored_failures": len(failures) - len(restores),
    }


def _events(session: Session, keys: list[str], actions: tuple[str, ...]) -> dict[str, list[AuditEvent]]:
    found: dict[str, list[AuditEvent]] = defaultdict(list)
    for chunk in range(0, len(keys), 500):
        for event in session.execute(
            select(AuditEvent).where(AuditEvent.change_key.in_(keys[chunk:chunk + 500]),
                                     AuditEvent.action.in_(actions)).order_by(AuditEvent.seq)
        ).scalars():
            found[event.change_key].append(event)
    return found


def compliance(session: Session, org: Org, since: datetime, until: datetime, service: str | None = None,
               now: datetime | None = None, chain_anchor: tuple[int, str] | None = None) -> list[dict]:
    """Findings, one row each: kind, change, detail. An empty `unapproved_implementation` kind is the goal."""
    now = now or utcnow()
    findings: list[dict] = []
    stmt = select(ChangeRequest).where(ChangeRequest.implemented_at >= since, ChangeRequest.implemented_at < until)
    if service:
        stmt = stmt.where(ChangeRequest.service == service)
    implemented = list(session.execute(stmt).scalars())
    keys = [c.key for c in implemented]
    events = _events(session, keys, ("policy_decision", "review_recorded", "early_start"))
    approvals: dict[int, Counter] = defaultdict(Counter)
    for change_id, round_, role in session.execute(
        select(Approval.change_id, Approval.round, Approval.role).where(
            Approval.change_id.in_([c.id for c in implemented] or [-1]), Approval.decision == "approve")
    ):
        approvals[(change_id, round_)][role] += 1
    windows = {name: scheduled_windows(org.policies.windows_in(name), since - timedelta(days=1),
                                       until + timedelta(days=1)) for name in org.policies.environments}
    ad_hoc = list(session.execute(select(MaintenanceWindow).where(
        MaintenanceWindow.starts_at < until, MaintenanceWindow.ends_at > since - timedelta(days=1))).scalars())
    for change in implemented:
        decisions = [decode_data(e) for e in events[change.key] if e.action == "policy_decision"]
        decision = next((d for d in reversed(decisions) if "required" in d), None)
        if decision is None or not decision.get("pre_approved_template"):
            required = (decision or {}).get("required") or []
            given = approvals[(change.id, change.approval_round)]
            missing = {r["role"]: r["count"] - given[r["role"]] for r in required if given[r["role"]] < r["count"]}
            if decision is None or missing:
                findings.append({"kind": "unapproved_implementation", "change": change.key,
                                 "detail": "no policy decision recorded" if decision is None else
                                 "missing " + ", ".join(f"{n} x {r}" for r, n in sorted(missing.items()))})
        at = change.implemented_at
        rules = change_type(org.policies, change.type, change.environment)
        if not rules.overrides_freeze:
            freeze = next((w for w in ad_hoc if w.freeze and w.starts_at <= at < w.ends_at
                           and w.service in (None, change.service) and w.environment in (None, rules.environment)),
                          None)
            if freeze is not None:
                findings.append({"kind": "inside_freeze", "change": change.key,
                                 "detail": f"implemented {at:%Y-%m-%d %H:%M} in freeze '{freeze.title}'"})
        if rules.scheduled:
            in_window = any(w.starts_at <= at < w.ends_at for w in windows[rules.environment]) or any(
                not w.freeze and w.starts_at <= at < w.ends_at and w.service in (None, change.service)
                and w.environment in (None, rules.environment) for w in ad_hoc)
            # An early start a person the policy names authorised, with their code, in the round that ran.
            early = next((e for e in reversed(events[change.key]) if e.action == "early_start"
                          and decode_data(e).get("round", change.approval_round) == change.approval_round), None)
            if not in_window and early is not None:
                findings.append({"kind": "authorised_early_start", "change": change.key,
                                 "detail": f"implemented {at:%a %Y-%m-%d %H:%M} UTC before its window, started early "
                                           f"by {early.actor}: {decode_data(early).get('reason') or 'no reason'}"})
            elif not in_window:
                findings.append({"kind": "outside_window", "change": change.key,
                                 "detail": f"implemented {at:%a %Y-%m-%d %H:%M} UTC, outside any maintenance window"})
        if rules.always_reviewed and change.ended_at is not None:
            # Kind name kept from when only emergencies were always reviewed: reports and dashboards filter on it.
            due = change.ended_at + rules.review_within
            reviewed = [e for e in events[change.key] if e.action == "review_recorded"]
            if (not reviewed and now > due) or (reviewed and reviewed[0].occurred_at > due):
                findings.append({"kind": "emergency_without_review", "change": change.key,
                                 "detail": f"post-implementation review was due {due:%Y-%m-%d %H:%M}"})
    # Action items of reviews due in the range and not done by their due moment (issue 33): open, or closed late.
    late = select(ActionItemRecord).where(ActionItemRecord.due_at >= since, ActionItemRecord.due_at < min(until, now),
                                          or_(ActionItemRecord.done_at.is_(None),
                                              ActionItemRecord.done_at > ActionItemRecord.due_at))
    if service:
        late = late.join(ChangeRequest, ChangeRequest.key == ActionItemRecord.change_key).where(
            ChangeRequest.service == service)
    for item in session.execute(late.order_by(ActionItemRecord.due_at, ActionItemRecord.id)).scalars():
        state = (f"done late by {item.done_by} {item.done_at:%Y-%m-%d %H:%M}" if item.done_at
                 else f"open, {(now - item.due_at).days} days overdue")
        findings.append({"kind": "overdue_action_item", "change": item.change_key,
                         "detail": f"action item {item.number} ({item.owner}, due {item.due_at:%Y-%m-%d %H:%M} UTC, "
                                   f"{state}): {item.what[:100]}"})
    stale = now - timedelta(hours=1)
    undelivered = select(Notification).where(
        Notification.created_at >= since, Notification.created_at < until,
        (Notification.state == "failed") | (and_(Notification.state.in_(("pending", "sending")),
                                                 Notification.created_at < stale))).order_by(Notification.id)
    for note in session.execute(undelivered).scalars():
        findings.append({"kind": "undelivered_notification", "change": note.change_key,
                         "detail": f"{note.event} to {note.recipient} ({note.state}): {note.last_error[:100]}"})
    chain = verify_chain(session, after=chain_anchor)
    if not chain.ok:
        findings.append({"kind": "audit_chain_broken", "change": None,
                         "detail": f"first broken event {chain.first_broken_seq}: {chain.reason}"})
    # The approvals and change rows read above are trusted only as far as the chain explains them.
    in_range = and_(ChangeRequest.implemented_at >= since, ChangeRequest.implemented_at < until,
                    ChangeRequest.service == service if service else true())
    findings += [{"kind": "record_not_in_audit_trail", "change": None, "detail": problem[:300]}
                 for problem in record_problems(session, in_range)]
    if service:
        whole_trail = ("audit_chain_broken", "record_not_in_audit_trail")
        findings = [f for f in findings if f["kind"] in whole_trail or f["change"] in set(keys) or
                    _service_of(session, f["change"]) == service]
    return findings


def _service_of(session: Session, key: str | None) -> str | None:
    if key is None:
        return None
    return session.execute(select(ChangeRequest.service).where(ChangeRequest.key == key)).scalar()


def sla(session: Session, org: Org, since: datetime, until: datetime, service: str | None = None) -> list[dict]:
    """Approval times against each type's SLA, and the escalation reminders fired."""
    t = ChangeRequest.__table__.c
    stmt = select(t.key, t.type, t.approval_requested_at, t.approved_at).where(
        t.approval_requested_at >= since, t.approval_requested_at < until)
    if service:
        stmt = stmt.where(t.service == service)
    changes = session.execute(stmt).all()
    reminders = Counter(session.execute(
        select(Notification.change_key).where(Notification.event == "approval_reminder",
                                              Notification.created_at >= since)
    ).scalars())
    rows = []
    for type_name, policy in org.policies.types.items():
        of_type = [c for c in changes if c.type == type_name]
        limit = policy.approval_sla
        waits = [c.approved_at - c.approval_requested_at for c in of_type if c.approved_at is not None]
        hours = [_hours(w) for w in waits]
        rows.append({"type": type_name, "requested": len(of_type), "approved": len(waits),
                     "sla_h": _hours(limit), "median_h": _median(hours), "max_h": max(hours) if hours else None,
                     "breaches": sum(1 for w in waits if w > limit),
                     "escalations": sum(reminders[c.key] for c in of_type)})
    return rows


# Refused attempts: the controls that held. Not compliance findings (nothing went wrong, issue 30), but an auditor
# asks who tried what.
REFUSALS = tuple(action.value for action in AuditAction if action.value.endswith("_refused"))


def refusals(session: Session, since: datetime, until: datetime, service: str | None = None) -> list[dict]:
    """Every refused attempt in the range, one row each: when, kind, change, who, why."""
    stmt = select(AuditEvent).where(AuditEvent.action.in_(REFUSALS),  # type: ignore[attr-defined]
                                    AuditEvent.occurred_at >= since, AuditEvent.occurred_at < until)
    if service:
        stmt = stmt.join(ChangeRequest, ChangeRequest.key == AuditEvent.change_key).where(
            ChangeRequest.service == service)
    rows = []
    for event in session.execute(stmt.order_by(AuditEvent.seq)).scalars():
        data = decode_data(event)
        why = str(data.get("reason") or data.get("refusal") or "")
        rows.append({"at": event.occurred_at.isoformat(), "kind": event.action.removesuffix("_refused"),
                     "change": event.change_key, "who": event.actor,
                     "why": ("self-approval: " if "self-approval" in why else "") + why[:300]})
    return rows


# Reports as a registry: one entry per report (its output fields and the function above that computes it), used
# by the CLI and the audit-report flow alike. A new report is its function plus one entry here.
ReportRows = list[dict[str, Any]]


@dataclass(frozen=True)
class Report:
    name: str
    fields: tuple[str, ...]
    # (session, org, since, until, service, chain anchor: the last signed checkpoint's seq and hash, or None)
    compute: Callable[[Session, Org, datetime, datetime, str | None, tuple[int, str] | None], ReportRows]


@dataclass(frozen=True)
class ReportResult:
    name: str
    rows: ReportRows
    fields: tuple[str, ...]


REPORTS: dict[str, Report] = {report.name: report for report in (
    Report("dora", ("service", "deployments", "deployments_per_day", "lead_time_median_h", "lead_time_p90_h",
                    "implemented", "failed", "change_failure_rate", "time_to_restore_median_h",
                    "unrestored_failures"),
           lambda session, _org, since, until, service, _anchor: dora(session, since, until, service)),
    Report("compliance", ("kind", "change", "detail"),
           lambda session, org, since, until, service, anchor: compliance(session, org, since, until, service,
                                                                          chain_anchor=anchor)),
    Report("sla", ("type", "requested", "approved", "sla_h", "median_h", "max_h", "breaches", "escalations"),
           lambda session, org, since, until, service, _anchor: sla(session, org, since, until, service)),
    Report("refusals", ("at", "kind", "change", "who", "why"),
           lambda session, _org, since, until, service, _anchor: refusals(session, since, until, service)),
    Report("score", SCORE_FIELDS,
           lambda session, org, since, until, service, _anchor: score_rows(session, org, since, until, service)),
    Report("score-trend", TREND_FIELDS,
           lambda session, org, since, until, service, _anchor: trend_rows(session, org, since, until, service)),
)}


class ReportService:
    def __init__(self, uow: UnitOfWork):
        self._uow = uow

    def run(self, name: str, since: datetime | None = None, until: datetime | None = None,
            on_service: str | None = None, chain_anchor: tuple[int, str] | None = None) -> ReportResult:
        """`chain_anchor`: the last valid signed checkpoint (seq, hash); the compliance report then verifies the
        audit chain only after it instead of from the first event."""
        report = REPORTS.get(name)
        if report is None:
            raise InputError(f"report: {name!r} is not one of {', '.join(REPORTS)}", [("report", "unknown")])
        until = until or utcnow()
        since = since or until - timedelta(days=365)
        if since >= until:
            raise InputError("--since: must be before --until", [("since", "after until")])
        with self._uow.read() as session:
            rows = report.compute(session, self._uow.org, since, until, on_service, chain_anchor)
        return ReportResult(name, rows, report.fields)
