"""The change success score (issue 33): how a service's or a team's changes ended, compared with the operations
specification's targets ("Change Failure Rate < 5 %, Rollback Rate < 2 %, MTTR < 1 hour (P0), < 4 hours (P1)";
its P0 and P1 are our P1 and P2), and the policy rules that use it (a service whose changes often fail needs more
approvals). Pure: the rows come from the services, the thresholds from policies.yaml `score:`."""

from __future__ import annotations

import statistics
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ._escalation import format_wait
from ._policy_file import ApprovalRequirement, PreApprovalRule, ScoreRule, ScoreTargets

SUCCEEDED, FAILED, ROLLED_BACK = "succeeded", "failed", "rolled_back"


@dataclass(frozen=True)
class Ended:
    """One change that ended: how, its type, when it was filed and ended, for an emergency its incident's severity,
    and when a rollback of its own undid it (a completed change counts rolled back from then on: DORA counts it
    failed)."""

    service: str
    type: str
    outcome: str
    created_at: datetime
    ended_at: datetime
    severity: str | None = None
    reverted_at: datetime | None = None  # when a rollback of its own succeeded (it completed, then was undone)


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


@dataclass
class Tally:
    """How one group's changes ended, counted by the database (`storage.ended_tallies`): what a score is computed
    from, merged into a team's or everyone's."""

    changes: int = 0
    succeeded: int = 0
    rolled_back: int = 0
    emergencies: int = 0
    reviews_due: int = 0
    reviews_done: int = 0
    restore: dict[str, list[float]] = field(default_factory=dict)  # hours filing -> success of emergency fixes

    def add(self, count: int, *, outcome: str, emergency: bool, review_due: bool, review_done: bool) -> None:
        self.changes += count
        self.succeeded += count if outcome == SUCCEEDED else 0
        self.rolled_back += count if outcome == ROLLED_BACK else 0
        self.emergencies += count if emergency else 0
        self.reviews_due += count if review_due else 0
        self.reviews_done += count if review_due and review_done else 0

    def __add__(self, other: "Tally") -> "Tally":  # sum(tallies, Tally())
        return self.merge(other)

    def merge(self, other: "Tally") -> "Tally":
        merged = Tally(self.changes + other.changes, self.succeeded + other.succeeded,
                       self.rolled_back + other.rolled_back, self.emergencies + other.emergencies,
                       self.reviews_due + other.reviews_due, self.reviews_done + other.reviews_done,
                       {k: list(v) for k, v in self.restore.items()})
        for severity, hours in other.restore.items():
            merged.restore.setdefault(severity, []).extend(hours)
        return merged


def score_of(name: str, tally: Tally, targets: ScoreTargets) -> Score:
    """The score of one group's changes over one range, with the targets it misses."""
    def share(count: int, of: int) -> float | None:
        return round(count / of, 4) if of else None

    total = tally.changes
    restore_hours = {severity: round(statistics.median(hours), 2) for severity, hours in sorted(tally.restore.items())
                     if hours}
    flags = []
    failure_rate, rollback_rate = share(total - tally.succeeded, total), share(tally.rolled_back, total)
    if failure_rate is not None and failure_rate >= targets.change_failure_rate:
        flags.append(f"change failure rate {failure_rate:.1%} (target < {targets.change_failure_rate:.0%})")
    if rollback_rate is not None and rollback_rate >= targets.rollback_rate:
        flags.append(f"rollback rate {rollback_rate:.1%} (target < {targets.rollback_rate:.0%})")
    for severity, target in targets.restore_hours.items():
        hours = restore_hours.get(str(getattr(severity, "value", severity)))
        if hours is not None and hours >= target:
            flags.append(f"time to restore {severity.value} {hours:g} h (target < {target:g} h)")
    return Score(name, total, tally.succeeded, share(tally.succeeded, total), failure_rate, rollback_rate,
                 share(tally.emergencies, total), share(tally.reviews_done, tally.reviews_due), restore_hours,
                 tuple(flags))


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


def pre_approval_withheld(rule: PreApprovalRule | None, standing: Standing | None, window: timedelta) -> str | None:
    """Why a pre-approved template's change goes through the gate after all (None: it may skip it): its service's
    record is short of policies.yaml `score.pre_approval`."""
    if rule is None or standing is None:
        return None
    rate = standing.success_rate
    if standing.changes >= rule.min_changes and rate is not None and rate > rule.above:
        return None
    record = f"{rate:.0%} of {standing.changes}" if rate is not None else "none of 0"
    return (f"its service succeeded in {record} changes over {format_wait(window)}; pre-approval needs more than "
            f"{rule.above:.0%} of at least {rule.min_changes}")
