"""The post-change watch (issue 33) through the change-request flow: the sample service behind real nginx, measured
by HTTP probes or a real Prometheus, for a compressed policy duration. A clean watch closes the change; a breach
rolls it back (a promoted canary's traffic to stable first) or, where the policy asks, waits for a person with
their code; what was measured is on the record."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from prefect.deployments import run_deployment

from cli.dev import PROMQL_ERROR_RATE, TrafficLoad, prometheus_available
from flows import resume_with_input
from models import Act
from tests.canary_weights import wait_for_split
from tests.flows.test_abort_flows import started_again_to_undo
from tests.flows.test_canary_flows import canary_setup, change_of, plan, ship  # noqa: F401
from tests.flows.test_crash_recovery import run_state_name
from tests.flows.test_flows import ended_as, notifications_for, submit, wait_paused
from tests.helpers import wait_until
from tests.processes import kill_run

pytestmark = [pytest.mark.flows]

PROBE_ERRORS = {"name": "error_rate", "query": "error_rate", "threshold": 0.05}
PROMETHEUS_ERRORS = {"name": "error_rate", "provider": "prometheus", "query": PROMQL_ERROR_RATE, "threshold": 0.05}


@pytest.fixture
def watch_policy(flow_stack):
    """policies.yaml `watch:` for the runs of one test (each run reads the config anew)."""
    path = flow_stack.home / "config" / "policies.yaml"
    original = path.read_text()

    def write(**watch) -> None:
        policies = yaml.safe_load(original)
        policies["watch"] = watch
        path.write_text(yaml.safe_dump(policies, sort_keys=False))

    yield write
    path.write_text(original)


def watch_shop(canary_setup, lab, metric: dict, interval_s: float = 0.5) -> None:  # noqa: F811
    """canary.yaml: the lab's service watched through its router by an administrator's analysis."""
    canary_setup(None, analyses={"shop-health": {"metrics": [metric]}},
                 watches={lab.service: {"analysis": "shop-health", "url": f"{lab.entry_url}/",
                                        "interval_s": interval_s, "probe_requests": 10}})


def restart_shop(title: str) -> str:
    """A pre-approved template on the lab's service: no approvals, no canary; it runs at once."""
    return submit({"type": "standard", "title": title, "service": "shop", "requester": "grace",
                   "template": "restart-service"})


def transition_into(flow_stack, key: str, state: str):
    return next(e for e in flow_stack.services.changes.view(key).events if e.to_state == state)


def breach_once_watching(flow_stack, key: str, version) -> None:
    """The service starts failing once the watch has taken its first measurement (the change is verified)."""
    wait_until(lambda: flow_stack.services.watch.measurements(key), 120, "the watch to measure")
    version.set(error_rate=1.0)


def test_a_clean_watch_measures_the_service_for_its_duration_and_then_the_change_closes(
        flow_stack, lab, canary_setup, watch_policy):  # noqa: F811
    watch_policy(duration="3s", on_breach="roll_back")
    watch_shop(canary_setup, lab, PROBE_ERRORS)
    run_id = restart_shop("watch: a clean restart")
    ended_as(run_id, "Closed", timeout_s=120)
    change = change_of(flow_stack, run_id)
    assert (change.state, change.outcome) == ("closed", "succeeded")
    verdict = flow_stack.services.watch.decision(change.key)
    rows = flow_stack.services.watch.measurements(change.key)
    # 3 s at one measurement every 0.5 s: six, each of the analysis's metric against its limit (fewer only where a
    # probe took longer than an interval on a loaded machine: an interval is measured once or not at all).
    assert verdict is not None and verdict["action"] == "healthy" and 4 <= verdict["measured"] <= 6, verdict
    assert len(rows) == verdict["measured"]
    assert {(r.metric, r.operator, r.threshold) for r in rows} == {("error_rate", ">", 0.05)}
    assert (rows[-1].taken_at - rows[0].taken_at).total_seconds() >= 2.0, "one every interval, not all at once"
    completed = transition_into(flow_stack, change.key, "completed")
    started = next(e for e in flow_stack.services.changes.view(change.key).events if e.action == "watch_started")
    assert started.occurred_at <= rows[0].taken_at and completed.occurred_at >= rows[-1].taken_at
    assert completed.data["watch"]["action"] == "healthy"
    assert started.data["duration_s"] == 3 and started.data["limits"] == {"error_rate": "> 0.05"}
    assert not [n for n in notifications_for(flow_stack, change.key) if n["event"] == "watch_breached"]
    (page,) = flow_stack.change_pages(run_id, change.key)  # the change's page in the Prefect UI shows the watch
    assert "## Post-change watch" in page and f"- error_rate: {len(rows)} measured, mean 0" in page, page
    assert "**Verdict:** healthy: all metrics healthy" in page, page


