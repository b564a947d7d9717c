"""Canary analysis: measurements in, verdict out (Argo Rollouts' analysis, Kayenta's comparison).

Pure: no I/O, so every decision can be replayed from stored measurements. Verdicts are ordered best to worst
and folded "worst wins" across metrics.
"""

from __future__ import annotations

import math
import operator
from enum import IntEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def compare(value: float, op: str, threshold: float) -> bool:
    """`value <op> threshold` for the four operators of rules and checklist metric items."""
    return bool(_OPS[op](value, threshold))


# A source that answered with nothing (Prometheus: no series) says so with this at the start of its error, so a
# stored measurement replays the same: a metric's `on_missing` decides what no data means; any other error is
# inconclusive, always (nobody can tell what it would have shown).
NO_DATA = "no data"
OnMissing = Literal["inconclusive", "fail", "pass"]
# How hard each reading of no data is on a canary: a template's floor may be tightened, never loosened.
ON_MISSING_STRICTNESS = {"pass": 0, "inconclusive": 1, "fail": 2}


class Verdict(IntEnum):
    """Best to worst."""

    healthy = 0
    inconclusive = 1
    failed = 2


class MetricRule(BaseModel):
    """A metric is *failed* when `value <operator> threshold` is true (e.g. error_rate > 0.05)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    operator: Literal["<", "<=", ">", ">="] = ">"
    threshold: float = Field(description="Failure condition: value <operator> threshold")
    failure_limit: int = Field(default=2, ge=1, description="Failed measurements in a step before rolling back")
    inconclusive_limit: int = Field(default=3, ge=1, description="Missing/errored measurements before pausing")
    on_missing: OnMissing = Field(default="inconclusive", description="What a measurement with no data counts as")

    def breached_by(self, value: float | None) -> bool:
        """The failure condition holds; a missing or NaN value never breaches (it is inconclusive)."""
        return value is not None and not math.isnan(value) and compare(value, self.operator, self.threshold)


class Measurement(BaseModel):
    model_config = ConfigDict(frozen=True)

    metric: str
    value: float | None = None
    error: str | None = Field(default=None, description="Provider error; counts as inconclusive, never as healthy")

    @property
    def no_data(self) -> bool:
        """The source answered with nothing: what that means is the metric's `on_missing`."""
        return self.value is None and (self.error or "").startswith(NO_DATA)


class MetricVerdict(BaseModel):
    metric: str
    verdict: Verdict
    failed: int
    inconclusive: int
    reason: str


class StepDecision(BaseModel):
    action: Literal["continue", "promote", "rollback", "pause"]
    verdict: Verdict
    reasons: list[str]
    metrics: list[MetricVerdict]


def judge_metric(rule: MetricRule, measurements: list[Measurement]) -> MetricVerdict:
    failed = inconclusive = 0
    for m in measurements:
        if m.no_data and rule.on_missing != "inconclusive":
            failed += rule.on_missing == "fail"  # ("pass": counted as neither)
        elif m.error is not None or m.value is None or math.isnan(m.value):
            inconclusive += 1
        elif rule.breached_by(m.value):
            failed += 1
    if failed >= rule.failure_limit:
        verdict = Verdict.failed
        reason = f"{rule.name}: {failed} measurements {rule.operator} {rule.threshold:g} (limit {rule.failure_limit})"
    elif inconclusive >= rule.inconclusive_limit:
        verdict = Verdict.inconclusive
        reason = f"{rule.name}: {inconclusive} measurements missing or errored (limit {rule.inconclusive_limit})"
    else:
        verdict = Verdict.healthy
        reason = f"{rule.name}: {failed} failed, {inconclusive} inconclusive"
    return MetricVerdict(metric=rule.name, verdict=verdict, failed=failed, inconclusive=inconclusive, reason=reason)


def decide_step(rules: list[MetricRule], measurements: list[Measurement], *, last_step: bool,
                comparison: "ComparisonResult | None" = None) -> StepDecision:
    """Fold every metric's verdict (worst wins) into the step's action."""
    by_metric = {rule.name: [m for m in measurements if m.metric == rule.name] for rule in rules}
    verdicts = [judge_metric(rule, by_metric[rule.name]) for rule in rules]
    worst = max((v.verdict for v in verdicts), default=Verdict.healthy)
    reasons = [v.reason for v in verdicts if v.verdict is not Verdict.healthy]
    if comparison is not None and comparison.worse:
        worst = Verdict.failed
        reasons.append(comparison.reason)
    if worst is Verdict.failed:
        action = "rollback"
    elif worst is Verdict.inconclusive:
        action = "pause"
    else:
        action = "promote" if last_step else "continue"
    return StepDecision(action=action, verdict=worst, reasons=reasons or ["all metrics healthy"], metrics=verdicts)


class ComparisonResult(BaseModel):
    worse: bool
    p_value: float | None
    ratio: float | None
    reason: str


def compare_to_baseline(canary: list[float], stable: list[float], *, metric: str = "latency",
                        min_samples: int = 20, alpha: float = 0.01, tolerance: float = 0.10) -> ComparisonResult:
    """Is the canary worse (higher) than the stable version over the same interval?

    One-sided Mann-Whitney U test (Kayenta's choice: no normality assumption, robust to outliers), normal
    approximation with tie correction, significant at `alpha`; and the effect must matter: the canary's median
    exceeds stable's by more than `tolerance`. Below `min_samples` per side there is no judgement.
    """
    canary = [v for v in canary if v is not None and not math.isnan(v)]
    stable = [v for v in stable if v is not None and not math.isnan(v)]
    if len(canary) < min_samples or len(stable) < min_samples:
        return ComparisonResult(worse=False, p_value=None, ratio=None,
                                reason=f"{metric}: too few samples to compare ({len(canary)} / {len(stable)}, "
                                       f"need {min_samples})")
    n1, n2 = len(canary), len(stable)
    pooled = sorted([(v, 0) for v in canary] + [(v, 1) for v in stable])
    ranks = [0.0] * len(pooled)
    tie_term = 0.0
    i = 0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        size = j - i + 1
        tie_term += size ** 3 - size
        i = j + 1
    rank_sum = sum(r for r, (_, group) in zip(ranks, pooled) if group == 0)
    u = rank_sum - n1 * (n1 + 1) / 2
    mean = n1 * n2 / 2
    n = n1 + n2
    variance = n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1)))
    z = (u - mean - 0.5) / math.sqrt(variance) if variance > 0 else 0.0
    p_value = 0.5 * math.erfc(z / math.sqrt(2))
    median_c, median_s = _median(canary), _median(stable)
    ratio = median_c / median_s if median_s else math.inf
    worse = p_value < alpha and ratio > 1 + tolerance
    return ComparisonResult(worse=worse, p_value=round(p_value, 6), ratio=round(ratio, 4),
                            reason=f"{metric}: canary median {median_c:.1f} vs stable {median_s:.1f} "
                                   f"(x{ratio:.2f}, p={p_value:.4f})")


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
