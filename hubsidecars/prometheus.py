"""Prometheus textfile metrics (node_exporter's textfile collector reads them), written by the
culler after each pass and by hub-backup after each command."""

from __future__ import annotations

import re

_LABEL_ESCAPES = str.maketrans({"\\": r"\\", '"': r"\"", "\n": r"\n"})


class MetricsText:
    """Collects metric families (`# HELP`, `# TYPE`, samples) under one name prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.lines: list[str] = []

    def add(self, name: str, kind: str, help_text: str,
            samples: list[tuple[dict[str, str] | str, float]]) -> None:  # fmt: skip
        """One family; a sample's labels are a dict (escaped here) or a ready `{k="v"}` text."""
        full = f"{self.prefix}_{name}"
        self.lines.append(f"# HELP {full} {help_text}")
        self.lines.append(f"# TYPE {full} {kind}")
        for labels, value in samples:
            self.lines.append(f"{full}{_labels(labels)} {number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _labels(labels: dict[str, str] | str) -> str:
    if isinstance(labels, str):
        return labels
    if not labels:
        return ""
    for key in labels:
        if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", key):
            raise ValueError(f"not a Prometheus label name: {key!r}")
    inner = ",".join(f'{key}="{str(value).translate(_LABEL_ESCAPES)}"'
                     for key, value in labels.items())  # fmt: skip
    return "{" + inner + "}"


def number(value: float) -> str:
    """Every digit: a Unix timestamp in %g would be off by up to 83 minutes."""
    return str(value) if isinstance(value, int) else repr(float(value))
