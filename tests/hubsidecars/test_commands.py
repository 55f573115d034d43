"""The command runner against real child processes: what they see, what we log, how they end."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hubsidecars.commands import (
    CommandFailed,
    CommandNotStarted,
    CommandTimeout,
    Tool,
    run_command,
)
from realparts.process import as_if_from_a_terminal

SH = Tool("sh", {3: "bad argument", 9: "name already in use"})
PY = Tool("python")
SECRET = "hunter2-" + os.urandom(4).hex()
LOGGER = "tests.commands"


def run(argv, **kwargs):
    kwargs.setdefault("tool", SH)
    kwargs.setdefault("timeout", 20)
    kwargs.setdefault("logger", logging.getLogger(LOGGER))
    return run_command(argv, **kwargs)


def sh(script: str, *args: str, **kwargs):
    return run(["sh", "-c", script, "sh", *args], **kwargs)


def logged_text(caplog) -> str:
    """Everything our log records carry: messages and structured fields."""
    return "\n".join(f"{r.getMessage()} {getattr(r, 'hub_fields', {})}" for r in caplog.records)


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    return caplog


def _gone(pid: int) -> bool:
    """True when `pid` no longer runs (absent, or a zombie waiting for its parent)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _wait_gone(pid: int, seconds: float = 3.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.02)
    return _gone(pid)


# --- what the child sees -------------------------------------------------------------------


def test_stdin_is_dev_null_and_reads_end_at_once():
    result = sh('readlink /proc/self/fd/0; cat; echo "read done"', timeout=5)
    assert result.stdout.splitlines() == ["/dev/null", "read done"]


def test_child_gets_a_minimal_c_locale_environment_plus_what_the_caller_adds(monkeypatch):
    monkeypatch.setenv("HUB_COMMANDS_LEAK", "ours")
    monkeypatch.setenv("LANG", "de_DE.UTF-8")
    result = run(["env"], env={"GNUPGHOME": "/tmp/gnupg"})
    seen = dict(line.split("=", 1) for line in result.stdout.splitlines())
    assert seen == {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C",
                    "GNUPGHOME": "/tmp/gnupg"}  # fmt: skip


def test_child_runs_in_its_own_session():
    ids = "import os; print(os.getsid(0), os.getpgid(0), os.getpid())"
    result = run([sys.executable, "-c", ids], tool=PY)
    sid, pgid, pid = map(int, result.stdout.split())
    assert sid == pgid == pid and sid != os.getsid(0)


def test_output_that_is_not_utf8_is_replaced_not_fatal():
    result = run([sys.executable, "-c", "import sys; sys.stdout.buffer.write(b'a\\xffb')"], tool=PY)
    assert result.stdout == "a\ufffdb"


def test_pass_fds_reach_the_child_and_nothing_else_does(tmp_path):
    write_fd = "import os, sys; os.write(int(sys.argv[1]), b'to the log fd')"
    with open(tmp_path / "log", "wb") as passed, open(tmp_path / "other", "wb") as kept_back:
        run([sys.executable, "-c", write_fd, str(passed.fileno())], tool=PY,
            pass_fds=[passed.fileno()])  # fmt: skip
        with pytest.raises(CommandFailed, match="Bad file descriptor"):
            run([sys.executable, "-c", write_fd, str(kept_back.fileno())], tool=PY)
    assert (tmp_path / "log").read_bytes() == b"to the log fd"
    assert (tmp_path / "other").read_bytes() == b""


# --- errors ----------------------------------------------------------------------------------


def test_failure_names_the_exit_code_meaning_and_the_stderr_tail():
    with pytest.raises(CommandFailed) as caught:
        sh('echo "sh: noise" >&2; echo "sh: the real reason" >&2; exit 9')
    error = caught.value
    assert str(error) == "sh exited 9 (name already in use): sh: noise | sh: the real reason"
    assert (error.exit_code, error.meaning) == (9, "name already in use")
    assert error.stderr == "sh: noise\nsh: the real reason\n"


