"""Maintenance windows are data (policies.yaml `windows:`): the specification's weekly, monthly and quarterly
windows come out of the shipped file, the window deployments of prefect.yaml fire at exactly those openings, and
a window file that would silently mean something else is refused at load."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
import yaml
from prefect.server.schemas.schedules import CronSchedule

from models import DEFAULTS_DIR, ConfigError, WindowSpec, load_org, next_window, scheduled_windows, superseded

UTC = timezone.utc
REPO = DEFAULTS_DIR.parents[2]
FROM = datetime(2026, 11, 27, tzinfo=UTC)


@pytest.fixture(scope="module")
def schedules():
    return load_org(DEFAULTS_DIR).policies.windows


def of_kind(schedules, kind, start, end):
    return [w for w in scheduled_windows(schedules, start, end) if w.kind == kind]


def test_weekly_windows_are_sundays_two_to_four(schedules):
    windows = of_kind(schedules, "weekly", FROM, datetime(2027, 2, 1, tzinfo=UTC))
    assert len(windows) == 10  # 2026-11-29 ... 2027-01-31
    for w in windows:
        assert w.starts_at.weekday() == 6 and (w.starts_at.hour, w.ends_at.hour) == (2, 4)


def test_monthly_windows_are_first_sundays_one_to_six(schedules):
    windows = of_kind(schedules, "monthly", FROM, datetime(2028, 1, 1, tzinfo=UTC))
    assert [w.starts_at.day for w in windows][:4] == [6, 3, 7, 7]  # Dec 2026, Jan, Feb, Mar 2027
    for w in windows:
        assert w.starts_at.weekday() == 6 and w.starts_at.day <= 7 and (w.starts_at.hour, w.ends_at.hour) == (1, 6)


def test_quarterly_windows_are_third_sundays_of_each_quarter_with_two_weeks_notice(schedules):
    windows = of_kind(schedules, "quarterly", FROM, datetime(2028, 1, 1, tzinfo=UTC))
    assert [w.starts_at.date().isoformat() for w in windows] == ["2027-01-17", "2027-04-18", "2027-07-18",
                                                                  "2027-10-17"]
    assert all((w.starts_at.hour, w.ends_at - w.starts_at) == (0, timedelta(hours=8)) for w in windows)
    assert schedules["quarterly"].notice == timedelta(days=14) and schedules["weekly"].notice == timedelta(hours=48)


def test_a_window_already_open_is_listed_and_the_next_one_is_found(schedules):
    in_progress = scheduled_windows(schedules, datetime(2026, 12, 13, 3, tzinfo=UTC),
                                    datetime(2026, 12, 13, 3, 1, tzinfo=UTC))
    assert [(w.kind, w.starts_at.hour) for w in in_progress] == [("weekly", 2)]
    assert next_window(schedules, "weekly", datetime(2026, 11, 29, 2, 30, tzinfo=UTC)).starts_at == datetime(
        2026, 12, 6, 2, tzinfo=UTC)
    assert next_window(schedules, "quarterly", datetime(2027, 1, 18, tzinfo=UTC)).starts_at == datetime(
        2027, 4, 18, tzinfo=UTC)


def test_a_window_inside_a_longer_one_is_covered_by_it(schedules):
    first_sunday = next_window(schedules, "weekly", datetime(2026, 12, 5, tzinfo=UTC))
    second_sunday = next_window(schedules, "weekly", datetime(2026, 12, 12, tzinfo=UTC))
    quarter_sunday = next_window(schedules, "weekly", datetime(2027, 1, 16, tzinfo=UTC))
    assert first_sunday.starts_at == datetime(2026, 12, 6, 2, tzinfo=UTC)
    assert superseded(first_sunday, schedules).kind == "monthly"
    assert superseded(quarter_sunday, schedules).kind == "quarterly"
    assert superseded(second_sunday, schedules) is None
    monthly = WindowSpec("monthly", datetime(2026, 12, 6, 1, tzinfo=UTC), datetime(2026, 12, 6, 6, tzinfo=UTC))
    assert superseded(monthly, schedules) is None


def _maintained() -> dict:
    """The windows that maintenance.yaml runs maintenance in (staging's window holds changes only)."""
    org = load_org(DEFAULTS_DIR)
    assert org.maintenance is not None
    return {kind: org.policies.windows[kind] for kind in org.maintenance.windows}


def _deployments(entrypoint: str) -> dict[str, dict]:
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    return {d["name"]: d["schedules"][0] for d in spec["deployments"]
            if d["entrypoint"] == f"flows/maintenance.py:{entrypoint}"}


def _run_times(schedule: dict, n: int) -> list[datetime]:
    cron = CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"], day_or=schedule.get("day_or", True))
    return asyncio.run(cron.get_dates(n=n, start=FROM))


def test_each_window_deployment_fires_at_its_windows_openings(schedules):
    """prefect.yaml is read by Prefect, policies.yaml by changeflow: the two must name the same moments. Prefect's
    own schedule schema computes the run times (`test_up` reads the same from a deployed server)."""
    windows = _deployments("maintenance_window")
    assert set(windows) == set(_maintained()), "one window deployment for each window with maintenance"
    for kind, schedule in _maintained().items():
        expected = (schedule.cron()[0], schedule.cron()[1])
        assert (windows[kind]["cron"], windows[kind].get("day_or", True)) == expected, kind
        openings = [w.starts_at for w in of_kind(schedules, kind, FROM, FROM + timedelta(days=800))][:8]
        assert _run_times(windows[kind], 8) == openings, kind


def test_each_window_is_announced_its_notice_ahead(schedules):
    """The announcement files a window's change when the window is at most its notice (and an hour) away: some
    announcement run must fall in that hour before each window, or the window runs unannounced and unapproved."""
    announcements = _deployments("maintenance_announcement")
    assert set(announcements) == set(_maintained())
    for kind, schedule in _maintained().items():
        runs = _run_times(announcements[kind], 60)
        for window in of_kind(schedules, kind, FROM, runs[-1])[:6]:
            due = window.starts_at - schedule.notice
            assert any(due - timedelta(hours=1) <= run <= due for run in runs), (kind, window.starts_at)


@pytest.mark.parametrize(("window", "message"), [
    ({"title": "Weekly", "every": "week", "weekday": "sunday", "at": 120, "hours": 2},
     'windows.weekly.at: Value error, give the opening time as a quoted "HH:MM" (UTC)'),
    ({"title": "Weekly", "every": "week", "at": "02:00", "hours": 2},
     "windows.weekly: Value error, weekday: a window every week names its weekday"),
    ({"title": "Weekly", "every": "fortnight", "weekday": "sunday", "at": "02:00", "hours": 2},
     "windows.weekly.every: Input should be 'day', 'week', 'month' or 'quarter'"),
    ({"title": "Weekly", "every": "week", "weekday": "sunday", "at": "02:00", "hours": 25},
     "windows.weekly.hours: Input should be less than or equal to 24"),
], ids=["unquoted-time", "no-weekday", "unknown-period", "longer-than-a-day"])
def test_a_window_that_would_mean_something_else_is_refused_at_load(tmp_path, window, message):
    config = _config_copy(tmp_path)
    policies = yaml.safe_load((config / "policies.yaml").read_text())
    policies["windows"]["weekly"] = window
    (config / "policies.yaml").write_text(yaml.safe_dump(policies, sort_keys=False))  # 120: what YAML reads 02:00 as
    with pytest.raises(ConfigError) as caught:
        load_org(config)
    assert message in str(caught.value)


def test_maintenance_for_a_window_policies_do_not_define_is_refused(tmp_path):
    config = _config_copy(tmp_path)
    policies = yaml.safe_load((config / "policies.yaml").read_text())
    del policies["windows"]["quarterly"]
    policies["environments"]["production"]["windows"].remove("quarterly")
    (config / "policies.yaml").write_text(yaml.safe_dump(policies, sort_keys=False))
    with pytest.raises(ConfigError) as caught:
        load_org(config)
    assert "maintenance.windows.quarterly: no window named 'quarterly' in policies.yaml windows" in str(caught.value)


def _config_copy(tmp_path):
    import shutil

    config = tmp_path / "config"
    shutil.copytree(DEFAULTS_DIR, config, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return config
