"""Maintenance windows, freezes and conflicts."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from models import PolicyViolation, Services
from tests.helpers import SECRET, emergency_request, major_request, next_shipped_window, standard_request

UTC = timezone.utc


def test_change_in_a_freeze_is_refused_naming_it(services):
    start = datetime(2026, 12, 24, tzinfo=UTC)
    services.scheduling.add_window(starts_at=start, ends_at=start + timedelta(days=9), title="Year-end freeze",
                                   freeze=True)
    with pytest.raises(PolicyViolation, match=r"falls in the freeze 'Year-end freeze' \(2026-12-24 00:00"):
        services.changes.submit(_planned(SUNDAY_27_DEC))  # the weekly window, inside the freeze
    assert services.changes.list_changes() == []
    outside = services.changes.submit(_planned(SUNDAY_27_DEC + timedelta(days=7)))
    assert outside.state == "submitted"


def test_overlapping_change_on_the_same_service_is_refused_naming_it(services):
    start = datetime(2026, 12, 6, 2, tzinfo=UTC)
    first = services.changes.submit(_planned(start, hours=2))
    with pytest.raises(PolicyViolation, match=f"conflicts with {first.key}"):
        services.changes.submit(_planned(start + timedelta(hours=1), title="second"))
    later = services.changes.submit(_planned(start + timedelta(hours=2)))
    assert later.state == "submitted"


def test_changes_on_services_that_depend_on_each_other_clash_up_to_the_configured_depth(db, org):
    """Issue 32: conflicts were checked on one service only. directory.yaml: checkout depends on payments, which
    depends on platform; policies.yaml `conflict_depth` says how many steps apart two changes still clash."""
    def at_depth(depth: int) -> Services:
        policies = org.policies.model_copy(update={"conflict_depth": depth})
        return Services.build(db, org.model_copy(update={"policies": policies}), SECRET,
                              clock=lambda: datetime(2026, 11, 29, tzinfo=UTC))

    start = datetime(2026, 12, 6, 2, tzinfo=UTC)
    one = at_depth(1)  # as shipped
    platform = one.changes.submit(_planned(start, hours=2, service="platform", title="platform maintenance"))
    with pytest.raises(PolicyViolation, match=rf"conflicts with {platform.key} \(platform maintenance\) on platform "
                                              r"\(payments depends on platform\), planned 2026-12-06 02:00 to 04:00"):
        one.changes.submit(_planned(start + timedelta(hours=1), service="payments"))
    checkout = one.changes.submit(_planned(start, service="checkout"))  # two steps from platform
    with pytest.raises(PolicyViolation, match=rf"conflicts with {platform.key} \(platform maintenance\) on platform "
                                              r"\(checkout depends on payments; payments depends on platform\)"):
        at_depth(2).changes.submit(_planned(start + timedelta(hours=1), service="checkout", title="second"))
    unrelated = at_depth(0).changes.submit(_planned(start + timedelta(hours=1), service="payments"))
    assert (checkout.state, unrelated.state) == ("submitted", "submitted")
    assert sorted(c.key for c in one.changes.list_changes()) == [platform.key, checkout.key, unrelated.key], \
        "a refused change writes nothing"


def test_emergency_goes_through_a_freeze_with_the_override_recorded(services):
    start = datetime(2026, 12, 24, tzinfo=UTC)
    services.scheduling.add_window(starts_at=start, ends_at=start + timedelta(days=9), title="Year-end freeze",
                                   freeze=True)
    change = services.changes.submit(emergency_request(planned_start=(start + timedelta(days=1)).isoformat()))
    override = [e for e in services.changes.view(change.key).events if e.action == "policy_override"]
    assert len(override) == 1 and "Year-end freeze" in override[0].data["overridden"][0]


def test_calendar_shows_windows_freezes_and_changes(cli_env, services):
    soon = datetime.now(UTC) + timedelta(days=3)
    assert cli_env("window", "add", "--start", soon.isoformat(), "--end", (soon + timedelta(days=1)).isoformat(),
                   "--title", "Launch freeze", "--freeze").exit_code == 0
    change = services.changes.submit(_planned(next_shipped_window("weekly", soon + timedelta(days=1)).starts_at,
                                              service="payments"))
    data = json.loads(cli_env("calendar", "--days", "14", "--json").stdout)
    kinds = {w["kind"] for w in data["windows"]}
    assert {"weekly", "freeze"} <= kinds
    assert change.key in [c["key"] for c in data["changes"]]
    text = cli_env("calendar")
    assert text.exit_code == 0 and "Launch freeze" in text.stdout
    bad = cli_env("window", "add", "--start", "2026-12-02", "--end", "2026-12-01")
    assert bad.exit_code == 2 and "end: must be after start" in bad.stderr


def test_a_freeze_declared_after_submission_is_enforced_at_scheduling(services):
    start = datetime(2027, 3, 7, 2, tzinfo=UTC)
    change = services.changes.submit(_planned(start))
    assert services.scheduling.schedule_clashes(change.key) == []
    services.scheduling.add_window(starts_at=start - timedelta(days=1), ends_at=start + timedelta(days=1),
                       title="Release freeze", freeze=True)
    (clash,) = services.scheduling.schedule_clashes(change.key)
    assert "Release freeze" in clash


def test_the_calendar_picture_draws_each_day_hour_by_hour_with_its_windows_freezes_and_changes(services):
    """Issue 30: the audit-report deployment's calendar artifact, a picture of the weeks ahead."""
    from flows.audit_report import FREEZE, WINDOW, calendar_picture

    services.scheduling.add_window(starts_at=datetime(2026, 12, 29, 22, tzinfo=UTC),
                                   ends_at=datetime(2026, 12, 30, 3, tzinfo=UTC), title="Year-end freeze",
                                   service="payments", freeze=True)
    change = services.changes.submit(_planned(SUNDAY_27_DEC))
    start = datetime(2026, 12, 27, tzinfo=UTC)
    picture = calendar_picture(services.calendar.calendar(start, start + timedelta(days=4)))
    days = {line[:9]: line for line in picture.splitlines() if line[:3] in ("Sun", "Mon", "Tue", "Wed")}
    # Sunday: the weekly window 02:00-04:00 (hours 2 and 3), with the change planned in it.
    assert days["Sun 12-27"][11:35] == "··" + WINDOW * 2 + "·" * 20
    assert f"02:00 weekly Weekly maintenance: {change.key}" in days["Sun 12-27"], days["Sun 12-27"]
    # The freeze from Tuesday 22:00 to Wednesday 03:00, said on the day it starts.
    assert days["Tue 12-29"][11:35].endswith(FREEZE * 2)
    assert "22:00 freeze Year-end freeze (payments)" in days["Tue 12-29"]
    assert days["Wed 12-30"][11:35].startswith(FREEZE * 3 + "·")
    assert days["Mon 12-28"][11:35] == "·" * 24
    assert f"| {change.key} " in picture


