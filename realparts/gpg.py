"""A throwaway GnuPG home with a freshly generated key pair (real gpg), for the backup tests.

Keys are ed25519 (signing) + cv25519 (encryption): generated in well under a second, no entropy
wait. The key's passphrase (may be empty) goes to gpg through a 0600 file, never argv.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

GPG = "/usr/bin/gpg"
GPGCONF = "/usr/bin/gpgconf"


@dataclass(frozen=True)
class GpgKey:
    home: Path  # GNUPGHOME holding the public and secret key
    fingerprint: str
    passphrase: str  # "" for a key without one

    def export_public(self, other_home: Path) -> Path:
        """A second GnuPG home holding only the public key (what a backup host should have)."""
        other_home.mkdir(mode=0o700, parents=True, exist_ok=True)
        public = _gpg(self.home, "--armor", "--export", self.fingerprint).stdout
        _gpg(other_home, "--import", input=public)
        # Ultimate trust, as on the host that made the key; duplicity passes --always-trust to
        # gpg anyway, so this only silences gpg's warnings.
        _gpg(other_home, "--import-ownertrust", input=f"{self.fingerprint}:6:\n".encode())
        return other_home


def make_key(home: Path, passphrase: str = "", uid: str = "hub-backup test <backup@test>"):
    """Generate a key pair in a new GnuPG home `home` (0700)."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    pass_file = home / "key-passphrase"
    fd = os.open(pass_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(passphrase)
    _gpg(home, "--pinentry-mode", "loopback", "--passphrase-file", str(pass_file),
         "--quick-generate-key", uid, "future-default", "default", "never")  # fmt: skip
    pass_file.unlink()
    listing = _gpg(home, "--with-colons", "--list-secret-keys").stdout.decode()
    fingerprints = [line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")]
    if not fingerprints:
        raise AssertionError(f"gpg generated no key in {home}:\n{listing}")
    return GpgKey(home, fingerprints[0], passphrase)


def stop_agent(home: Path) -> None:
    subprocess.run([GPGCONF, "--kill", "gpg-agent"], env=_env(home), capture_output=True,
                   stdin=subprocess.DEVNULL, timeout=30)  # fmt: skip


def _running_agents() -> list[list[str]]:
    """The argv of every running gpg-agent process."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [arg.decode(errors="replace") for arg in args if arg]
        if words and os.path.basename(words[0]) == "gpg-agent":
            found.append(words)
    return found


def agent_homes_below(root: Path) -> list[Path]:
    """The GnuPG homes below `root` that a running gpg-agent serves (its --homedir)."""
    return [home for words in _running_agents() if "--homedir" in words[:-1]
            if (home := Path(words[words.index("--homedir") + 1])).is_relative_to(root)]


def agents_for(home: Path) -> list[str]:
    """Command lines of running gpg-agent processes serving `home`."""
    return [" ".join(words) for words in _running_agents() if str(home) in words]


def _gpg(home: Path, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([GPG, "--batch", "--no-tty", *args], env=_env(home), input=input,
                            capture_output=True, timeout=60,
                            stdin=None if input is not None else subprocess.DEVNULL)  # fmt: skip
    if result.returncode != 0:
        raise AssertionError(f"gpg {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stderr.decode(errors='replace')}")  # fmt: skip
    return result


def _env(home: Path) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "GNUPGHOME": str(home)}
