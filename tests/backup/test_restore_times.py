"""The --time forms `hub-backup restore` reads (and hands duplicity as epoch seconds, so that
both agree on the moment): those duplicity documents, read as it reads them, except that a
local time without an offset keeps its summer time; anything else is refused."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from backup.actions.restore import absolute_time
from hubsidecars.config import ConfigError

NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "expected"), [
    ("now", NOW),
    ("3D", NOW - timedelta(days=3)),
    ("1h30m", NOW - timedelta(minutes=90)),
    ("2W", NOW - timedelta(days=14)),
    ("1M", NOW - timedelta(days=30)),
    ("1Y", NOW - timedelta(days=365)),
    ("90s", NOW - timedelta(seconds=90)),
    ("1700000000", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
    ("2026-11-20T08:00:00+02:00", datetime(2026, 11, 20, 6, 0, 0, tzinfo=UTC)),
])  # fmt: skip
def test_forms_duplicity_reads_are_read_the_same(text, expected):
    assert absolute_time(text, NOW) == expected


def test_a_time_without_offset_is_local_time_summer_time_included(monkeypatch):
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        assert absolute_time("2026-07-01T08:00:00", NOW) == datetime(2026, 7, 1, 6, tzinfo=UTC)
        assert absolute_time("2026-01-01", NOW) == datetime(2025, 12, 31, 23, tzinfo=UTC)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


@pytest.mark.parametrize("text", ["garbage", "3 days", "2026/11/20", "3d", "", "\u00b2",
                                  "999999999999", "99999999Y", "2026-13-01"])  # fmt: skip
def test_anything_else_is_refused_in_one_line(text):
    with pytest.raises(ConfigError, match="ISO 8601") as refused:
        absolute_time(text, NOW)
    assert "\n" not in str(refused.value)