def test_a_change_filed_without_a_date_is_listed_at_the_window_it_holds(services, cli_env):
    """Issue 32: the calendar saw only dated changes, and two undated changes and a dated one on one service were
    all accepted for the same Sunday window. Today (Sunday 29 Nov, 00:00) a dated payments change holds the monthly
    window of 6 Dec, 01:00-02:00 (filed with its 48 h notice); undated payments changes queue, in filing order, each
    in the first window nobody related holds after its notice (the weekly window of the 6th, 02:00, then the 13th's);
    a major change waits out its 14 days' notice and then for the next free window (the 20th); a change whose
    (unrelated) service is frozen until 2 Dec takes the first window after the freeze, beside the dated payments
    change; an emergency waits for none."""
    monthly_start = datetime(2026, 12, 6, 1, tzinfo=UTC)
    dated = services.changes.submit(_planned(monthly_start))
    first, second = (services.changes.submit(standard_request(title=f"undated {n}")) for n in (1, 2))
    major = services.changes.submit(major_request())
    services.scheduling.add_window(starts_at=datetime(2026, 11, 28, tzinfo=UTC),
                                   ends_at=datetime(2026, 12, 2, tzinfo=UTC), title="Reporting freeze",
                                   service="reporting", freeze=True)
    frozen = services.changes.submit(standard_request(title="after the freeze", service="reporting"))
    emergency = services.changes.submit(emergency_request())
    shown = services.calendar.calendar(datetime(2026, 11, 29, tzinfo=UTC), datetime(2026, 12, 28, tzinfo=UTC))
    waiting = {(e.kind, e.starts_at): e.undated for e in shown.entries if e.undated}
    assert waiting == {("monthly", monthly_start): (frozen.key,),
                       ("weekly", datetime(2026, 12, 6, 2, tzinfo=UTC)): (first.key,),
                       ("weekly", datetime(2026, 12, 13, 2, tzinfo=UTC)): (second.key,),
                       ("weekly", datetime(2026, 12, 20, 2, tzinfo=UTC)): (major.key,)}
    (monthly,) = [e for e in shown.entries if (e.kind, e.starts_at) == ("monthly", monthly_start)]
    assert monthly.changes == (dated.key,)
    assert emergency.key not in {c.key for c in shown.undated} | {k for e in shown.entries for k in e.changes}
    text = cli_env("calendar", "--days", "21")
    assert text.exit_code == 0 and f"{first.key} (undated)" in text.stdout, text.stdout


@pytest.fixture
def services(db, org):
    """Submits judged on 29 Nov 2026, so the fixed dates below stay in the future (notice is checked at submit)."""
    return Services.build(db, org, SECRET, clock=lambda: datetime(2026, 11, 29, tzinfo=UTC))


# Dates in maintenance windows (a standard change runs in one): 27 Dec 2026 is a Sunday, 6 Dec and 7 Mar
# first Sundays (the monthly window, 01:00-06:00).
SUNDAY_27_DEC = datetime(2026, 12, 27, 2, tzinfo=UTC)


def _planned(start: datetime, hours: int = 1, **overrides):
    return standard_request(planned_start=start.isoformat(), planned_end=(start + timedelta(hours=hours)).isoformat(),
                            **overrides)
