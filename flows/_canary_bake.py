"""One canary step: set the weight, measure every interval, decide (models/_canary) after each measurement.

No Prefect here: the flow wraps `bake_step` in a task, and the rollback-reaction benchmark calls it directly.
A rollback sets the canary's weight to 0 inside the loop, the moment the failure limit is reached, before
anything else is recorded or announced.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

import httpx

from flows.metrics import MetricError, http_probe, prometheus
from flows.traffic import RouterError
from models import (
    CanaryMetric,
    CanaryPlan,
    CanaryStep,
    CanaryTarget,
    compare_to_baseline,
    ComparisonResult,
    decide_step,
    Measurement,
    MetricRule,
    StepDecision,
    utcnow,
)


@dataclass
class StepResult:
    action: str  # continue | promote | rollback | pause | router_failed
    reasons: list[str]
    rows: list[dict] = field(default_factory=list)
    router: list[dict] = field(default_factory=list)
    failing: list[dict] = field(default_factory=list)

    def as_decision(self) -> dict:
        return {"action": self.action, "reasons": self.reasons, "measured": len(self.rows)}


class Analyzer:
    """Takes one measurement of every metric of the plan (and the latency samples for the comparison)."""

    def __init__(self, plan: CanaryPlan, target: CanaryTarget, *, service: str, prometheus_url: str | None,
                 timeout_s: float = 5):
        self.plan, self.target, self.service = plan, target, service
        self.prometheus_url = prometheus_url
        self.timeout_s = timeout_s
        self.client = httpx.Client(limits=httpx.Limits(max_connections=32))

    def close(self) -> None:
        self.client.close()

    def _probe(self, url: str | None) -> http_probe.ProbeResult | None:
        if url is None:
            return None
        # A request that times out counts as an error, so the timeout is a user's patience (http_timeout_s),
        # not the interval: on a busy host a slow answer is a latency figure, not a failure.
        return http_probe.probe(self.client, url, self.plan.probe_requests, timeout_s=self.timeout_s)

    def measure(self) -> tuple[list[Measurement], list[float], list[float]]:
        probing = self.plan.uses("http_probe")
        urls = {
            "routed": self.target.router_url if probing and self.plan.probe_through_router else None,
            "canary": self.target.canary_url if self.plan.comparison.enabled or (
                probing and not self.plan.probe_through_router) else None,
            "stable": self.target.stable_url if self.plan.comparison.enabled else None,
        }
        # Side by side, so canary and stable are measured under the same conditions in the same interval.
        with ThreadPoolExecutor(max_workers=3) as pool:
            probes = dict(zip(urls, pool.map(self._probe, urls.values())))
        routed, canary_probe, stable_probe = probes["routed"], probes["canary"], probes["stable"]
        measurements = [self._one(metric, routed or canary_probe) for metric in self.plan.metrics]
        return (measurements, canary_probe.latencies_ms if canary_probe else [],
                stable_probe.latencies_ms if stable_probe else [])

    def _one(self, metric, canary_probe) -> Measurement:
        return measure_metric(metric, canary_probe, prometheus_url=self.prometheus_url, service=self.service,
                              version=self.plan.canary_version, interval_s=self.plan.interval_s,
                              timeout_s=self.timeout_s)


def measure_metric(metric: CanaryMetric, probe: http_probe.ProbeResult | None, *, prometheus_url: str | None,
                   service: str, version: str, interval_s: float, timeout_s: float) -> Measurement:
    """One metric's value now: from this interval's probe (http_probe) or from Prometheus, the query over the
    interval; a source's failure is the measurement's error (inconclusive), never an exception. Used by a canary's
    bake and by the post-change watch alike."""
    try:
        if metric.provider == "http_probe":
            if probe is None:
                return Measurement(metric=metric.name, error="no probe was sent")
            return Measurement(metric=metric.name, value=probe.value(metric.query))
        if prometheus_url is None:
            return Measurement(metric=metric.name, error="no prometheus_url in canary.yaml")
        query = prometheus.render(metric.query, service=service, version=version, interval_s=interval_s)
        if metric.range_query:
            values = prometheus.range_values(prometheus_url, query, seconds=interval_s,
                                             step_s=max(interval_s / 10, 0.2), timeout_s=timeout_s)
            worst = max(values) if metric.operator in (">", ">=") else min(values)
            return Measurement(metric=metric.name, value=worst)
        return Measurement(metric=metric.name, value=prometheus.instant(prometheus_url, query, timeout_s=timeout_s))
    except MetricError as exc:
        return Measurement(metric=metric.name, error=str(exc))


def bake_step(plan: CanaryPlan, step: CanaryStep, *, index: int, router, analyzer: Analyzer, bake: str,
              on_tick: Callable[[int, int], None] = lambda done, total: None,
              sleep: Callable[[float], None] = time.sleep, stored: Sequence[dict] = (),
              on_measured: Callable[[list[dict]], None] = lambda rows: None) -> StepResult:
    """Bake one step. `stored`: the rows this bake stored before its run died; the bake resumes after them and
    decides on them and the new ones together. `on_measured` gets each interval's rows as they are taken (the
    flow stores them, so a crash loses at most the interval in progress)."""
    last = index == len(plan.steps)
    try:
        applied = [router.set_weight(step.weight)]
    except RouterError as exc:
        return StepResult("router_failed", [f"traffic router: {exc}"])
    rules = {metric.name: metric.rule() for metric in plan.metrics}
    judged = [r for r in stored if r["version"] == "canary" and r["metric"] in rules]
    measurements = [Measurement(metric=r["metric"], value=r["value"], error=r["error"]) for r in judged]
    # The raw latency samples of a comparison are not stored: a resumed comparison collects them afresh.
    canary_samples: list[float] = []
    stable_samples: list[float] = []
    rows: list[dict] = list(stored)

    def row(taken_at, metric: str, version: str, value: float | None, error: str | None = None,
            rule: MetricRule | None = None) -> dict:
        return {"step": index, "weight": step.weight, "bake": bake, "metric": metric, "version": version,
                "value": None if value is None or math.isnan(value) else value, "error": error,
                "threshold": rule.threshold if rule else None, "operator": rule.operator if rule else None,
                "taken_at": taken_at}

    total = plan.measurements_per_step(step)
    done = len({r["taken_at"] for r in judged})  # intervals measured before a crash
    # The next measurement comes a whole interval after the weight was set (again).
    started = time.monotonic() - done * plan.interval_s
    decision: StepDecision | None = None
    for tick in range(done + 1, total + 1):
        # Measure at the end of each interval, so every value describes traffic at this step's weight.
        sleep(max(0.0, started + tick * plan.interval_s - time.monotonic()))
        taken, canary_latencies, stable_latencies = analyzer.measure()
        measurements += taken
        canary_samples += canary_latencies
        stable_samples += stable_latencies
        now = utcnow()
        new = [row(now, m.metric, "canary", m.value, m.error, rules[m.metric]) for m in taken]
        comparison: ComparisonResult | None = None
        if plan.comparison.enabled:
            comparison = compare_to_baseline(canary_samples, stable_samples, metric="latency_ms",
                                             min_samples=plan.comparison.min_samples, alpha=plan.comparison.alpha,
                                             tolerance=plan.comparison.tolerance)
            new += [row(now, "latency_median_ms", version, http_probe.percentile(samples, 0.5))
                    for version, samples in (("canary", canary_latencies), ("stable", stable_latencies)) if samples]
        rows += new
        decision = decide_step(list(rules.values()), measurements, last_step=last, comparison=comparison)
        on_tick(tick, total)
        if decision.action == "rollback":
            result = _roll_back_now(decision, rows, applied, router, rules)  # the weight first, then the record
            on_measured(new)
            return result
        on_measured(new)
        if decision.action == "pause":
            return StepResult("pause", decision.reasons, rows, applied)
    if decision is None:
        # Every interval was measured before the run died, and nothing decided: decide on what was stored.
        decision = decide_step(list(rules.values()), measurements, last_step=last, comparison=None)
        if decision.action == "rollback":
            return _roll_back_now(decision, rows, applied, router, rules)
    return StepResult(decision.action, decision.reasons, rows, applied)


def _roll_back_now(decision: StepDecision, rows: list[dict], applied: list[dict], router,
                   rules: dict[str, MetricRule]) -> StepResult:
    reasons = list(decision.reasons)
    try:
        applied.append(router.set_weight(0))
    except RouterError as exc:
        reasons.append(f"setting the canary weight to 0 failed: {exc}")
    failing = [{"metric": r["metric"], "value": round(r["value"], 4), "limit": f"{r['operator']} {r['threshold']:g}",
                "weight": r["weight"]}
               for r in rows if r["version"] == "canary" and r["metric"] in rules
               and rules[r["metric"]].breached_by(r["value"])]
    return StepResult("rollback", reasons, rows, applied, failing[-10:])
