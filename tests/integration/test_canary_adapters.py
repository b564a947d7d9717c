"""The canary's adapters against real local peers (nginx, Prometheus, the sample service, an HTTP receiver) and
the plan's validation; no Prefect."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from pydantic import ValidationError

from cli.dev import PROMQL_ERROR_RATE, TrafficLoad, nginx_available, prometheus_available
from flows.metrics import MetricError, http_probe, prometheus
from flows.traffic import RouterError, router_for
from flows.traffic.nginx import upstream_block
from models import Services, InputError
from models import CanaryConfig, CanaryPlan, CommandRouter, HttpRouter, NginxRouter
from tests.helpers import ROUTINE_RISK, SECRET
from tests.receivers import start_http_receiver



# ---- the plan ------------------------------------------------------------------------------------------

def test_default_plan_is_10_50_100_with_error_rate_and_latency():
    plan = CanaryPlan(canary_version="v2")
    assert [s.weight for s in plan.steps] == [10, 50, 100]
    assert {m.name: (m.operator, m.threshold) for m in plan.metrics} == {
        "error_rate": (">", 0.05), "latency_p95_ms": (">", 500)}
    assert plan.measurements_per_step(plan.steps[0]) == 6


@pytest.mark.parametrize("change, message", [
    ({"steps": [{"weight": 50}, {"weight": 10}, {"weight": 100}]}, "steps: weights must increase"),
    ({"steps": [{"weight": 10}, {"weight": 50}]}, "the last step must send 100"),
    ({"steps": [{"weight": 0}, {"weight": 100}]}, "steps.0.weight"),
    ({"metrics": [{"name": "x", "query": "p42", "threshold": 1}]}, "http_probe provider measures one of"),
    ({"metrics": [{"name": "x", "query": "error_rate", "threshold": 1, "range_query": True}]}, "range_query"),
    ({"metrics": [{"name": "x", "query": "error_rate", "threshold": 1}] * 2}, "metrics: names must be unique"),
    ({"interval_s": 0}, "interval_s"),
])
def test_bad_plans_are_refused_naming_the_field(change, message):
    with pytest.raises(ValidationError) as caught:
        CanaryPlan.model_validate({"canary_version": "v2", **change})
    assert message in str(caught.value)


def test_a_canary_for_a_service_without_a_router_is_refused_at_submit(db, org):
    services = Services.build(db, org, SECRET)
    with pytest.raises(InputError) as caught:
        services.changes.submit({"type": "standard", "title": "t", "service": "shop", "requester": "grace",
                        "test_evidence": "staging run green",
                        "rollback_plan": "back", "risk": ROUTINE_RISK, "canary": {"canary_version": "v2"}})
    assert "canary: no traffic router is configured for service 'shop'" in str(caught.value)
    config = CanaryConfig.model_validate({"services": {"shop": {"router": {
        "kind": "http", "url": "http://127.0.0.1:1/w"}}}})
    problems = config.check_plan("shop", CanaryPlan.model_validate(
        {"canary_version": "v2", "metrics": [{"name": "e", "provider": "prometheus", "query": "up", "threshold": 1}],
         "comparison": {"enabled": True}}))
    assert [str(p) for p in problems] == [
        "canary.metrics: a prometheus metric needs prometheus_url in canary.yaml",
        "canary.comparison: needs stable_url and canary_url for 'shop' in canary.yaml"]
    assert [p.field for p in problems] == ["canary.metrics", "canary.comparison"]


# ---- routers --------------------------------------------------------------------------------------------

def test_upstream_block_leaves_out_a_version_without_traffic():
    zero, half, full = (upstream_block("shop", "a:1", "b:2", w) for w in (0, 50, 100))
    assert "server a:1 weight=100;" in zero and "b:2" not in zero
    assert "server a:1 weight=50;" in half and "server b:2 weight=50;" in half
    assert "a:1" not in full and "server b:2 weight=100;" in full


@pytest.mark.skipif(not nginx_available(), reason="nginx is not installed")
def test_nginx_router_moves_traffic_and_a_refused_config_changes_nothing(lab):
    router = router_for(NginxRouter(**lab.nginx_router()), service="shop")
    router.set_weight(50)
    # A reload hands over to new workers gracefully: a connection or two may still meet an old one.
    split = lab.traffic_split(40)
    assert abs(split["v1"] - 20) <= 2 and split["v1"] + split["v2"] == 40
    kept = lab.include_file.read_text()
    broken = router_for(NginxRouter(**lab.nginx_router(canary_address="127.0.0.1:99999")), service="shop")
    with pytest.raises(RouterError, match="nginx -t failed, previous weights kept: .*invalid port"):
        broken.set_weight(10)
    assert lab.include_file.read_text() == kept
    assert lab.traffic_split(40) == {"v1": 20, "v2": 20}  # smooth weighted round robin: exact over a cycle
    assert router.set_weight(0)["changed"]
    time.sleep(0.5)
    assert lab.traffic_split(20) == {"v1": 20}
    assert router.set_weight(0)["changed"] is False


def test_command_router_fills_the_template_and_reports_a_failure(tmp_path):
    log = tmp_path / "calls"
    router = router_for(CommandRouter(kind="command", command=["sh", "-c", f"echo {{service}} {{weight}} "
                                                                          f"{{stable_weight}} >> {log}"]),
                        service="shop", canary_version="v2")
    router.set_weight(10)
    assert log.read_text() == "shop 10 90\n"
    failing = router_for(CommandRouter(kind="command", command=["sh", "-c", "echo mesh says no >&2; exit 4"]),
                         service="shop")
    with pytest.raises(RouterError, match="exited 4: mesh says no"):
        failing.set_weight(10)


def test_http_router_posts_the_weight_and_reports_a_refusal():
    receiver = start_http_receiver()
    try:
        router = router_for(HttpRouter(kind="http", url=f"{receiver.url}/weights"), service="shop",
                            canary_version="v2")
        router.set_weight(50)
        assert json.loads(receiver.delivered("/weights")[0].body) == {
            "service": "shop", "weight": 50, "stable_weight": 50, "canary_version": "v2"}
        receiver.answer((409, {}))
        with pytest.raises(RouterError, match="HTTP 409"):
            router.set_weight(100)
    finally:
        receiver.stop()


# ---- metric sources ---------------------------------------------------------------------------------------

def test_http_probe_measures_error_rate_and_latency(lab):
    lab.canary.set(error_rate=1.0, latency_ms=80)
    try:
        with httpx.Client() as client:
            result = http_probe.probe(client, f"{lab.canary.url}/", 20)
        assert result.count == 20 and result.value("error_rate") == 1.0
        assert 60 <= result.value("latency_p50_ms") <= 200
        with httpx.Client() as client:
            dead = http_probe.probe(client, "http://127.0.0.1:9/", 3, timeout_s=1)
        assert dead.value("error_rate") == 1.0
    finally:
        lab.canary.set(error_rate=0, latency_ms=10)
    assert http_probe.percentile([5, 1, 4, 2, 3], 0.95) == 5 and http_probe.percentile([5, 1, 4, 2, 3], 0.5) == 3
    with pytest.raises(MetricError, match="no answers"):
        http_probe.ProbeResult(url="x").value("error_rate")


@pytest.mark.skipif(not (nginx_available() and prometheus_available()), reason="nginx and prometheus needed")
def test_prometheus_instant_and_range_queries(lab):
    router_for(NginxRouter(**lab.nginx_router()), service="shop").set_weight(50)
    lab.canary.set(error_rate=0.5)
    query = prometheus.render(PROMQL_ERROR_RATE, service="shop", version="v2", interval_s=1)
    try:
        with TrafficLoad(lab.entry_url):
            deadline = time.monotonic() + 20
            value = 0.0
            # The first windows hold only a few of the canary's requests; the ratio settles near the true 0.5.
            while not 0.3 <= value <= 0.7 and time.monotonic() < deadline:
                time.sleep(0.5)
                try:
                    value = prometheus.instant(lab.prometheus_url, query)
                except MetricError:  # the canary's series appear with its first scraped requests
                    value = 0.0
            assert 0.3 <= value <= 0.7
            assert max(prometheus.range_values(lab.prometheus_url, query, seconds=3, step_s=0.5)) >= 0.3
    finally:
        lab.canary.set(error_rate=0)
    with pytest.raises(MetricError, match="bad_data"):
        prometheus.instant(lab.prometheus_url, "sum(")
    with pytest.raises(MetricError, match="no data"):
        prometheus.instant(lab.prometheus_url, "sum(no_such_metric)")
    with pytest.raises(MetricError, match="2 series, expected one"):
        prometheus.instant(lab.prometheus_url, "up")
    with pytest.raises(MetricError, match="ConnectError"):
        prometheus.instant("http://127.0.0.1:9", "up", timeout_s=1)


# ---- one canary step, end to end without Prefect ---------------------------------------------------------------

STABLE_LATENCY_MS = 100


def _bake(lab, tmp_path, *, canary_latency_ms: float):
    from flows._canary_bake import Analyzer, bake_step
    from models import CanaryTarget

    # Stable answers in 100 ms: the few tens of ms a saturated machine adds to either process are then a small part
    # of each version's latency (at 20 ms, 28.6 against 38.0 ms rolled back a canary as fast as stable, a CI run).
    lab.stable.set(error_rate=0, latency_ms=STABLE_LATENCY_MS)
    lab.canary.set(error_rate=0, latency_ms=canary_latency_ms)
    target = CanaryTarget.model_validate({"router": {"kind": "command", "command": ["true"]},
                                          "stable_url": f"{lab.stable.url}/", "canary_url": f"{lab.canary.url}/"})
    plan = CanaryPlan.model_validate({
        "canary_version": "v2", "interval_s": 0.5, "probe_requests": 15, "steps": [{"weight": 100, "bake_s": 2}],
        # A shared 2-core machine adds a few % of noise between two processes; 20 % still separates a 50 %
        # slowdown from none (the 10 % default is checked on seeded samples in test_canary_decisions).
        "comparison": {"enabled": True, "min_samples": 20, "tolerance": 0.2}})
    analyzer = Analyzer(plan, target, service="shop", prometheus_url=None)
    try:
        return bake_step(plan, plan.steps[0], index=1, router=router_for(target.router, service="shop"),
                         analyzer=analyzer, bake="t")
    finally:
        analyzer.close()
        lab.canary.set(latency_ms=10)
        lab.stable.set(latency_ms=10)


def test_comparison_rolls_back_a_canary_slower_than_stable_but_under_the_threshold(lab, tmp_path):
    # 2.5 times slower, under the 500 ms threshold. (30 ms against 20 was promoted once on a saturated
    # machine: the delay the load adds to both versions shrinks their ratio, and 20 % no longer separated them.)
    result = _bake(lab, tmp_path, canary_latency_ms=2.5 * STABLE_LATENCY_MS)
    assert result.action == "rollback"
    assert any(r.startswith("latency_ms: canary median") for r in result.reasons)
    medians = {r["version"] for r in result.rows if r["metric"] == "latency_median_ms"}
    assert medians == {"canary", "stable"}


def test_comparison_promotes_a_canary_as_fast_as_stable(lab, tmp_path):
    result = _bake(lab, tmp_path, canary_latency_ms=STABLE_LATENCY_MS)
    assert result.action == "promote", result.reasons


@pytest.mark.skipif(not nginx_available(), reason="nginx is not installed")
def test_probe_through_the_router_sees_the_mix_users_see(lab):
    from flows._canary_bake import Analyzer
    from models import CanaryTarget

    router_for(NginxRouter(**lab.nginx_router()), service="shop").set_weight(50)
    lab.canary.set(error_rate=1.0)
    target = CanaryTarget.model_validate(lab.canary_config()["services"]["shop"])
    direct, routed = (CanaryPlan.model_validate({"canary_version": "v2", "probe_requests": 40,
                                                 "probe_through_router": via}) for via in (False, True))
    try:
        time.sleep(0.5)
        values = {}
        for name, plan in (("direct", direct), ("routed", routed)):
            analyzer = Analyzer(plan, target, service="shop", prometheus_url=None)
            values[name] = next(m.value for m in analyzer.measure()[0] if m.metric == "error_rate")
            analyzer.close()
    finally:
        lab.canary.set(error_rate=0)
        router_for(NginxRouter(**lab.nginx_router()), service="shop").set_weight(0)
    assert values["direct"] == 1.0
    assert 0.3 <= values["routed"] <= 0.7  # half of the traffic reaches the failing canary


# ---- a bake resumed after its run died (issue 16) ---------------------------------------------------------------

def _resume(lab, *, stored_error_rates: list[float], canary_error_rate: float):
    """Bake a 4-interval step that stored `stored_error_rates` (one interval each) before its run died."""
    from datetime import timedelta

    from flows._canary_bake import Analyzer, bake_step
    from models import CanaryTarget, utcnow

    lab.canary.set(error_rate=canary_error_rate, latency_ms=10)
    target = CanaryTarget.model_validate({"router": {"kind": "command", "command": ["true"]},
                                          "canary_url": f"{lab.canary.url}/"})
    plan = CanaryPlan.model_validate({"canary_version": "v2", "interval_s": 0.5, "probe_requests": 20,
                                      "steps": [{"weight": 50, "bake_s": 2}, {"weight": 100, "bake_s": 2}]})
    rules = {m.name: m.rule() for m in plan.metrics}
    before = utcnow() - timedelta(seconds=30)
    stored = [{"step": 1, "weight": 50, "bake": "b1", "metric": name, "version": "canary",
               "value": error_rate if name == "error_rate" else 12.0, "error": None,
               "threshold": rules[name].threshold, "operator": rules[name].operator,
               "taken_at": before + timedelta(seconds=i)}
              for i, error_rate in enumerate(stored_error_rates) for name in rules]
    recorded: list[list[dict]] = []
    analyzer = Analyzer(plan, target, service="shop", prometheus_url=None)
    started = time.monotonic()
    try:
        result = bake_step(plan, plan.steps[0], index=1, router=router_for(target.router, service="shop"),
                           analyzer=analyzer, bake="b1", stored=stored, on_measured=recorded.append)
    finally:
        analyzer.close()
        lab.canary.set(error_rate=0)
    return result, recorded, time.monotonic() - started


def test_a_resumed_bake_measures_only_the_intervals_left_and_decides_on_all(lab):
    result, recorded, took_s = _resume(lab, stored_error_rates=[0.0, 0.0, 0.0], canary_error_rate=0.0)
    assert result.action == "continue", result.reasons
    assert len(recorded) == 1, "three of the four intervals were stored: one is left"
    assert len(result.rows) == 4 * 2  # the decision counts the stored rows and the new ones (2 metrics)
    print(f"resumed bake took {took_s:.2f} s (one interval: 0.5 s)")


def test_a_resumed_bake_keeps_the_failures_it_stored(lab):
    """A crash does not give a failing canary a fresh failure budget: one failure stored before the crash and one
    after reach the limit of 2, and the weight goes to 0 on the first new interval."""
    result, recorded, _ = _resume(lab, stored_error_rates=[0.6], canary_error_rate=1.0)
    assert result.action == "rollback"
    assert "error_rate: 2 measurements > 0.05" in "; ".join(result.reasons)
    assert len(recorded) == 1
    assert [a.get("weight") for a in result.router] == [50, 0]
