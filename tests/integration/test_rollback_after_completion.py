"""Rolling back a change after it completed (issue 32): a change of its own, approved as an emergency is, linked to
the change it undoes both ways on the record, refused outside policies.yaml `rollback.within` and for a change that
did not complete; DORA counts the undone change failed. (Its run, which carries out the rollback commands, is
tests/flows/test_rollback_flows.py.)"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from models import ChangeState, InputError, PolicyViolation, Services
from tests.helpers import SECRET, Clock, approve, emergency_request, next_shipped_window, standard_request

UTC = timezone.utc
T0 = datetime(2026, 11, 29, tzinfo=UTC)
INCIDENT = {"incident_id": "INC-4711", "incident_severity": "P2"}


@pytest.fixture
def services(at_t0):
    return at_t0  # every test here on the module's clock (tests/conftest.py: `clock` starts at T0)


def completed(services: Services, clock: Clock | None, **overrides) -> str:
    """A standard change approved and implemented successfully through the services (as its run would); with a
    clock, planned in the first weekly window its 48 h notice allows and done in it, without one undated and done
    now."""
    start = next_shipped_window("weekly", clock.at + timedelta(hours=48)).starts_at if clock else None
    dated = {"planned_start": start.isoformat()} if clock else {}
    change = services.changes.submit(standard_request(**dated, **overrides))
    services.approvals.request_approval(change.key)
    approve(services, change.key, "alice")
    approve(services, change.key, "bob")
    if start is not None:
        clock.at = start + timedelta(minutes=5)
    for target in (ChangeState.scheduled, ChangeState.implementing, ChangeState.verifying, ChangeState.completed):
        services.changes.transition(change.key, target, actor="changeflow", reason="its run")
    assert change.key is not None
    return change.key


def rolled_back_through_the_services(services: Services, key: str, person: str = "carol") -> str:
    rollback = services.changes.submit(services.rollbacks.request_for(key, person=person, reason="5xx since the "
                                                                      "release", **INCIDENT))
    assert rollback.key is not None
    return rollback.key


def test_a_completed_change_is_rolled_back_by_an_emergency_change_linked_both_ways(services, clock):
    original = completed(services, clock, title="payments 2.4")
    clock.at += timedelta(hours=3)
    rollback = services.changes.get(rolled_back_through_the_services(services, original))
    assert (rollback.type, rollback.rolls_back, rollback.service, rollback.environment) == (
        "emergency", original, "payments", "production")
    assert rollback.title == f"Roll back {original}: payments 2.4" and rollback.requester == "carol"
    assert {r.role for r in services.approvals.required_for(rollback)} == {"incident_commander"}, \
        "approved as an emergency is (policies.yaml rollback.as)"
    view = services.changes.view(original)
    assert view.rolled_back_by == rollback.key and view.state == "completed"
    filed = next(e for e in view.events if e.action == "rollback_filed")
    assert (filed.actor, filed.data["by"], filed.data["reason"]) == ("carol", rollback.key, "5xx since the release")
    # Its run carries it out (approved by the incident commander, at any time): the undone change's history says so.
    services.approvals.request_approval(rollback.key)
    approve(services, rollback.key, "erin")
    for target in (ChangeState.implementing, ChangeState.verifying, ChangeState.completed):
        services.changes.transition(rollback.key, target, actor="changeflow", reason="its run")
    reverted = [e for e in services.changes.view(original).events if e.action == "reverted"]
    assert [(e.actor, e.data["by"]) for e in reverted] == [("changeflow", rollback.key)]


def test_dora_counts_a_change_rolled_back_after_completion_as_failed(services, clock):
    original = completed(services, clock, service="ledger")
    kept = completed(services, clock, service="ledger", title="kept")
    before = next(r for r in services.reports.run("dora", T0, T0 + timedelta(days=30)).rows if r["service"] == "ledger")
    assert (before["failed"], before["deployments"]) == (0, 2)
    rollback = rolled_back_through_the_services(services, original)
    services.approvals.request_approval(rollback)
    approve(services, rollback, "erin")
    clock.at += timedelta(hours=2)
    for target in (ChangeState.implementing, ChangeState.verifying, ChangeState.completed):
        services.changes.transition(rollback, target, actor="changeflow", reason="its run")
    after = next(r for r in services.reports.run("dora", T0, T0 + timedelta(days=30)).rows if r["service"] == "ledger")
    assert (after["implemented"], after["failed"], after["change_failure_rate"]) == (3, 1, round(1 / 3, 4))
    assert after["time_to_restore_median_h"] is not None, "restored by the rollback that worked"
    assert kept != original


def test_only_a_change_that_completed_within_the_policy_period_is_rolled_back_this_way(services, clock, db, org):
    running = services.changes.submit(standard_request(title="not started"))
    with pytest.raises(PolicyViolation, match=rf"{running.key} is submitted \(outcome none\): only a change that "
                                              r"completed successfully .* aborted \(changeflow abort\)"):
        services.rollbacks.request_for(running.key, person="carol", reason="x", **INCIDENT)
    original = completed(services, clock)
    clock.at += timedelta(days=7, minutes=1)
    with pytest.raises(PolicyViolation, match=r"longer ago than policies.yaml rollback.within allows \(7 days"):
        services.rollbacks.request_for(original, person="carol", reason="too late", **INCIDENT)
    longer = org.policies.model_copy(update={"rollback": org.policies.rollback.model_copy(
        update={"within": timedelta(days=30)})})
    relaxed = Services.build(db, org.model_copy(update={"policies": longer}), SECRET, clock=clock)
    assert relaxed.changes.get(rolled_back_through_the_services(relaxed, original)).rolls_back == original, \
        "the period is the config's"


def test_walking_around_the_rollback_rules_by_hand_is_refused_and_writes_nothing(services, clock):
    original = completed(services, clock)
    by_hand = services.rollbacks.request_for(original, person="carol", reason="undo", **INCIDENT)
    before = [c.key for c in services.changes.list_changes()]
    for walk_around, field, says in (
            ({**standard_request(), "rolls_back": original}, "type", "a rollback is filed as an emergency change"),
            ({**by_hand, "service": "checkout"}, "rolls_back", "its rollback names the same service and environment"),
            ({**by_hand, "environment": "staging"}, "rolls_back", "its rollback names the same service"),
            ({**by_hand, "rolls_back": "CHG-000999"}, "rolls_back", "no change 'CHG-000999'"),
            ({key: value for key, value in by_hand.items() if key != "incident_id"}, "incident_id",
             "must name the incident it fixes")):
        with pytest.raises(InputError) as refused:
            services.changes.submit(walk_around)
        assert (field, says) in [(p.field, p.message) for p in refused.value.problems] or any(
            p.field == field and says in p.message for p in refused.value.problems), refused.value.problems
    assert [c.key for c in services.changes.list_changes()] == before
    first = rolled_back_through_the_services(services, original)
    with pytest.raises(PolicyViolation, match=f"already rolled back by {first}"):
        rolled_back_through_the_services(services, original, person="dave")
    with pytest.raises(InputError, match=f"already rolled back by {first}"):
        services.changes.submit(by_hand)  # the same request filed by hand
    services.changes.transition(first, ChangeState.cancelled, actor="carol", reason="filed in error")
    again = rolled_back_through_the_services(services, original, person="dave")
    assert services.changes.view(original).rolled_back_by == again, "one called off may be filed again"


def test_the_requester_of_a_rollback_cannot_approve_it(services, clock):
    original = completed(services, clock)
    rollback = services.changes.submit(services.rollbacks.request_for(original, person="erin", reason="errors",
                                                                      **INCIDENT))
    services.approvals.request_approval(rollback.key)
    with pytest.raises(PolicyViolation, match="requested this change"):
        approve(services, rollback.key, "erin")
    emergency = services.changes.submit(emergency_request())
    with pytest.raises(PolicyViolation, match=f"{emergency.key} is submitted"):
        services.rollbacks.request_for(emergency.key, person="carol", reason="x", **INCIDENT)


def test_the_cli_files_a_rollback_and_refuses_with_the_field_named(db, org, cli_env):
    original = completed(Services.build(db, org, SECRET), None)  # the CLI's clock is the real one
    missing = cli_env("rollback", original, "--as", "carol", "--reason", "errors", "--local")
    assert missing.exit_code == 2 and "incident_id" in missing.output, missing.output
    filed = cli_env("rollback", original, "--as", "carol", "--reason", "errors", "--incident", "INC-1",
                    "--severity", "P1", "--local")
    assert filed.exit_code == 0, filed.output
    assert f"emergency change to payments in production, rolling back {original}" in filed.output, filed.output
    again = cli_env("rollback", original, "--as", "dave", "--reason", "errors", "--incident", "INC-1",
                    "--severity", "P1", "--local")
    assert again.exit_code == 1 and "already rolled back by" in again.output, again.output
    shown = cli_env("show", original)
    assert "rolled_back_by" in shown.output, shown.output
    verified = cli_env("audit", "verify")
    assert verified.exit_code == 0, verified.output  # the link events are part of the chain, the rows bound


def test_a_repeated_filing_of_a_rollback_returns_it_instead_of_refusing_it_as_a_second(services, clock):
    """A restarted run files its change again with the same idempotency key: the rollback it recorded must not
    count as another rollback of the same change."""
    original = completed(services, clock)
    request = services.rollbacks.request_for(original, person="carol", reason="errors", **INCIDENT)
    first = services.changes.submit(request, idempotency_key="flow-run:r1")
    assert services.changes.submit(request, idempotency_key="flow-run:r1").key == first.key
    with pytest.raises(InputError, match=f"already rolled back by {first.key}"):
        services.changes.submit(request, idempotency_key="flow-run:r2")
