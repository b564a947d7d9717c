"""Risk assessment: the requester's answers, raised by how often this service's recent changes failed."""

from __future__ import annotations

from dataclasses import dataclass

from ._policy_file import RiskPolicy
from ._enums import BackoutDifficulty, Complexity, RiskLevel, UsersAffected
from ._schemas import RiskAnswers

_USERS = {UsersAffected.none: 0, UsersAffected.few: 1, UsersAffected.many: 2, UsersAffected.all: 3}
_COMPLEXITY = {Complexity.low: 0, Complexity.medium: 1, Complexity.high: 2}
_BACKOUT = {BackoutDifficulty.easy: 0, BackoutDifficulty.moderate: 1, BackoutDifficulty.hard: 3}


@dataclass(frozen=True)
class ServiceHistory:
    """How the service's recently implemented changes ended."""

    implemented: int
    failed: int

    @property
    def failure_rate(self) -> float:
        return self.failed / self.implemented if self.implemented else 0.0


@dataclass(frozen=True)
class RiskAssessment:
    level: RiskLevel
    score: int
    reasons: tuple[str, ...]


def assess_risk(answers: RiskAnswers, history: ServiceHistory, policy: RiskPolicy) -> RiskAssessment:
    score, reasons = 0, []

    def add(points: int, reason: str) -> None:
        nonlocal score
        if points:
            score += points
            reasons.append(f"+{points} {reason}")

    add(_USERS[answers.users_affected], f"users affected: {answers.users_affected.value}")
    add(_COMPLEXITY[answers.complexity], f"complexity: {answers.complexity.value}")
    add(_BACKOUT[answers.backout_difficulty], f"back-out: {answers.backout_difficulty.value}")
    if not answers.tested_in_staging:
        add(2, "not tested in staging")
    if answers.touches_data:
        add(2, "modifies stored data")
    if history.implemented >= policy.failure_rate_min_changes:
        rate = history.failure_rate
        label = f"service change failure rate {rate:.0%} ({history.failed}/{history.implemented} recent changes)"
        if rate >= 0.30:
            add(3, label)
        elif rate >= 0.15:
            add(2, label)
    return RiskAssessment(risk_level_of(score, policy), score, tuple(reasons))


def risk_level_of(score: int, policy: RiskPolicy) -> RiskLevel:
    """The level a risk score reaches under `policy`'s thresholds (the what-if reads a recorded score this way)."""
    if score >= policy.high_from:
        return RiskLevel.high
    if score >= policy.medium_from:
        return RiskLevel.medium
    return RiskLevel.low
