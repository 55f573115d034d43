"""The periodic runner under a real systemd (PID 1 in a container): a Type=notify unit with
WatchdogSec= running realparts/periodic_daemon.py with the installed suite's python."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from realparts.waiting import wait_until

pytestmark = pytest.mark.realsystemd

DAEMON = Path(__file__).parents[2] / "realparts" / "periodic_daemon.py"
PYTHON = "/opt/hub-sidecars/bin/python"
UNIT = """\
[Unit]
Description=periodic runner test daemon {name}

[Service]
Type=notify
ExecStart={python} /opt/daemon-test/periodic_daemon.py --record /run/{name}.record {args}
WatchdogSec={watchdog}
TimeoutStopSec=30
"""


@pytest.fixture(scope="module")
def container(systemd_container):
    """The suite installed as scripts/install does it, the test daemon beside it, and PID 1
    logging at debug so that the journal shows each notification systemd receives."""
    c = systemd_container
    c.write_file("/opt/daemon-test/periodic_daemon.py", DAEMON.read_text())
    c.run("systemd-analyze", "log-level", "debug")
    return c


@pytest.fixture
def daemon_unit(container):
    """Factory: install NAME.service running the test daemon with ARGS; stopped at teardown."""
    names: list[str] = []

    def install(name: str, args: str, watchdog: str = "10s") -> str:
        unit = f"{name}.service"
        text = UNIT.format(name=name, python=PYTHON, args=args, watchdog=watchdog)
        container.write_file(f"/etc/systemd/system/{unit}", text)
        container.run("systemctl", "daemon-reload")
        names.append(unit)
        return unit

    yield install
    for unit in names:
        container.run("systemctl", "stop", unit, check=False)
        container.run("systemctl", "reset-failed", unit, check=False)


def show(c, unit: str) -> dict[str, str]:
    props = "ActiveState,SubState,StatusText,Result,NRestarts"
    out = c.run("systemctl", "show", unit, "-p", props).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_the_unit_is_active_only_after_ready_then_shows_each_pass_summary(container, daemon_unit):
    c = container
    unit = daemon_unit("ready-test", "--startup-delay 4 --interval 0.5")
    started = time.monotonic()
    c.run("systemctl", "start", "--no-block", unit)
    states = []
    while (state := show(c, unit))["ActiveState"] != "active":
        # (inactive until systemd takes the queued start job: --no-block returns before)
        if not (state["ActiveState"] == "inactive" and not states):
            assert state["ActiveState"] == "activating", (state, c.journal(unit))
            states.append(state["SubState"])
        assert time.monotonic() - started < 20, c.journal(unit)
        time.sleep(0.1)
    # The daemon sleeps 4 s before its runner starts; systemd waited for READY=1 meanwhile.
    assert time.monotonic() - started >= 3.9
    assert states and set(states) == {"start"}
    assert show(c, unit)["SubState"] == "running"
    status = wait_until(
        lambda: (text := show(c, unit)["StatusText"]).startswith("pass ") and text,
        10, "a pass summary as StatusText",
    )  # fmt: skip
    assert status.endswith(" ok"), status
    journal = c.journal_with(unit, 'msg="pass done" pass_number=1', "(STATUS=pass 1 ok)")
    # PID 1 at debug level logs each notification it accepts from the main process.
    ready = journal.index("(READY=1, STATUS=started; first pass now, then every 0.5 s)")
    assert ready < journal.index("(STATUS=pass 1 ok)"), journal


def test_systemctl_stop_during_a_pass_ends_the_daemon_cleanly(container, daemon_unit):
    c = container
    unit = daemon_unit("stop-test", "--interval 0.5 --pass-seconds 1.5")
    c.run("systemctl", "start", unit)
    c.run("sh", "-c", "until grep -q '^start 2 ' /run/stop-test.record; do sleep 0.1; done",
          timeout=20)  # fmt: skip
    asked = time.monotonic()
    c.run("systemctl", "stop", unit)
    took = time.monotonic() - asked
    state = show(c, unit)
    journal = c.journal_with(unit, "Main process exited", "msg=stopping signal=SIGTERM",
                             "(STOPPING=1, STATUS=stopping; pass running)")  # fmt: skip
    assert took < 12, f"systemctl stop took {took:.1f} s"  # TimeoutStopSec=20 would kill
    assert (state["ActiveState"], state["Result"]) == ("inactive", "success"), state
    # systemd forgets ExecMainStatus once the unit is gone; its own journal lines stay.
    assert "Main process exited, code=exited, status=0/SUCCESS" in journal, journal
    assert "msg=stopping signal=SIGTERM pass_running=True" in journal, journal
    assert "(STOPPING=1, STATUS=stopping; pass running)" in journal, journal
    record = c.run("cat", "/run/stop-test.record").stdout.split("\n")
    assert record[-2].startswith("end 2 "), "the running pass was not allowed to finish"


def test_the_watchdog_kills_a_daemon_whose_scheduler_is_wedged(container, daemon_unit):
    c = container
    healthy = daemon_unit("healthy-test", "--interval 0.5", watchdog="2s")
    wedged = daemon_unit("wedged-test", "--interval 0.5 --wedge-after 2", watchdog="2s")
    c.run("systemctl", "start", healthy, wedged)
    wait_until(lambda: show(c, wedged)["Result"] == "watchdog", 15, "the watchdog to fire")
    c.journal_with(wedged, "Watchdog timeout")
    record = c.run("cat", "/run/wedged-test.record").stdout
    assert "end 2 " in record and "start 3 " not in record
    # The healthy one, pinging from its live scheduler, outlived the same 2 s watchdog.
    time.sleep(2.5)
    state = show(c, healthy)
    assert (state["ActiveState"], state["Result"], state["NRestarts"]) == ("active", "success", "0")
    assert "WATCHDOG=1" in c.journal(healthy)


def test_journalctl_p_err_finds_a_failed_pass_and_only_that(container, daemon_unit):
    c = container
    # The failing pass is the 6th, 2.5 s into the service's life: under load journald filed
    # the lines of a service's first second without the unit (`-u` found no pass 2 at all,
    # at any priority), a race of journald's, not of what the daemon writes.
    unit = daemon_unit("priority-test", "--interval 0.5 --fail-passes 6")
    c.run("systemctl", "start", unit)
    wait_until(lambda: 'msg="pass done" pass_number=7' in c.journal(unit), 30, "seven passes")

    def errors_now() -> str:
        return c.journal(unit, "-p", "err")

    try:
        wait_until(lambda: "pass_number=6" in errors_now(), 20, "the failed pass at priority err")
    except AssertionError:
        entries = c.run("journalctl", "--no-pager", "-o", "verbose", "-u", unit).stdout
        pass_six = [entry for entry in entries.split("\n    _SOURCE_REALTIME")
                    if re.search(r"pass_number=6\b|PRIORITY=[0-3]\b", entry)]  # fmt: skip
        raise AssertionError("pass 6's lines as the journal filed them:\n"
                             + "\n---\n".join(pass_six)[:6000]) from None  # fmt: skip
    errors = errors_now()
    verbose = c.run("journalctl", "--no-pager", "-o", "verbose", "-u", unit).stdout
    assert "pass_number=6" in errors and "level=error" in errors, verbose[-3000:]
    assert "pass_number=5 " not in errors and "pass_number=7 " not in errors, errors
    assert not any(line.startswith("<") for line in c.journal(unit).splitlines())
    verbose = c.run("journalctl", "--no-pager", "-o", "verbose", "-u", unit).stdout
    assert "PRIORITY=3" in verbose and "PRIORITY=6" in verbose
