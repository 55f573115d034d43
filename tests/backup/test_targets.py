"""hub-backup's jobs beyond the plain file:// target: an sftp:// target on a real OpenSSH
server (its host key checked), encryption to a GPG key (the backup host holds only the public
key; a restore uses the secret one), the single layout, and a restore as of an earlier time."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime
from pathlib import Path

from backup.build import build_jobs
from backup.settings import BackupSettings
from realparts.gpg import make_key, stop_agent
from realparts.homes import compare, is_junk, make_homes, mutate, snapshot

PASSPHRASE = "correct horse battery staple 0123"


def passphrase_file(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


def base_settings(work: Path, homes: Path, **changes) -> BackupSettings:
    values = dict(
        source=str(homes), target=f"file://{work}/backups/{{user}}",
        passphrase_file=str(passphrase_file(work / "backup.passphrase", PASSPHRASE)),
        archive_dir=str(work / "cache"), state_dir=str(work / "state"), parallelism=2,
    )  # fmt: skip
    return BackupSettings(**{**values, **changes})


def outcomes(report) -> dict[str, tuple[bool, str]]:
    return {o.chain: (o.ok, o.action) for o in report.outcomes}


def test_sftp_target_full_incremental_and_restore(tmp_path, homes_root, ssh_server):
    made = make_homes(homes_root, {"ada": 3101, "bob": 3102}, files_per_home=40,
                      megabyte_files=1)  # fmt: skip
    remote = tmp_path / "on-the-server"
    settings = base_settings(
        tmp_path, homes_root, target=ssh_server.sftp_url(remote) + "/{user}",
        ssh_key_file=str(ssh_server.client_key), ssh_known_hosts=str(ssh_server.known_hosts),
        retries=0, retry_delay=1.0,
    )  # fmt: skip
    jobs = build_jobs(settings)
    first = jobs.run()
    assert outcomes(first) == {"home-ada": (True, "full"), "home-bob": (True, "full")}, first.outcomes
    assert sorted(p.name for p in remote.iterdir()) == ["ada", "bob"]
    assert all(name.endswith(".gpg") for name in (p.name for p in (remote / "ada").iterdir()))

    mutate(made["ada"].path, 5, seed=3)
    assert outcomes(jobs.run(["ada"])) == {"home-ada": (True, "incremental")}
    restored = tmp_path / "restored"
    jobs.restore("ada", None, time=None, to=str(restored), in_place=False)
    assert compare(snapshot(made["ada"].path, skip_junk=True), snapshot(restored)) == []

    # A server whose host key is not the known one is refused: one line, nothing written.
    stranger = tmp_path / "stranger_known_hosts"
    stranger.write_text(ssh_server.known_hosts.read_text().replace(
        ssh_server.known_hosts.read_text().split()[2], "AAAAC3NzaC1lZDI1NTE5AAAAIB" + "x" * 43))
    before = sorted(p.name for p in (remote / "bob").iterdir())
    mutate(made["bob"].path, 3, seed=4)
    report = build_jobs(dataclasses.replace(settings, ssh_known_hosts=str(stranger))).run(["bob"])
    [outcome] = report.outcomes
    assert not outcome.ok and "\n" not in outcome.detail
    assert sorted(p.name for p in (remote / "bob").iterdir()) == before


def test_encrypted_to_a_key_the_host_holds_only_the_public_half_of(tmp_path, homes_root):
    key = make_key(tmp_path / "gpg-secret", passphrase="key passphrase 0987")
    public_home = key.export_public(tmp_path / "gpg-public")
    made = make_homes(homes_root, {"ada": 3101}, files_per_home=40, megabyte_files=0)
    on_host = base_settings(tmp_path, homes_root, encrypt_key=key.fingerprint,
                            gnupg_home=str(public_home))  # fmt: skip
    on_host = dataclasses.replace(on_host, passphrase_file=str(tmp_path / "none-on-the-host"))
    try:
        jobs = build_jobs(on_host)
        assert outcomes(jobs.run()) == {"home-ada": (True, "full")}
        mutate(made["ada"].path, 4, seed=5)
        assert outcomes(jobs.run()) == {"home-ada": (True, "incremental")}

        # the restore, where the secret key and its passphrase are
        restorer = build_jobs(dataclasses.replace(
            on_host, gnupg_home=str(key.home),
            passphrase_file=str(passphrase_file(tmp_path / "key.passphrase", key.passphrase))))
        restored = tmp_path / "restored"
        restorer.restore("ada", None, time=None, to=str(restored), in_place=False)
        assert compare(snapshot(made["ada"].path, skip_junk=True), snapshot(restored)) == []
    finally:
        stop_agent(public_home)
        stop_agent(key.home)


def test_single_layout_one_chain_for_all_homes_and_per_user_restores(tmp_path, homes_root):
    made = make_homes(homes_root, {"ada": 3101, "bob": 3102}, files_per_home=30,
                      megabyte_files=0)  # fmt: skip
    settings = base_settings(tmp_path, homes_root, layout="single",
                             target=f"file://{tmp_path}/backups/all")  # fmt: skip
    jobs = build_jobs(settings)
    assert outcomes(jobs.run()) == {"all-homes": (True, "full")}
    [row] = jobs.status()
    assert row["chain"] == "all-homes" and not row["stale"]

    bob = tmp_path / "bob-restored"
    jobs.restore("bob", None, time=None, to=str(bob), in_place=False)
    assert compare(snapshot(made["bob"].path, skip_junk=True), snapshot(bob)) == []
    one = sorted(p for p in made["ada"].path.rglob("*.txt")
                 if not is_junk(str(p.relative_to(made["ada"].path))))[0]  # fmt: skip
    relative = str(one.relative_to(made["ada"].path))
    staged = tmp_path / "ada-one"
    jobs.restore("ada", relative, time=None, to=str(staged), in_place=False)
    assert (staged / one.name).read_bytes() == one.read_bytes()


def test_restore_as_of_an_earlier_time(tmp_path, homes_root):
    made = make_homes(homes_root, {"ada": 3101}, files_per_home=20, megabyte_files=0)
    victim = made["ada"].path / "notes" / "readme.md"
    victim.parent.mkdir(exist_ok=True)
    victim.write_text("the first version\n")
    jobs = build_jobs(base_settings(tmp_path, homes_root))
    jobs.run()
    time.sleep(1.5)
    between = datetime.now(UTC).isoformat(timespec="seconds")
    time.sleep(1.5)
    victim.write_text("the second version\n")
    assert outcomes(jobs.run()) == {"home-ada": (True, "incremental")}

    earlier, latest = tmp_path / "earlier", tmp_path / "latest"
    jobs.restore("ada", "notes/readme.md", time=between, to=str(earlier), in_place=False)
    jobs.restore("ada", "notes/readme.md", time=None, to=str(latest), in_place=False)
    assert (earlier / "readme.md").read_text() == "the first version\n"
    assert (latest / "readme.md").read_text() == "the second version\n"
