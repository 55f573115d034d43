"""The duplicity adapter against real duplicity 3.x and real gpg, with file:// targets.

Every test builds a small tree (a few hundred files, odd modes, a symlink, an empty directory),
backs it up for real and checks what a user of `hub-backup` would notice: restored bytes and
modes, the chains collection-status reports, one-line failures, and no passphrase anywhere a
stranger could read it.
"""

from __future__ import annotations

import logging
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backup.duplicity import VERIFY_DIFFERENCES, Duplicity, DuplicityFailed, Encryption
from backup.duplicity_log import parse_collection, parse_log
from hubsidecars.commands import CommandError, CommandNotStarted
from realparts.gpg import agents_for, make_key, stop_agent

REPO = Path(__file__).resolve().parents[2]
DUPLICITY = str(REPO / ".venv" / "bin" / "duplicity")
PASSPHRASE = "correct horse battery staple 7Q"


@pytest.fixture(scope="session", autouse=True)
def _duplicity_installed():
    if not os.access(DUPLICITY, os.X_OK):
        pytest.fail(f"{DUPLICITY} missing: run scripts/test (ensure_duplicity) to install it")


def make_tree(root: Path, files: int = 300) -> Path:
    """`files` files in nested directories, with varied sizes and modes."""
    root.mkdir(parents=True)
    for index in range(files):
        directory = root / f"dir{index % 7}" / f"sub{index % 3}"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"file{index}.txt"
        path.write_bytes(os.urandom(index * 13 % 4000) + f"file {index}\n".encode())
        path.chmod((0o600, 0o644, 0o640, 0o755)[index % 4])
    (root / "notebook.ipynb").write_text('{"cells": []}\n')
    (root / "link").symlink_to("notebook.ipynb")
    (root / "empty").mkdir()
    (root / "private").mkdir(mode=0o700)
    (root / "private" / "key").write_bytes(b"\x00\xffbinary")
    return root


def snapshot(root: Path) -> dict[str, tuple]:
    """Relative path -> (type, mode, content or link target) for everything under root."""
    found = {}
    for directory, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(directory) / name
            info = path.lstat()
            relative = str(path.relative_to(root))
            if stat.S_ISLNK(info.st_mode):
                found[relative] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                found[relative] = ("dir", stat.S_IMODE(info.st_mode))
            else:
                found[relative] = ("file", stat.S_IMODE(info.st_mode), path.read_bytes())
    return found


def logged(caplog) -> str:
    """Every captured record with its structured fields (argv, stderr_tail), as text."""
    return "\n".join(str(vars(record)) for record in caplog.records)


def one_line(error: Exception) -> str:
    text = str(error)
    assert "\n" not in text, text
    return text


class Setup:
    """A tree, a target and a Duplicity adapter, all inside tmp_path."""

    def __init__(self, tmp_path: Path, **adapter_options) -> None:
        self.tmp = tmp_path
        self.source = make_tree(tmp_path / "home")
        self.target = f"file://{tmp_path / 'target'}"
        self.duplicity = Duplicity(DUPLICITY, archive_dir=str(tmp_path / "cache"),
                                   **adapter_options)  # fmt: skip

    def backup(self, encryption, **options):
        result = self.duplicity.backup(str(self.source), self.target, name="alice",
                                       encryption=encryption, **options)  # fmt: skip
        # duplicity names sets by the second: two backups of a chain in one second collide.
        time.sleep(1.05)
        return result

    def status(self, encryption):
        return self.duplicity.collection_status(self.target, name="alice", encryption=encryption)


@pytest.fixture
def setup(tmp_path):
    made = Setup(tmp_path)
    yield made
    made.duplicity.stop_agent()


SYMMETRIC = Encryption(passphrase=PASSPHRASE)


def test_symmetric_full_then_incremental(setup):
    first = setup.backup(SYMMETRIC)
    assert (first.exit_code, first.meaning, first.kind) == (0, "success", "full")
    assert first.bytes > 0 and first.statistics["SourceFiles"] >= 300
    assert first.elapsed > 0

    (setup.source / "dir1" / "sub1" / "file1.txt").write_text("changed\n")
    second = setup.backup(SYMMETRIC)
    assert (second.exit_code, second.kind) == (0, "incremental")
    assert second.statistics["ChangedFiles"] >= 1
    assert 0 < second.bytes < first.bytes

    (chain,) = setup.status(SYMMETRIC).chains
    assert (chain.incrementals, chain.complete) == (1, True)
    # The target holds only encrypted volumes: no file name or content in clear.
    for volume in Path(setup.target[len("file://"):]).iterdir():
        assert volume.name.endswith(".gpg"), volume.name
        assert b"file 1\n" not in volume.read_bytes()


