"""The --time forms `hub-backup restore` checks against the oldest backup kept: read as
duplicity reads them, or left to duplicity when we cannot."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from backup.restore import absolute_time

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


def test_a_date_without_offset_is_local_time_as_for_duplicity():
    moment = absolute_time("1999-01-01", NOW)
    assert moment == datetime(1999, 1, 1).astimezone() and moment.tzinfo is not None


@pytest.mark.parametrize("text", ["garbage", "3 days", "2026/11/20", "3d", ""])
def test_other_forms_are_left_to_duplicity(text):
    assert absolute_time(text, NOW) is None
