"""Analysis templates (issue 33): the requester wrote the canary's thresholds in the request, so nothing stopped a
change from judging itself leniently. An administrator now names analyses in canary.yaml; a service may require
one; a change that uses one may only tighten it (each loosening refused at submit naming the field, nothing
written), and the change records the analysis and the limits it is judged by. A metric's `on_missing` says what
an interval with no data means, tried against a real Prometheus query that returns none."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from cli.dev import prometheus_available
from models import CanaryConfig, ChangeRequest, InputError, Services
from tests.helpers import ROUTINE_RISK, SECRET

FLOOR = {"metrics": [
    {"name": "error_rate", "query": "error_rate", "threshold": 0.05, "failure_limit": 2, "inconclusive_limit": 3},
    {"name": "latency_p95_ms", "query": "latency_p95_ms", "threshold": 500}]}


def judged_by(org, *, required: str | None = "web"):
    target = {"router": {"kind": "http", "url": "http://127.0.0.1:1/weights"}, "stable_url": "http://127.0.0.1:1/v1",
              "canary_url": "http://127.0.0.1:1/v2", **({"analysis": required} if required else {})}
    return org.model_copy(update={"canary": CanaryConfig.model_validate({
        "analyses": {"web": FLOOR, "strict": {"metrics": [{**FLOOR["metrics"][0], "threshold": 0.01}]}},
        "services": {"shop": target}})})


def canary_request(**canary) -> dict:
    return {"type": "emergency", "title": "canary", "service": "shop", "requester": "bob", "incident_id": "INC-1",
            "incident_severity": "P1", "risk": ROUTINE_RISK, "canary": {"canary_version": "v2", **canary}}


def metric(name: str = "error_rate", **overrides) -> dict:
    base = next(m for m in FLOOR["metrics"] if m["name"] == name)
    return {**base, **overrides}


def count(services: Services) -> int:
    with services.db.read() as session:
        return session.execute(select(func.count()).select_from(ChangeRequest)).scalar_one()


def test_a_canary_of_a_service_that_requires_an_analysis_is_judged_by_it_and_records_it(db, org):
    services = Services.build(db, judged_by(org), SECRET)
    change = services.changes.submit(canary_request())
    plan = services.canary.plan(change)
    assert plan.analysis == "web"
    assert [(m.name, m.threshold, m.failure_limit, m.on_missing) for m in plan.metrics] == [
        ("error_rate", 0.05, 2, "inconclusive"), ("latency_p95_ms", 500, 2, "inconclusive")]
    assert "analysis web" in services.briefs.of(change).text("Canary")
    # Tighter limits and a metric of its own are the requester's to add.
    tighter = services.changes.submit(canary_request(metrics=[
        metric(threshold=0.01, failure_limit=1, on_missing="fail"), metric("latency_p95_ms", threshold=300),
        {"name": "latency_p99_ms", "query": "latency_p99_ms", "threshold": 900}]))
    assert {m.name: m.threshold for m in services.canary.plan(tighter).metrics} == {
        "error_rate": 0.01, "latency_p95_ms": 300, "latency_p99_ms": 900}


@pytest.mark.parametrize(("canary", "field", "message"), [
    ({"metrics": [metric(threshold=0.2), metric("latency_p95_ms")]}, "canary.metrics.error_rate.threshold",
     "0.2 loosens the analysis 'web' (at most 0.05)"),
    ({"metrics": [metric(failure_limit=10), metric("latency_p95_ms")]}, "canary.metrics.error_rate.failure_limit",
     "10 loosens the analysis 'web' (at most 2)"),
    ({"metrics": [metric(inconclusive_limit=9), metric("latency_p95_ms")]},
     "canary.metrics.error_rate.inconclusive_limit", "9 loosens the analysis 'web' (at most 3)"),
    ({"metrics": [metric(on_missing="pass"), metric("latency_p95_ms")]}, "canary.metrics.error_rate.on_missing",
     "'pass' loosens the analysis 'web' ('inconclusive' or stricter)"),
    ({"metrics": [metric("latency_p95_ms")]}, "canary.metrics",
     "the analysis 'web' measures error_rate: the plan may add metrics, not leave one out"),
    ({"metrics": [metric(operator="<"), metric("latency_p95_ms")]}, "canary.metrics.error_rate",
     "measured differently from the analysis 'web'"),
    ({"analysis": "strict"}, "canary.analysis", "'shop' is judged by the analysis 'web' (canary.yaml), not 'strict'"),
], ids=["looser-threshold", "more-failures-allowed", "more-gaps-allowed", "no-data-passes", "metric-left-out",
        "measured-differently", "another-analysis"])
def test_a_request_that_loosens_its_analysis_is_refused_naming_the_field_and_writes_nothing(db, org, canary, field,
                                                                                            message):
    services = Services.build(db, judged_by(org), SECRET)
    with pytest.raises(InputError) as refused:
        services.changes.submit(canary_request(**canary))
    assert message in str(refused.value) and field in [p.field for p in refused.value.problems], refused.value
    assert count(services) == 0


def test_a_service_without_a_required_analysis_takes_the_one_a_request_names_or_none(db, org):
    services = Services.build(db, judged_by(org, required=None), SECRET)
    own = services.canary.plan(services.changes.submit(canary_request(metrics=[metric(threshold=0.3)])))
    assert own.analysis is None and own.metrics[0].threshold == 0.3, "no analysis: the request's own metrics"
    picked = services.canary.plan(services.changes.submit(canary_request(analysis="strict")))
    assert picked.analysis == "strict" and [m.threshold for m in picked.metrics] == [0.01]
    with pytest.raises(InputError, match=r"canary.analysis: no analysis named 'lenient' \(known: strict, web\)"):
        services.changes.submit(canary_request(analysis="lenient"))


def test_a_service_requiring_an_analysis_nobody_defined_is_refused_when_the_config_loads():
    with pytest.raises(ValueError, match="services.shop.analysis: no analysis named 'web'"):
        CanaryConfig.model_validate({"services": {"shop": {"router": {"kind": "http", "url": "http://127.0.0.1:1/"},
                                                           "analysis": "web"}}})


@pytest.mark.skipif(not prometheus_available(), reason="prometheus is not installed")
@pytest.mark.parametrize(("on_missing", "action"), [("inconclusive", "pause"), ("fail", "rollback"),
                                                    ("pass", "promote")])
def test_a_prometheus_query_with_no_data_counts_as_its_metric_says(lab, on_missing, action):
    """Argo Rollouts and Flagger users ask for it per metric: a query that returns nothing (the canary's series
    not there yet, a label typo) is a question for a person, a failure, or nothing to judge."""
    from flows._canary_bake import Analyzer, bake_step
    from flows.traffic import router_for
    from models import CanaryPlan, CanaryTarget

    plan = CanaryPlan.model_validate({
        "canary_version": "v2", "interval_s": 0.2, "steps": [{"weight": 100, "bake_s": 0.6}],
        "metrics": [{"name": "absent", "provider": "prometheus", "query": "sum(no_such_metric)", "threshold": 1,
                     "failure_limit": 2, "inconclusive_limit": 2, "on_missing": on_missing}]})
    target = CanaryTarget.model_validate({"router": {"kind": "command", "command": ["true"]}})
    analyzer = Analyzer(plan, target, service="shop", prometheus_url=lab.prometheus_url)
    try:
        result = bake_step(plan, plan.steps[0], index=1, router=router_for(target.router, service="shop"),
                           analyzer=analyzer, bake="no-data")
    finally:
        analyzer.close()
    assert result.action == action, result.reasons
    # (A bake stops at its decision: the second interval with no data decides under `fail` and `inconclusive`.)
    assert len(result.rows) == (3 if on_missing == "pass" else 2)
    assert {r["error"] for r in result.rows} == {"no data: prometheus returned no series"}