def test_collection_status_two_chains_in_utc(setup):
    before = datetime.now(UTC).replace(microsecond=0)
    runs = [setup.backup(SYMMETRIC), setup.backup(SYMMETRIC)]
    runs.append(setup.backup(SYMMETRIC, full=True))
    assert runs[-1].kind == "full"
    runs += [setup.backup(SYMMETRIC), setup.backup(SYMMETRIC)]
    after = datetime.now(UTC)

    collection = setup.status(SYMMETRIC)
    assert [chain.incrementals for chain in collection.chains] == [1, 2]
    assert [chain.complete for chain in collection.chains] == [False, True]
    assert (collection.orphaned_sets, collection.incomplete_sets) == (0, 0)
    old, new = collection.chains
    assert before <= old.start < old.end < new.start < new.end <= after
    assert all(s.time.tzinfo == UTC for chain in collection.chains for s in chain.sets)
    assert collection.last_full == new.start and collection.last_backup == new.end
    # each run knows the time duplicity gave the set it wrote (what a restore --time names)
    assert [run.set_time for run in runs] == [
        s.time.isoformat() for chain in collection.chains for s in chain.sets]  # fmt: skip


def test_full_if_older_than_starts_a_new_chain(setup):
    setup.backup(SYMMETRIC)
    assert setup.backup(SYMMETRIC, full_if_older_than=3600).kind == "incremental"
    assert setup.backup(SYMMETRIC, full_if_older_than=1).kind == "full"
    assert len(setup.status(SYMMETRIC).chains) == 2


def test_excludes_and_dry_run(setup):
    cache = setup.source / ".cache"
    cache.mkdir()
    (cache / "big").write_bytes(b"cache" * 1000)
    dry = setup.backup(SYMMETRIC, dry_run=True)
    assert dry.exit_code == 0
    assert setup.status(SYMMETRIC).chains == ()

    setup.backup(SYMMETRIC, excludes=[f"{setup.source}/.cache"])
    restored = setup.tmp / "restored"
    setup.duplicity.restore(setup.target, str(restored), name="alice", encryption=SYMMETRIC)
    assert not (restored / ".cache").exists()
    assert (restored / "notebook.ipynb").exists()


def test_restore_whole_tree_and_one_file_byte_for_byte_with_modes(setup):
    setup.backup(SYMMETRIC)
    expected = snapshot(setup.source)

    whole = setup.tmp / "whole"
    result = setup.duplicity.restore(setup.target, str(whole), name="alice", encryption=SYMMETRIC)
    assert result.exit_code == 0
    assert snapshot(whole) == expected
    assert stat.S_IMODE((whole / "private").stat().st_mode) == 0o700

    one = setup.tmp / "one"
    setup.duplicity.restore(setup.target, str(one), name="alice", encryption=SYMMETRIC,
                            path="dir3/sub0/file3.txt")  # fmt: skip
    original = setup.source / "dir3" / "sub0" / "file3.txt"
    assert one.read_bytes() == original.read_bytes()
    assert stat.S_IMODE(one.stat().st_mode) == 0o755


def test_restore_an_earlier_time(setup):
    path = setup.source / "notebook.ipynb"
    setup.backup(SYMMETRIC)
    first_time = setup.status(SYMMETRIC).last_backup
    path.write_text("second version\n")
    setup.backup(SYMMETRIC)
    old = setup.tmp / "old"
    setup.duplicity.restore(setup.target, str(old), name="alice", encryption=SYMMETRIC,
                            path="notebook.ipynb", time=first_time.isoformat())  # fmt: skip
    assert old.read_text() == '{"cells": []}\n'


def test_restore_into_a_non_empty_directory_is_refused_in_one_line(setup):
    setup.backup(SYMMETRIC)
    busy = setup.tmp / "busy"
    busy.mkdir()
    (busy / "precious").write_text("keep me")
    with pytest.raises(DuplicityFailed) as caught:
        setup.duplicity.restore(setup.target, str(busy), name="alice", encryption=SYMMETRIC)
    assert caught.value.exit_code == 11
    assert "restore target not empty" in one_line(caught.value)
    assert (busy / "precious").read_text() == "keep me"


