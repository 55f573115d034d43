"""The periodic runner as a daemon sees it: a real process on hubsidecars.periodic
(realparts/periodic_daemon.py), real signals, real timing, a real notify socket."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from realparts.process import ManagedProcess
from realparts.restuser import REPO
from realparts.waiting import wait_until

SCRIPT = Path(__file__).parents[2] / "realparts" / "periodic_daemon.py"
# Timing slack for a loaded 2-core machine shared with other test runs.
SLACK = 0.3


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without systemd's variables (pytest itself may run under systemd)."""
    systemd_set = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM")
    env = {k: v for k, v in os.environ.items() if k not in systemd_set}
    return {**env, "PYTHONPATH": str(REPO), **extra}


class Daemon:
    def __init__(self, workdir: Path, args: list[str], env: dict[str, str]) -> None:
        self.record = workdir / "passes.txt"
        argv = [sys.executable, str(SCRIPT), "--record", str(self.record), *args]
        self.managed = ManagedProcess(argv, workdir / "daemon.log", env=env)

    def start(self) -> Daemon:
        self.managed.start(lambda: self.seen("start", 1), 30, "periodic daemon")
        return self

    def events(self) -> list[tuple[str, int, float]]:
        if not self.record.exists():
            return []
        lines = self.record.read_text().splitlines()
        return [(e, int(n), float(t)) for e, n, t in (line.split() for line in lines)]

    def seen(self, event: str, number: int) -> float | None:
        return next((t for e, n, t in self.events() if (e, n) == (event, number)), None)

    def wait_for(self, event: str, number: int, timeout: float = 10) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (when := self.seen(event, number)) is not None:
                return when
            assert self.managed.process.poll() is None, self.log()
            time.sleep(0.02)
        raise AssertionError(f"no '{event} {number}' within {timeout} s:\n{self.log()}")

    def signal(self, signum: int) -> float:
        sent = time.monotonic()
        self.managed.process.send_signal(signum)
        return sent

    def wait(self, timeout: float = 15) -> tuple[int, float]:
        """Exit code and the monotonic time the exit was seen."""
        code = self.managed.process.wait(timeout=timeout)
        return code, time.monotonic()

    def log(self) -> str:
        return self.managed.log()


@pytest.fixture
def start_daemon(tmp_path: Path):
    started: list[Daemon] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Daemon:
        workdir = tmp_path / f"d{len(started)}"
        workdir.mkdir()
        daemon = Daemon(workdir, list(args), env or clean_env())
        started.append(daemon)
        return daemon.start()

    yield start
    for daemon in started:
        daemon.managed.stop(timeout=5)


def passes(daemon: Daemon) -> dict[int, dict[str, float]]:
    table: dict[int, dict[str, float]] = {}
    for event, number, when in daemon.events():
        table.setdefault(number, {})[event] = when
    return table


def test_a_pass_slower_than_the_interval_never_overlaps_and_missed_ticks_do_not_pile_up(
    start_daemon,
):
    d = start_daemon("--interval", "1.0", "--pass-seconds", "1.5")
    d.wait_for("end", 4, timeout=30)
    d.signal(signal.SIGTERM)
    assert d.wait()[0] == 0, d.log()
    table = {n: row for n, row in passes(d).items() if "end" in row}
    numbers = sorted(table)
    for earlier, later in itertools.pairwise(numbers):
        assert table[later]["start"] >= table[earlier]["end"], f"overlap: {table}"
    # Every pass starts on a tick of the first pass's schedule (0, 2, 4, ...): ticks that
    # fell during a pass were dropped, not queued to run back to back (at 1.5, 3, ...).
    first = table[1]["start"]
    for number in numbers:
        offset = (table[number]["start"] - first) % 1.0
        assert min(offset, 1.0 - offset) < SLACK, f"pass {number} off the schedule: {table}"
    # the dropped ticks are said in one line per pass that overran, not one warning per tick
    log = d.log()
    assert "maximum number of running instances" not in log
    overran = [line for line in log.splitlines() if "overran its interval" in line]
    assert overran and all("ticks_skipped=" in line for line in overran), log
    assert len(overran) <= len(numbers)


