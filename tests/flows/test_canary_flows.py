"""Canary rollouts through the change-request flow on a real Prefect server, with real nginx routing between
two sample-service processes and a real Prometheus scraping them (both from Debian, installed by .ci/run)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from prefect.deployments import run_deployment

from cli.dev import PROMQL_ERROR_RATE, PROMQL_P95_MS, TrafficLoad, nginx_available, prometheus_available
from flows import resume_with_input
from flows._wiring import wiring
from flows.traffic import router_for
from models import Act, NginxRouter as NginxConfig, utcnow
from tests.canary_weights import WeightHistory, wait_for_split
from tests.flows.test_flows import act, awaiting, ended_as, notifications_for, submit, wait_paused

pytestmark = [
    pytest.mark.flows,
    pytest.mark.skipif(not nginx_available(), reason="nginx is not installed (apt-get install nginx-light)"),
]
needs_prometheus = pytest.mark.skipif(not prometheus_available(), reason="prometheus is not installed")



@pytest.fixture
def canary_setup(lab, flow_stack):
    """Healthy versions, all traffic on stable, and canary.yaml naming this lab (the flow reads it per run)."""
    lab.stable.set(error_rate=0, latency_ms=10)
    lab.canary.set(error_rate=0, latency_ms=10)
    all_traffic_to_stable(lab)
    config_file = flow_stack.home / "config" / "canary.yaml"

    def write(router: dict | None = None, **settings) -> None:
        config_file.write_text(yaml.safe_dump({**lab.canary_config(router), **settings}))
        # This process's services read canary.yaml once: the sweep a test runs here must see this lab's router (a
        # wiring built before the file was written failed the lockdown test, clean-clone CI run 2026-12-06).
        wiring.cache_clear()

    write()
    yield write
    config_file.unlink(missing_ok=True)
    wiring.cache_clear()


def all_traffic_to_stable(lab) -> None:
    router_for(NginxConfig(**lab.nginx_router()), service=lab.service).set_weight(0)


# The lab answers in 10 ms, but a saturated 2-core machine (the suite beside it) has seen its p95 at 596 and 741 ms:
# a 500 ms limit rolled a healthy canary back mid-test (clean-clone run, 2026-12-06). These tests fail canaries by
# their error rate; latency limits are tested in test_canary_adapters and test_canary_decisions.
LATENCY_LIMIT_MS = 5000


def plan(provider: str, *, interval_s: float = 0.5, bake_s: float = 2.0) -> dict:
    if provider == "prometheus":
        metrics = [{"name": "error_rate", "provider": "prometheus", "query": PROMQL_ERROR_RATE, "threshold": 0.05},
                   {"name": "latency_p95_ms", "provider": "prometheus", "query": PROMQL_P95_MS,
                    "threshold": LATENCY_LIMIT_MS}]
    else:
        metrics = [{"name": "error_rate", "query": "error_rate", "threshold": 0.05},
                   {"name": "latency_p95_ms", "query": "latency_p95_ms", "threshold": LATENCY_LIMIT_MS}]
    return {"stable_version": "v1", "canary_version": "v2", "interval_s": interval_s, "probe_requests": 20,
            "steps": [{"weight": w, "bake_s": bake_s} for w in (10, 50, 100)], "metrics": metrics}


def ship(flow_stack, canary: dict, title: str) -> str:
    """A canary release: its own plan means it is more than the template's recipe, so it is approved first."""
    run_id = submit({"type": "standard", "title": title, "service": "shop", "requester": "grace",
                     "template": "canary-release", "canary": canary})
    change = awaiting(flow_stack, run_id)
    for person in ("alice", "bob"):
        act(flow_stack, change, person)
    return run_id


def change_of(flow_stack, run_id):
    return flow_stack.wait_for(run_id, lambda c: True, what="the change record")


def fail_canary_at_step_two(flow_stack, lab, run_id) -> None:
    """Make the canary start failing once step 1 (10 %) has been judged healthy."""
    change = change_of(flow_stack, run_id)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if 1 in flow_stack.services.canary.decisions(change.key):
            lab.canary.set(error_rate=0.6)
            return
        time.sleep(0.05)
    raise AssertionError("step 1 was never decided")


