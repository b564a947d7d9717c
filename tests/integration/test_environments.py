"""Environments as data (issue 32): each change runs in one of policies.yaml's environments, whose windows, notice,
approvals and freezes hold for it; a release reaches production through staging where the policy says so. Every
rule here comes from the config: the tests change the config, not the code."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import update

from models import ChangeRequest, ChangeState, InputError, PolicyViolation, Services
from tests.helpers import SECRET, approve, standard_request

UTC = timezone.utc
NOW = datetime(2026, 11, 29, tzinfo=UTC)  # a Sunday, midnight
TUESDAY_1AM = datetime(2026, 12, 1, 1, tzinfo=UTC)  # staging's daily window, 49 h ahead
SUNDAY_2AM = datetime(2026, 12, 13, 2, tzinfo=UTC)  # production's weekly window


def _planned(start: datetime, environment: str | None, hours: float = 1, **overrides) -> dict:
    return standard_request(planned_start=start.isoformat(), planned_end=(start + timedelta(hours=hours)).isoformat(),
                            **({"environment": environment} if environment else {}), **overrides)


def _with_policies(db, org, **environments) -> Services:
    """The shipped config with some environments' policies replaced (as a YAML edit would)."""
    places = {**org.policies.environments}
    for name, changes in environments.items():
        places[name] = places[name].model_validate({**places[name].model_dump(by_alias=True), **changes})
    policies = org.policies.model_validate({**org.policies.model_dump(by_alias=True), "environments": {
        name: place.model_dump(by_alias=True) for name, place in places.items()}})
    return Services.build(db, org.model_copy(update={"policies": policies}), SECRET, clock=lambda: NOW)


@pytest.fixture
def services(db, org):
    return Services.build(db, org, SECRET, clock=lambda: NOW)


def test_each_environment_takes_its_windows_and_notice_from_the_config(services):
    staged = services.changes.submit(_planned(TUESDAY_1AM, "staging"))
    assert (staged.environment, staged.state) == ("staging", "submitted")
    with pytest.raises(InputError, match=r"planned_start: a standard change needs 24 h notice: earliest 2026-11-30 "
                                         r"00:00 UTC; the next maintenance window after that is Staging window Mon "
                                         r"2026-11-30 01:00-03:00 UTC"):
        services.changes.submit(_planned(NOW + timedelta(hours=1), "staging", title="too soon"))  # 01:00 today
    with pytest.raises(InputError, match=r"outside every window; the next is Monthly maintenance Sun 2026-12-06"):
        services.changes.submit(_planned(TUESDAY_1AM, "production", title="staging's hour"))
    production = services.changes.submit(_planned(SUNDAY_2AM, None, title="no environment named"))
    assert production.environment == "production", "a request that names none targets the first, production"
    anytime = services.changes.submit(_planned(NOW + timedelta(hours=14), "development", title="Sunday 14:00"))
    assert services.rules(anytime).scheduled is False, "development is continuous: approved means go"
    assert services.rules(staged).policy.notice == timedelta(hours=24)
    assert [c.key for c in services.changes.list_changes()] == [anytime.key, production.key, staged.key]


def test_an_unknown_environment_is_refused_naming_it_and_nothing_is_written(services):
    with pytest.raises(InputError) as refused:
        services.changes.submit(_planned(SUNDAY_2AM, "prod"))
    assert [(p.field, p.message) for p in refused.value.problems] == [
        ("environment", "unknown environment 'prod' (known: production, staging, development)")]
    with pytest.raises(InputError, match="environment: unknown environment 'qa'"):
        services.scheduling.add_window(starts_at=SUNDAY_2AM, ends_at=SUNDAY_2AM + timedelta(hours=1), freeze=True,
                                       environment="qa")
    assert services.changes.list_changes() == [] and services.scheduling.windows_between(NOW, SUNDAY_2AM.replace(
        month=12, day=31)) == []


def test_approvals_that_differ_per_environment_come_from_the_config(db, org):
    places = _with_policies(db, org, development={"approvals": {"standard": [{"role": "peer_reviewer", "count": 1}]}})
    development = places.changes.submit(_planned(NOW + timedelta(hours=14), "development"))
    production = places.changes.submit(_planned(SUNDAY_2AM, "production"))
    assert {r.role for r in places.approvals.required_for(development)} == {"peer_reviewer"}
    assert {r.role for r in places.approvals.required_for(production)} == {"team_lead", "peer_reviewer"}
    places.approvals.request_approval(development.key)
    assert approve(places, development.key, "bob").change.state == ChangeState.approved.value, \
        "one peer review suffices"
    places.approvals.request_approval(production.key)
    assert approve(places, production.key, "bob").change.state == ChangeState.awaiting_approval.value, \
        "production still needs its team lead"


