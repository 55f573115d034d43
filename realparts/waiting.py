"""The one way the tests wait for something that happens elsewhere: poll, never sleep blindly."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(predicate: Callable[[], Any], timeout: float, what: str | Callable[[], str],
               every: float = 0.1) -> Any:  # fmt: skip
    """Call `predicate` every `every` seconds until it returns something true, and return that;
    after `timeout` seconds fail the test, saying `what` was awaited (called for the message
    when it is a function, e.g. to show a log as it is by then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(every)
    raise AssertionError(f"not within {timeout} s: {what() if callable(what) else what}")


def wait_steady(read: Callable[[], Any], period: float, timeout: float, what: str) -> Any:
    """Return what `read()` gives once two reads `period` seconds apart agree: for values that
    settle by themselves (a hub that copies activity every few seconds, a terminal's prompt)."""
    deadline = time.monotonic() + timeout
    before = read()
    while True:
        time.sleep(period)
        now = read()
        if now == before:
            return now
        if time.monotonic() > deadline:
            raise AssertionError(f"not steady within {timeout} s: {what} ({before!r}, {now!r})")
        before = now