def assert_promoted(flow_stack, lab, run_id):
    ended_as(run_id, "Closed", timeout_s=120)
    change = change_of(flow_stack, run_id)
    decisions = flow_stack.services.canary.decisions(change.key)
    assert (change.state, change.outcome) == ("closed", "succeeded"), decisions
    assert [decisions[i]["action"] for i in (1, 2, 3)] == ["continue", "continue", "promote"]
    # The change's page (issue 30): one artifact, current, with the rollout drawn step by step.
    (page,) = flow_stack.change_pages(run_id, change.key)
    assert "**State:** closed (succeeded)" in page and "alice (team_lead, approve)" in page, page
    bars = [line for line in page.splitlines() if line.startswith("step ")]
    assert [line.split()[:3] for line in bars] == [["step", "1", "10"], ["step", "2", "50"], ["step", "3", "100"]], page
    assert bars[2].count("█") == 20 and "promote" in bars[2], page
    assert [decisions[i]["weight"] for i in (1, 2, 3)] == [10, 50, 100]
    return change


def assert_rolled_back(flow_stack, run_id, failing_metric: str = "error_rate"):
    ended_as(run_id, "Rolled back", timeout_s=120)
    change = change_of(flow_stack, run_id)
    assert change.state == "review_pending" and change.outcome == "rolled_back"
    decisions = flow_stack.services.canary.decisions(change.key)
    assert decisions[1]["action"] == "continue" and decisions[2]["action"] == "rollback"
    assert decisions[2]["weight"] == 50 and 3 not in decisions
    assert any(failing_metric in reason for reason in decisions[2]["reasons"])
    # Every measurement behind the decision is stored, and the failing ones are over the threshold.
    rows = flow_stack.services.canary.measurements(change.key, step=2)
    failed = [r for r in rows if r.metric == failing_metric and r.value is not None and r.value > r.threshold]
    assert len(failed) >= 2
    sent = [n for n in notifications_for(flow_stack, change.key) if n["event"] == "canary_rolled_back"]
    assert sent and "error_rate" in sent[0]["body_text"] and "at 50% traffic" in sent[0]["body_text"]
    rolled = next(e for e in flow_stack.services.changes.view(change.key).events if e.to_state == "rolled_back")
    assert rolled.data["reason"].startswith("canary rolled back: error_rate")
    assert rolled.data["rollback"][0]["output"].strip() == "rollback of shop done"
    shown = subprocess.run([str(Path(sys.executable).parent / "changeflow"), "show", change.key],
                           env=flow_stack.stack.env, capture_output=True, text=True)
    assert shown.returncode == 0 and "canary v2" in shown.stdout and "rollback" in shown.stdout
    return change


@needs_prometheus
def test_healthy_canary_is_promoted_through_nginx_with_prometheus(flow_stack, lab, canary_setup):
    # Four looks 2 s apart per step: the canary's series appear in Prometheus only after its first requests and
    # a second scrape (rate over 3 s, scraped every 1 s), so the first look of the 10 % step finds nothing. With
    # four looks 1 s apart a loaded machine's late scrapes made three of them miss, and the step paused for a
    # person as the analysis should (CI 2026-12-06): the test is about a promotion, not about a blind analysis.
    with TrafficLoad(lab.entry_url):
        run_id = ship(flow_stack, plan("prometheus", interval_s=2, bake_s=8), "healthy canary, prometheus")
        change = assert_promoted(flow_stack, lab, run_id)
    assert wait_for_split(lab, {"v2"}) == {"v2": 30}
    values = {r.metric for r in flow_stack.services.canary.measurements(change.key)}
    assert values == {"error_rate", "latency_p95_ms"}


