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


# System users and groups that Debian/Ubuntu packages create when installed: a hub user
# holding one of these names would make the package's installation fail or, for a group,
# make the hub user a member of it.
DEBIAN_SYSTEM_NAMES = [
    "tss", "uuidd", "netdev", "crontab", "messagebus", "avahi", "colord", "geoclue", "pulse",
    "rtkit", "saned", "usbmux", "dnsmasq", "tcpdump", "ntp", "ntpsec", "postfix", "postdrop",
    "statd", "nscd", "lxd", "libvirt", "libvirt-qemu", "kvm", "render", "video", "audio",
    "plugdev", "cdrom", "floppy", "tape", "voice", "fax", "dip", "src", "sasl", "input", "sgx",
    "ssl-cert", "lpadmin", "bluetooth", "scanner", "ftp", "nginx", "apache", "httpd",
    "mongodb", "docker", "systemd-timesync", "systemd-resolve", "systemd-network", "users",
    "sshd", "polkitd", "root", "nobody", "www-data", "backup", "list", "irc", "gnats",
]  # fmt: skip


@pytest.mark.parametrize("name", DEBIAN_SYSTEM_NAMES)
def test_debian_system_names_are_denied(name):
    with pytest.raises(RefusedName):
        NamePolicy().check(name)


@pytest.mark.parametrize("name", ["_apt", "_chrony", "Debian-exim", "Debian-gdm"])
def test_underscore_and_debian_names_are_denied_under_a_looser_pattern(name):
    with pytest.raises(RefusedName):
        NamePolicy(pattern=r"[A-Za-z_][A-Za-z0-9_-]*").check(name)


@pytest.mark.parametrize("name", ["alice", "bob42", "j-smith", "user_1", "ana", "tomas", "li",
                                  "nguyen", "sam", "eve", "student07", "ntpuser", "gitte",
                                  "dockery", "rendering"])  # fmt: skip
def test_student_names_still_pass(name):
    assert NamePolicy().check(name) == name


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


def test_passwd_lookups_from_many_threads_see_every_change(tmp_path):
    """Threads of a worker share one PasswdFile: after the file changes, none of them may keep
    answering from the old text (that made a just-created account look absent)."""
    import os
    import threading

    (tmp_path / "etc").mkdir()
    passwd = tmp_path / "etc/passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\n")
    accounts = PasswdFile(tmp_path)
    stop = threading.Event()
    errors = []

    def read():
        while not stop.is_set():
            try:
                accounts.get("root")
            except Exception as error:  # noqa: BLE001 - reported below
                errors.append(error)

    readers = [threading.Thread(target=read) for _ in range(4)]
    for reader in readers:
        reader.start()
    try:
        for index in range(120):
            staged = tmp_path / "etc/passwd+"
            staged.write_text(passwd.read_text() + f"u{index}:x:{20000 + index}:1::/h:/bin/sh\n")
            os.rename(staged, passwd)  # as shadow does: a new inode each time
            assert accounts.get(f"u{index}") is not None, index
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert errors == []
