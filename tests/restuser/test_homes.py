"""Existing homes and symlinks, against real useradd in --prefix roots.

A home that exists before its account (a deleted user's files, an NFS home) is refused,
adopted or moved aside as configured, and no step ever follows a symlink out of a home:
the service runs as root, and a symlink in a home is under its owner's control.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from realparts.accountdb import snapshot
from realparts.restuser import REPO, SKEL
from restuser.accounts import AccountError, AccountIncomplete, AccountStore, HomeInTheWay
from restuser.home import HomeBuilder

OLD_UID = 12345  # the owner of a leftover home: a deleted account's uid
ADOPT_DEPTH_LIMIT = 200  # documented in docs/restuser.md (restuser.home.MAX_ADOPT_DEPTH)


@pytest.fixture(autouse=True)
def _info_lines(caplog):
    caplog.set_level(logging.INFO, logger="restuser.accounts")


@pytest.fixture
def store_with(make_store):
    """Factory: a store with the given existing_home setting."""

    def make(existing_home: str) -> AccountStore:
        store = make_store(existing_home=existing_home)
        assert store.existing_home == existing_home
        return store

    return make


@pytest.fixture
def victim(tmp_path) -> Path:
    """A root-owned directory outside the prefix root that a symlink in a home points at."""
    path = tmp_path / "victim"
    path.mkdir(mode=0o755)
    (path / "secret.txt").write_text("root's own file\n")
    os.chmod(path / "secret.txt", 0o640)
    return path


def tree(top: Path) -> dict:
    """Everything under `top` (itself included), never following a symlink: type, owner,
    mode, mtime and content (a symlink's target) of each entry."""
    listing = {}
    paths = [top]
    for dirpath, dirnames, filenames in os.walk(top):
        paths += [Path(dirpath) / name for name in dirnames + filenames]
    for path in paths:
        info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode):
            content = os.readlink(path)
        elif stat.S_ISREG(info.st_mode):
            content = path.read_bytes()
        else:
            content = None
        listing[str(path.relative_to(top))] = (stat.S_IFMT(info.st_mode), info.st_uid,
                                               info.st_gid, stat.S_IMODE(info.st_mode),
                                               info.st_mtime_ns, content)  # fmt: skip
    return listing


def make_leftover(home: Path, outside: Path | None = None) -> None:
    """A deleted user's home, owned by OLD_UID, mode 0755; with `outside`, also a file there
    hard-linked into the home."""
    (home / "thesis" / "chapter1").mkdir(parents=True)
    (home / "thesis" / "chapter1" / "draft.tex").write_text("\\section{Intro}\n")
    (home / "notes.txt").write_text("my notes\n")
    (home / "Welcome.ipynb").write_text("my own notebook, not the skeleton's\n")
    os.mkfifo(home / "pipe")
    os.symlink("notes.txt", home / "latest")
    for path in [home, *home.rglob("*")]:
        os.lchown(path, OLD_UID, OLD_UID)
    os.chmod(home, 0o755)
    if outside is not None:
        outside.write_text("a file that lives outside the home\n")
        os.chown(outside, OLD_UID, OLD_UID)
        os.link(outside, home / "shared.txt")


def outcome_line(caplog, outcome: str) -> dict:
    (fields,) = [
        record.hub_fields
        for record in caplog.records
        if getattr(record, "hub_fields", {}).get("outcome") == outcome
    ]
    return fields


def test_leftover_home_is_refused_by_default_and_nothing_changes(store, prefix_root, caplog):
    home = prefix_root / "home/alice"
    make_leftover(home)
    accounts_before, tree_before = snapshot(prefix_root), tree(prefix_root)

    with pytest.raises(HomeInTheWay) as refused:
        store.ensure("alice")

    assert "/" not in str(refused.value) and "alice" in str(refused.value)
    assert snapshot(prefix_root) == accounts_before  # no account, no group: byte for byte
    assert tree(prefix_root) == tree_before  # owners, modes, contents, no marker left behind
    assert store.lookup("alice") is None
    line = outcome_line(caplog, "home_in_the_way")
    assert line["home"] == str(home) and line["policy"] == "refuse"


def test_adopt_gives_the_whole_tree_to_the_new_account(store_with, prefix_root, tmp_path, caplog):
    home = prefix_root / "home/alice"
    outside = tmp_path / "outside.txt"
    make_leftover(home, outside)
    store = store_with("adopt")

    account, created = store.ensure("alice")

    assert created
    info = home.lstat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (
        account.uid, account.gid, 0o700)  # fmt: skip
    for path in home.rglob("*"):
        landed = path.lstat()
        if path.name == "shared.txt":
            continue
        assert (landed.st_uid, landed.st_gid) == (account.uid, account.gid), path
    # The hard-linked file is the same file as one outside the home: left to its owner.
    assert (home / "shared.txt").stat().st_uid == outside.stat().st_uid == OLD_UID
    assert (home / "latest").is_symlink()
    # The user's files are kept; missing skeleton entries are filled in.
    assert (home / "Welcome.ipynb").read_text() == "my own notebook, not the skeleton's\n"
    assert (home / ".profile").read_bytes() == (SKEL / ".profile").read_bytes()
    assert (home / ".jupyter/jupyter_server_config.json").stat().st_uid == account.uid
    line = outcome_line(caplog, "adopted")
    assert line["hardlinks_skipped"] == 1 and line["chowned"] >= 7 and line["added"] == 3
    assert "already exists" in line["useradd_warning"]
    assert store.lookup("alice") == account


