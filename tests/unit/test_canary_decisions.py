"""Canary decisions as a pure function of measurements: every boundary, missing data, NaN, provider errors,
and the baseline comparison on seeded random latencies."""

from __future__ import annotations

import math
import random

import pytest

from models import Measurement, MetricRule, Verdict, compare_to_baseline, decide_step, judge_metric

ERRORS = MetricRule(name="error_rate", operator=">", threshold=0.05, failure_limit=2, inconclusive_limit=2)
LATENCY = MetricRule(name="latency_p95_ms", operator=">", threshold=500, failure_limit=2, inconclusive_limit=2)


def m(metric, value=None, error=None):
    return Measurement(metric=metric, value=value, error=error)


@pytest.mark.parametrize(("values", "verdict"), [
    ([0.05, 0.05, 0.05], Verdict.healthy),          # at the threshold: not a failure (> is strict)
    ([0.0500001, 0.01, 0.01], Verdict.healthy),     # one failure, limit two
    ([0.0500001, 0.06, 0.01], Verdict.failed),      # limit reached
    ([0.9, 0.9, 0.9], Verdict.failed),
])
def test_failure_limit_boundaries(values, verdict):
    assert judge_metric(ERRORS, [m("error_rate", v) for v in values]).verdict is verdict


@pytest.mark.parametrize("operator,threshold,value,failed", [
    ("<", 0.99, 0.99, False), ("<", 0.99, 0.98, True), ("<=", 0.99, 0.99, True),
    (">=", 500, 500, True), (">", 500, 500, False),
])
def test_every_operator_at_its_boundary(operator, threshold, value, failed):
    rule = MetricRule(name="x", operator=operator, threshold=threshold, failure_limit=1)
    assert (judge_metric(rule, [m("x", value)]).verdict is Verdict.failed) is failed


def test_missing_nan_and_provider_errors_are_inconclusive_never_healthy():
    data = [m("error_rate", None), m("error_rate", math.nan), m("error_rate", error="prometheus: 503")]
    result = judge_metric(ERRORS, data)
    assert result.verdict is Verdict.inconclusive and result.inconclusive == 3
    assert judge_metric(ERRORS, data[:1]).verdict is Verdict.healthy, "below the inconclusive limit"


def test_failure_outranks_inconclusive_and_decides_rollback():
    decision = decide_step([ERRORS, LATENCY], [m("error_rate", 0.2), m("error_rate", 0.3),
                                               m("latency_p95_ms", None), m("latency_p95_ms", None)], last_step=False)
    assert decision.action == "rollback" and decision.verdict is Verdict.failed
    assert any("error_rate: 2 measurements > 0.05" in r for r in decision.reasons)


def test_actions_per_step():
    healthy = [m("error_rate", 0.01), m("latency_p95_ms", 120)]
    assert decide_step([ERRORS, LATENCY], healthy, last_step=False).action == "continue"
    assert decide_step([ERRORS, LATENCY], healthy, last_step=True).action == "promote"
    unsure = [m("error_rate", error="timeout"), m("error_rate", error="timeout")]
    assert decide_step([ERRORS], unsure, last_step=True).action == "pause"
    assert decide_step([ERRORS], [], last_step=False).action == "continue"


def _latencies(rng, median, n=60):
    return [rng.lognormvariate(math.log(median), 0.25) for _ in range(n)]


def test_comparison_rolls_back_a_canary_50_percent_slower_under_the_fixed_threshold():
    for seed in range(20):
        rng = random.Random(seed)
        stable, canary = _latencies(rng, 100), _latencies(rng, 150)
        canary_p95 = sorted(canary)[int(0.95 * len(canary))]
        assert judge_metric(LATENCY, [m("latency_p95_ms", canary_p95)] * 3).verdict is Verdict.healthy, (
            "the fixed threshold alone would let it through")
        result = compare_to_baseline(canary, stable)
        assert result.worse, (seed, result)
        decision = decide_step([LATENCY], [m("latency_p95_ms", canary_p95)], last_step=False, comparison=result)
        assert decision.action == "rollback"


def test_comparison_ignores_noise():
    for seed in range(20):
        rng = random.Random(1000 + seed)
        result = compare_to_baseline(_latencies(rng, 100), _latencies(rng, 100))
        assert not result.worse, (seed, result)


def test_comparison_needs_a_minimum_sample():
    result = compare_to_baseline([300.0] * 5, [100.0] * 5)
    assert not result.worse and "too few samples" in result.reason


@pytest.mark.parametrize(("on_missing", "verdict"), [("inconclusive", Verdict.inconclusive),
                                                     ("fail", Verdict.failed), ("pass", Verdict.healthy)])
def test_no_data_counts_as_the_metric_says_and_an_error_stays_inconclusive(on_missing, verdict):
    rule = ERRORS.model_copy(update={"on_missing": on_missing})
    no_data = [m("error_rate", error="no data: prometheus returned no series")] * 2
    assert judge_metric(rule, no_data).verdict is verdict
    # A source that failed (unreachable, a bad query) shows nothing either way: inconclusive, whatever on_missing says.
    failed = [m("error_rate", error="prometheus ConnectError")] * 2
    assert judge_metric(rule, failed).verdict is Verdict.inconclusive