def test_verify_ok_then_differences_are_a_result_not_a_crash(setup):
    setup.backup(SYMMETRIC)
    clean = setup.duplicity.verify(str(setup.source), setup.target, name="alice",
                                   encryption=SYMMETRIC)  # fmt: skip
    assert (clean.exit_code, clean.differences) == (0, ())
    assert clean.compared >= 300

    changed = setup.source / "dir2" / "sub2" / "file2.txt"
    changed.write_bytes(b"X" * len(changed.read_bytes()))
    (setup.source / "private").chmod(0o755)
    found = setup.duplicity.verify(str(setup.source), setup.target, name="alice",
                                   encryption=SYMMETRIC)  # fmt: skip
    assert (found.exit_code, found.meaning) == (1, VERIFY_DIFFERENCES)
    assert any("file2.txt" in line for line in found.differences), found.differences
    assert any("private" in line for line in found.differences), found.differences
    assert len(found.differences) == 2


def kill_when(predicate, marker: str, timeout: float = 60) -> list[int]:
    """SIGKILL the process group of every process whose argv holds `marker`, once
    `predicate()` holds; return the process groups killed."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the condition to kill duplicity never came"
        time.sleep(0.02)
    groups = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if marker.encode() in argv:
                groups.add(os.getpgid(int(pid)))
        except (OSError, ProcessLookupError):
            continue  # gone meanwhile
    killed = []
    # duplicity forks children with its own argv: kill each group once, and a group
    # that ended between the listing and the kill was not killed by this test
    assert os.getpgrp() not in groups, "duplicity runs in the test's own process group"
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            continue
        killed.append(group)
    return killed


def test_a_full_killed_midway_is_discarded_and_made_afresh_as_a_full(tmp_path):
    made = Setup(tmp_path, volsize_mb=2)
    (made.source / "big.bin").write_bytes(os.urandom(40 * 1024 * 1024))
    target_dir = tmp_path / "target"

    def volumes_written():
        return target_dir.is_dir() and len(list(target_dir.glob("*.difftar.gpg"))) >= 4

    pool = ThreadPoolExecutor(1)
    # this test's duplicity only: another worker's test may run a duplicity --name=alice
    killer = pool.submit(kill_when, volumes_written, f"--archive-dir={made.duplicity.archive_dir}")
    try:
        with pytest.raises(CommandError) as caught:
            made.duplicity.backup(str(made.source), made.target, name="alice",
                                  encryption=SYMMETRIC)  # fmt: skip
        assert killer.result(), "nothing was killed"
        assert "SIGKILL" in one_line(caught.value)
        # duplicity calls the half-written full a complete chain (REALPARTS): not to be trusted.
        (partial,) = made.status(SYMMETRIC).chains
        assert partial.complete and partial.incrementals == 0
        # its .part manifest in the archive dir is what would make the next backup resume it
        assert any(name.endswith(".manifest.part")
                   for name in made.duplicity.partial_files("alice"))  # fmt: skip

        gone = made.duplicity.discard_partial(made.target, name="alice", encryption=SYMMETRIC)
        assert sum(".vol" in name for name in gone) >= 4, gone
        assert made.duplicity.partial_files("alice") == []
        assert not list(target_dir.glob("*.difftar.gpg"))
        assert made.status(SYMMETRIC).chains == ()

        afresh = made.backup(SYMMETRIC)
        assert afresh.kind == "full", afresh
        (chain,) = made.status(SYMMETRIC).chains
        assert chain.start > partial.start and chain.incrementals == 0
        assert chain.volumes > partial.volumes
        restored = tmp_path / "restored"
        made.duplicity.restore(made.target, str(restored), name="alice", encryption=SYMMETRIC)
        assert snapshot(restored) == snapshot(made.source)
    finally:
        pool.shutdown()
        made.duplicity.stop_agent()


def test_remove_all_but_n_full_keeps_the_newest_n(setup):
    for _ in range(3):
        setup.backup(SYMMETRIC, full=True)
    starts = [chain.start for chain in setup.status(SYMMETRIC).chains]
    assert len(starts) == 3

    dry = setup.duplicity.remove_all_but_n_full(setup.target, 2, name="alice",
                                                encryption=SYMMETRIC, dry_run=True)  # fmt: skip
    assert dry.exit_code == 0
    assert len(setup.status(SYMMETRIC).chains) == 3

    setup.duplicity.remove_all_but_n_full(setup.target, 2, name="alice", encryption=SYMMETRIC)
    assert [chain.start for chain in setup.status(SYMMETRIC).chains] == starts[1:]
    setup.duplicity.cleanup(setup.target, name="alice", encryption=SYMMETRIC)
    restored = setup.tmp / "restored"
    setup.duplicity.restore(setup.target, str(restored), name="alice", encryption=SYMMETRIC)
    assert snapshot(restored) == snapshot(setup.source)
    with pytest.raises(ValueError):
        setup.duplicity.remove_all_but_n_full(setup.target, 0, name="alice", encryption=SYMMETRIC)


def test_wrong_passphrase_is_a_gpg_failure_in_one_line(setup, caplog):
    setup.backup(SYMMETRIC)
    wrong = Encryption(passphrase="not the passphrase at all 42")
    # A fresh cache forces duplicity to decrypt the remote metadata, as on a new host.
    fresh = Duplicity(DUPLICITY, archive_dir=str(setup.tmp / "fresh-cache"))
    caplog.set_level(logging.DEBUG)
    try:
        with pytest.raises(DuplicityFailed) as caught:
            fresh.restore(setup.target, str(setup.tmp / "out"), name="alice", encryption=wrong)
    finally:
        fresh.stop_agent()
    line = one_line(caught.value)
    assert caught.value.exit_code == 31
    assert line.startswith("duplicity restore failed with exit 31 (gpg failure): ")
    assert "Bad session key" in line
    everything = line + caught.value.stderr + logged(caplog)
    assert "gpg failure" in logged(caplog)  # the failure was logged, masked
    assert "not the passphrase at all 42" not in everything
    assert PASSPHRASE not in everything


def test_a_multi_line_duplicity_error_is_kept_whole_on_one_line(setup):
    with pytest.raises(DuplicityFailed) as caught:
        setup.backup(SYMMETRIC, excludes=["/elsewhere/cache"])
    line = one_line(caught.value)
    assert caught.value.exit_code == 14
    # duplicity explains over several lines; the reason is in the later ones.
    assert "/elsewhere/cache" in line and "cannot match any files" in line, line


def test_unreachable_file_target_is_one_line(tmp_path):
    made = Setup(tmp_path, num_retries=1, retry_delay=1)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    started = time.monotonic()
    with pytest.raises(DuplicityFailed) as caught:
        made.duplicity.backup(str(made.source), f"file://{blocker}/backups", name="alice",
                              encryption=SYMMETRIC)  # fmt: skip
    made.duplicity.stop_agent()
    line = one_line(caught.value)
    assert caught.value.exit_code == 50
    assert "backend error" in line and "Not a directory" in line
    assert time.monotonic() - started < 30  # num_retries reached duplicity


def test_sftp_to_a_closed_port_is_one_line(tmp_path):
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    made = Setup(tmp_path, num_retries=1, retry_delay=1)
    with pytest.raises(DuplicityFailed) as caught:
        made.duplicity.backup(str(made.source), f"sftp://backup:pw-in-url-123@127.0.0.1:{port}/x",
                              name="alice", encryption=SYMMETRIC)  # fmt: skip
    made.duplicity.stop_agent()
    line = one_line(caught.value)
    assert caught.value.exit_code == 50
    assert f"127.0.0.1:{port}" in line
    assert "pw-in-url-123" not in line + " ".join(caught.value.argv) + caught.value.stderr


def test_key_encrypted_backup_needs_only_the_public_key(tmp_path):
    key = make_key(tmp_path / "gpg-secret", passphrase="key passphrase 0987")
    public_home = key.export_public(tmp_path / "gpg-public")
    made = Setup(tmp_path, gnupg_home=str(public_home))
    try:
        on_host = Encryption(key_id=key.fingerprint)  # no passphrase on the backup host
        assert made.backup(on_host).kind == "full"
        (made.source / "notebook.ipynb").write_text('{"cells": [1]}\n')
        assert made.backup(on_host).kind == "incremental"
        (chain,) = made.status(on_host).chains
        assert chain.incrementals == 1

        # Restoring needs the secret key and its passphrase: the public-only host cannot.
        with pytest.raises(DuplicityFailed) as caught:
            made.duplicity.restore(made.target, str(tmp_path / "nope"), name="alice",
                                   encryption=on_host)  # fmt: skip
        assert caught.value.exit_code == 31
        one_line(caught.value)

        restorer = Duplicity(DUPLICITY, archive_dir=str(tmp_path / "restore-cache"),
                             gnupg_home=str(key.home))  # fmt: skip
        with_secret = Encryption(key_id=key.fingerprint, passphrase=key.passphrase)
        restored = tmp_path / "restored"
        restorer.restore(made.target, str(restored), name="alice", encryption=with_secret)
        assert snapshot(restored) == snapshot(made.source)
        verified = restorer.verify(str(made.source), made.target, name="alice",
                                   encryption=with_secret)  # fmt: skip
        assert verified.exit_code == 0
    finally:
        made.duplicity.stop_agent()
        stop_agent(key.home)


def test_key_without_passphrase(tmp_path):
    key = make_key(tmp_path / "gpg")
    made = Setup(tmp_path, gnupg_home=str(key.home))
    try:
        encryption = Encryption(key_id=key.fingerprint, passphrase="")
        made.backup(encryption)
        restored = tmp_path / "restored"
        made.duplicity.restore(made.target, str(restored), name="alice", encryption=encryption)
        assert snapshot(restored) == snapshot(made.source)
    finally:
        made.duplicity.stop_agent()


def test_passphrase_never_in_ps_logs_or_errors(setup, caplog):
    caplog.set_level(logging.DEBUG)
    (setup.source / "big.bin").write_bytes(os.urandom(48 * 1024 * 1024))
    seen: list[str] = []
    done = threading.Event()

    def watch_ps():
        while not done.is_set():
            # -ww: unlimited width, or ps cuts lines at 80 columns when not on a terminal
            listing = subprocess.run(["ps", "-e", "-ww", "-o", "args"], capture_output=True,
                                     text=True)  # fmt: skip
            seen.extend(listing.stdout.splitlines())
            time.sleep(0.05)

    watcher = threading.Thread(target=watch_ps)
    watcher.start()
    try:
        setup.backup(SYMMETRIC)
        setup.duplicity.restore(setup.target, str(setup.tmp / "out"), name="alice",
                                encryption=SYMMETRIC, path="big.bin")  # fmt: skip
    finally:
        done.set()
        watcher.join()
    duplicity_lines = [line for line in seen if "duplicity" in line and "--name=alice" in line]
    gpg_lines = [line for line in seen if line.startswith(("gpg ", "/usr/bin/gpg "))]
    assert duplicity_lines, "the watcher never saw duplicity running: the test proves nothing"
    assert gpg_lines, "the watcher never saw gpg running: the test proves nothing"
    assert not [line for line in seen if PASSPHRASE in line]
    assert PASSPHRASE not in repr(SYMMETRIC)
    assert "--name=alice" in logged(caplog)  # the commands were logged, with their argv
    assert PASSPHRASE not in logged(caplog)


def test_gpg_agent_is_stopped(setup):
    home = Path(setup.duplicity.gnupg_home)
    setup.backup(SYMMETRIC)
    assert agents_for(home), "duplicity's gpg left no agent: nothing to check"
    setup.duplicity.stop_agent()
    deadline = time.monotonic() + 5
    while agents_for(home) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert agents_for(home) == []


def test_encryption_needs_a_key_or_a_passphrase():
    with pytest.raises(ValueError):
        Encryption()
    with pytest.raises(ValueError):
        Encryption(key_id=" ")
    assert Encryption(key_id="ABCD").symmetric is False
    assert SYMMETRIC.symmetric is True


def test_parse_log_reads_secondary_chains_and_counts():
    # The shape of duplicity 3.2's --log-fd collection-status record with two chains.
    text = (
        "NOTICE 1\n. Last full backup date: Mon Nov 23 08:26:42 2026\n\n"
        "INFO 3 \nbackend BackendWrapper\narchive-dir (. dir)\nchain-no-sig 0\n"
        " full 20261120T010203Z 2 enc\n inc 20261121T010203Z 1 enc\n"
        "chain-complete\n full 20261122T010203Z 1 enc\n"
        "orphaned-sets-num 1\nincomplete-sets-num 2\n. Collection Status\n. -----\n\n"
    )
    collection = parse_collection(parse_log(text))
    old, new = collection.chains
    assert (old.complete, old.incrementals, old.volumes) == (False, 1, 3)
    assert old.end == datetime(2026, 11, 21, 1, 2, 3, tzinfo=UTC)
    assert (new.complete, new.incrementals) == (True, 0)
    assert (collection.orphaned_sets, collection.incomplete_sets) == (1, 2)


def test_zero_attempts_is_refused_because_duplicity_would_skip_every_transfer(tmp_path):
    """duplicity 3.2.1 with --num-retries=0 never calls its backend and dies on a None listing
    (an sftp:// backup with hub-backup's retries=0 failed so before the settings mapped
    retries to attempts)."""
    with pytest.raises(ValueError, match="at least 1"):
        Duplicity(DUPLICITY, archive_dir=str(tmp_path / "cache"), num_retries=0)


def test_once_terminated_no_duplicity_starts_and_a_late_one_is_stopped(setup, tmp_path):
    """Found in review: SIGTERM to hub-backup while a worker was still walking a home (or
    between starting duplicity and registering it) let that worker start a full backup
    after the stop, which ran on until systemd's SIGKILL."""
    setup.duplicity.terminate(grace=1.0)
    with pytest.raises(CommandNotStarted, match="stopping"):
        setup.duplicity.backup(str(setup.source), setup.target, name="alice",
                               encryption=SYMMETRIC)  # fmt: skip
    assert not Path(setup.target[len("file://"):]).exists()
    # one that was already on its way when terminate() ran is handed to the runner's
    # on_start hook: it gets SIGTERM at once, and SIGKILL after the grace if it ignores that
    stubborn = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
         "signal.SIG_IGN); print('ready', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    assert stubborn.stdout.readline() == "ready\n"
    started = time.monotonic()
    setup.duplicity._running.started(stubborn)  # as run_command's on_start hands it over
    stubborn.wait(timeout=10)
    stubborn.stdout.close()
    assert stubborn.returncode == -signal.SIGKILL and time.monotonic() - started < 9


