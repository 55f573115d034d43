"""What a server's own answer says (summarize), and how the culler tells its own questions
from a user's activity (ProbeMarks), including the marks' state file.

Pure: jupyter_server's kernel and terminal models as it serves them, a fixed clock, a real
file in tmp_path. The real server and hub are in test_hub_backend.py.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from datetime import UTC, datetime, timedelta

import pytest

from culler.policy import ServerActivity
from culler.probe import FOOTPRINT_SLACK, WINDOWS_KEPT, ProbeMarks, summarize

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
KEY = ("server", "ada", "")


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def stamp(moment: datetime) -> str:
    """As jupyter_server writes it: microseconds and a Z."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def kernel(state: str, last: datetime | None) -> dict:
    model = {"id": "0b5e", "name": "python3", "execution_state": state, "connections": 0}
    if last is not None:
        model["last_activity"] = stamp(last)
    return model


# --- summarize: a server's own account --------------------------------------------------------


def test_nothing_running_is_nothing_to_keep_the_server_for():
    assert summarize([], []) == ServerActivity(0, 0, 0, None)


def test_only_busy_kernels_count_as_working():
    """Not "starting": jupyter_server reports a kernel no client ever connected to as
    starting for as long as it lives; it would keep an idle server for ever."""
    activity = summarize(
        [kernel("busy", ago(900)), kernel("starting", ago(5000)), kernel("idle", ago(60))], []
    )
    assert activity == ServerActivity(kernels=3, busy_kernels=1, terminals=0, latest=ago(60))
    assert summarize([kernel("starting", ago(5000))], []).busy_kernels == 0


def test_dead_and_idle_kernels_do_not_count_as_working():
    activity = summarize([kernel("idle", ago(60)), kernel("dead", ago(30))], [])
    assert (activity.busy_kernels, activity.latest) == (0, ago(30))


def test_the_latest_activity_of_any_kernel_or_terminal_is_what_counts():
    terminals = [{"name": "1", "last_activity": stamp(ago(10))},
                 {"name": "2", "last_activity": stamp(ago(4000))}]  # fmt: skip
    activity = summarize([kernel("idle", ago(300))], terminals)
    assert activity == ServerActivity(kernels=1, busy_kernels=0, terminals=2, latest=ago(10))


def test_timestamps_with_an_offset_or_without_a_zone_are_read_as_utc():
    kernels = [{"execution_state": "idle", "last_activity": "2025-03-01T13:00:00+01:00"},
               {"execution_state": "idle", "last_activity": "2025-03-01T11:00:00"}]  # fmt: skip
    assert summarize(kernels, []).latest == NOW


def test_what_cannot_be_read_is_left_out_not_fatal():
    """Old servers' terminals have no last_activity; a garbled entry must not stop the pass."""
    kernels = [kernel("idle", None), {"execution_state": "idle", "last_activity": "yesterday"},
               {"execution_state": "idle", "last_activity": 17}, "not-a-model"]  # fmt: skip
    activity = summarize(kernels, [{"name": "1"}, None])
    assert activity.latest is None and activity.busy_kernels == 0
    assert (activity.kernels, activity.terminals) == (4, 2)


# --- ProbeMarks: our footprint vs a user's activity --------------------------------------------

ASKED_FROM, ASKED_UNTIL = ago(100), ago(99)
REAL = ago(3000)  # the real (user's) activity the culler knew when it asked


def marked(path: str = "") -> ProbeMarks:
    marks = ProbeMarks(path)
    marks.remember(KEY, ASKED_FROM, ASKED_UNTIL, REAL)
    return marks


@pytest.mark.parametrize(
    "reported, expected",
    [
        (ASKED_FROM, REAL),
        (ASKED_UNTIL, REAL),
        (ago(99.5), REAL),
        (ASKED_FROM - FOOTPRINT_SLACK, REAL),
        (ASKED_UNTIL + FOOTPRINT_SLACK, REAL),
    ],
    ids=["at the first request", "at the last", "in between", "slack before", "slack after"],
)  # fmt: skip
def test_hub_activity_within_our_question_is_our_footprint(reported, expected):
    marks = marked()
    assert marks.real_activity(KEY, reported) == expected
    assert len(marks) == 1  # still ours on the next pass


def test_hub_activity_after_our_question_is_the_users_and_the_mark_goes():
    marks = marked()
    later = ASKED_UNTIL + FOOTPRINT_SLACK + timedelta(milliseconds=1)
    assert marks.real_activity(KEY, later) == later
    assert len(marks) == 0
    # the mark is gone: a value inside the old window is now taken at face value
    assert marks.real_activity(KEY, ASKED_FROM) == ASKED_FROM


def test_hub_activity_before_our_question_is_unchanged():
    """The hub copies the proxy's activity every few minutes: until it has, it still reports
    what it had before."""
    marks = marked()
    earlier = ASKED_FROM - FOOTPRINT_SLACK - timedelta(milliseconds=1)
    assert marks.real_activity(KEY, earlier) == earlier
    assert len(marks) == 1


def test_servers_never_asked_and_unknown_activity_pass_through():
    marks = marked()
    assert marks.real_activity(("server", "bob", ""), ASKED_FROM) == ASKED_FROM
    assert marks.real_activity(KEY, None) is None


