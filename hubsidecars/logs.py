"""Logging to stderr, one event per line, as key=value (default) or JSON.

Under systemd (JOURNAL_STREAM set) the timestamp is left out: journald adds its own. When
stderr is that journal stream, each line starts with its syslog priority (`<3>` for an error),
which journald takes off and keeps as the entry's priority, so `journalctl -p err` finds
failures.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

FORMATS = ("kv", "json")
# Structured fields travel in one attribute so that names like "name" or "msg" cannot clash
# with LogRecord's own attributes.
_FIELDS = "hub_fields"


def _kv_value(value: Any) -> str:
    text = str(value)
    if text == "" or any(ch in text for ch in ' "=\\') or not text.isprintable():
        return json.dumps(text)
    return text


# syslog priorities of Python's levels (sd-daemon(3): "<3>" error ... "<7>" debug)
_PRIORITIES = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6,
               logging.DEBUG: 7}  # fmt: skip


def _priority(levelno: int) -> int:
    return next((prio for level, prio in sorted(_PRIORITIES.items(), reverse=True)
                 if levelno >= level), 7)  # fmt: skip


def stderr_is_the_journal() -> bool:
    """True when stderr is the stream systemd connected to journald (JOURNAL_STREAM names its
    device and inode; a child that inherited the variable but writes elsewhere is not)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in stream.split(":"))
        status = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (status.st_dev, status.st_ino) == (device, inode)


class _Formatter(logging.Formatter):
    def __init__(self, style: str, with_time: bool, with_priority: bool = False) -> None:
        super().__init__()
        self.style_name = style
        self.with_time = with_time
        self.with_priority = with_priority

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {}
        if self.with_time:
            event["ts"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + (
                f".{int(record.msecs):03d}+00:00"
            )
        event["level"] = record.levelname.lower()
        event["logger"] = record.name
        event["msg"] = record.getMessage()
        event.update(getattr(record, _FIELDS, {}))
        if record.exc_info:
            event["exc"] = self.formatException(record.exc_info)
        if self.style_name == "json":
            line = json.dumps(event, default=str)
        else:
            line = " ".join(f"{key}={_kv_value(value)}" for key, value in event.items())
        return f"<{_priority(record.levelno)}>{line}" if self.with_priority else line


def setup_logging(log_format: str = "kv", level: str = "info") -> None:
    """Send every logger (ours, gunicorn's, libraries') to stderr in the chosen format."""
    if log_format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(log_format, with_time="JOURNAL_STREAM" not in os.environ,
                                    with_priority=stderr_is_the_journal()))  # fmt: skip
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def log_event(
    logger: logging.Logger,
    msg: str,
    level: int = logging.INFO,
    exc_info: BaseException | None = None,
    **fields: Any,
) -> None:
    """Log one event with structured fields (rendered as key=value or JSON keys)."""
    logger.log(level, msg, exc_info=exc_info, extra={_FIELDS: fields})