def test_adopt_does_not_follow_a_symlinked_folder_of_the_leftover_home(
    store_with, prefix_root, victim
):
    home = prefix_root / "home/carol"
    make_leftover(home)
    os.symlink(victim, home / ".jupyter")  # where the skeleton has a folder
    os.lchown(home / ".jupyter", OLD_UID, OLD_UID)
    victim_before = tree(victim)

    account, created = store_with("adopt").ensure("carol")

    assert created
    assert tree(victim) == victim_before  # no new file, same owners, modes and contents
    assert (home / ".jupyter").is_symlink() and (home / ".jupyter").lstat().st_uid == account.uid


def test_move_aside_keeps_the_old_home_and_creates_a_fresh_one(store_with, prefix_root, caplog):
    home = prefix_root / "home/alice"
    make_leftover(home)
    old_tree = tree(home)

    account, created = store_with("move-aside").ensure("alice")

    assert created
    (moved,) = [path for path in (prefix_root / "home").iterdir() if path.name != "alice"]
    assert moved.name.startswith("alice.orphaned-") and moved.name.endswith("Z")
    assert tree(moved) == old_tree  # untouched, still the old owner's
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == sorted(
        str(p.relative_to(SKEL)) for p in SKEL.rglob("*"))  # fmt: skip
    assert (home / "Welcome.ipynb").read_bytes() == (SKEL / "Welcome.ipynb").read_bytes()
    assert home.stat().st_uid == account.uid
    line = outcome_line(caplog, "created")
    assert line["moved_aside"] == str(moved)


@pytest.mark.parametrize("policy", ["refuse", "adopt", "move-aside"])
def test_a_home_that_is_a_symlink_is_never_followed(store_with, prefix_root, victim, policy):
    home = prefix_root / "home/bob"
    os.symlink(victim, home)
    victim_before = tree(victim)
    accounts_before = snapshot(prefix_root)
    store = store_with(policy)

    if policy == "move-aside":
        account, created = store.ensure("bob")
        assert created and not home.is_symlink() and home.stat().st_uid == account.uid
        (moved,) = (prefix_root / "home").glob("bob.orphaned-*")
        assert moved.is_symlink() and os.readlink(moved) == str(victim)
    else:
        with pytest.raises(HomeInTheWay):
            store.ensure("bob")
        assert snapshot(prefix_root) == accounts_before
        assert os.readlink(home) == str(victim)
    assert tree(victim) == victim_before


def test_a_symlink_planted_before_a_repair_is_not_followed(store, prefix_root, victim):
    """A half-made account (its marker left) whose user replaced a folder with a symlink."""
    account, _ = store.ensure("alice")
    home = prefix_root / "home/alice"
    shutil.rmtree(home / ".jupyter")
    os.symlink(victim, home / ".jupyter")
    (home / ".profile").unlink()
    (store.pending_dir / "alice").touch()
    victim_before = tree(victim)

    assert store.ensure("alice") == (account, False)

    assert tree(victim) == victim_before
    assert (home / ".jupyter").is_symlink()
    assert (home / ".profile").lstat().st_uid == account.uid  # the repair itself happened
    assert not (store.pending_dir / "alice").exists()


def test_a_home_replaced_by_a_symlink_before_a_repair_is_refused(store, prefix_root, victim):
    store.ensure("alice")
    home = prefix_root / "home/alice"
    shutil.rmtree(home)
    os.symlink(victim, home)
    (store.pending_dir / "alice").touch()
    victim_before = tree(victim)

    with pytest.raises(AccountError) as failed:
        store.ensure("alice")

    assert str(prefix_root) not in str(failed.value) and "/" not in str(failed.value)
    assert tree(victim) == victim_before
    assert (store.pending_dir / "alice").exists()  # still incomplete, never presented as ready
    with pytest.raises(AccountIncomplete):
        store.lookup("alice")


def test_a_failed_adoption_keeps_the_files_and_is_completed_by_the_next_call(
    store_with, prefix_root, monkeypatch
):
    """userdel --remove must never run on a home being adopted: it would delete its files."""
    home = prefix_root / "home/alice"
    make_leftover(home)
    files_before = {path: path.read_bytes() for path in home.rglob("*") if path.is_file()}
    store = store_with("adopt")
    real_adopt = HomeBuilder.adopt

    def root_squashed(self, home, uid, gid):
        raise PermissionError(errno.EPERM, "Operation not permitted", str(home))

    monkeypatch.setattr(HomeBuilder, "adopt", root_squashed)
    with pytest.raises(AccountError, match="Operation not permitted") as failed:
        store.ensure("alice")
    assert str(prefix_root) not in str(failed.value)
    assert {path: path.read_bytes() for path in home.rglob("*") if path.is_file()} == files_before
    with pytest.raises(AccountIncomplete):
        store.lookup("alice")

    monkeypatch.setattr(HomeBuilder, "adopt", real_adopt)
    account, created = store.ensure("alice")
    assert not created
    assert (home / "thesis/chapter1/draft.tex").stat().st_uid == account.uid
    assert store.lookup("alice") == account