def test_a_disk_filling_up_mid_run_is_named_as_such(tmp_path):
    """Found in review: when the cache's disk filled during a backup, the line read 'exit 1
    (generic error (verify: differences found)): Read error on /tmp/duplicity-.../mktemp-...:
    [Errno 28]': a verify meaning for a backup, and a temp file on a disk with room to spare
    named as the place to look. (duplicity's own message, from a stand-in that fails the
    way it does: filling a disk at the right moment of a real run is a matter of luck.)"""
    fake = tmp_path / "duplicity"
    fake.write_text("#!/bin/sh\necho \"Read error on /tmp/duplicity-x/mktemp-y: [Errno 28] No "
                    "space left on device\" >&2\nexit 1\n")  # fmt: skip
    fake.chmod(0o755)
    adapter = Duplicity(str(fake), archive_dir=str(tmp_path / "cache"))
    with pytest.raises(DuplicityFailed) as failed:
        adapter.backup(str(tmp_path), f"file://{tmp_path}/target", name="alice",
                       encryption=SYMMETRIC)  # fmt: skip
    line = str(failed.value)
    assert line.startswith("duplicity backup failed with exit 1 (generic error): a file system "
                           f"is full (archive_dir {tmp_path / 'cache'}, temp dir ")  # fmt: skip
    assert "[Errno 28]" in line and "verify" not in line


