"""AccountStore against real useradd/userdel in a --prefix root."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import threading
from pathlib import Path

import falcon.testing
import pytest

from realparts.accountdb import snapshot
from realparts.restuser import SKEL, UID_MIN
from realparts.tmpfs import fill, tmpfs_prefix_root
from restuser.accounts import AccountBusy, AccountError, AccountIncomplete
from restuser.app import create_app
from restuser.cli import build_store
from restuser.home import HomeBuilder
from restuser.names import BadName, RefusedName
from tests.restuser.conftest import store_settings

SKEL_FILES = sorted(str(path.relative_to(SKEL)) for path in SKEL.rglob("*"))


def test_skeleton_has_the_promised_files():
    assert {".profile", "Welcome.ipynb", ".jupyter", ".jupyter/jupyter_server_config.json"} <= set(
        SKEL_FILES
    )


def test_welcome_notebook_is_valid_nbformat_4():
    import nbformat

    notebook = nbformat.read(SKEL / "Welcome.ipynb", as_version=4)
    nbformat.validate(notebook)
    text = " ".join(cell.source for cell in notebook.cells)
    assert "home directory" in text and "stopped automatically" in text


def test_create_gives_a_complete_private_home(store, prefix_root):
    account, created = store.ensure("alice")
    assert created
    assert account.uid >= UID_MIN and account.home == "/home/alice" and account.shell == "/bin/bash"
    home = prefix_root / "home" / "alice"
    info = home.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (
        account.uid,
        account.gid,
        0o700,
    )
    for relative in SKEL_FILES:
        landed = (home / relative).lstat()
        assert (landed.st_uid, landed.st_gid) == (account.uid, account.gid), relative
    assert (home / "Welcome.ipynb").read_bytes() == (SKEL / "Welcome.ipynb").read_bytes()
    # Written to the prefix only: the host's account database does not know alice.
    assert "alice:" not in Path("/etc/passwd").read_text()


def test_recreate_returns_the_same_account_untouched(store, prefix_root):
    first, _ = store.ensure("alice")
    (prefix_root / "home/alice/Welcome.ipynb").write_text("my own notes")
    before = snapshot(prefix_root)
    again, created = store.ensure("alice")
    assert not created and again == first
    assert snapshot(prefix_root) == before
    assert (prefix_root / "home/alice/Welcome.ipynb").read_text() == "my own notes"


def test_lookup(store):
    assert store.lookup("nobody-here") is None
    created, _ = store.ensure("bob")
    assert store.lookup("bob") == created


def test_system_and_reserved_names_are_refused(store, prefix_root):
    before = snapshot(prefix_root)
    with pytest.raises(RefusedName):
        store.ensure("root")
    with pytest.raises(BadName):
        store.ensure("-alice")
    assert snapshot(prefix_root) == before


def test_existing_low_uid_account_is_refused_even_if_not_denied(make_store, prefix_root):
    store = make_store(deny_names=[])
    with pytest.raises(RefusedName, match="system account"):
        store.ensure("daemon")


def test_uids_come_from_the_configured_range(make_store, caplog):
    store = make_store(uid_min=31000, uid_max=31001)
    assert store.ensure("aa")[0].uid == 31000
    assert store.ensure("bb")[0].uid == 31001
    with pytest.raises(AccountError, match="service log"):
        store.ensure("cc")
    assert "uid" in _outcome_line(caplog, "failed")["reason"]


def test_supplementary_groups(make_store, prefix_root):
    store = make_store(groups=["users"])
    store.ensure("alice")
    users_line = next(line for line in (prefix_root / "etc/group").read_text().splitlines()
                      if line.startswith("users:"))  # fmt: skip
    assert "alice" in users_line.split(":")[3].split(",")


def store_whose_group_was_deleted(make_store, prefix_root, group: str):
    """A store configured with a supplementary group that an admin deleted after start (a
    group missing at start is refused by validate: see test_cli)."""
    subprocess.run(["groupadd", "--prefix", str(prefix_root), group], check=True)
    store = make_store(groups=[group])
    subprocess.run(["groupdel", "--prefix", str(prefix_root), group], check=True)
    return store


def test_missing_supplementary_group_is_a_clean_failure(make_store, prefix_root, caplog):
    store = store_whose_group_was_deleted(make_store, prefix_root, "no-such-group")
    before = snapshot(prefix_root)
    with pytest.raises(AccountError, match="service log"):
        store.ensure("alice")
    assert snapshot(prefix_root) == before
    assert "no-such-group" in _outcome_line(caplog, "failed")["reason"]


def test_failed_home_population_rolls_the_account_back(store, prefix_root, monkeypatch):
    before = {name: data for name, data in snapshot(prefix_root).items() if not name.endswith("-")}

    def disk_full(self, home, uid, gid):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(HomeBuilder, "populate", disk_full)
    with pytest.raises(AccountError, match="No space left"):
        store.ensure("alice")
    after = {name: data for name, data in snapshot(prefix_root).items() if not name.endswith("-")}
    assert after == before
    assert not (prefix_root / "home/alice").exists()
    assert not list(store.pending_dir.iterdir())


def test_a_full_disk_never_gives_a_truncated_skeleton_file(tmp_path):
    """useradd exits 0 after a short copy on a full disk; each account is either complete,
    byte for byte, or not there at all (500, rolled back)."""
    skel = tmp_path / "skel"
    (skel / ".config").mkdir(parents=True)
    (skel / "big.bin").write_bytes(os.urandom(700 * 1024))
    (skel / ".config" / "small.txt").write_text("small\n")
    created, failed = [], []
    with tmpfs_prefix_root(tmp_path / "small") as root:
        store = build_store(
            store_settings(root, skel=str(skel), state_dir=str(tmp_path / "state"))
        )
        for number in range(6):
            name = f"full{number}"
            try:
                store.ensure(name)
            except AccountError as error:
                failed.append((name, str(error)))
                continue
            created.append(name)
            for relative in ("big.bin", ".config/small.txt"):
                copy = root / "home" / name / relative
                assert copy.read_bytes() == (skel / relative).read_bytes(), (name, relative)
        names = [line.split(":")[0] for line in (root / "etc/passwd").read_text().splitlines()]
        homes = sorted(os.listdir(root / "home"))
    assert created and failed, (created, failed)
    assert all(name not in names for name, _ in failed)
    assert homes == sorted(created)  # nothing left of the failed ones
    assert not list((tmp_path / "state/pending").iterdir())


def test_half_made_account_is_repaired_on_the_next_call(store, prefix_root):
    """A worker killed after useradd but before the home was complete leaves its marker."""
    account, _ = store.ensure("alice")
    home = prefix_root / "home/alice"
    (home / "Welcome.ipynb").unlink()
    os.chmod(home, 0o755)
    (store.pending_dir / "alice").touch()

    again, created = store.ensure("alice")
    assert not created and again == account
    assert (home / "Welcome.ipynb").stat().st_uid == account.uid
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert not (store.pending_dir / "alice").exists()


def test_failed_repair_keeps_the_marker_for_the_next_call(store, prefix_root, monkeypatch):
    store.ensure("alice")
    (prefix_root / "home/alice/Welcome.ipynb").unlink()
    (store.pending_dir / "alice").touch()
    real_populate = HomeBuilder.populate

    def disk_full(self, home, uid, gid):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(HomeBuilder, "populate", disk_full)
    with pytest.raises(AccountError, match="will retry"):
        store.ensure("alice")
    assert (store.pending_dir / "alice").exists()
    monkeypatch.setattr(HomeBuilder, "populate", real_populate)
    assert store.ensure("alice")[1] is False
    assert (prefix_root / "home/alice/Welcome.ipynb").exists()
    assert not (store.pending_dir / "alice").exists()


def test_held_lock_gives_busy_and_changes_nothing(make_store, prefix_root, caplog):
    store = make_store(lock_timeout=1)
    before = snapshot(prefix_root)
    with store.lock.held():
        outcome = []
        worker = threading.Thread(target=lambda: outcome.append(_catch(store.ensure, "alice")))
        worker.start()
        worker.join()
    assert isinstance(outcome[0], AccountBusy)
    (busy,) = [
        r.hub_fields
        for r in caplog.records
        if getattr(r, "hub_fields", {}).get("outcome") == "busy"
    ]
    assert busy["wait_ms"] == busy["duration_ms"] >= 1000
    assert snapshot(prefix_root) == before
    assert store.ensure("alice")[1] is True


def test_lookup_never_presents_a_half_made_account_as_ready(store):
    """A GET while the marker of an interrupted creation is there: incomplete, not 200."""
    account, _ = store.ensure("alice")
    (store.pending_dir / "alice").touch()
    with pytest.raises(AccountIncomplete) as incomplete:
        store.lookup("alice")
    assert "POST" in str(incomplete.value)
    assert store.ensure("alice") == (account, False)  # the POST completes it
    assert store.lookup("alice") == account


def hold_passwd_lock(prefix_root: Path) -> Path:
    """Take shadow's own lock on etc/passwd, as a running useradd would: the lock file holds
    the pid of a live process (ours), without a newline, so useradd says 'cannot lock'."""
    lock = prefix_root / "etc/passwd.lock"
    lock.write_text(str(os.getpid()))
    return lock


def test_useradd_busy_reports_the_real_wait(store, prefix_root, caplog):
    """The service lock was free (no wait): the time went to useradd, which met its own lock
    (shadow retries it for about 15 s before giving up)."""
    lock = hold_passwd_lock(prefix_root)
    before = snapshot(prefix_root)
    with pytest.raises(AccountBusy) as busy:
        store.ensure("alice")
    line = _outcome_line(caplog, "busy")
    assert "cannot lock" in line["reason"]
    assert line["wait_ms"] < line["duration_ms"] and line["wait_ms"] < 500
    assert "/" not in str(busy.value) and "cannot lock" not in str(busy.value)
    assert snapshot(prefix_root) == before and not list(store.pending_dir.iterdir())
    lock.unlink()
    assert store.ensure("alice")[1] is True


def test_messages_to_clients_hold_no_paths_and_no_useradd_output(
    make_store, prefix_root, monkeypatch, caplog
):
    """Each exception the HTTP layer shows; the details are in the attempt's log line.
    (AccountBusy from useradd's own lock: in test_useradd_busy_reports_the_real_wait.)"""
    caplog.set_level(logging.INFO, logger="restuser.accounts")
    raised = {}

    def catch(label, function, *args):
        error = _catch(function, *args)
        assert isinstance(error, Exception), label
        raised[label] = error

    store = make_store(lock_timeout=1)
    (prefix_root / "home/leftover").mkdir()
    catch("home in the way", store.ensure, "leftover")
    with store.lock.held():
        waiter = threading.Thread(target=lambda: catch("lock timeout", store.ensure, "bob"))
        waiter.start()
        waiter.join()
    subprocess.run(["groupadd", "--prefix", str(prefix_root), "clash"], check=True)
    catch("group clash", store.ensure, "clash")
    gone = store_whose_group_was_deleted(make_store, prefix_root, "no-such-group")
    catch("useradd failed", gone.ensure, "dave")

    def disk_full(self, home, uid, gid):
        raise OSError(28, "No space left on device", str(home / ".profile"))

    with monkeypatch.context() as patched:
        patched.setattr(HomeBuilder, "populate", disk_full)
        catch("populate failed", store.ensure, "erin")
    store.ensure("frank")
    (store.pending_dir / "frank").touch()
    catch("incomplete", store.lookup, "frank")

    assert {label: type(error).__name__ for label, error in raised.items()} == {
        "home in the way": "HomeInTheWay", "lock timeout": "AccountBusy",
        "group clash": "RefusedName",
        "useradd failed": "AccountError", "populate failed": "AccountError",
        "incomplete": "AccountIncomplete",
    }  # fmt: skip
    for label, error in raised.items():
        message = str(error)
        assert "/" not in message and "useradd:" not in message, (label, message)
        assert "\n" not in message, label
    details = " ".join(str(value) for record in caplog.records
                       for value in getattr(record, "hub_fields", {}).values())  # fmt: skip
    assert str(prefix_root / "home/leftover") in details
    assert "accounts.lock" in details  # the lock file that stayed locked
    assert "useradd: group clash exists" in details
    assert "no-such-group" in details
    assert str(prefix_root / "home/erin/.profile") in details


def test_health_reports_what_blocks_creation_without_paths(make_store, prefix_root, tmp_path):
    """/healthz answers the public texts to anyone on TCP: no server paths there; the service
    logs the details, with paths, at start."""
    assert make_store().problems() == []
    empty = tmp_path / "empty-skel"
    empty.mkdir()
    store = make_store(skel=str(empty))
    empty.rmdir()
    (problem,) = store.problems()
    assert problem.public == "the skeleton directory is missing"
    assert problem.detail == f"skeleton {empty} is missing"

    with tmpfs_prefix_root(tmp_path / "ro") as root:
        store = build_store(store_settings(root))
        subprocess.run(["mount", "-o", "remount,ro", str(root)], check=True)
        problems = store.problems()
    assert [problem.public for problem in problems] == [
        "the account database is not writable", "the state directory is not writable"]
    assert str(root / "etc/shadow") in problems[0].detail
    assert str(store.state_dir) in problems[1].detail


def test_health_reports_a_full_file_system_without_paths(tmp_path):
    with tmpfs_prefix_root(tmp_path / "small") as root:
        store = build_store(store_settings(root))
        assert store.problems() == []
        fill(root, leave=512 * 1024)
        problems = store.problems()
        reply = falcon.testing.TestClient(create_app(store)).simulate_get("/healthz")
    assert reply.status_code == 503 and "/" not in reply.json["description"]
    assert "account database is (almost) full" in reply.json["description"]
    assert [problem.public for problem in problems] == [
        "the file system of the account database is (almost) full",
        "the file system of the homes is (almost) full",
    ]
    assert problems[0].detail.startswith(f"{root / 'etc'}: ")
    assert "bytes free of" in problems[0].detail


def _catch(function, *args):
    try:
        return function(*args)
    except Exception as error:  # noqa: BLE001 - the test inspects it
        return error


def _outcome_line(caplog, outcome: str) -> dict:
    """The fields of the one log line of the attempt that ended with `outcome`."""
    (fields,) = [
        record.hub_fields
        for record in caplog.records
        if getattr(record, "hub_fields", {}).get("outcome") == outcome
    ]
    return fields


def test_a_marker_that_cannot_be_written_fails_cleanly(store, prefix_root):
    """Without its pending marker a creation could not be repaired after a crash: it must not
    start at all, and the caller gets a clean error instead of an unexpected one."""
    (store.pending_dir / "gina").mkdir()  # junk where the marker file must go
    before = snapshot(prefix_root)
    with pytest.raises(AccountError):
        store.ensure("gina")
    assert snapshot(prefix_root) == before
