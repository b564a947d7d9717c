"""The change success score (issue 33): how a service's or a team's changes ended, compared with the operations
specification's targets ("Change Failure Rate < 5 %, Rollback Rate < 2 %, MTTR < 1 hour (P0), < 4 hours (P1)";
its P0 and P1 are our P1 and P2), and the policy rules that use it (a service whose changes often fail needs more
approvals). Pure: the rows come from the services, the thresholds from policies.yaml `score:`."""

from __future__ import annotations

import statistics
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from ._policy_file import ApprovalRequirement, ScoreRule, ScoreTargets

SUCCEEDED, FAILED, ROLLED_BACK = "succeeded", "failed", "rolled_back"


@dataclass(frozen=True)
class Ended:
    """One change that ended: how (a completed change rolled back afterwards counts rolled back, from when its
    rollback ended), its type, when it was filed and ended, and for an emergency its incident's severity."""

    service: str
    type: str
    outcome: str
    created_at: datetime
    ended_at: datetime
    severity: str | None = None
    review_due: bool = False
    review_done: bool = False
    reverted_at: datetime | None = None  # when a rollback of its own succeeded (it completed, then was undone)

    def outcome_at(self, at: datetime | None = None) -> str:
        """Its outcome as it read at `at` (None: now): a completed change counts rolled back from the moment a
        rollback of its own succeeded (DORA counts it failed)."""
        if self.outcome == SUCCEEDED and self.reverted_at is not None and (at is None or self.reverted_at < at):
            return ROLLED_BACK
        return self.outcome


@dataclass(frozen=True)
class Score:
    name: str
    changes: int
    succeeded: int
    success_rate: float | None
    change_failure_rate: float | None
    rollback_rate: float | None
    emergency_share: float | None
    review_completion: float | None  # reviews recorded, of those due (None: none due)
    restore_hours: dict[str, float]  # median filing -> success of emergency fixes, per incident severity
    flags: tuple[str, ...]  # the targets it misses


def score_of(name: str, ended: Sequence[Ended], targets: ScoreTargets, emergency_types: Iterable[str]) -> Score:
    """The score of `ended` (one group's changes over one range)."""
    total = len(ended)
    outcomes = [e.outcome_at() for e in ended]
    succeeded = outcomes.count(SUCCEEDED)
    rolled_back = outcomes.count(ROLLED_BACK)
    failed = total - succeeded

    def share(count: int, of: int) -> float | None:
        return round(count / of, 4) if of else None

    urgent = set(emergency_types)
    restore: dict[str, list[float]] = {}
    for e, outcome in zip(ended, outcomes):
        if e.type in urgent and outcome == SUCCEEDED and e.severity:
            restore.setdefault(e.severity, []).append((e.ended_at - e.created_at).total_seconds() / 3600)
    restore_hours = {severity: round(statistics.median(hours), 2) for severity, hours in sorted(restore.items())}
    due = sum(e.review_due for e in ended)
    flags = []
    failure_rate, rollback_rate = share(failed, total), share(rolled_back, total)
    if failure_rate is not None and failure_rate >= targets.change_failure_rate:
        flags.append(f"change failure rate {failure_rate:.1%} (target < {targets.change_failure_rate:.0%})")
    if rollback_rate is not None and rollback_rate >= targets.rollback_rate:
        flags.append(f"rollback rate {rollback_rate:.1%} (target < {targets.rollback_rate:.0%})")
    for severity, target in targets.restore_hours.items():
        hours = restore_hours.get(str(getattr(severity, "value", severity)))
        if hours is not None and hours >= target:
            flags.append(f"time to restore {severity.value} {hours:g} h (target < {target:g} h)")
    return Score(name, total, succeeded, share(succeeded, total), failure_rate, rollback_rate,
                 share(sum(e.type in urgent for e in ended), total),
                 share(sum(e.review_done for e in ended if e.review_due), due), restore_hours, tuple(flags))


@dataclass(frozen=True)
class Standing:
    """A service's success over a score window ending at a moment: what a score rule reads."""

    changes: int
    success_rate: float | None


class EndedHistory:
    """One service's ended changes in time order, for its standing at any moment: bisected, with running counts,
    so the what-if asks it for 80,000 filings as cheaply as filing asks it once. The one rule both apply."""

    def __init__(self, ended: Sequence[Ended]):
        self._at = [e.ended_at for e in ended]
        self._succeeded = [0]
        for e in ended:
            self._succeeded.append(self._succeeded[-1] + (e.outcome == SUCCEEDED))
        self._reverted = [(e.ended_at, e.reverted_at) for e in ended if e.outcome == SUCCEEDED and e.reverted_at]

    def standing(self, at: datetime, window: timedelta) -> Standing:
        """Over the changes that ended in [at - window, at), as their outcomes read at `at`."""
        start, end = bisect_left(self._at, at - window), bisect_left(self._at, at)
        if end == start:
            return Standing(0, None)
        succeeded = self._succeeded[end] - self._succeeded[start] - sum(
            1 for ended, reverted in self._reverted if at - window <= ended < at and reverted < at)
        return Standing(end - start, round(succeeded / (end - start), 4))


def score_rule_approvals(rules: Sequence[ScoreRule], change_type: str,
                         standing: Standing) -> list[ApprovalRequirement]:
    """The approvals the score rules add for a change of `change_type` on a service with `standing`."""
    return [approval for rule in rules
            if change_type in rule.types and standing.changes >= rule.min_changes
            and standing.success_rate is not None and standing.success_rate < rule.below
            for approval in rule.approvals]
