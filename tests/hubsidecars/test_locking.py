"""FileLock on its own: threads of one process and separate processes exclude each other."""

from __future__ import annotations

import subprocess
import threading
import time

import pytest

from hubsidecars.locking import FileLock, LockTimeout
from tests.realparts.locks import can_lock_from_another_process

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
    holder = subprocess.Popen(["flock", "--exclusive", str(path), "sleep", "2"])
    try:
        deadline = time.monotonic() + 10
        while can_lock_from_another_process(path):  # wait until flock(1) holds it
            assert time.monotonic() < deadline, "flock(1) never took the lock"
            time.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(LockTimeout), lock.held():
            pass
        assert 0.9 <= time.monotonic() - started < 1.9
    finally:
        holder.wait(timeout=10)
    # The waiter that gave up got the lock once flock(1) let go, and released it at once.
    deadline = time.monotonic() + 5
    while not can_lock_from_another_process(path):
        assert time.monotonic() < deadline, "the abandoned waiter kept the lock"
        time.sleep(0.05)
    with lock.held():
        assert not can_lock_from_another_process(path)
    assert can_lock_from_another_process(path)
