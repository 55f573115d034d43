"""The useradd adapter against real useradd/userdel/groupdel in a --prefix root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from realparts.restuser import SKEL, UID_MAX, UID_MIN
from realparts.tmpfs import fill, tmpfs_prefix_root
from restuser.useradd import DatabaseBusy, NameTaken, UserAdd, UserAddError


def adapter(prefix_root: Path, **overrides) -> UserAdd:
    values = {"skel": SKEL, "uid_min": UID_MIN, "uid_max": UID_MAX, "prefix": prefix_root}
    return UserAdd(**{**values, **overrides})


def names_in(prefix_root: Path, table: str) -> list[str]:
    lines = (prefix_root / "etc" / table).read_text().splitlines()
    return [line.split(":", 1)[0] for line in lines]


def test_create_makes_the_account_and_returns_no_warnings(prefix_root):
    assert adapter(prefix_root).create("alice") == ""
    assert "alice" in names_in(prefix_root, "passwd") and "alice" in names_in(prefix_root, "group")
    profile = prefix_root / "home" / "alice" / ".profile"
    assert profile.read_bytes() == (SKEL / ".profile").read_bytes()


def test_existing_name_is_name_taken_with_the_meaning(prefix_root):
    useradd = adapter(prefix_root)
    useradd.create("alice")
    with pytest.raises(NameTaken) as caught:
        useradd.create("alice")
    assert caught.value.exit_code == 9
    assert str(caught.value) == (
        "useradd exited 9 (username or group name already in use): "
        "useradd: user 'alice' already exists"
    )
    assert "already exists" in caught.value.stderr


def test_a_name_clashing_with_a_group_is_name_taken(prefix_root):
    assert "staff" in names_in(prefix_root, "group")
    with pytest.raises(NameTaken, match="group staff exists"):
        adapter(prefix_root).create("staff")


def test_a_missing_supplementary_group_gets_the_hint_and_creates_nothing(prefix_root):
    passwd_before = (prefix_root / "etc" / "passwd").read_bytes()
    with pytest.raises(UserAddError) as caught:
        adapter(prefix_root, groups=("students", "nosuchgroup")).create("bob")
    error = caught.value
    assert type(error) is UserAddError and error.exit_code == 6
    assert str(error).startswith("useradd exited 6 (specified group doesn't exist): ")
    assert str(error).endswith("(check the configured supplementary groups: students,nosuchgroup)")
    assert (prefix_root / "etc" / "passwd").read_bytes() == passwd_before


def test_create_returns_the_warning_when_the_home_already_exists(prefix_root):
    (prefix_root / "home" / "carol").mkdir()
    warnings = adapter(prefix_root).create("carol")
    assert "the home directory /home/carol already exists" in warnings
    assert "carol" in names_in(prefix_root, "passwd")


def test_a_held_lock_is_database_busy(prefix_root):
    # shadow's lock file holds the locker's pid; a live pid means "someone is writing".
    (prefix_root / "etc" / "passwd.lock").write_text(str(os.getpid()))
    with pytest.raises(DatabaseBusy) as caught:
        adapter(prefix_root).create("dave")
    assert caught.value.exit_code == 1
    assert str(caught.value).startswith("useradd exited 1 (can't update password file): ")
    assert "cannot lock" in str(caught.value)


def test_delete_removes_account_home_and_group(prefix_root):
    useradd = adapter(prefix_root)
    useradd.create("erin")
    useradd.delete("erin")
    assert "erin" not in names_in(prefix_root, "passwd")
    assert "erin" not in names_in(prefix_root, "group")
    assert not (prefix_root / "home" / "erin").exists()
    with pytest.raises(UserAddError, match=r"^userdel exited 6 \(specified user doesn't exist\)"):
        useradd.delete("erin")


def test_a_useradd_that_overruns_its_timeout_is_a_useradd_error(prefix_root):
    with pytest.raises(UserAddError) as caught:
        adapter(prefix_root, timeout=0.0001).create("frank")
    assert caught.value.exit_code == -1
    assert str(caught.value).startswith("useradd did not finish within 0.0001 s")


def test_a_lock_file_that_cannot_be_written_on_a_full_disk_is_a_failure_not_busy(tmp_path):
    """shadow says 'cannot lock' also when it cannot write its lock file: retrying is useless
    while the disk is full, so it is a failure (500), not DatabaseBusy (503 'try again')."""
    with tmpfs_prefix_root(tmp_path / "full") as root:
        fill(root)
        with pytest.raises(UserAddError) as caught:
            adapter(root).create("gina")
    assert type(caught.value) is UserAddError
    assert "No space left on device" in str(caught.value) and "cannot lock" in str(caught.value)