def test_a_freeze_of_one_environment_holds_there_only(services):
    christmas = datetime(2026, 12, 24, tzinfo=UTC)
    services.scheduling.add_window(starts_at=christmas, ends_at=christmas + timedelta(days=9), freeze=True,
                                   title="Production freeze", environment="production")
    with pytest.raises(PolicyViolation, match="falls in the freeze 'Production freeze'"):
        services.changes.submit(_planned(datetime(2026, 12, 27, 2, tzinfo=UTC), "production"))
    staged = services.changes.submit(_planned(datetime(2026, 12, 27, 1, tzinfo=UTC), "staging"))
    assert staged.state == "submitted"
    everywhere = services.scheduling.add_window(starts_at=christmas + timedelta(days=9), freeze=True, title="All",
                                                ends_at=christmas + timedelta(days=10))
    assert everywhere.environment is None
    with pytest.raises(PolicyViolation, match="falls in the freeze 'All'"):
        services.changes.submit(_planned(datetime(2027, 1, 2, 1, tzinfo=UTC), "staging", title="second"))


def test_changes_clash_within_one_environment_only(services):
    production = services.changes.submit(_planned(datetime(2026, 12, 6, 2, tzinfo=UTC), "production", hours=2))
    staged = services.changes.submit(_planned(datetime(2026, 12, 6, 1, tzinfo=UTC), "staging", hours=2))
    with pytest.raises(PolicyViolation, match=f"conflicts with {staged.key}"):
        services.changes.submit(_planned(datetime(2026, 12, 6, 2, tzinfo=UTC), "staging", title="second"))
    assert {c.key for c in services.changes.list_changes()} == {production.key, staged.key}
    shown = services.calendar.calendar(datetime(2026, 12, 6, tzinfo=UTC), datetime(2026, 12, 7, tzinfo=UTC),
                                       "staging")
    assert [(e.kind, e.changes) for e in shown.entries] == [("staging", (staged.key,))], \
        "staging's calendar shows staging's window and change, not production's"


# ---- staging first -----------------------------------------------------------------------------------------

@pytest.fixture
def staging_first(db, org):
    return _with_policies(db, org, production={"promotion": {"from": "staging", "types": ["standard"]}})


def _shipped(services: Services, release: str, service: str = "payments", environment: str = "staging") -> str:
    """A change that shipped `release` in `environment`, approved and completed through the services."""
    change = services.changes.submit(_planned(TUESDAY_1AM, environment, release=release, service=service,
                                              title=f"{service} {release} in {environment}"))
    services.approvals.request_approval(change.key)
    approve(services, change.key, "alice")
    approve(services, change.key, "bob")
    steps = (ChangeState.scheduled, ChangeState.implementing, ChangeState.verifying, ChangeState.completed)
    for target in steps[0 if services.rules(change).scheduled else 1:]:
        services.changes.transition(change.key, target, actor="grace", reason="staging run")
    assert change.key is not None
    return change.key


def test_a_release_reaches_production_only_through_a_closed_successful_staging_change(staging_first):
    services = staging_first
    with pytest.raises(InputError) as refused:
        services.changes.submit(_planned(SUNDAY_2AM, "production"))
    assert [p.field for p in refused.value.problems] == ["release", "promoted_from"]
    with pytest.raises(InputError, match="promoted_from: no change 'CHG-000999'"):
        services.changes.submit(_planned(SUNDAY_2AM, "production", release="2.4", promoted_from="CHG-000999"))
    running = services.changes.submit(_planned(TUESDAY_1AM, "staging", release="2.4"))
    with pytest.raises(InputError, match=r"has not finished successfully \(state submitted"):
        services.changes.submit(_planned(SUNDAY_2AM, "production", release="2.4", promoted_from=running.key))
    services.changes.transition(running.key, ChangeState.cancelled, actor="grace", reason="superseded")
    staged = _shipped(services, "2.4")
    for walk_around, says in (
            ({"release": "2.5"}, "it shipped release 2.4, not 2.5"),  # another build than the one staged
            ({"service": "checkout"}, "it changed payments, not checkout"),
            ({"promoted_from": _shipped(services, "2.4", environment="development")},
             "it ran in development, not staging")):
        request = _planned(SUNDAY_2AM, "production", **{"release": "2.4", "promoted_from": staged, **walk_around})
        with pytest.raises(InputError, match=f"does not prove the release: .*{says}"):
            services.changes.submit(request)
    promoted = services.changes.submit(_planned(SUNDAY_2AM, "production", release="2.4", promoted_from=staged))
    assert (promoted.release, promoted.promoted_from) == ("2.4", staged)
    staging_again = services.changes.submit(_planned(TUESDAY_1AM + timedelta(days=1), "staging", release="2.5"))
    assert staging_again.state == "submitted", "the rule holds for production, not for staging"


