"""Maintenance windows, freezes and conflicts."""

from __future__ import annotations

from datetime import datetime, timezone

from models import monthly_windows, next_window, weekly_windows

UTC = timezone.utc


def test_weekly_windows_are_sundays_two_to_four():
    windows = weekly_windows(datetime(2026, 11, 27, tzinfo=UTC), datetime(2027, 2, 1, tzinfo=UTC))
    assert len(windows) == 10  # 2026-11-29 ... 2027-01-31
    for w in windows:
        assert w.starts_at.weekday() == 6 and (w.starts_at.hour, w.ends_at.hour) == (2, 4)


def test_monthly_windows_are_first_sundays_one_to_six():
    windows = monthly_windows(datetime(2026, 11, 27, tzinfo=UTC), datetime(2028, 1, 1, tzinfo=UTC))
    assert [w.starts_at.day for w in windows][:4] == [6, 3, 7, 7]  # Dec 2026, Jan, Feb, Mar 2027
    for w in windows:
        assert w.starts_at.weekday() == 6 and w.starts_at.day <= 7 and (w.starts_at.hour, w.ends_at.hour) == (1, 6)


def test_next_window_after_a_moment():
    assert next_window("weekly", datetime(2026, 11, 29, 2, 30, tzinfo=UTC)).starts_at == datetime(
        2026, 12, 6, 2, tzinfo=UTC)


def test_a_weekly_window_on_a_first_sunday_is_covered_by_the_monthly_one():
    from models import WindowSpec, superseded_by_monthly

    first_sunday = next_window("weekly", datetime(2026, 12, 5, tzinfo=UTC))
    second_sunday = next_window("weekly", datetime(2026, 12, 12, tzinfo=UTC))
    assert first_sunday.starts_at == datetime(2026, 12, 6, 2, tzinfo=UTC) and superseded_by_monthly(first_sunday)
    assert not superseded_by_monthly(second_sunday)
    assert not superseded_by_monthly(WindowSpec("monthly", first_sunday.starts_at, first_sunday.ends_at))
