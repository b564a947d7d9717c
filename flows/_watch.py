"""The post-change watch in a change's run (issue 33): after verification, before the change completes, its service
is measured every interval for the policy's duration (`models.WatchSetup`). A breach tells the implementer and
on-call; the policy then rolls the change back or asks a person (a canary gate: `changeflow canary KEY` or the
Resume form, their code, fail-safe roll back past canary.yaml's gate_timeout_s).

Resumable like a canary's bake: the watch's start and every interval's measurements are on the record, so a run
that died mid-watch goes on to the same end from what it stored, and a verdict on record is never measured again.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import httpx
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from flows._canary_bake import measure_metric
from flows._change_page import publish_change_page
from flows._gate import wait_at
from flows._recovery import canary_to_stable
from flows._wiring import wiring
from flows.canary import CanaryGate
from flows.metrics import http_probe
from models import WATCH_BAKE, WATCH_STEP, Measurement, responsible_and_on_call, utcnow


@dataclass(frozen=True)
class WatchOutcome:
    """What the watch leaves the run to do: complete the change (`kept`) or roll it back for `reason`."""

    kept: bool
    reason: str = ""
    evidence: dict = field(default_factory=dict)
    traffic_restored: bool = False  # a promoted canary's traffic is already back on stable


@task(name="post-change watch")
def watch_service(key: str) -> dict:
    """Measure until the watch's end or its first breach; the verdict on the record (once)."""
    rt = wiring()
    change = rt.services.changes.get(key)
    setup = rt.services.watch.setup(change)
    assert setup is not None
    started = rt.services.watch.start(key, setup)
    stored = rt.services.watch.measurements(key)
    measurements = [Measurement(metric=r.metric, value=r.value, error=r.error) for r in stored]
    rules = {m.name: m.rule() for m in setup.metrics}
    decision = setup.judge(measurements)
    # The interval measured last (a run resumed mid-watch goes on after it).
    tick = int((stored[-1].taken_at - started).total_seconds() // setup.interval_s) if stored else 0
    if stored:
        get_run_logger().info("watch of %s resumed after interval %d of %d", change.service, tick,
                              setup.measurements_due)
    client = httpx.Client(limits=httpx.Limits(max_connections=16))
    try:
        while tick < setup.measurements_due and decision.action == "promote":
            aborted = rt.services.recovery.abort_reason(key)
            if aborted:  # `changeflow abort` (or the run's Cancel) during the watch: the change is undone
                return rt.services.watch.decide(key, {"action": "aborted", "reasons": [aborted],
                                                      "measured": len(measurements), "failing": []})
            # Each interval is measured at its end, counted from the recorded start: a resumed run keeps the same
            # schedule to the same end. Intervals that ended while no run was alive (or while a slow measurement
            # ran) are gone, not made up for by a burst that would describe only now: the next to end is measured
            # (the last at once, if the watch's end passed meanwhile).
            elapsed = (utcnow() - started).total_seconds()
            tick = max(tick + 1, min(setup.measurements_due, math.ceil(elapsed / setup.interval_s)))
            time.sleep(max(0.0, tick * setup.interval_s - elapsed))
            probe = (http_probe.probe(client, setup.url, setup.probe_requests, timeout_s=rt.settings.http_timeout_s)
                     if setup.url and setup.uses("http_probe") else None)
            taken = [measure_metric(metric, probe, prometheus_url=rt.services.org.canary_config.prometheus_url,
                                    service=change.service, version=setup.version, interval_s=setup.interval_s,
                                    timeout_s=rt.settings.http_timeout_s) for metric in setup.metrics]
            now = utcnow()
            rt.services.watch.record_measurements(key, [
                {"step": WATCH_STEP, "weight": 100, "bake": WATCH_BAKE, "metric": m.metric, "version": "live",
                 "value": m.value, "error": m.error, "threshold": rules[m.metric].threshold,
                 "operator": rules[m.metric].operator, "taken_at": now} for m in taken])
            measurements += taken
            decision = setup.judge(measurements)
    finally:
        client.close()
    action = {"promote": "healthy", "rollback": "breached", "pause": "inconclusive"}[decision.action]
    failing = [{"metric": m.metric, "value": round(m.value, 4), "limit": f"{rules[m.metric].operator} "
                f"{rules[m.metric].threshold:g}"} for m in measurements if rules[m.metric].breached_by(m.value)]
    return rt.services.watch.decide(key, {"action": action, "reasons": decision.reasons,
                                          "measured": len(measurements), "failing": failing[-10:]})


class WatchGate(CanaryGate):
    """After a breach the policy asks (or the data ran out): a person answers keep (`proceed`) or roll back. The
    breach message carries each answerer's code; the answer is checked as at any canary gate."""

    def __init__(self, key: str, description: str, verdict: dict):
        super().__init__(key, "watch", description)
        self.verdict = verdict

    def before_wait(self, attempt: int) -> None:
        if not attempt:
            tell_of_breach(self.key, self.verdict, gate=self.full_name, deadline=self.deadline)


def tell_of_breach(key: str, verdict: dict, *, gate: str | None = None, deadline=None) -> None:
    """The implementer (requester), the service's owners and on-call hear of it; with a gate, how to answer."""
    rt = wiring()
    change = rt.services.changes.get(key)
    told = responsible_and_on_call(change, rt.services.org.directory, rt.services.org.policies.on_call_role)
    rt.notifier.announce(change, "watch_breached", told, reason="; ".join(verdict["reasons"]), round_="watch",
                         deadline=deadline, extra={"measurements": verdict.get("failing", []), "gate": gate or "",
                                                   "verdict": verdict["action"]}, personal_code=gate is not None)
    rt.notifier.deliver(change_key=key)


def watch_table(key: str) -> None:
    rows = wiring().services.watch.measurements(key)
    create_table_artifact(
        key=f"{key.lower()}-watch",
        table=[{"metric": r.metric, "value": None if r.value is None else round(r.value, 4), "error": r.error or "",
                "fails when": f"{r.operator} {r.threshold:g}" if r.operator else "",
                "at": r.taken_at.strftime("%H:%M:%S")} for r in rows],
        description=f"Post-change watch of {key}: every measurement its verdict was based on")


def watch(key: str) -> WatchOutcome:
    """The change's post-change watch, if its service has one: kept, or what to roll back for."""
    rt = wiring()
    change = rt.services.changes.get(key)
    setup = rt.services.watch.setup(change)
    if setup is None:
        return WatchOutcome(kept=True)
    verdict = rt.services.watch.decision(key) or watch_service(key)
    watch_table(key)
    publish_change_page(key)
    evidence = {"watch": verdict}
    if verdict["action"] == "healthy":
        get_run_logger().info("watch of %s healthy: %d measurements", change.service, verdict["measured"])
        return WatchOutcome(kept=True, evidence=evidence)
    if verdict["action"] == "aborted":  # by a person, who said why: the change is rolled back for that
        return WatchOutcome(kept=False, reason=verdict["reasons"][0], evidence=evidence,
                            traffic_restored=traffic_to_stable(change))
    reason = f"post-change watch {verdict['action']}: {'; '.join(verdict['reasons'])}"
    if setup.on_breach == "ask" or verdict["action"] == "inconclusive":
        answer = wait_at(WatchGate(key, f"## {key}: post-change watch of {change.service}\n\n{reason}.\n\n"
                                        "**proceed** keeps the change (it completes); **roll_back** rolls it back.",
                                   verdict))
        if answer == "proceed":
            return WatchOutcome(kept=True, evidence=evidence)
        reason += ("; nobody answered within canary.yaml's gate_timeout_s: rolled back (fail-safe)"
                   if answer == "timed_out" else "; rolled back by a person")
    else:
        tell_of_breach(key, verdict)
    return WatchOutcome(kept=False, reason=reason, evidence=evidence, traffic_restored=traffic_to_stable(change))


def traffic_to_stable(change) -> bool:
    """A promoted canary's traffic goes back to its stable version first (the users before the record): whether
    it is (False for a change without a canary, whose rollback undoes it all)."""
    if wiring().services.canary.plan(change) is None:
        return False
    problem = canary_to_stable(change)
    if problem:
        get_run_logger().error("post-change watch: %s's traffic is not back on stable%s", change.service, problem)
    return not problem