def test_unknown_exit_code_and_death_by_signal_are_named():
    with pytest.raises(CommandFailed, match=r"^sh exited 5 \(unknown exit code\)$"):
        sh("exit 5")
    with pytest.raises(CommandFailed, match=r"^sh was killed by SIGTERM$") as caught:
        sh("kill -TERM $$")
    assert caught.value.exit_code == -signal.SIGTERM


def test_ok_codes_are_returned_not_raised(logs):
    result = sh("echo partial >&2; exit 3", ok_codes=(0, 3))
    assert (result.exit_code, result.meaning, result.stderr) == (3, "bad argument", "partial\n")
    (record,) = logs.records
    assert record.levelno == logging.DEBUG and record.hub_fields["meaning"] == "bad argument"


def test_stderr_tail_is_bounded_to_the_last_lines():
    script = 'for i in $(seq 1 200); do printf "line %03d %0400d\\n" $i 0 >&2; done; exit 3'
    with pytest.raises(CommandFailed) as caught:
        sh(script)
    tail = caught.value.stderr_tail
    assert len(tail) <= 1000 and tail.endswith("line 200 " + "0" * 400)
    assert "line 195" not in tail and "line 001" not in tail
    assert len(str(caught.value)) < 1100 and "\n" not in str(caught.value)


def test_a_missing_program_is_reported_as_not_started(logs):
    with pytest.raises(CommandNotStarted, match="could not be started"):
        run(["/nonexistent/tool", "--flag"])
    assert [r.levelno for r in logs.records] == [logging.WARNING]


def test_timeout_kills_the_whole_process_group(tmp_path):
    pids = tmp_path / "pids"
    script = 'sleep 30 & echo $$ $! > "$1"; echo "started" >&2; wait'
    started = time.monotonic()
    with pytest.raises(CommandTimeout, match=r"^sh did not finish within 0.5 s and was killed: "
                                             r"started$"):  # fmt: skip
        sh(script, str(pids), timeout=0.5)
    assert time.monotonic() - started < 10, "waited for the grandchild's sleep"
    shell, grandchild = map(int, pids.read_text().split())
    assert _wait_gone(shell) and _wait_gone(grandchild)


# --- logging and secrets ---------------------------------------------------------------------


def test_one_debug_line_per_command_with_exit_code_and_duration(logs):
    sh('echo "$1" | tr a-z A-Z; sleep 0.05', "stdout is private")
    (record,) = logs.records
    fields = record.hub_fields
    assert record.levelno == logging.DEBUG and record.getMessage() == "command finished"
    assert fields["tool"] == "sh" and fields["exit_code"] == 0 and fields["duration_ms"] >= 50
    assert fields["argv"].startswith("sh -c ")
    assert "STDOUT IS PRIVATE" not in logged_text(logs)


def test_a_failing_command_logs_one_warning(logs):
    with pytest.raises(CommandFailed):
        sh("echo why >&2; exit 3")
    (record,) = logs.records
    assert record.levelno == logging.WARNING
    assert (record.hub_fields["exit_code"], record.hub_fields["meaning"]) == (3, "bad argument")
    assert record.hub_fields["stderr_tail"] == "why"


def test_secrets_are_masked_in_argv_in_option_values_and_in_what_the_tool_echoes(logs):
    script = 'echo "bad passphrase $1 $2" >&2; exit 3'
    with pytest.raises(CommandFailed) as caught:
        sh(script, SECRET, f"--passphrase={SECRET}", secrets=[SECRET])
    error = caught.value
    assert SECRET not in str(error) and SECRET not in error.stderr
    assert SECRET not in " ".join(error.argv) and SECRET not in logged_text(logs)
    assert "--passphrase=***" in error.argv and error.stderr_tail == (
        "bad passphrase *** --passphrase=***"
    )
    assert "--passphrase=***" in logs.records[0].hub_fields["argv"]