@pytest.mark.skipif(not prometheus_available(), reason="prometheus is not installed")
def test_a_breach_seen_by_prometheus_after_a_promotion_sends_traffic_back_to_stable_and_rolls_the_change_back(
        flow_stack, lab, canary_setup, watch_policy):  # noqa: F811
    watch_policy(duration="5m", on_breach="roll_back")  # ends at its breach, minutes before its duration
    watch_shop(canary_setup, lab, PROMETHEUS_ERRORS, interval_s=1)
    with TrafficLoad(lab.entry_url):
        run_id = ship(flow_stack, plan("http_probe"), "watch: canary promoted, then failing")
        change = change_of(flow_stack, run_id)
        breach_once_watching(flow_stack, change.key, lab.canary)
        ended_as(run_id, "Rolled back", timeout_s=180)
    done = change_of(flow_stack, run_id)
    assert done.outcome == "rolled_back"
    assert [flow_stack.services.canary.decisions(done.key)[i]["action"] for i in (1, 2, 3)] == [
        "continue", "continue", "promote"]
    verdict = flow_stack.services.watch.decision(done.key)
    assert verdict["action"] == "breached" and "error_rate" in verdict["reasons"][0], verdict
    assert verdict["failing"] and all(f["value"] > 0.05 for f in verdict["failing"])
    rolled = transition_into(flow_stack, done.key, "rolled_back")
    assert rolled.data["reason"].startswith("post-change watch breached: error_rate"), rolled.data
    assert not any(e.to_state == "completed" for e in flow_stack.services.changes.view(done.key).events)
    assert wait_for_split(lab, {"v1"}) == {"v1": 30}, "all traffic back on the stable version"
    told = {n["recipient"]: n for n in notifications_for(flow_stack, done.key) if n["event"] == "watch_breached"}
    assert {"grace", "bob"} <= set(told), "the implementer and on-call hear of it"
    assert "is being rolled back" in told["grace"]["body_text"] and "code" not in told["grace"]["body_text"]


def test_where_the_policy_asks_a_breach_waits_for_a_person_with_their_code_and_a_keep_closes_the_change(
        flow_stack, lab, canary_setup, watch_policy):  # noqa: F811
    watch_policy(duration="5m", on_breach="roll_back", by_type={"standard": "ask"})
    watch_shop(canary_setup, lab, PROBE_ERRORS)
    try:
        run_id = restart_shop("watch: a breach the policy asks about")
        change = change_of(flow_stack, run_id)
        breach_once_watching(flow_stack, change.key, lab.stable)
        assert wait_paused(run_id, "canary-watch-", timeout_s=120) == "canary-watch-1"
        lab.stable.set(error_rate=0)
        # An empty Resume is an attempt to get past: refused, the gate waits again.
        asyncio.run(resume_with_input(run_id, {"person": "", "approval_code": ""}))
        assert wait_paused(run_id, "canary-watch-2") == "canary-watch-2"
        # A code for another act (approving) is not an answer to the watch.
        approve_code = flow_stack.services.approvals.approval_code_for(change.key, "alice", Act.approve)
        asyncio.run(resume_with_input(run_id, {"person": "alice", "approval_code": approve_code, "answer": "proceed",
                                               "comment": ""}))
        assert wait_paused(run_id, "canary-watch-3") == "canary-watch-3"
        code = flow_stack.services.approvals.approval_code_for(change.key, "alice", Act.answer_canary)
        cli = subprocess.run([str(Path(sys.executable).parent / "changeflow"), "canary", change.key, "--as", "alice",
                              "--code", code, "--comment", "a dependency blipped; the restart is fine"],
                             env=flow_stack.stack.env, capture_output=True, text=True)
        assert cli.returncode == 0, cli.stderr
        assert "canary-watch: proceed" in cli.stdout, cli.stdout
        ended_as(run_id, "Closed", timeout_s=120)
    finally:
        lab.stable.set(error_rate=0)
    done = change_of(flow_stack, run_id)
    assert done.outcome == "succeeded"
    events = flow_stack.services.changes.view(done.key).events
    # The one answer on the record is the CLI's: the empty Resume and the approving code were not answers.
    assert [(e.data["person"], e.data["answer"], e.data["comment"]) for e in events
            if e.action == "canary_confirmation"] == [("alice", "proceed", "a dependency blipped; the restart is fine")]
    assert transition_into(flow_stack, done.key, "completed").data["watch"]["action"] == "breached"
    told = {n["recipient"]: n for n in notifications_for(flow_stack, done.key) if n["event"] == "watch_breached"}
    assert "changeflow canary" in told["grace"]["body_text"] and "keep the change" in told["grace"]["body_text"]