def test_the_staging_change_is_checked_again_when_the_production_change_would_start(staging_first, db):
    services = staging_first
    staged = _shipped(services, "2.4")
    promoted = services.changes.submit(_planned(SUNDAY_2AM, "production", release="2.4", promoted_from=staged))
    services.approvals.request_approval(promoted.key)
    approve(services, promoted.key, "alice")
    approve(services, promoted.key, "bob")
    services.changes.transition(promoted.key, ChangeState.scheduled, actor="changeflow", reason="approved")
    at_window = Services.build(db, services.org, SECRET, clock=lambda: SUNDAY_2AM + timedelta(minutes=5))
    assert at_window.scheduling.start_check(promoted.key).may_start
    with db.write() as session:  # the staging change found failed after all (what a later rollback records)
        session.execute(update(ChangeRequest).where(ChangeRequest.key == staged).values(outcome="failed"))
    check = at_window.scheduling.start_check(promoted.key)
    assert not check.may_start and f"staging first: {staged} does not prove the release" in check.reason
    with pytest.raises(PolicyViolation, match="staging first"):
        at_window.scheduling.begin_implementation(promoted.key)
    assert at_window.changes.get(promoted.key).state == "scheduled"


def test_a_content_digest_recorded_before_environments_existed_still_matches():
    """Changes filed before migration 0013 have no environment, release or promoted_from, and their filing events
    hold a digest of the 21 fields there were: the digest of such a row must be that same value, or `audit verify`
    would call every earlier change edited."""
    import hashlib

    from models import CONTENT_FIELDS, canonical_json, change_content_digest, content_values

    row = ChangeRequest(**{**standard_request(risk=None), "state": "submitted", "risk_level": "low",
                           "policy_version": "v1", "key": "CHG-000001", "created_at": NOW, "updated_at": NOW})
    before = content_values(row)[:CONTENT_FIELDS.index("environment")]
    assert change_content_digest(row) == hashlib.sha256(canonical_json(before).encode()).hexdigest()[:32]
    row.environment = "production"
    assert change_content_digest(row) != hashlib.sha256(canonical_json(before).encode()).hexdigest()[:32]


def test_the_calendar_and_window_commands_take_an_environment(cli_env):
    staging = cli_env("calendar", "--days", "2", "--environment", "staging", "--json")
    assert staging.exit_code == 0, staging.output
    shown = json.loads(staging.stdout)
    assert shown["environment"] == "staging" and {w["kind"] for w in shown["windows"]} == {"staging"}
    assert len(shown["windows"]) in (2, 3), "daily 01:00-03:00, over two days"
    unknown = cli_env("calendar", "--environment", "qa")
    assert unknown.exit_code == 2 and "environment: unknown environment 'qa'" in unknown.output, unknown.output
    freeze = cli_env("window", "add", "--start", "2027-03-01T00:00Z", "--end", "2027-03-02T00:00Z", "--freeze",
                     "--title", "Staging rebuild", "--environment", "staging")
    assert freeze.exit_code == 0 and "(staging only)" in freeze.output, freeze.output


def test_the_change_log_lists_one_environment(db, org, cli_env):
    now = Services.build(db, org, SECRET)  # the CLI's clock is the real one: undated changes
    staged = now.changes.submit(standard_request(environment="staging", title="staged"))
    produced = now.changes.submit(standard_request(title="production"))
    with db.write() as session:  # a change filed before environments existed: the default one's
        session.execute(update(ChangeRequest).where(ChangeRequest.key == produced.key).values(environment=None))
    listed = {env: [c["key"] for c in json.loads(cli_env("log", "--environment", env, "--format", "json").stdout)]
              for env in ("staging", "production", "development")}
    assert listed == {"staging": [staged.key], "production": [produced.key], "development": []}
    unknown = cli_env("log", "--environment", "qa")
    assert unknown.exit_code == 2 and "--environment: no environment named 'qa'" in unknown.output, unknown.output