@needs_prometheus
def test_canary_failing_at_50_percent_is_rolled_back_with_prometheus(flow_stack, lab, canary_setup):
    with TrafficLoad(lab.entry_url):
        run_id = ship(flow_stack, plan("prometheus", interval_s=1, bake_s=4), "failing canary, prometheus")
        fail_canary_at_step_two(flow_stack, lab, run_id)
        assert_rolled_back(flow_stack, run_id)
    # Afterwards nginx sends the canary nothing.
    assert wait_for_split(lab, {"v1"}) == {"v1": 30}
    assert "server 127.0.0.1:%d" % lab.canary.port not in lab.include_file.read_text()


def test_http_probe_without_prometheus_promotes_and_rolls_back(flow_stack, lab, canary_setup):
    canary_setup(None)
    run_id = ship(flow_stack, plan("http_probe"), "healthy canary, probe")
    assert_promoted(flow_stack, lab, run_id)
    assert wait_for_split(lab, {"v2"}) == {"v2": 30}

    all_traffic_to_stable(lab)
    lab.canary.set(error_rate=0)
    run_id = ship(flow_stack, plan("http_probe"), "failing canary, probe")
    fail_canary_at_step_two(flow_stack, lab, run_id)
    assert_rolled_back(flow_stack, run_id)
    assert wait_for_split(lab, {"v1"}) == {"v1": 30}


def test_command_router_receives_each_weight_and_zero_on_rollback(flow_stack, lab, canary_setup, tmp_path):
    weights = tmp_path / "weights.log"
    canary_setup({"kind": "command", "command": ["sh", "-c",
                                                 f"echo {{service}} {{canary_version}} {{weight}} >> {weights}"]})
    run_id = ship(flow_stack, plan("http_probe"), "failing canary, command router")
    fail_canary_at_step_two(flow_stack, lab, run_id)
    assert_rolled_back(flow_stack, run_id)
    assert weights.read_text().splitlines() == ["shop v2 10", "shop v2 50", "shop v2 0"]


def test_failed_nginx_check_keeps_the_previous_weights_and_fails_the_change(flow_stack, lab, canary_setup):
    before = lab.include_file.read_text()
    # An address nginx refuses: `nginx -t` fails as soon as the canary gets a weight.
    canary_setup(lab.nginx_router(canary_address="127.0.0.1:99999"))
    run_id = ship(flow_stack, plan("http_probe"), "canary behind a broken router config")
    ended_as(run_id, "Failed", timeout_s=120)
    change = change_of(flow_stack, run_id)
    assert change.state == "review_pending" and change.outcome == "failed"
    failed = next(e for e in flow_stack.services.changes.view(change.key).events if e.to_state == "failed")
    assert "nginx -t failed, previous weights kept" in failed.data["reason"]
    assert 'invalid port in upstream "127.0.0.1:99999"' in failed.data["reason"]
    assert lab.include_file.read_text() == before
    assert wait_for_split(lab, {"v1"}) == {"v1": 30}
    told = [n for n in notifications_for(flow_stack, change.key) if n["event"] == "change_failed"]
    assert told and "nginx -t failed" in told[0]["body_text"]



def _artifacts(key: str) -> dict:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactCollectionFilter, ArtifactCollectionFilterKey

    async def read():
        async with get_client() as client:
            prefix = key.lower()
            keys = ArtifactCollectionFilterKey(any_=[f"{prefix}-canary-analysis", f"{prefix}-canary-progress"])
            found = await client.read_latest_artifacts(artifact_filter=ArtifactCollectionFilter(key=keys))
            return {a.key: a for a in found}

    return asyncio.run(read())


