"""Logging to stderr, one event per line, as key=value (default) or JSON.

Under systemd (JOURNAL_STREAM set) the timestamp is left out: journald adds its own.
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


class _Formatter(logging.Formatter):
    def __init__(self, style: str, with_time: bool) -> None:
        super().__init__()
        self.style_name = style
        self.with_time = with_time

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
            return json.dumps(event, default=str)
        return " ".join(f"{key}={_kv_value(value)}" for key, value in event.items())


def setup_logging(log_format: str = "kv", level: str = "info") -> None:
    """Send every logger (ours, gunicorn's, libraries') to stderr in the chosen format."""
    if log_format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(log_format, with_time="JOURNAL_STREAM" not in os.environ))
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
