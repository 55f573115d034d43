"""FileLock on its own: threads of one process and separate processes exclude each other; and
the process lock that keeps a daemon to one instance per resource."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from hubsidecars.errors import EXIT_BUSY
from hubsidecars.locking import FileLock, HeldElsewhere, LockTimeout, hold_process_lock
from realparts.locks import can_lock_from_another_process
from realparts.restuser import REPO

THREADS = 16
ROUNDS = 200


def test_sixteen_threads_on_one_lock_exclude_each_other_and_leave_it_free(tmp_path):
    lock = FileLock(tmp_path / "accounts.lock", timeout=30)
    inside = []  # threads in the critical section right now
    entered = 0
    errors = []
    start = threading.Barrier(THREADS)

    def work():
        nonlocal entered
        start.wait()
        for _ in range(ROUNDS):
            try:
                with lock.held():
                    inside.append(threading.get_ident())
                    if len(inside) != 1:
                        errors.append(f"{len(inside)} threads inside at once")
                    entered += 1  # not atomic across threads: only safe under the lock
                    time.sleep(0)  # give another thread the chance to barge in
                    inside.pop()
            except Exception as error:  # noqa: BLE001 - reported below
                errors.append(repr(error))

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a thread never got the lock"
    assert errors == []
    assert entered == THREADS * ROUNDS
    assert can_lock_from_another_process(tmp_path / "accounts.lock")


def test_held_by_another_process_times_out_then_is_free_again(tmp_path):
    path = tmp_path / "accounts.lock"
    lock = FileLock(path, timeout=1)
    holder = subprocess.Popen(["flock", "--exclusive", str(path), "sleep", "60"],
                              start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while can_lock_from_another_process(path):  # wait until flock(1) holds it
            assert time.monotonic() < deadline, "flock(1) never took the lock"
            time.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(LockTimeout), lock.held():
            pass
        assert 0.9 <= time.monotonic() - started < 5
    finally:
        os.killpg(holder.pid, signal.SIGTERM)  # flock(1) and its sleep, which shares the lock
        holder.wait(timeout=10)
    # The waiter that gave up got the lock once flock(1) let go, and released it at once.
    deadline = time.monotonic() + 5
    while not can_lock_from_another_process(path):
        assert time.monotonic() < deadline, "the abandoned waiter kept the lock"
        time.sleep(0.05)
    with lock.held():
        assert not can_lock_from_another_process(path)
    assert can_lock_from_another_process(path)


HOLD_IN_CHILD = """
import sys
from hubsidecars.locking import hold_process_lock
hold_process_lock(sys.argv[1], record_pid=sys.argv[2] == "pid")
print("held", flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("record_pid", [True, False])
def test_a_process_lock_is_held_for_the_life_of_its_process(tmp_path, record_pid):
    """One instance per resource (the culler's state, the collector's database): a second
    process is refused, told the holder's pid when the file is a pid file, and gets the lock
    once the first process is gone; a lock that is not a pid file never writes the file."""
    path = tmp_path / "instance.lock"
    path.write_bytes(b"" if record_pid else b"the resource itself\n")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_IN_CHILD, str(path),
                               "pid" if record_pid else "no"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=REPO)  # fmt: skip
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(HeldElsewhere) as refused:
            hold_process_lock(str(path), record_pid=record_pid)
        assert refused.value.holder == (str(holder.pid) if record_pid else "")
        assert refused.value.exit_code == EXIT_BUSY  # uncaught, it still exits 75
    finally:
        holder.communicate("", timeout=30)
    fd = hold_process_lock(str(path), record_pid=record_pid)
    try:
        assert not can_lock_from_another_process(path)
        expected = f"{os.getpid()}\n" if record_pid else "the resource itself\n"
        assert path.read_text() == expected
    finally:
        os.close(fd)
    assert can_lock_from_another_process(path)


def test_a_pid_file_lock_refuses_a_symlink_in_its_place(tmp_path):
    """It writes into the file: a link planted there must not make it truncate another."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (tmp_path / "instance.lock").symlink_to(victim)
    with pytest.raises(OSError):
        hold_process_lock(str(tmp_path / "instance.lock"), record_pid=True)
    assert victim.read_text() == "precious\n"
