"""TIME arguments as an operator types them at 3 a.m."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from mulligan.errors import UsageError
from mulligan.timeparse import parse_time

NOW = datetime(2026, 11, 22, 10, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("text, back", [
    ("-10m", timedelta(minutes=10)), ("10 minutes ago", timedelta(minutes=10)), ("1 min ago", timedelta(minutes=1)),
    ("2 hours ago", timedelta(hours=2)), ("90s ago", timedelta(seconds=90)), ("1 day ago", timedelta(days=1)),
    ("3 Weeks ago", timedelta(weeks=3)), ("0.5 h ago", timedelta(minutes=30)),
])
def test_relative_times(text, back):
    assert parse_time(text, now=NOW) == NOW - back


def test_a_time_of_today_is_local_and_never_later_than_now(monkeypatch):
    monkeypatch.setenv("TZ", "Europe/Paris")  # UTC+1 in November
    import time

    time.tzset()
    try:
        assert parse_time("10:40", now=NOW) == datetime(2026, 11, 22, 9, 40, tzinfo=timezone.utc)
        assert parse_time("9:05:30.25", now=NOW) == datetime(2026, 11, 22, 8, 5, 30, 250000, tzinfo=timezone.utc)
        with pytest.raises(UsageError) as later:
            parse_time("11:30", now=NOW)
        assert "later than now" in later.value.message and "2026-11-21 11:30" in later.value.hint
        with pytest.raises(UsageError):
            parse_time("25:00", now=NOW)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


@pytest.mark.parametrize("text", ["yesterday", "10 minutes", "ago", "10 parsecs ago", "10:7"])
def test_what_cannot_be_read_is_a_usage_error(text):
    with pytest.raises(UsageError):
        parse_time(text, now=NOW)
