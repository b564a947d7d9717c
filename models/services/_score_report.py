"""The change success score as reports (issue 33): `score`, per service, per team (directory.yaml `team:`) and for
all, over the last 30 and 90 days of the range, with the targets each misses; `score-trend`, week by week. The
figures are the domain's (`score_of`); this module only reads the rows and groups them."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from sqlmodel import Session

from ..domain import Org, Score, Tally, change_type, score_of
from ..storage import ended_tallies

SCORE_WINDOWS = (30, 90)  # days, ending at the range's end (the shortest within the longest)
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
    one for all (only the service's and its team's with `service`). Counted by the database, merged here."""
    teams = {name: entry.team for name, entry in org.directory.services.items() if entry.team}
    team = teams.get(service) if service else None
    targets, urgent = org.policies.score.targets, _emergency_types(org)
    shortest, longest = min(SCORE_WINDOWS), max(SCORE_WINDOWS)
    # One pass over the longest window, each change marked whether it falls in the shortest too.
    counted = ended_tallies(session, max(since, until - timedelta(days=longest)), until, urgent, by="service",
                            recent_from=max(since, until - timedelta(days=shortest)))
    rows = []
    for days in SCORE_WINDOWS:
        by_service: dict[str, Tally] = {}
        for (name, recent), tally in counted.items():
            if recent or days == longest:
                by_service[name] = by_service.get(name, Tally()).merge(tally)
        by_team: dict[str, Tally] = {}
        for name, tally in by_service.items():
            if name in teams:
                by_team[teams[name]] = by_team.get(teams[name], Tally()).merge(tally)
        rows += [_row("service", days, score_of(name, tally, targets))
                 for name, tally in sorted(by_service.items()) if service is None or name == service]
        rows += [_row("team", days, score_of(name, tally, targets))
                 for name, tally in sorted(by_team.items()) if service is None or name == team]
        if service is None:
            everyone = sum(by_service.values(), Tally())
            rows.append(_row("all", days, score_of("(all)", everyone, targets)))
    return rows


def trend_rows(session: Session, org: Org, since: datetime, until: datetime, service: str | None = None) -> list[dict]:
    """Week by week (Monday 00:00 UTC), oldest first: how the changes that ended that week ended."""
    targets, urgent = org.policies.score.targets, _emergency_types(org)
    weeks: dict[date, Tally] = {}
    for (day, _), tally in ended_tallies(session, since, until, urgent, by="day", service=service).items():
        monday = date.fromisoformat(day) - timedelta(days=date.fromisoformat(day).weekday())
        weeks[monday] = weeks.get(monday, Tally()).merge(tally)
    rows = []
    for week, tally in sorted(weeks.items()):
        score = score_of(f"{week:%Y-%m-%d}", tally, targets)
        rows.append({"week": score.name, "changes": score.changes, "success_rate": score.success_rate,
                     "change_failure_rate": score.change_failure_rate, "rollback_rate": score.rollback_rate,
                     "emergency_share": score.emergency_share})
    return rows
