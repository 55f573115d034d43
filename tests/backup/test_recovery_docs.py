"""docs/backup.md's "Recovery without hub-backup", run as written, with real duplicity and gpg.

The shell blocks are read from the docs by their markers (`<!-- recovery: passphrase -->`,
`<!-- recovery: key -->`), their first lines filled in as an admin would, and run with bash in
a scratch directory, against backups hub-backup made; hub-backup takes no part in the restore.
So the docs and what works cannot drift apart.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from backup.build import build_jobs
from backup.settings import BackupSettings
from realparts.gpg import make_key, stop_agent
from realparts.homes import MEGABYTE, compare, make_homes, mutate, snapshot

DOCS = Path(__file__).resolve().parents[2] / "docs" / "backup.md"
BIN = Path(sys.executable).parent
HUB_BACKUP = BIN / "hub-backup"
# what hub-backup reads is the file's content without the whitespace around it
PASSPHRASE_FILE_TEXT = "  \t inner spaces count, 0123456789 \t \n\n"
KEY_PASSPHRASE_FILE_TEXT = " key passphrase with spaces 42\n"
USERS = {"alice": 3801, "a b": 3802}


def recipe(mode: str) -> str:
    """The fenced sh block right after the marker of `mode` in docs/backup.md."""
    text = DOCS.read_text()
    marker = f"<!-- recovery: {mode} -->"
    assert text.count(marker) == 1, f"{marker} not once in {DOCS}"
    match = re.match(r"\s*```sh\n(.*?)\n```", text.split(marker, 1)[1], re.S)
    assert match, f"no ```sh block right after {marker}"
    return match[1]


def filled(block: str, **values: str) -> str:
    """The block with each `NAME=...` line of the first lines given its value."""
    for name, value in values.items():
        line = re.compile(rf"^{name}=.*$", re.M)
        assert len(line.findall(block)) == 1, f"the recipe has no single {name}= line"
        block = line.sub(lambda _, name=name, value=value: f"{name}={shlex.quote(value)}", block)
    return block


def run_recipe(block: str, work: Path) -> subprocess.CompletedProcess:
    # mktemp's directory as on an admin's shell: short (gpg-agent's socket path in the
    # GnuPG home must stay under 108 bytes; pytest's tmp_path is too long for that)
    scratch = Path(tempfile.mkdtemp(prefix="rcv-", dir="/tmp"))
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "LC_ALL": "C", "HOME": str(work),
           "TMPDIR": str(scratch)}  # fmt: skip
    try:
        return subprocess.run(["bash", "-euo", "pipefail", "-c", block], env=env, cwd=work,
                              capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    finally:
        for gnupg in scratch.glob("*/gnupg"):
            stop_agent(gnupg)
        shutil.rmtree(scratch, ignore_errors=True)


def secret_file(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


@dataclasses.dataclass
class Backed:
    work: Path
    settings: BackupSettings
    mode: str
    layout: str
    credentials: dict  # the recipe's values for the secrets
    at_full: dict  # user -> snapshot of the home when the full ran

    def full_time(self, user: str) -> str:
        """duplicity's time of the user's full, read from its manifest's name on the target."""
        target = Path(self.target(user).removeprefix("file://").replace("%20", " "))
        [manifest] = target.glob("duplicity-full.*.manifest.gpg")
        return manifest.name.split(".")[1]

    def target(self, user: str) -> str:
        """As the docs say: {user} replaced by the URL-quoted name; single: as it is."""
        if self.layout == "single":
            return self.settings.target
        return self.settings.target.replace("{user}", quote(user, safe=""))

    def path(self, user: str, relative: str = "") -> str:
        if self.layout == "single":
            return "/".join(part for part in (user, relative) if part)
        return relative

    def restore(self, user: str, into: Path, relative: str = "", moment: str = ""):
        block = filled(recipe(self.mode), target=self.target(user), path=self.path(user, relative),
                       time=moment, into=str(into), **self.credentials)  # fmt: skip
        return run_recipe(block, self.work)


@pytest.fixture(params=[("passphrase", "per-user"), ("passphrase", "single"),
                        ("key", "per-user"), ("key", "single")],
                ids=lambda p: "-".join(p))  # fmt: skip
