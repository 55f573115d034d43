"""Many gunicorn workers, many clients, the same names at once: one account each, no errors."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from realparts.accountdb import accounts
from realparts.locks import can_lock_from_another_process
from realparts.restuser import SKEL, UID_MAX, UID_MIN

NAMES = [f"student{index:02d}" for index in range(50)]


def test_100_parallel_posts_for_50_names(start_restuser, prefix_root):
    # correctness, not latency: 50 creations queue on one lock, slowly on a loaded machine
    service = start_restuser(extra_args=["--workers", "4", "--lock-timeout", "120"])
    requests = NAMES * 2
    barrier = threading.Barrier(len(requests))

    def post(name):
        barrier.wait()
        return name, service.endpoint.request("POST", f"/users/{name}")

    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        replies = list(pool.map(post, requests))

    statuses = [reply.status for _, reply in replies]
    assert sorted(set(statuses)) == [200, 201], statuses
    assert statuses.count(201) == 50 and statuses.count(200) == 50
    uid_by_name = {}
    for name, reply in replies:
        uid_by_name.setdefault(name, set()).add(reply.json()["uid"])
    assert all(len(uids) == 1 for uids in uid_by_name.values())  # both replies agree

    created = accounts(prefix_root, UID_MIN, UID_MAX)
    assert sorted(created) == sorted(NAMES)
    assert len({uid for uid, _, _ in created.values()}) == 50
    skel_entries = [path.relative_to(SKEL) for path in SKEL.rglob("*")]
    for name, (uid, gid, home) in created.items():
        assert {uid} == uid_by_name[name]
        for entry in skel_entries:
            landed = (prefix_root / home.lstrip("/") / entry).lstat()
            assert (landed.st_uid, landed.st_gid) == (uid, gid), (name, entry)
    log = service.log()
    assert log.count("outcome=created") == 50 and "level=error" not in log


def test_sixteen_threads_share_one_store(make_store, prefix_root):
    """Threads of one worker share its store (gthread, the asyncio worker's thread pool):
    distinct and duplicate names at once, every call answers, every account is complete."""
    store = make_store()
    names = [f"pupil{index:02d}" for index in range(24)]
    calls = names * 2  # each name twice: one creates it, the other finds it
    barrier = threading.Barrier(16)  # 48 calls: three waves of 16 started together

    def ensure(name):
        barrier.wait(timeout=30)
        return name, store.ensure(name)

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(ensure, calls))

    created_flags = {}
    for name, (_account, created) in results:
        created_flags.setdefault(name, []).append(created)
    assert all(sorted(flags) == [False, True] for flags in created_flags.values()), created_flags
    created = accounts(prefix_root, UID_MIN, UID_MAX)
    assert sorted(created) == sorted(names)
    skel_entries = [path.relative_to(SKEL) for path in SKEL.rglob("*")]
    for name, (uid, gid, home) in created.items():
        assert store.lookup(name).uid == uid  # complete: no marker left
        for entry in skel_entries:
            landed = (prefix_root / home.lstrip("/") / entry).lstat()
            assert (landed.st_uid, landed.st_gid) == (uid, gid), (name, entry)
    assert not list(store.pending_dir.iterdir())
    assert can_lock_from_another_process(store.lock.path)