def test_a_secret_in_the_environment_reaches_the_child_but_never_the_logs(logs):
    result = sh('printf %s "$PASSPHRASE"; echo "using $PASSPHRASE" >&2',
                env={"PASSPHRASE": SECRET}, secrets=[SECRET])  # fmt: skip
    assert result.stdout == SECRET  # the caller gets the child's own output
    assert logs.records and SECRET not in logged_text(logs)
    assert logs.records[0].hub_fields["stderr_tail"] == "using ***"
    with pytest.raises(CommandFailed) as caught:
        sh('echo "gpg: bad passphrase $PASSPHRASE" >&2; exit 3',
           env={"PASSPHRASE": SECRET}, secrets=[SECRET])  # fmt: skip
    assert SECRET not in str(caught.value) and SECRET not in logged_text(logs)


# --- interruption: a Ctrl-C in the admin's terminal -----------------------------------------

# The driver plays a service run in a terminal: it is the foreground process group, and a
# Ctrl-C sends SIGINT to that whole group. Its command writes a pid file, sleeps, then marks
# its work done.
DRIVER = textwrap.dedent("""\
    import sys, threading, time
    from pathlib import Path
    from hubsidecars import commands

    work, where, sleep = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    commands.INTERRUPT_GRACE = float(sys.argv[4])
    script = 'echo $$ > "$1/child.pid"; sleep "$2"; echo done > "$1/child.done"'
    finished = threading.Event()

    def command():
        try:
            result = commands.run_command(["sh", "-c", script, "sh", str(work), sleep],
                                          tool=commands.Tool("sh"), timeout=60)
            print("command exited", result.exit_code, flush=True)
        finally:
            finished.set()

    if where == "thread":  # as in a gthread worker: requests run outside the main thread
        threading.Thread(target=command).start()
        while not finished.is_set():
            try:
                time.sleep(0.02)  # (an interrupted Thread.join would not be safe to retry)
            except KeyboardInterrupt:
                print("driver interrupted", flush=True)
    else:
        try:
            command()
        except KeyboardInterrupt:
            print("driver interrupted", flush=True)
""")


def _interrupt_driver(tmp_path: Path, where: str, sleep: float, grace: float) -> tuple[str, bool]:
    """Start the driver, Ctrl-C its group once the command runs; (its output, whether the
    command's work was done by the time the driver exited)."""
    driver_py = tmp_path / "driver.py"
    driver_py.write_text(DRIVER)
    driver = subprocess.Popen(
        [sys.executable, str(driver_py), str(tmp_path), where, str(sleep), str(grace)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        cwd=Path(__file__).resolve().parents[2], preexec_fn=as_if_from_a_terminal,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not (tmp_path / "child.pid").exists() or not (tmp_path / "child.pid").read_text():
            assert time.monotonic() < deadline and driver.poll() is None, driver.stdout.read()
            time.sleep(0.02)
        os.killpg(driver.pid, signal.SIGINT)
        output, _ = driver.communicate(timeout=30)
        return output, (tmp_path / "child.done").exists()
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()


def test_ctrl_c_in_the_terminal_does_not_reach_a_running_command(tmp_path):
    output, done = _interrupt_driver(tmp_path, "thread", sleep=2, grace=10)
    assert "driver interrupted" in output, output  # the SIGINT did reach the driver's group
    assert done and "command exited 0" in output, output


def test_an_interrupted_caller_lets_the_command_finish_before_it_exits(tmp_path):
    output, done = _interrupt_driver(tmp_path, "main", sleep=2, grace=10)
    assert "driver interrupted" in output and "command exited" not in output, output
    assert done, "the driver exited while its command was still running"


def test_an_interrupted_caller_kills_a_command_that_outlives_the_grace(tmp_path):
    output, done = _interrupt_driver(tmp_path, "main", sleep=30, grace=0.3)
    assert "driver interrupted" in output and not done, output
    assert _wait_gone(int((tmp_path / "child.pid").read_text()))