def test_numeric_owner_restores_the_uid_a_file_had_not_the_one_its_name_has_now(setup):
    """A home name handed to another person: the previous person's files must come back with
    their uid, not with the uid the name has now (duplicity maps owners by name)."""
    name = f"i13p{os.getpid() % 100000}"
    subprocess.run(["useradd", "--no-create-home", "--uid", "3961", name], check=True,
                   capture_output=True)  # fmt: skip
    try:
        owned = setup.source / "theirs.txt"
        owned.write_text("the previous owner's\n")
        os.chown(owned, 3961, 3961)
        setup.backup(SYMMETRIC)
        subprocess.run(["usermod", "--uid", "3962", name], check=True, capture_output=True)
        by_name, by_number = setup.tmp / "by-name", setup.tmp / "by-number"
        setup.duplicity.restore(setup.target, str(by_name), name="alice", encryption=SYMMETRIC,
                                path="theirs.txt")  # fmt: skip
        setup.duplicity.restore(setup.target, str(by_number), name="alice",
                                encryption=SYMMETRIC, path="theirs.txt", numeric_owner=True)
        assert by_name.stat().st_uid == 3962  # duplicity's default: the name's uid now
        assert by_number.stat().st_uid == 3961
    finally:
        subprocess.run(["userdel", name], capture_output=True)
