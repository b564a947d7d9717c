"""The post-change watch's setup and record (issue 33), on SQLite and PostgreSQL: what a change's watch is (the
policy's duration and breach rule for its type, canary.yaml's analysis for its service), a watch started and
decided once however often its run asks, and its measurements bound to the audit trail like a canary's."""

from __future__ import annotations

from datetime import timedelta

import pytest
import yaml

from models import ConfigError, PolicySet, Services, WatchPolicy, load_canary, utcnow, verify_chain
from tests.helpers import SECRET, emergency_request, lift_guards, standard_request

ANALYSIS = {"metrics": [{"name": "error_rate", "query": "error_rate", "threshold": 0.05},
                        {"name": "p95", "provider": "prometheus", "query": "p95{service=\"{service}\"}",
                         "threshold": 800, "on_missing": "fail"}]}


def canary_yaml(tmp_path, **watch):
    path = tmp_path / "canary.yaml"
    path.write_text(yaml.safe_dump({"prometheus_url": "http://127.0.0.1:9", "analyses": {"payments-health": ANALYSIS},
                                    "watches": {"payments": {"analysis": "payments-health",
                                                             "url": "http://127.0.0.1:9/health", **watch}}}))
    return load_canary(path)


@pytest.fixture
def watched(db, org, tmp_path):
    """The services with payments watched (canary.yaml) under the shipped policy (2 h; emergencies ask)."""
    return Services.build(db, org.model_copy(update={"canary": canary_yaml(tmp_path, interval_s=30)}), SECRET)


def test_a_change_of_a_watched_service_gets_the_policy_duration_and_its_types_breach_rule(watched, services):
    standard = watched.changes.submit(standard_request(service="payments"))
    setup = watched.watch.setup(standard)
    assert setup is not None
    assert (setup.duration, setup.interval_s, setup.measurements_due, setup.on_breach) == (
        timedelta(hours=2), 30, 240, "roll_back")
    assert [m.name for m in setup.metrics] == ["error_rate", "p95"] and setup.uses("prometheus")
    emergency = watched.changes.submit(emergency_request(service="payments"))
    assert watched.watch.setup(emergency).on_breach == "ask", "policies.yaml watch.by_type"
    staging = watched.changes.submit(standard_request(service="payments", environment="staging"))
    assert watched.watch.setup(staging) is None, "watch.environments: production's URLs judge no staging change"
    other = watched.changes.submit(standard_request(service="checkout"))
    assert watched.watch.setup(other) is None, "a service canary.yaml does not watch"
    assert services.watch.setup(services.changes.submit(standard_request(service="payments"))) is None, \
        "no canary.yaml: nothing is watched"


def test_a_watch_starts_and_is_decided_once_and_its_measurements_are_bound_to_the_audit_trail(watched, insider,
                                                                                             cli_env):
    key = watched.changes.submit(standard_request(service="payments")).key
    setup = watched.watch.setup(watched.changes.get(key))
    started = watched.watch.start(key, setup)
    assert watched.watch.start(key, setup) == started, "a resumed run goes on to the same end"
    assert watched.watch.decision(key) is None
    watched.watch.record_measurements(key, [
        {"step": 0, "weight": 100, "bake": "watch", "metric": "error_rate", "version": "live", "value": value,
         "error": None, "threshold": 0.05, "operator": ">", "taken_at": utcnow()} for value in (0.0, 0.2, 0.3)])
    first = watched.watch.decide(key, {"action": "breached", "reasons": ["error_rate: 2 measurements > 0.05"],
                                       "measured": 3, "failing": []})
    again = watched.watch.decide(key, {"action": "healthy", "reasons": [], "measured": 3, "failing": []})
    assert first == again == watched.watch.decision(key) and first["action"] == "breached"
    assert [r.value for r in watched.watch.measurements(key)] == [0.0, 0.2, 0.3]
    assert watched.canary.decisions(key) == {}, "the watch is not a canary step"
    with watched.db.read() as session:
        assert verify_chain(session).ok
    assert cli_env("audit", "verify").exit_code == 0
    shown = " ".join(cli_env("show", key).output.split())  # the timeline says what the watch was and found
    assert "watched 2 h by payments-health every 30.0 s" in shown and "on a breach: roll back" in shown, shown
    assert "breached after 3 measurements: error_rate: 2 measurements > 0.05" in shown, shown
    # An insider softens the breach after the verdict: the verdict's digests name the row.
    with insider.write_engine.connect() as conn:
        lift_guards(conn, insider.dialect, "canary_measurements")
        conn.exec_driver_sql("UPDATE canary_measurements SET value = 0.01 WHERE value = 0.3")
        conn.commit()
    result = cli_env("audit", "verify")
    assert result.exit_code == 1 and f"canary measurement {key} step 0 bake watch row" in result.output, result.output


@pytest.mark.parametrize("watch, named", [
    ({"analysis": "nothing-named"}, "watches.payments.analysis: no analysis named 'nothing-named'"),
    ({"analysis": "payments-health", "url": None}, "watches.payments.url: the analysis 'payments-health' has "
                                                   "http_probe metrics"),
    ({"analysis": "payments-health", "interval_s": 0}, "watches.payments.interval_s"),
])
def test_a_watch_canary_yaml_cannot_carry_out_is_refused_at_load_naming_the_field(tmp_path, watch, named):
    with pytest.raises(ConfigError, match="canary") as refused:
        canary_yaml(tmp_path, **watch)
    assert named in str(refused.value), str(refused.value)


def test_the_watch_policy_is_bounded_and_names_only_types_that_exist(org):
    with pytest.raises(ValueError, match="duration must be between 0s and 7d"):
        WatchPolicy(duration="8d")
    policies = org.policies.model_dump(exclude={"version", "source"}, by_alias=True)
    with pytest.raises(ValueError, match="watch.by_type: no change type named emergncy"):
        PolicySet.model_validate({**policies, "watch": {"by_type": {"emergncy": "ask"}}})
    with pytest.raises(ValueError, match="watch.environments: no environment named prod"):
        PolicySet.model_validate({**policies, "watch": {"environments": ["prod"]}})
    off = PolicySet.model_validate({**policies, "watch": {"duration": "0s"}})
    assert off.watch.duration == timedelta(0)