def test_confirmation_gate_takes_a_valid_code_from_the_form_or_the_cli(flow_stack, lab, canary_setup):
    canary_setup(None)
    gated = plan("http_probe")
    gated["steps"][1]["confirm"] = True
    run_id = ship(flow_stack, gated, "canary with a confirmation before 50 %")
    wait_paused(run_id, "canary-confirm-s2-")
    change = change_of(flow_stack, run_id)
    assert flow_stack.services.canary.decisions(change.key)[1]["action"] == "continue"
    # A wrong code through the Resume form is refused and the run asks again.
    asyncio.run(resume_with_input(run_id, {"person": "alice", "approval_code": "AAAA-BBBB-CCCC",
                                           "answer": "proceed", "comment": ""}))
    wait_paused(run_id, "canary-confirm-s2-2")
    code = flow_stack.services.approvals.approval_code_for(change.key, "alice", Act.answer_canary)
    cli = subprocess.run([str(Path(sys.executable).parent / "changeflow"), "canary", change.key, "--as", "alice",
                          "--code", code, "--comment", "dashboards look fine"], env=flow_stack.stack.env,
                         capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    assert_promoted(flow_stack, lab, run_id)
    confirmed = [e for e in flow_stack.services.changes.view(change.key).events if e.action == "canary_confirmation"]
    assert [(e.data["person"], e.data["answer"], e.data["comment"]) for e in confirmed] == [
        ("alice", "proceed", "dashboards look fine")]
    artifacts = _artifacts(change.key)
    table = artifacts[f"{change.key.lower()}-canary-analysis"]
    assert table.type == "table" and "latency_p95_ms" in str(table.data)
    assert artifacts[f"{change.key.lower()}-canary-progress"].data == 100.0
    # The CLI recorded alice's answer and resumed with nothing in hand; the refused form was deleted once read.
    for where, stored in flow_stack.stored_by_prefect(run_id).items():
        assert code not in stored and "AAAA-BBBB-CCCC" not in stored, f"a code kept in the run's {where}"


@needs_prometheus
def test_inconclusive_analysis_pauses_for_a_person_who_rolls_back(flow_stack, lab, canary_setup):
    blind = plan("prometheus")
    blind["metrics"] = [{"name": "error_rate", "provider": "prometheus", "query": "sum(no_such_metric)",
                         "threshold": 0.05, "inconclusive_limit": 2}]
    run_id = ship(flow_stack, blind, "canary without data")
    wait_paused(run_id, "canary-inconclusive-s1-")
    change = change_of(flow_stack, run_id)
    decision = flow_stack.services.canary.decisions(change.key)[1]
    assert decision["action"] == "pause" and "missing or errored" in decision["reasons"][0]
    stored = flow_stack.services.canary.measurements(change.key, step=1)
    assert stored and all(r.value is None and "no data" in r.error for r in stored)
    code = flow_stack.services.approvals.approval_code_for(change.key, "frank", Act.answer_canary)
    asyncio.run(resume_with_input(run_id, {"person": "frank", "approval_code": code, "answer": "roll_back",
                                           "comment": "no metrics, not shipping blind"}))
    ended_as(run_id, "Rolled back", timeout_s=120)
    change = change_of(flow_stack, run_id)
    assert change.outcome == "rolled_back"
    assert wait_for_split(lab, {"v1"}) == {"v1": 30}


def test_a_canary_nobody_answers_goes_back_to_stable_and_the_people_on_call_are_told(flow_stack, lab, canary_setup):
    """A paused canary is never left unwatched: an empty Resume changes nothing, and past canary.yaml's
    gate_timeout_s the escalation sweep (a run of its own deployment, reading the config) wakes the run and it
    rolls back (fail-safe)."""
    canary_setup(None, gate_timeout_s=45)
    gated = plan("http_probe")
    gated["steps"][1]["confirm"] = True
    run_id = ship(flow_stack, gated, "canary whose gate nobody answers")
    assert wait_paused(run_id, "canary-confirm-s2-") == "canary-confirm-s2-1"
    change = change_of(flow_stack, run_id)
    told = {n["recipient"] for n in notifications_for(flow_stack, change.key) if n["event"] == "canary_gate_waiting"}
    assert {"grace", "bob"} <= told, "the requester and the on-call (first rung of the ladder) are told"
    asyncio.run(resume_with_input(run_id, {"person": "", "approval_code": ""}))  # an empty Resume in the UI
    assert wait_paused(run_id, "canary-confirm-s2-2") == "canary-confirm-s2-2"
    since = flow_stack.services.canary.gate_waiting_since(change.key, "canary-confirm-s2")
    time.sleep(max(0.0, (since - utcnow()).total_seconds() + 46))
    assert run_deployment("approval-escalation/every-minute", timeout=120).state.is_completed()
    ended_as(run_id, "Rolled back", timeout_s=120)
    done = change_of(flow_stack, run_id)
    assert done.outcome == "rolled_back"
    reason = next(e for e in flow_stack.services.changes.view(done.key).events if e.to_state == "rolled_back")
    assert "nobody answered the canary gate before step 2 within 45 s: rolled back (fail-safe)" in \
        reason.data["reason"]
    assert wait_for_split(lab, {"v1"}) == {"v1": 30}


@pytest.mark.slow
@pytest.mark.parametrize("resume", [True, False], ids=["resumed", "rolled-back"])
def test_a_canary_whose_run_is_killed_mid_bake_goes_back_to_stable_then_resumes_or_rolls_back(
        flow_stack, lab, canary_setup, resume):
    """Issue 16: killed in the 50 % bake, traffic used to stay on the canary for as long as nobody acted. Now the
    sweep sends it back to stable, and the restarted run resumes the bake from the measurements it stored (the
    default, as Argo resumes mid-rollout) or rolls the change back (canary.yaml resume_after_crash: false)."""
    from tests.flows.test_crash_recovery import run_state_name
    from tests.helpers import wait_until
    from tests.processes import kill_run

    canary_setup(resume_after_crash=resume)
    canary = plan("http_probe", bake_s=20)
    run_id = ship(flow_stack, canary, "canary killed mid-bake")
    change = change_of(flow_stack, run_id)
    wait_until(lambda: 1 in flow_stack.services.canary.decisions(change.key), 90, "step 1 decided")
    wait_until(lambda: len(flow_stack.services.canary.measurements(change.key, step=2)) >= 4, 30,
               "two intervals of the 50 % bake stored")
    assert wait_for_split(lab, {"v1", "v2"}).get("v2", 0) > 0, "the canary step should be live"
    with WeightHistory(lab.include_file) as weights:
        killed_at = time.monotonic()
        kill_run(run_id)
        stored_before = len(flow_stack.services.canary.measurements(change.key, step=2))
        wait_until(lambda: run_state_name(run_id) in ("CRASHED", "FAILED"), 120, "Prefect to mark the run crashed")
        # The sweep through its own deployment: a fresh process reads this test's canary.yaml (benchmarks/
        # crash_recovery.py measures how fast).
        assert run_deployment("approval-escalation/every-minute", timeout=90).state.is_completed()
        assert weights.first_at(0, after=killed_at) is not None, "traffic never went back to stable"
        ended_as(run_id, "Closed" if resume else "Rolled back", timeout_s=180)
    done = flow_stack.services.changes.view(change.key)
    actions = [e.action for e in done.events]
    assert actions.count("run_crashed") == 1 and actions.count("canary_aborted") == 1
    if not resume:
        assert (done.state, done.outcome) == ("review_pending", "rolled_back")
        rolled = next(e for e in done.events if e.to_state == "rolled_back")
        assert "its run died during the rollout" in rolled.data["reason"]
        assert weights.weights_after(killed_at) == [0]
        return
    assert (done.state, done.outcome) == ("closed", "succeeded")
    (resumed,) = [e for e in done.events if e.action == "canary_resumed"]
    assert resumed.data["step"] == 2 and resumed.data["stored_measurements"] == stored_before
    # Back to stable, then the resumed step's weight, then the promotion.
    assert weights.weights_after(killed_at) == [0, 50, 100]
    decisions = flow_stack.services.canary.decisions(change.key)
    assert [decisions[i]["action"] for i in (1, 2, 3)] == ["continue", "continue", "promote"]
    assert actions.count("canary_decision") == 3
    # One bake of step 2, no longer than planned: the stored intervals counted, only the rest were measured.
    rows = [r for r in flow_stack.services.canary.measurements(change.key, step=2) if r.metric == "error_rate"]
    assert len({r.bake for r in rows}) == 1
    assert len(rows) == round(20 / canary["interval_s"])
