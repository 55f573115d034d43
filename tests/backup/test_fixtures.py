"""The backup tests' real parts work: the sshd fixture is a real, key-only, loopback sftp
target that duplicity can back up to and restore from, and the homes fixture builds, records
and mutates homes as promised."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import zlib
from pathlib import Path

import paramiko
import pytest

from realparts.homes import (
    MEGABYTE,
    big_home,
    compare,
    is_junk,
    make_homes,
    mutate,
    snapshot,
)
from realparts.sshd import SSHServer, make_key_pair

DUPLICITY = str(Path(sys.executable).parent / "duplicity")
USERS = {"ada": 2000, "bob": 2001, "cy": 2002}


def run_ssh(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=False, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60)  # fmt: skip


def sftp_client(server: SSHServer, key: Path | None = None) -> paramiko.SSHClient:
    """A paramiko client that trusts only the fixture's known_hosts and offers only `key`."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.load_host_keys(str(server.known_hosts))
    client.connect(server.host, server.port, username=server.user,
                   key_filename=str(key or server.client_key), allow_agent=False,
                   look_for_keys=False, timeout=10)  # fmt: skip
    return client


# -- sshd -----------------------------------------------------------------------------------


def test_sshd_accepts_the_client_key_as_root(ssh_server):
    result = run_ssh(ssh_server.ssh_argv("id", "-u"))
    assert result.returncode == 0, result.stderr + ssh_server.log()[-2000:]
    assert result.stdout.strip() == "0"


def test_sshd_refuses_any_other_key_and_passwords(ssh_server, tmp_path):
    stranger = make_key_pair(tmp_path / "stranger", "not authorized")
    result = run_ssh(ssh_server.ssh_argv("true", key=stranger))
    assert result.returncode == 255
    assert "Permission denied (publickey)" in result.stderr
    with pytest.raises(paramiko.AuthenticationException):
        sftp_client(ssh_server, key=stranger)
    transport = paramiko.Transport((ssh_server.host, ssh_server.port))
    try:
        transport.start_client(timeout=10)
        with pytest.raises(paramiko.BadAuthenticationType) as refused:
            transport.auth_password("root", "anything")
        assert refused.value.allowed_types == ["publickey"]
    finally:
        transport.close()


def test_sshd_listens_on_loopback_only(ssh_server):
    listening = subprocess.run(["ss", "-Hltn", f"sport = :{ssh_server.port}"],
                               capture_output=True, text=True, check=True).stdout  # fmt: skip
    addresses = [line.split()[3] for line in listening.splitlines()]
    assert addresses == [f"127.0.0.1:{ssh_server.port}"]


def test_client_refuses_the_server_under_a_different_host_key(ssh_server, tmp_path):
    impostor = make_key_pair(tmp_path / "impostor_host", "impostor")
    key_type, key_data = impostor.with_suffix(".pub").read_text().split()[:2]
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{ssh_server.port} {key_type} {key_data}\n")
    argv = ssh_server.ssh_argv("true")
    argv[argv.index(f"UserKnownHostsFile={ssh_server.known_hosts}")] = f"UserKnownHostsFile={wrong}"
    result = run_ssh(argv)
    assert result.returncode == 255
    assert "Host key verification failed" in result.stderr


def test_sftp_upload_and_download_round_trip(ssh_server, tmp_path):
    payload = os.urandom(MEGABYTE + 17)
    (tmp_path / "up.bin").write_bytes(payload)
    remote_dir = tmp_path / "remote"
    remote_dir.mkdir()
    with sftp_client(ssh_server) as client, client.open_sftp() as sftp:
        sftp.put(str(tmp_path / "up.bin"), str(remote_dir / "stored.bin"))
        assert sftp.listdir(str(remote_dir)) == ["stored.bin"]
        sftp.get(str(remote_dir / "stored.bin"), str(tmp_path / "down.bin"))
    assert (remote_dir / "stored.bin").read_bytes() == payload  # it really landed on disk
    assert (tmp_path / "down.bin").read_bytes() == payload