def test_an_older_questions_stamp_the_hub_copies_late_is_still_ours():
    """The hub copies the proxy's stamp every last_activity_interval, so after a second question
    it may report the first one's: that is no user's activity either (CI saw a busy-then-idle
    server kept as "became active during the pass" because only the last question was kept)."""
    marks = marked()
    marks.remember(KEY, ago(10), ago(9), REAL)
    assert marks.real_activity(KEY, ASKED_UNTIL) == REAL
    assert marks.real_activity(KEY, ago(9.5)) == REAL


def test_the_latest_real_activity_known_is_the_answer_for_any_of_our_stamps():
    marks = marked()
    marks.remember(KEY, ago(10), ago(9), ago(50))  # a kernel was used 50 s ago
    assert marks.real_activity(KEY, ASKED_FROM) == ago(50)
    assert marks.real_activity(KEY, ago(9.5)) == ago(50)


def test_once_the_hub_reports_a_newer_questions_stamp_older_questions_are_dropped():
    """The hub's value only moves forward: an older window can no longer be its value, and
    the state file stays small however often the culler asks."""
    marks = marked()
    marks.remember(KEY, ago(10), ago(9), REAL)
    assert marks.real_activity(KEY, ago(9.5)) == REAL
    assert marks.real_activity(KEY, ASKED_FROM) == ASKED_FROM  # taken at face value now
    assert marks.real_activity(KEY, ago(9.5)) == REAL  # the newer window is still ours


def test_at_most_so_many_questions_are_remembered_per_server():
    marks = ProbeMarks()
    asked = [ago(1000 - 10 * n) for n in range(WINDOWS_KEPT + 5)]
    for moment in asked:
        marks.remember(KEY, moment, moment + timedelta(seconds=1), REAL)
    assert marks.real_activity(KEY, asked[4]) == asked[4]  # forgotten: the oldest five
    assert marks.real_activity(KEY, asked[5]) == REAL


def test_marks_of_servers_that_no_longer_run_are_dropped():
    marks = marked()
    other = ("server", "bob", "gpu")
    marks.remember(other, ASKED_FROM, ASKED_UNTIL, None)
    marks.forget_except({other})
    assert len(marks) == 1
    assert marks.real_activity(KEY, ASKED_FROM) == ASKED_FROM
    assert marks.real_activity(other, ASKED_FROM) is None


# --- the state file ---------------------------------------------------------------------------


def test_marks_survive_a_restart(tmp_path):
    path = str(tmp_path / "state" / "probe-marks.json")
    first = marked(path)
    first.remember(("user", "ada"), ASKED_FROM, ASKED_UNTIL, None)
    first.remember(KEY, ago(10), ago(9), REAL)  # a second question to the same server
    first.save()

    second = ProbeMarks(path)
    assert len(second) == 2
    assert second.real_activity(KEY, ASKED_UNTIL) == REAL  # both questions came back
    assert second.real_activity(KEY, ago(9.5)) == REAL
    assert second.real_activity(("user", "ada"), ASKED_FROM) is None


def test_the_state_file_is_private_json_and_replaced_whole(tmp_path):
    path = tmp_path / "probe-marks.json"
    marks = marked(str(path))
    marks.save()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # user names and their habits
    entries = json.loads(path.read_text())
    assert entries == [{"key": list(KEY), "from": ASKED_FROM.isoformat(),
                        "until": ASKED_UNTIL.isoformat(), "real": REAL.isoformat()}]  # fmt: skip
    marks.forget_except(set())
    marks.save()
    assert json.loads(path.read_text()) == []
    assert sorted(os.listdir(tmp_path)) == ["probe-marks.json"]  # no temporary left behind


def test_a_missing_state_file_is_a_quiet_fresh_start(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="culler.probe")
    assert len(ProbeMarks(str(tmp_path / "absent.json"))) == 0
    assert caplog.records == []


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "",
        '{"key": ["server", "ada", ""]}',
        "[1, 2]",
        '[{"key": ["server", "ada", ""], "from": "2025-03-01T11:58:20+00:00"}]',
        '[{"key": ["server", "ada", ""], "from": "noon", "until": "noon"}]',
        '[{"key": ["server", "ada", ""], "from": 5, "until": 6}]',
    ],
    ids=["broken json", "empty", "an object", "numbers", "no until", "bad time", "numbers as time"],
)  # fmt: skip
def test_a_corrupt_state_file_is_one_warning_and_a_fresh_start(tmp_path, caplog, content):
    path = tmp_path / "probe-marks.json"
    path.write_text(content)
    caplog.set_level(logging.DEBUG, logger="culler.probe")
    marks = ProbeMarks(str(path))
    assert len(marks) == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "ignoring unreadable probe state; starting afresh"
    ]
    # and the culler goes on: the next save replaces the corrupt file
    marks.remember(KEY, ASKED_FROM, ASKED_UNTIL, REAL)
    marks.save()
    assert ProbeMarks(str(path)).real_activity(KEY, ASKED_FROM) == REAL


def test_a_state_file_that_cannot_be_written_is_one_warning_not_a_crash(tmp_path, caplog):
    directory = tmp_path / "state"
    marks = marked(str(directory / "probe-marks.json"))
    directory.write_text("")  # the state directory became a file: nothing can be written there
    caplog.set_level(logging.WARNING)
    marks.save()
    assert [r.getMessage() for r in caplog.records] == ["cannot write file"]


def test_without_a_path_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marked("").save()
    assert os.listdir(tmp_path) == []
