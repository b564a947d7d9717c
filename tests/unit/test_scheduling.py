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