def test_kill_cuts_open_sessions_and_restart_serves_again(ssh_server, tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    client = sftp_client(ssh_server)
    sftp = client.open_sftp()
    try:
        sftp.stat(str(tmp_path / "f"))
        ssh_server.kill()
        with pytest.raises((OSError, EOFError, paramiko.SSHException)):
            sftp.stat(str(tmp_path / "f"))
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((ssh_server.host, ssh_server.port), timeout=5)
    finally:
        client.close()
        ssh_server.restart()
    result = run_ssh(ssh_server.ssh_argv("true"))  # same port, same host key, same client key
    assert result.returncode == 0, result.stderr


def test_stop_ends_open_sessions_too(ssh_server):
    client = sftp_client(ssh_server)
    try:
        sessions_before = ssh_server.pid
        ssh_server.stop()
        assert sessions_before is not None and ssh_server.pid is None
        with pytest.raises((OSError, EOFError, paramiko.SSHException)):
            client.open_sftp().listdir("/")
    finally:
        client.close()
        ssh_server.restart()


def test_a_broken_config_fails_loudly_with_sshds_words(tmp_path):
    server = SSHServer(tmp_path / "broken")
    server.config_path.write_text(server.config_path.read_text() + "NoSuchOption yes\n")
    with pytest.raises(RuntimeError, match="Bad configuration option: NoSuchOption"):
        server.start()


def test_a_port_in_use_fails_loudly_with_sshds_log(ssh_server, tmp_path):
    second = SSHServer(tmp_path / "second", port=ssh_server.port)
    with pytest.raises(RuntimeError, match="Address already in use"):
        second.start(timeout=10)


# -- duplicity to sftp:// -------------------------------------------------------------------


@pytest.fixture
def duplicity_env(tmp_path):
    """Symmetric passphrase in the environment, a gpg home of its own (its agent stopped at
    teardown) and no ssh agent of the host's root."""
    gnupg = tmp_path / "gnupg"
    gnupg.mkdir(mode=0o700)
    env = dict(os.environ, PASSPHRASE="fixture-test-passphrase", GNUPGHOME=str(gnupg))
    env.pop("SSH_AUTH_SOCK", None)
    yield env
    subprocess.run(["gpgconf", "--kill", "gpg-agent"], check=False, env=env, capture_output=True)


def duplicity(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run([DUPLICITY, *args], check=False, env=env, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=300)  # fmt: skip


JUNK_EXCLUDES = ["--exclude", "**/.cache", "--exclude", "**/.ipynb_checkpoints",
                 "--exclude", "**/.local/share/Trash"]  # fmt: skip


def test_duplicity_backs_up_to_sftp_and_restores_byte_for_byte(
    ssh_server, homes_root, tmp_path, duplicity_env
):
    home = make_homes(homes_root, {"ada": 2000}, files_per_home=300, seed=7)["ada"].path
    target = tmp_path / "target" / "ada"  # absent: duplicity creates it over sftp
    url = ssh_server.sftp_url(target)
    common = ["--ssh-options", ssh_server.ssh_options, "--archive-dir", str(tmp_path / "archive"),
              "--name", "ada", "--num-retries", "1"]  # fmt: skip

    full = duplicity(duplicity_env, "full", *JUNK_EXCLUDES, *common, str(home), url)
    assert full.returncode == 0, full.stderr[-3000:]
    stored = sorted(path.name for path in target.iterdir())
    assert any(name.startswith("duplicity-full.") and name.endswith(".difftar.gpg")
               for name in stored), stored  # fmt: skip
    assert "Accepted publickey for root" in ssh_server.log()

    restored = tmp_path / "restored-full"
    back = duplicity(duplicity_env, "restore", *common, url, str(restored))
    assert back.returncode == 0, back.stderr[-3000:]
    assert compare(snapshot(home, skip_junk=True), snapshot(restored)) == []

    mutation = mutate(home, 5, seed=1)
    incremental = duplicity(duplicity_env, "incremental", *JUNK_EXCLUDES, *common, str(home), url)
    assert incremental.returncode == 0, incremental.stderr[-3000:]
    restored_again = tmp_path / "restored-incremental"
    back = duplicity(duplicity_env, "restore", *common, url, str(restored_again))
    assert back.returncode == 0, back.stderr[-3000:]
    assert compare(snapshot(home, skip_junk=True), snapshot(restored_again)) == []
    assert (restored_again / mutation.added[-1]).exists()
    assert not (restored_again / mutation.deleted[0]).exists()


def test_duplicity_refuses_an_unknown_host_instead_of_prompting(
    ssh_server, homes_root, tmp_path, duplicity_env
):
    home = make_homes(homes_root, {"ada": 2000}, files_per_home=20, megabyte_files=0)["ada"].path
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    target = tmp_path / "target"
    result = duplicity(duplicity_env, "full", "--ssh-options",
                       f"-oIdentityFile={ssh_server.client_key} -oUserKnownHostsFile={empty}",
                       "--archive-dir", str(tmp_path / "archive"), "--num-retries", "1",
                       str(home), ssh_server.sftp_url(target))  # fmt: skip
    assert result.returncode == 50, result.stderr[-3000:]
    assert "authenticity of host" in result.stdout + result.stderr
    assert not target.exists()


# -- homes ----------------------------------------------------------------------------------


def test_homes_have_the_promised_owners_modes_symlink_and_junk(homes_root):
    homes = make_homes(homes_root, USERS, files_per_home=400, megabyte_files=1, seed=3)
    for name, uid in USERS.items():
        home = homes[name].path
        entries = snapshot(home)
        files = {path: entry for path, entry in entries.items() if stat.S_ISREG(entry.mode)}
        assert {(entry.uid, entry.gid) for entry in entries.values()} == {(uid, uid)}
        assert len(files) == 400 == homes[name].files
        assert stat.S_IMODE(entries["."].mode) == 0o750
        assert stat.S_IMODE(entries[".ssh"].mode) == 0o700
        assert stat.S_IMODE(entries[".ssh/authorized_keys"].mode) == 0o600
        assert stat.S_IMODE(entries["bin/run.sh"].mode) == 0o755
        assert os.access(home / "bin/run.sh", os.X_OK)
        assert stat.S_IMODE(entries["projects"].mode) == 0o755
        modes = {stat.S_IMODE(entry.mode) for entry in files.values()}
        assert {0o600, 0o644, 0o755} <= modes
        sizes = [entry.size for entry in files.values()]
        assert 0 in sizes and MEGABYTE in sizes and any(0 < size < 1024 for size in sizes)
        assert max(len(path.split("/")) for path in files) >= 5  # nested
        assert "notes/with spaces.txt" in files and "notes/données-été.csv" in files
        link = entries["notes/latest"]
        assert stat.S_ISLNK(link.mode) and link.content == "readme.md"
        assert (home / "notes/latest").read_bytes() == (home / "notes/readme.md").read_bytes()
        junk = [path for path in entries if is_junk(path)]
        assert {".cache", "projects/p0/.ipynb_checkpoints", ".local/share/Trash"} <= set(junk)
        assert not any(is_junk(path) for path in snapshot(home, skip_junk=True))
    assert len({homes[name].path.stat().st_uid for name in USERS}) == len(USERS)


def test_same_seed_same_homes_other_seed_other_content(tmp_path):
    first = make_homes(tmp_path / "a", {"ada": 2000}, files_per_home=100, seed=5)["ada"]
    again = make_homes(tmp_path / "b", {"ada": 2000}, files_per_home=100, seed=5)["ada"]
    other = make_homes(tmp_path / "c", {"ada": 2000}, files_per_home=100, seed=6)["ada"]
    assert compare(snapshot(first.path), snapshot(again.path)) == []
    assert compare(snapshot(first.path), snapshot(other.path)) != []


def test_compare_names_each_kind_of_difference(homes_root):
    home = make_homes(homes_root, {"ada": 2000}, files_per_home=30, megabyte_files=0)["ada"].path
    before = snapshot(home)
    (home / "notes/readme.md").chmod(0o600)
    os.chown(home / "private/diary.txt", 2001, 2000)
    (home / "notes/with spaces.txt").write_bytes(b"y" * 40)  # same size, other bytes
    (home / "notes/empty.txt").unlink()
    (home / "notes/new.txt").write_text("new")
    (home / "notes/new.txt").chmod(0o644)
    (home / "notes/latest").unlink()
    (home / "notes/latest").symlink_to("empty.txt")
    os.chown(home / "notes/latest", 2000, 2000, follow_symlinks=False)
    assert compare(before, snapshot(home)) == [
        "notes/empty.txt: missing",
        "notes/latest: symlink target",
        "notes/new.txt: unexpected (-rw-r--r-- 0:0 3 B)",
        "notes/readme.md: mode -rw-r--r-- -> -rw-------",
        "notes/with spaces.txt: content",
        "private/diary.txt: owner 2000:2000 -> 2001:2000",
    ]


def test_mutate_changes_exactly_what_it_reports(homes_root):
    home = make_homes(homes_root, {"ada": 2000}, files_per_home=300, seed=2)["ada"].path
    before = snapshot(home)
    mutation = mutate(home, 6, seed=9)
    after = snapshot(home)
    assert (len(mutation.changed), len(mutation.deleted)) == (6, 6)
    assert len(mutation.added) == 7  # the new directory and its 6 files
    differing = {line.split(": ")[0] for line in compare(before, after)}
    assert differing == set(mutation.changed) | set(mutation.added) | set(mutation.deleted)
    for path in mutation.changed:
        assert after[path].size != before[path].size and after[path].content != before[path].content
    for path in mutation.added:
        assert (after[path].uid, after[path].gid) == (2000, 2000)


def test_big_home_is_the_size_asked_for_and_incompressible(homes_root):
    home = big_home(homes_root, "whale", 16, uid=3000)
    entries = snapshot(home.path)
    data = sum(entry.size for path, entry in entries.items() if path.startswith("data/part-"))
    assert data == 16 * MEGABYTE
    assert {(entry.uid, entry.gid) for entry in entries.values()} == {(3000, 3000)}
    with open(home.path / "data/part-0.bin", "rb") as handle:
        sample = handle.read(MEGABYTE)
    assert len(zlib.compress(sample)) > 0.99 * len(sample)
