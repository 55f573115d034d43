"""What a pass leaves for the admin: the summary line, the status file, Prometheus textfile
metrics, and the atomic writes behind both files.

Pure: PassResults built by hand, a fixed clock, real files in tmp_path. The metrics are read
back with prometheus_client's own parser (what node_exporter's textfile collector accepts is the
same text format) and checked line by line against the format's grammar.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import stat
from datetime import UTC, datetime, timedelta

from prometheus_client.parser import text_string_to_metric_families

from culler.outcomes import RESULTS, Outcome, PassResult
from culler.report import (
    Totals,
    metrics_text,
    status_document,
    summary_line,
    write_atomically,
    write_status,
)

STARTED = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
FINISHED = STARTED + timedelta(seconds=3.25)


def a_pass(*outcomes: tuple[str, str, str], dry_run: bool = False,
           errors: tuple[str, ...] = ()) -> PassResult:  # fmt: skip
    result = PassResult(dry_run=dry_run, errors=list(errors))
    for kind, target, outcome in outcomes:
        result.add(Outcome(kind, target, outcome, f"because {target}"))
    return result


BUSY_DAY = a_pass(
    ("server", "ada", "culled"), ("server", "bob/gpu", "culled"), ("server", "cy", "kept-busy"),
    ("server", "dee", "active"), ("server", "eve", "skipped"), ("server", "fay", "failed"),
    ("server", "gil", "stopping"), ("server", "hal", "kept-active"), ("user", "ada", "culled"),
    ("container", "jupyter-ivy", "culled"),
)  # fmt: skip


# --- the summary line ---------------------------------------------------------------------


def test_the_summary_line_counts_what_the_issue_asks_for():
    assert summary_line(a_pass(("server", "ada", "culled"), ("server", "bob", "active"))) == (
        "seen=2 idle=1 busy_kept=0 culled=1 failed=0 skipped=0"
    )


def test_every_idle_thing_counts_as_idle_whatever_happened_next():
    # culled counts servers, users and containers alike (counts_by_kind tells them apart)
    assert summary_line(BUSY_DAY) == (
        "seen=10 idle=8 busy_kept=1 culled=4 failed=1 skipped=1 stopping=1 kept_active=1"
    )


def test_a_dry_run_says_so_and_what_it_would_have_culled():
    line = summary_line(a_pass(("server", "ada", "would-cull"), ("server", "bob", "active"),
                               dry_run=True))  # fmt: skip
    assert line == "seen=2 idle=1 busy_kept=0 culled=0 failed=0 skipped=0 would_cull=1 (dry run)"


def test_a_failed_pass_names_its_first_error():
    line = summary_line(a_pass(errors=("hub unavailable: connection refused", "second")))
    assert line == ("seen=0 idle=0 busy_kept=0 culled=0 failed=0 skipped=0 "
                    "error='hub unavailable: connection refused'")  # fmt: skip


def test_a_pass_is_ok_only_without_errors_and_failed_stops():
    assert a_pass(("server", "ada", "culled"), ("server", "b", "stopping")).ok
    assert not a_pass(("server", "ada", "failed")).ok
    assert not a_pass(errors=("hub down",)).ok


# --- the status file ----------------------------------------------------------------------


def test_the_status_document_is_the_whole_pass_in_json(tmp_path):
    document = status_document(BUSY_DAY, STARTED, FINISHED, 7)
    path = tmp_path / "status.json"
    assert write_status(str(path), document)
    read = json.loads(path.read_text())
    assert read == document
    assert read["pass"] == 7 and read["ok"] is False and read["dry_run"] is False
    assert read["started"] == "2025-03-01T12:00:00+00:00"
    assert read["finished"] == "2025-03-01T12:00:03.250000+00:00"
    assert read["duration_s"] == 3.25
    assert read["counts"] == {"seen": 10, "idle": 8, "busy_kept": 1, "culled": 4, "failed": 1,
                              "skipped": 1, "stopping": 1, "would_cull": 0, "kept_active": 1}
    assert read["counts_by_kind"] == {
        "server": {"culled": 2, "kept-busy": 1, "active": 1, "skipped": 1, "failed": 1,
                   "stopping": 1, "kept-active": 1},
        "user": {"culled": 1}, "container": {"culled": 1},
    }  # fmt: skip
    assert read["errors"] == []
    assert read["decisions"][1] == {"kind": "server", "target": "bob/gpu", "result": "culled",
                                    "reason": "because bob/gpu"}  # fmt: skip
    assert len(read["decisions"]) == 10


# --- Prometheus textfile metrics ---------------------------------------------------------

# The text exposition format, line by line: comments, then samples `name{labels} value`.
_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
_VALUE = r"(?:[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|[+-]?Inf|NaN)"
SAMPLE = re.compile(rf"({_NAME})(?:\{{{_LABEL}(?:,{_LABEL})*\}})? {_VALUE}")
HELP = re.compile(rf"# HELP ({_NAME}) \S.*")
TYPE = re.compile(rf"# TYPE ({_NAME}) (counter|gauge|histogram|summary|untyped)")


def check_text_format(text: str) -> dict[str, str]:
    """Every line valid, HELP and TYPE once per metric before its samples, no series twice,
    counters named *_total, a final newline. Returns metric name -> type."""
    assert text.endswith("\n") and not text.endswith("\n\n")
    types: dict[str, str] = {}
    helped: set[str] = set()
    series: set[str] = set()
    for line in text.splitlines():
        if match := HELP.fullmatch(line):
            assert match[1] not in helped, f"HELP twice: {line}"
            helped.add(match[1])
        elif match := TYPE.fullmatch(line):
            assert match[1] not in types, f"TYPE twice: {line}"
            types[match[1]] = match[2]
        else:
            match = SAMPLE.fullmatch(line)
            assert match, f"not a valid sample line: {line!r}"
            assert match[1] in types and match[1] in helped, f"sample before HELP/TYPE: {line}"
            series_key = line.rsplit(" ", 1)[0]
            assert series_key not in series, f"series twice: {line}"
            series.add(series_key)
    for name, kind in types.items():
        assert kind != "counter" or name.endswith("_total"), name
    return types


def parsed(text: str) -> dict[tuple[str, tuple], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_are_valid_prometheus_text_with_every_kind_and_result():
    totals = Totals()
    totals.add(BUSY_DAY)
    text = metrics_text(BUSY_DAY, FINISHED, 3.25, totals)
    types = check_text_format(text)
    assert types == {
        "hub_culler_last_pass_timestamp_seconds": "gauge",
        "hub_culler_last_pass_duration_seconds": "gauge",
        "hub_culler_last_pass_success": "gauge",
        "hub_culler_last_pass_dry_run": "gauge",
        "hub_culler_last_pass_outcomes": "gauge",
        "hub_culler_outcomes_total": "counter",
        "hub_culler_passes_total": "counter",
        "hub_culler_failed_passes_total": "counter",
    }
    samples = parsed(text)
    outcome = ("hub_culler_last_pass_outcomes",)
    # every (kind, result) pair is present, zeros included, so rate() and absent() behave
    for kind in ("server", "user", "container"):
        for result in RESULTS:
            assert (*outcome, (("kind", kind), ("result", result))) in samples
    assert samples[(*outcome, (("kind", "server"), ("result", "culled")))] == 2
    assert samples[(*outcome, (("kind", "server"), ("result", "would-cull")))] == 0
    assert samples[("hub_culler_outcomes_total", (("kind", "user"), ("result", "culled")))] == 1
    assert samples[("hub_culler_last_pass_success", ())] == 0
    assert samples[("hub_culler_last_pass_duration_seconds", ())] == 3.25
    assert samples[("hub_culler_passes_total", ())] == 1
    assert samples[("hub_culler_failed_passes_total", ())] == 1


def test_counters_add_up_over_passes_and_keep_kinds_the_last_pass_lacked():
    totals = Totals()
    first = a_pass(("server", "ada", "culled"), ("container", "jupyter-bob", "culled"))
    second = a_pass(("server", "cy", "culled"), ("server", "dee", "active"))
    totals.add(first)
    totals.add(second)
    text = metrics_text(second, FINISHED, 0.5, totals)
    check_text_format(text)
    samples = parsed(text)
    total = "hub_culler_outcomes_total"
    assert samples[(total, (("kind", "server"), ("result", "culled")))] == 2
    assert samples[(total, (("kind", "container"), ("result", "culled")))] == 1
    # the container series lives on at 0 in the last pass's gauge rather than vanishing
    gauge = "hub_culler_last_pass_outcomes"
    assert samples[(gauge, (("kind", "container"), ("result", "culled")))] == 0
    assert samples[("hub_culler_passes_total", ())] == 2
    assert samples[("hub_culler_failed_passes_total", ())] == 0
    assert samples[("hub_culler_last_pass_success", ())] == 1


def test_metrics_of_a_pass_that_saw_nothing_are_still_valid():
    text = metrics_text(a_pass(errors=("hub down",)), FINISHED, 0.0, Totals())
    check_text_format(text)
    assert parsed(text)[("hub_culler_last_pass_success", ())] == 0


def test_a_dry_run_is_visible_in_the_metrics():
    text = metrics_text(a_pass(dry_run=True), FINISHED, 0.1, Totals())
    assert parsed(text)[("hub_culler_last_pass_dry_run", ())] == 1


def test_metric_values_keep_their_precision():
    finished = datetime(2025, 3, 1, 12, 0, 37, tzinfo=UTC)
    totals = Totals(passes=1234567)
    samples = parsed(metrics_text(a_pass(), finished, 0.1, totals))
    stamp = samples[("hub_culler_last_pass_timestamp_seconds", ())]
    assert math.isclose(stamp, finished.timestamp(), abs_tol=0.001), stamp
    assert samples[("hub_culler_passes_total", ())] == 1234567


# --- atomic writes ------------------------------------------------------------------------


def test_write_atomically_replaces_the_file_whole_with_the_mode_asked(tmp_path):
    path = tmp_path / "sub" / "dir" / "metrics.prom"
    assert write_atomically(str(path), "first\n")  # the directories are made
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    inode = os.stat(path).st_ino
    assert write_atomically(str(path), "second\n", mode=0o600)
    assert path.read_text() == "second\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.stat(path).st_ino != inode  # a new file renamed over, never rewritten in place
    assert os.listdir(path.parent) == ["metrics.prom"]  # no temporary left


def test_a_reader_holding_the_old_file_keeps_reading_it_whole(tmp_path):
    path = tmp_path / "status.json"
    write_atomically(str(path), "old " * 1000)
    with open(path) as reader:
        write_atomically(str(path), "new")
        assert reader.read() == "old " * 1000
    assert path.read_text() == "new"


def test_a_write_that_fails_is_one_warning_leaves_no_temporary_and_returns_false(tmp_path, caplog):
    target = tmp_path / "status.json"
    target.mkdir()  # a directory where the file should be: the final rename fails
    caplog.set_level(logging.DEBUG, logger="culler.report")
    assert write_atomically(str(target), "{}") is False
    assert [r.getMessage() for r in caplog.records] == ["cannot write file"]
    assert caplog.records[0].levelno == logging.WARNING
    assert os.listdir(tmp_path) == ["status.json"] and os.listdir(target) == []