def backed_up(request, tmp_path) -> Backed:
    mode, layout = request.param
    homes = tmp_path / "homes"
    made = make_homes(homes, USERS, files_per_home=40, megabyte_files=1)
    for home in made.values():  # what a restore must bring back too
        os.mkfifo(home.path / "pipe")
        (home.path / "empty-dir").mkdir()
        for name in ("pipe", "empty-dir"):
            os.chown(home.path / name, home.uid, home.gid)
    target = f"file://{tmp_path}/backups/" + ("{user}" if layout == "per-user" else "all")
    settings = BackupSettings(
        source=str(homes), target=target, layout=layout,
        passphrase_file=str(secret_file(tmp_path / "backup.passphrase", PASSPHRASE_FILE_TEXT)),
        archive_dir=str(tmp_path / "cache"), state_dir=str(tmp_path / "state"),
        parallelism=2, retries=0, retry_delay=1.0, skip_unchanged=False,
    )  # fmt: skip
    credentials = {"passphrase_file": settings.passphrase_file}
    agents = []
    if mode == "key":
        key = make_key(tmp_path / "gpg-secret", passphrase=KEY_PASSPHRASE_FILE_TEXT.strip())
        public = key.export_public(tmp_path / "gpg-public")
        agents += [key.home, public]
        settings = dataclasses.replace(
            settings, encrypt_key=key.fingerprint, gnupg_home=str(public),
            passphrase_file=str(tmp_path / "none-on-the-host"))  # fmt: skip
        exported = tmp_path / "backup-secret-key.asc"
        exported.write_bytes(subprocess.run(
            ["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase",
             key.passphrase, "--armor", "--export-secret-keys", key.fingerprint],
            env={"GNUPGHOME": str(key.home), "PATH": "/usr/bin:/bin"}, capture_output=True,
            check=True).stdout)  # fmt: skip
        credentials = {"secret_key": str(exported), "key_passphrase_file": str(secret_file(
            tmp_path / "backup-key.passphrase", KEY_PASSPHRASE_FILE_TEXT))}  # fmt: skip
    try:
        jobs = build_jobs(settings)
        report = jobs.run()
        assert report.exit_code == 0, report.outcomes
        at_full = {user: snapshot(homes / user, skip_junk=True) for user in USERS}
        time.sleep(1.1)  # the incremental's set gets a later second
        for home in made.values():
            mutate(home.path, 4, seed=7)
        report = jobs.run()
        assert report.exit_code == 0 and {o.action for o in report.outcomes} == {"incremental"}
    finally:
        for home in agents:
            stop_agent(home)
    return Backed(tmp_path, settings, mode, layout, credentials, at_full)


def test_the_documented_recovery_restores_byte_for_byte(backed_up):
    homes = Path(backed_up.settings.source)
    for number, user in enumerate(USERS):
        into = backed_up.work / f"restored-{number}"
        done = backed_up.restore(user, into)
        assert done.returncode == 0, (done.stdout, done.stderr)
        assert compare(snapshot(homes / user, skip_junk=True), snapshot(into)) == [], user
    # one file, and the home as of the full: the time read from the manifest's name
    one = backed_up.work / "one"
    done = backed_up.restore("alice", one, "notes/readme.md")
    assert done.returncode == 0, done.stderr
    assert one.read_bytes() == (homes / "alice/notes/readme.md").read_bytes()
    earlier = backed_up.work / "earlier"
    done = backed_up.restore("a b", earlier, moment=backed_up.full_time("a b"))
    assert done.returncode == 0, done.stderr
    assert compare(backed_up.at_full["a b"], snapshot(earlier)) == []
    assert compare(backed_up.at_full["a b"], snapshot(homes / "a b", skip_junk=True)) != []


def posix_acl(user_id: int) -> bytes:
    """system.posix_acl_access granting `user_id` read (the kernel's binary form)."""
    entries = [(0x01, 6, 0xFFFFFFFF), (0x02, 4, user_id), (0x04, 4, 0xFFFFFFFF),
               (0x10, 4, 0xFFFFFFFF), (0x20, 4, 0xFFFFFFFF)]  # fmt: skip
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *entry) for entry in entries)