def test_adopt_refuses_a_home_that_is_a_file(store_with, prefix_root):
    store = store_with("adopt")
    (prefix_root / "home/dave").write_text("not a directory\n")
    before = tree(prefix_root)
    with pytest.raises(HomeInTheWay):
        store.ensure("dave")
    assert tree(prefix_root) == before


def test_unknown_policy_is_refused(make_store):
    base = make_store()
    with pytest.raises(ValueError, match="existing_home"):
        AccountStore(base.policy, base.useradd, base.home, base.state_dir, existing_home="merge")


def test_adopt_leaves_device_nodes_and_sockets_to_their_owner(store_with, prefix_root, caplog):
    """A device node handed to the new user would give them the device (here /dev/loop0)."""
    home = prefix_root / "home/alice"
    make_leftover(home)
    os.mknod(home / "blockdev", 0o660 | stat.S_IFBLK, os.makedev(7, 0))
    os.mknod(home / "thesis/chardev", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(home / "agent.sock"))
    os.lchown(home / "thesis/chardev", OLD_UID, OLD_UID)  # the old owner's: stays theirs

    account, created = store_with("adopt").ensure("alice")

    assert created
    assert (home / "blockdev").lstat().st_uid == 0 and (home / "agent.sock").lstat().st_uid == 0
    assert (home / "thesis/chardev").lstat().st_uid == OLD_UID
    assert (home / "notes.txt").lstat().st_uid == account.uid  # the rest was adopted
    line = outcome_line(caplog, "adopted")
    assert line["devices_skipped"] == 3 and line["skipped"] >= 3


def make_chain(top: Path, depth: int) -> None:
    """`depth` nested directories d/d/d/... below `top`, made through descriptors (the path
    would be too long for the kernel), all owned by OLD_UID."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            os.chown("d", OLD_UID, OLD_UID, dir_fd=fd)
            sub = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = sub
    finally:
        os.close(fd)


def chain_owners(top: Path) -> list[int]:
    owners = []
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        while "d" in os.listdir(fd):
            sub = os.open("d", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = sub
            owners.append(os.fstat(fd).st_uid)
    finally:
        os.close(fd)
    return owners


ENSURE_IN_CHILD = """
import sys
from restuser.cli import build_store
from tests.restuser.conftest import store_settings
store = build_store(store_settings(sys.argv[1], existing_home="adopt"))
try:
    store.ensure("alice")
except Exception as error:
    print(type(error).__name__, error)
else:
    print("adopted")
"""


@pytest.fixture
def deep_trees():
    """Removes the given trees at teardown with rm, which copes with any depth (pytest's
    clean-up of tmp_path recurses once per level and fails on 2000)."""
    trees: list[Path] = []
    yield trees
    for top in trees:
        subprocess.run(["rm", "-rf", "--one-file-system", "--", str(top)], check=True)


def test_a_leftover_tree_too_deep_to_adopt_is_refused_before_anything_changes(
    prefix_root, deep_trees
):
    """2000 nested directories, 256 descriptors: the old walk ran out of descriptors after
    chowning ~250 levels and left the account half-made (every later call failed)."""
    home = prefix_root / "home/alice"
    home.mkdir()
    deep_trees.append(home)
    os.chown(home, OLD_UID, OLD_UID)
    make_chain(home, 2000)
    accounts_before = snapshot(prefix_root)

    child = subprocess.run(
        ["prlimit", "--nofile=256:256", sys.executable, "-c", ENSURE_IN_CHILD, str(prefix_root)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert child.returncode == 0, child.stderr
    assert child.stdout.startswith("HomeInTheWay ") and "deeper than 200 levels" in child.stdout
    assert snapshot(prefix_root) == accounts_before
    assert set(chain_owners(home)) == {OLD_UID} and len(chain_owners(home)) == 2000
    assert home.stat().st_uid == OLD_UID


def test_a_leftover_tree_at_the_depth_limit_is_adopted_with_few_descriptors(prefix_root):
    home = prefix_root / "home/alice"
    home.mkdir()
    make_chain(home, ADOPT_DEPTH_LIMIT)

    child = subprocess.run(
        ["prlimit", "--nofile=256:256", sys.executable, "-c", ENSURE_IN_CHILD, str(prefix_root)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert child.stdout.strip() == "adopted", child.stdout + child.stderr
    uid = home.stat().st_uid
    assert uid != OLD_UID and set(chain_owners(home)) == {uid}