def test_a_failing_pass_is_one_log_line_and_the_next_pass_runs_on_time(start_daemon):
    d = start_daemon("--interval", "0.5", "--fail-passes", "2")
    d.wait_for("start", 4)
    assert d.managed.process.poll() is None, "the daemon died of a failed pass"
    d.signal(signal.SIGTERM)
    code, _ = d.wait()
    log = d.log()
    assert code == 0, log
    mentions = [line for line in log.splitlines() if "503" in line]
    assert len(mentions) == 1, log
    assert "level=error" in mentions[0] and 'msg="pass failed"' in mentions[0]
    assert 'error="RuntimeError: hub answered 503"' in mentions[0]
    assert "pass_number=2" in mentions[0]
    assert "Traceback" not in log
    starts = {n: row["start"] for n, row in passes(d).items()}
    # On the schedule set by the first pass: a failure neither delays nor hurries the next one.
    assert abs(starts[3] - starts[1] - 1.0) <= SLACK, starts
    assert abs(starts[4] - starts[1] - 1.5) <= SLACK, starts
    done = [line for line in log.splitlines() if 'msg="pass done"' in line]
    assert len(done) >= 2 and 'summary="pass 3 ok"' in done[1] and "checked=3" in done[1]
    assert "stopped passes=" in log and "failures=1" in log


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_during_a_pass_lets_it_finish_then_exits_0(start_daemon, signum):
    d = start_daemon("--interval", "0.2", "--pass-seconds", "1.5")
    started = d.wait_for("start", 1)
    time.sleep(0.3)
    sent = d.signal(signum)
    code, exited = d.wait()
    log = d.log()
    assert code == 0, log
    ended = d.seen("end", 1)
    assert ended is not None and ended > sent, "the running pass was not allowed to finish"
    assert exited - ended < 3.0, f"exit took {exited - ended:.2f} s after the pass ended"
    assert ended - started < 1.5 + 1.0
    assert d.seen("start", 2) is None, "a new pass began after the stop request"
    assert f"msg=stopping signal={signal.Signals(signum).name} pass_running=True" in log, log
    assert "Traceback" not in log and "KeyboardInterrupt" not in log


def test_a_stop_signal_cuts_a_pass_that_checks_the_stop_event_short(start_daemon):
    d = start_daemon("--interval", "60", "--pass-seconds", "30", "--abortable")
    d.wait_for("start", 1)
    sent = d.signal(signal.SIGTERM)
    code, exited = d.wait()
    assert code == 0, d.log()
    assert d.seen("aborted", 1) is not None
    assert exited - sent < 5.0  # not the pass's 30 s


def test_a_pass_ignoring_the_stop_is_abandoned_after_the_stop_timeout(start_daemon):
    d = start_daemon("--interval", "60", "--pass-seconds", "60", "--stop-timeout", "1")
    d.wait_for("start", 1)
    sent = d.signal(signal.SIGTERM)
    code, exited = d.wait(timeout=20)
    log = d.log()
    assert code == 0, log
    # 1 s of waiting, then out: the stuck pass's thread must not hold the process open.
    assert 0.9 <= exited - sent < 4.0, f"{exited - sent:.2f} s"  # not the pass's 60 s
    assert 'msg="pass still running after 1 s; abandoning it"' in log
    assert d.seen("end", 1) is None


def run_once(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    record = tmp_path / "once.txt"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--once", "--record", str(record), *args],
        capture_output=True, text=True, timeout=30, env=clean_env(), check=False,
    )  # fmt: skip
    return result, record.read_text().split("\n")[:-1]


def test_once_runs_one_pass_and_exits_0(tmp_path):
    result, record = run_once(tmp_path, "--interval", "0.1", "--pass-seconds", "0.3")
    assert result.returncode == 0, result.stderr
    assert [line.split()[:2] for line in record] == [["start", "1"], ["end", "1"]]
    assert 'msg="pass done" pass_number=1' in result.stderr


