"""The clock the services read: now in UTC, and a moment as the UTC ISO 8601 text they store."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """`moment` in UTC, to the second: 2026-11-23T08:26:42+00:00."""
    return moment.astimezone(UTC).isoformat(timespec="seconds")