def test_an_abort_during_the_watch_stops_it_and_rolls_the_change_back(flow_stack, lab, canary_setup,
                                                                      watch_policy):  # noqa: F811
    """A watch is part of the change: `changeflow abort` stops it like a step (the run cancelled, started again
    only to undo), and the change never completes."""
    watch_policy(duration="5m", on_breach="roll_back")
    watch_shop(canary_setup, lab, PROBE_ERRORS)
    run_id = restart_shop("watch: aborted while watched")
    change = change_of(flow_stack, run_id)
    wait_until(lambda: flow_stack.services.watch.measurements(change.key), 120, "the watch to measure")
    code = flow_stack.services.approvals.approval_code_for(change.key, "grace", Act.withdraw)
    aborted = subprocess.run([str(Path(sys.executable).parent / "changeflow"), "abort", change.key, "--as", "grace",
                              "--code", code, "--reason", "latency dashboards look wrong"],
                             env=flow_stack.stack.env, capture_output=True, text=True)
    assert aborted.returncode == 0, aborted.stderr
    # Stopped by its worker (then started again only to undo), or, when the watch's own look at the record came
    # first, rolled back by the watch itself: the same undoing either way.
    if wait_until(lambda: run_state_name(run_id) in ("CANCELLED", "FAILED") and run_state_name(run_id), 120,
                  "the run to stop") == "CANCELLED":
        started_again_to_undo(run_id)
    ended_as(run_id, "Rolled back", timeout_s=120)
    done = flow_stack.services.changes.view(change.key)
    assert done.outcome == "rolled_back" and not any(e.to_state == "completed" for e in done.events)
    rolled = transition_into(flow_stack, change.key, "rolled_back")
    assert rolled.data["reason"] == "aborted by grace: latency dashboards look wrong", rolled.data
    assert [r["output"].strip() for r in rolled.data["rollback"]] == ["restarting shop again", "shop healthy"]


@pytest.mark.slow
def test_a_run_killed_mid_watch_is_restarted_and_watches_on_to_the_same_end(flow_stack, lab, canary_setup,
                                                                           watch_policy):  # noqa: F811
    """The watch's start and each interval are on the record: the restarted run goes on from the last stored
    interval to the end the first run had, measuring once per interval (no burst for the intervals it was dead)."""
    watch_policy(duration="60s", on_breach="roll_back")
    watch_shop(canary_setup, lab, PROBE_ERRORS, interval_s=1)
    run_id = restart_shop("watch: its run killed mid-watch")
    change = change_of(flow_stack, run_id)
    wait_until(lambda: len(flow_stack.services.watch.measurements(change.key)) >= 3, 120, "three intervals stored")
    kill_run(run_id)
    stored_before = len(flow_stack.services.watch.measurements(change.key))
    wait_until(lambda: run_state_name(run_id) in ("CRASHED", "FAILED"), 120, "Prefect to mark the run crashed")
    assert run_deployment("approval-escalation/every-minute", timeout=90).state.is_completed()
    ended_as(run_id, "Closed", timeout_s=180)
    done = flow_stack.services.changes.view(change.key)
    actions = [e.action for e in done.events]
    assert (actions.count("run_crashed"), actions.count("watch_started"), actions.count("watch_decision")) == (1, 1, 1)
    started = next(e for e in done.events if e.action == "watch_started")
    rows = flow_stack.services.watch.measurements(change.key)
    verdict = flow_stack.services.watch.decision(change.key)
    assert verdict["action"] == "healthy" and verdict["measured"] == len(rows), verdict
    assert stored_before < len(rows) <= 60, "measured on after the restart, never more than once an interval"
    # Once an interval after the restart too: the intervals that ended while no run was alive are not made up for
    # by a burst (a burst would describe only the moment of the restart).
    after = rows[stored_before:]
    span_s = (after[-1].taken_at - after[0].taken_at).total_seconds()
    assert len(after) <= span_s / 1.0 + 1.5, [r.taken_at.isoformat() for r in after]
    # The first run's end, not a new one: a restart before it measures up to it; one after it (a slow machine)
    # takes the last measurement at once.
    end = started.occurred_at + timedelta(seconds=60)
    if after[0].taken_at < end:
        assert rows[-1].taken_at < end + timedelta(seconds=5), (rows[-1].taken_at, end)
    else:
        assert len(after) == 1, [r.taken_at.isoformat() for r in after]
