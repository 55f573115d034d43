"""Two cullers on the same state files: the second refuses to start, one line, exit 75 (busy,
as docs/exit-codes.md has it: not the exit 2 of a bad configuration); a dry
run may run beside; the lock goes with its process, kill -9 included. (No hub is needed: the
daemons' passes fail against a port nobody listens on, and they keep running.)"""

from __future__ import annotations

import signal
import subprocess
import time

from realparts.culler import CULLER, culler_env
from realparts.process import ManagedProcess

NOWHERE = "http://127.0.0.1:9/hub/api"
TOKEN = "a-token-of-enough-length-0123456789"


def argv(state, *extra: str) -> list[str]:
    return [str(CULLER), "--url", NOWHERE, "--cull-every", "60", "--request-timeout", "1",
            "--status-file", str(state / "status.json"),
            "--probe-state-file", str(state / "probe-marks.json"), *extra]  # fmt: skip


def start_daemon(state, log) -> ManagedProcess:
    daemon = ManagedProcess(argv(state), log, env=culler_env(TOKEN))
    daemon.start(lambda: "msg=started" in log.read_text(), 30, "hub-culler")
    return daemon


def second(state, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv(state, "--once", *extra), env=culler_env(TOKEN),
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_a_second_culler_on_the_same_state_refuses_to_start(tmp_path):
    state = tmp_path / "state"
    first = start_daemon(state, tmp_path / "first.log")
    try:
        refused = second(state)
        assert refused.returncode == 75, refused.stderr
        [line] = refused.stderr.splitlines()
        assert line.startswith(f"hub-culler: busy: another hub-culler (pid {first.process.pid})")
        assert str(state) in line

        # a dry run changes nothing, its state included: it may run beside the daemon
        beside = second(state, "--dry-run")
        assert beside.returncode == 1  # its pass failed (no hub), but it ran
        assert 'msg="pass failed"' in beside.stderr
    finally:
        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
        first.stop()

    # killed with -9: the lock went with it, a new culler starts
    assert second(state).returncode == 1  # ran its pass (failed: no hub)


def test_other_state_files_are_another_culler(tmp_path):
    first = start_daemon(tmp_path / "a", tmp_path / "first.log")
    try:
        assert second(tmp_path / "b").returncode == 1  # ran (its pass failed: no hub)
    finally:
        first.stop()


def test_an_unusable_state_directory_is_one_line_at_start(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    started = time.monotonic()
    done = second(blocker / "state")
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert "cannot use the state directory" in line and "--status-file" in line
    assert time.monotonic() - started < 30
