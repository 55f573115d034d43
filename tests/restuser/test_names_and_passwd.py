"""Name policy and passwd lookups, on their own."""

from __future__ import annotations

import pytest

from restuser.names import BadName, NamePolicy, RefusedName
from restuser.passwd import Account, PasswdFile


@pytest.mark.parametrize("name", ["a", "alice", "bob-2", "c_d", "a" * 32])
def test_accepted(name):
    assert NamePolicy().check(name) == name


@pytest.mark.parametrize("name", ["", "A", "1a", "-a", "a" * 33, "alice\n", "al ice", "é", "a/b"])
def test_bad(name):
    with pytest.raises(BadName):
        NamePolicy().check(name)


@pytest.mark.parametrize("name", ["root", "systemd-coredump", "hub-admin", "www-data"])
def test_denied_including_globs(name):
    with pytest.raises(RefusedName):
        NamePolicy().check(name)


def test_empty_deny_list_and_custom_pattern():
    policy = NamePolicy(pattern=r"[a-z]+\.[a-z]+", deny=())
    assert policy.check("root.x") == "root.x"
    with pytest.raises(BadName):
        policy.check("root")


def test_passwd_lookup_follows_file_changes(tmp_path):
    (tmp_path / "etc").mkdir()
    passwd = tmp_path / "etc/passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\nalice:x:1001:1001::/home/alice:/bin/sh\n")
    accounts = PasswdFile(tmp_path)
    assert accounts.get("root") == Account("root", 0, 0, "/root", "/bin/bash")
    assert accounts.get("alice") == Account("alice", 1001, 1001, "/home/alice", "/bin/sh")
    assert (
        accounts.get("ali") is None and accounts.get("lice") is None and accounts.get("x") is None
    )
    passwd.write_text(
        passwd.read_text() + "bob:x:1002:1002::/home/bob:/bin/bash"
    )  # no final newline
    assert accounts.get("bob").uid == 1002