def test_what_a_restore_does_not_bring_back_is_as_documented(tmp_path):
    """Each loss the docs list, seen with a real restore through the documented recipe."""
    homes = tmp_path / "homes"
    made = make_homes(homes, {"alice": 3811}, files_per_home=20, megabyte_files=0)
    home = made["alice"].path
    data = home / "data.txt"
    data.write_text("with an xattr and an ACL\n")
    os.setxattr(data, "user.note", b"kept?")
    os.setxattr(data, "system.posix_acl_access", posix_acl(4242))
    os.link(data, home / "hard-link.txt")
    with open(home / "sparse.img", "wb") as handle:
        handle.truncate(50 * MEGABYTE)
        handle.seek(4096)
        handle.write(b"data")
    os.symlink("data.txt", home / "link")
    os.utime(home / "link", (1_000_000_000, 1_000_000_000), follow_symlinks=False)
    os.utime(data, (1_100_000_000, 1_100_000_000))
    (home / "empty-dir").mkdir()
    os.utime(home / "empty-dir", (1_200_000_000, 1_200_000_000))
    settings = BackupSettings(
        source=str(homes), target=f"file://{tmp_path}/backups/{{user}}",
        passphrase_file=str(secret_file(tmp_path / "backup.passphrase", PASSPHRASE_FILE_TEXT)),
        archive_dir=str(tmp_path / "cache"), state_dir=str(tmp_path / "state"), retries=0,
        retry_delay=1.0,
    )  # fmt: skip
    assert build_jobs(settings).run().exit_code == 0
    into = tmp_path / "restored"
    block = filled(recipe("passphrase"), target=f"file://{tmp_path}/backups/alice", path="",
                   time="", into=str(into), passphrase_file=settings.passphrase_file)  # fmt: skip
    done = run_recipe(block, tmp_path)
    assert done.returncode == 0, done.stderr
    back = into / "data.txt"
    assert back.read_text() == "with an xattr and an ACL\n"
    assert os.listxattr(back) == []  # neither the user xattr nor the ACL
    assert os.stat(back).st_mtime == 1_100_000_000
    assert os.stat(into / "empty-dir").st_mtime == 1_200_000_000
    assert os.stat(into / "hard-link.txt").st_ino != os.stat(back).st_ino
    sparse = os.stat(into / "sparse.img")
    assert sparse.st_size == 50 * MEGABYTE and sparse.st_blocks * 512 >= 50 * MEGABYTE
    assert os.lstat(home / "sparse.img").st_blocks * 512 < MEGABYTE
    assert os.readlink(into / "link") == "data.txt"
    assert os.lstat(into / "link").st_mtime > time.time() - 600


def test_a_half_written_set_is_skipped_as_documented(tmp_path):
    """A run killed mid-way leaves volumes without a manifest: the recipe's latest restore
    fails, and the time of the newest manifest restores the last complete backup."""
    homes = tmp_path / "homes"
    made = make_homes(homes, {"alice": 3821}, files_per_home=20, megabyte_files=0)
    settings = BackupSettings(
        source=str(homes), target=f"file://{tmp_path}/backups/{{user}}",
        passphrase_file=str(secret_file(tmp_path / "backup.passphrase", PASSPHRASE_FILE_TEXT)),
        archive_dir=str(tmp_path / "cache"), state_dir=str(tmp_path / "state"), retries=0,
        retry_delay=1.0, volsize=2, skip_unchanged=False,
    )  # fmt: skip
    assert build_jobs(settings).run().exit_code == 0
    complete = snapshot(made["alice"].path, skip_junk=True)
    time.sleep(1.1)
    with open(made["alice"].path / "big.bin", "wb") as handle:
        handle.write(os.urandom(30 * MEGABYTE))
    config = tmp_path / "backup.toml"
    config.write_text("".join(f"{key} = {value!r}\n".replace("'", '"') for key, value in (
        ("source", settings.source), ("target", settings.target),
        ("passphrase_file", settings.passphrase_file), ("archive_dir", settings.archive_dir),
        ("state_dir", settings.state_dir), ("volsize", 2))))  # fmt: skip
    target = tmp_path / "backups" / "alice"
    # an incremental, killed with its children once its third volume is written
    run = subprocess.Popen([str(HUB_BACKUP), "run", "--config", str(config)],
                           start_new_session=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not any("vol3" in p.name for p in target.iterdir()):
            assert run.poll() is None, f"the run ended first: {run.stderr.read()}"
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    manifests = sorted(target.glob("duplicity-*.manifest.gpg"))
    assert len(manifests) == 1  # the second full's volumes have none
    newest = manifests[-1].name.split(".")[-3]
    for moment, works in (("", False), (newest, True)):
        into = tmp_path / f"restored-{bool(moment)}"
        block = filled(recipe("passphrase"), target=f"file://{target}", path="", time=moment,
                       into=str(into), passphrase_file=settings.passphrase_file)  # fmt: skip
        done = run_recipe(block, tmp_path)
        if works:
            assert done.returncode == 0, done.stderr[-500:]
            assert compare(complete, snapshot(into)) == []
        else:
            assert done.returncode == 30, (done.returncode, done.stderr[-500:])
            assert "No remote manifest name" in done.stderr
            assert "1 incomplete backup set(s)" in done.stdout
