"""The change success score as reports (issue 33): `score`, per service, per team (directory.yaml `team:`) and for
all, over the last 30 and 90 days of the range, with the targets each misses; `score-trend`, week by week. The
figures are the domain's (`score_of`); this module only reads the rows and groups them."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from sqlmodel import Session

from ..domain import Ended, Org, Score, change_type, score_of
from ..storage import ended_changes

SCORE_WINDOWS = (30, 90)  # days, ending at the range's end
SCORE_FIELDS = ("scope", "name", "days", "changes", "succeeded", "success_rate", "change_failure_rate",
                "rollback_rate", "emergency_share", "review_completion", "restore_p1_h", "restore_p2_h", "flags")
TREND_FIELDS = ("week", "changes", "success_rate", "change_failure_rate", "rollback_rate", "emergency_share")


def _emergency_types(org: Org) -> list[str]:
    """The types that fix incidents (those whose policy asks for the incident's severity)."""
    return [name for name in org.policies.types
            if "incident_severity" in change_type(org.policies, name).policy.requires]


def _row(scope: str, days: int, score: Score) -> dict:
    return {"scope": scope, "name": score.name, "days": days, "changes": score.changes, "succeeded": score.succeeded,
            "success_rate": score.success_rate, "change_failure_rate": score.change_failure_rate,
            "rollback_rate": score.rollback_rate, "emergency_share": score.emergency_share,
            "review_completion": score.review_completion, "restore_p1_h": score.restore_hours.get("P1"),
            "restore_p2_h": score.restore_hours.get("P2"), "flags": "; ".join(score.flags)}


def score_rows(session: Session, org: Org, since: datetime, until: datetime, service: str | None = None) -> list[dict]:
    """For each window (30 and 90 days ending at `until`, never before `since`): a row per service, per team and
    one for all (only the service's and its team's with `service`)."""
    teams = {name: entry.team for name, entry in org.directory.services.items() if entry.team}
    team = teams.get(service) if service else None
    members = [name for name, of in teams.items() if of == team] if team else None
    targets, urgent = org.policies.score.targets, _emergency_types(org)
    rows = []
    for days in SCORE_WINDOWS:
        start = max(since, until - timedelta(days=days))
        ended = ended_changes(session, start, until, services=members if team else None,
                              service=None if team else service)
        by_service: dict[str, list[Ended]] = defaultdict(list)
        by_team: dict[str, list[Ended]] = defaultdict(list)
        for e in ended:
            by_service[e.service].append(e)
            if e.service in teams:
                by_team[teams[e.service]].append(e)
        rows += [_row("service", days, score_of(name, group, targets, urgent))
                 for name, group in sorted(by_service.items()) if service is None or name == service]
        rows += [_row("team", days, score_of(name, group, targets, urgent)) for name, group in sorted(by_team.items())]
        if service is None:
            rows.append(_row("all", days, score_of("(all)", ended, targets, urgent)))
    return rows


def trend_rows(session: Session, org: Org, since: datetime, until: datetime, service: str | None = None) -> list[dict]:
    """Week by week (Monday 00:00 UTC), oldest first: how the changes that ended that week ended."""
    targets, urgent = org.policies.score.targets, _emergency_types(org)
    weeks: dict[datetime, list[Ended]] = defaultdict(list)
    for e in ended_changes(session, since, until, service=service):
        day = e.ended_at.replace(hour=0, minute=0, second=0, microsecond=0)
        weeks[day - timedelta(days=day.weekday())].append(e)
    rows = []
    for week, group in sorted(weeks.items()):
        score = score_of(f"{week:%Y-%m-%d}", group, targets, urgent)
        rows.append({"week": score.name, "changes": score.changes, "success_rate": score.success_rate,
                     "change_failure_rate": score.change_failure_rate, "rollback_rate": score.rollback_rate,
                     "emergency_share": score.emergency_share})
    return rows