@pytest.mark.parametrize("how", ["--fail-passes", "--not-ok-passes"])
def test_once_exits_1_when_the_pass_failed(tmp_path, how):
    result, record = run_once(tmp_path, how, "1")
    assert result.returncode == 1, result.stderr
    assert len(record) == 2
    failed = [line for line in result.stderr.splitlines() if 'msg="pass failed"' in line]
    assert len(failed) == 1 and "Traceback" not in result.stderr


def test_at_debug_the_traceback_rides_on_the_same_single_line(tmp_path):
    result, _ = run_once(tmp_path, "--fail-passes", "1", "--log-level", "debug")
    assert result.returncode == 1
    failed = [line for line in result.stderr.splitlines() if 'msg="pass failed"' in line]
    assert len(failed) == 1 and 'exc="Traceback (most recent call last):' in failed[0]
    assert "periodic_daemon.py" in failed[0]


class NotifySocket:
    """A datagram socket standing in for systemd's notify socket; collects what arrives."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        while not self._done.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def close(self) -> None:
        self._done.set()
        self._thread.join()
        self.sock.close()

    def with_line(self, line: str) -> list[float]:
        return [when for when, message in self.messages if line in message.split("\n")]


@pytest.fixture
def notify_socket(tmp_path: Path):
    listener = NotifySocket(tmp_path / "notify.sock")
    yield listener
    listener.close()


def test_systemd_hears_ready_each_summary_watchdog_pings_and_stopping(start_daemon, notify_socket):
    env = clean_env(NOTIFY_SOCKET=str(notify_socket.path), WATCHDOG_USEC="300000")
    d = start_daemon("--interval", "0.3", env=env)
    d.wait_for("start", 4)
    d.signal(signal.SIGTERM)
    assert d.wait()[0] == 0, d.log()
    wait_until(lambda: notify_socket.with_line("STOPPING=1"), 5, "STOPPING=1 heard")
    messages = [message for _, message in notify_socket.messages]
    first_status = "STATUS=started; first pass now, then every 0.3 s"
    assert messages[0].split("\n") == ["READY=1", first_status]
    statuses = [m for m in messages if m.startswith("STATUS=pass")]
    assert statuses[:3] == ["STATUS=pass 1 ok", "STATUS=pass 2 ok", "STATUS=pass 3 ok"]
    pings = notify_socket.with_line("WATCHDOG=1")
    # Half of WATCHDOG_USEC: every 0.15 s while it ran (over a second).
    assert len(pings) >= 5, messages
    assert max(b - a for a, b in itertools.pairwise(pings)) < 0.15 + SLACK
    (stopping,) = notify_socket.with_line("STOPPING=1")
    assert all(ping < stopping for ping in pings), "pinged after STOPPING=1"
    assert not any(m.startswith("READY=1") for m in messages[1:])


def test_a_wedged_scheduler_stops_the_watchdog_pings(start_daemon, notify_socket):
    env = clean_env(NOTIFY_SOCKET=str(notify_socket.path), WATCHDOG_USEC="200000")
    d = start_daemon("--interval", "0.2", "--wedge-after", "2", env=env)
    wedged = d.wait_for("end", 2)
    time.sleep(1.0)
    assert d.seen("start", 3) is None
    pings = notify_socket.with_line("WATCHDOG=1")
    assert len([p for p in pings if p < wedged]) >= 1
    assert [p for p in pings if p > wedged + 0.5] == [], "pings went on with the scheduler paused"


def test_watchdog_variables_meant_for_another_process_send_no_pings(start_daemon, notify_socket):
    env = clean_env(NOTIFY_SOCKET=str(notify_socket.path), WATCHDOG_USEC="200000",
                    WATCHDOG_PID="1")  # fmt: skip
    d = start_daemon("--interval", "0.2", env=env)
    d.wait_for("start", 4)
    d.signal(signal.SIGTERM)
    assert d.wait()[0] == 0
    wait_until(lambda: notify_socket.with_line("STOPPING=1"), 5, "STOPPING=1 heard")
    assert notify_socket.with_line("READY=1")
    assert notify_socket.with_line("WATCHDOG=1") == []
