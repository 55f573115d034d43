"""A real OpenSSH sshd on 127.0.0.1 for the backup tests' `sftp://` target.

Everything it uses lives in one scratch directory: its host key, its config, its pid file,
the authorized key and the client's key pair and known_hosts. It logs in as root by key only
(no account is created on the host), with the in-process sftp server. The only thing it needs
outside the scratch directory is Debian's compiled-in privilege-separation directory /run/sshd.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from realparts.net import free_port
from realparts.process import ManagedProcess
from realparts.proctree import descendants

SSHD = "/usr/sbin/sshd"  # sshd refuses to start without an absolute path (it re-executes itself)
PRIVSEP_DIR = Path("/run/sshd")


def make_key_pair(path: Path, comment: str) -> Path:
    """An ed25519 key pair without passphrase at `path` and `path`.pub; returns `path`."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, capture_output=True, stdin=subprocess.DEVNULL)  # fmt: skip
    return path


class SSHServer:
    """An sshd listening on 127.0.0.1:`port`, accepting exactly one throwaway client key for root.

    `client_key` (private key), `known_hosts` (the server's host key for this port) and
    `ssh_options` / `ssh_argv()` are what a client needs to connect with strict host key
    checking. `stop()`, `kill()` and `restart()` keep the port, the host key and the client key,
    so a client's known_hosts stays valid across them.
    """

    user = "root"
    host = "127.0.0.1"

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.log_path = workdir / "sshd.log"
        self.config_path = workdir / "sshd_config"
        self.pid_path = workdir / "sshd.pid"
        self.host_key = workdir / "ssh_host_ed25519_key"
        self.client_key = workdir / "client_ed25519"
        self.authorized_keys = workdir / "authorized_keys"
        self.known_hosts = workdir / "known_hosts"
        self._process: ManagedProcess | None = None
        self._prepare()

    def _prepare(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o700)
        if not self.host_key.exists():
            make_key_pair(self.host_key, "hub-sidecars-test-host")
        if not self.client_key.exists():
            make_key_pair(self.client_key, "hub-sidecars-test-client")
        self.authorized_keys.write_text(self.client_key.with_suffix(".pub").read_text())
        self.authorized_keys.chmod(0o600)
        key_type, key_data = self.host_key.with_suffix(".pub").read_text().split()[:2]
        # A non-default port is looked up as "[host]:port" by both OpenSSH and paramiko.
        self.known_hosts.write_text(f"[{self.host}]:{self.port} {key_type} {key_data}\n")
        self.config_path.write_text(self._config())
        # Debian's sshd insists on this root-owned directory; the init script would create it.
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)

    def _config(self) -> str:
        # StrictModes would refuse an authorized_keys file below the world-writable /tmp.
        # UsePAM no: Debian's PAM stack (pam_loginuid, motd) is not ours to depend on.
        return "\n".join([
            f"Port {self.port}",
            f"ListenAddress {self.host}",
            f"HostKey {self.host_key}",
            f"PidFile {self.pid_path}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            "AllowUsers root",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "HostbasedAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "Subsystem sftp internal-sftp",
            "AllowAgentForwarding no",
            "AllowTcpForwarding no",
            "X11Forwarding no",
            "PermitTunnel no",
            "PrintMotd no",
            "UseDNS no",
            "MaxStartups 100:30:200",
            "LogLevel VERBOSE",
            "",
        ])  # fmt: skip

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 20) -> SSHServer:
        """Check the config with `sshd -t`, start `sshd -D -e`, wait for its SSH banner.
        Raises RuntimeError with sshd's own output when either step fails."""
        if not os.path.exists(SSHD):
            raise RuntimeError(f"{SSHD} is missing: install Debian's openssh-server")
        check = subprocess.run([SSHD, "-t", "-f", str(self.config_path)], check=False,
                               capture_output=True, text=True,
                               stdin=subprocess.DEVNULL)  # fmt: skip
        if check.returncode != 0:
            raise RuntimeError(f"sshd -t refused {self.config_path}:\n{check.stderr}")
        self._process = ManagedProcess([SSHD, "-D", "-e", "-f", str(self.config_path)],
                                       self.log_path)  # fmt: skip
        self._process.start(self._answers, timeout, f"sshd on {self.host}:{self.port}")
        return self

    def _answers(self) -> bool:
        # A banner alone could come from another server already on the port: only our sshd's
        # own "listening" line says that the bind was ours.
        if f"Server listening on {self.host} port {self.port}." not in self.log():
            return False
        with socket.create_connection((self.host, self.port), timeout=2) as connection:
            return connection.recv(64).startswith(b"SSH-2.0-")

    @property
    def pid(self) -> int | None:
        """The listening sshd's pid, None when it is not running."""
        process = self._process.process if self._process else None
        return process.pid if process is not None and process.poll() is None else None

    def stop(self) -> None:
        """SIGTERM the listener, then end the connections it had started (they run in sessions
        of their own, so they outlive the listener otherwise)."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the listener and every open connection at once: the target becomes
        unreachable in the middle of whatever a client was doing."""
        self._end(signal.SIGKILL)

    def restart(self, timeout: float = 20) -> SSHServer:
        """Start again on the same port with the same keys (after stop() or kill())."""
        self._end(signal.SIGTERM)
        return self.start(timeout)

    def _end(self, signum: int) -> None:
        if self._process is None:
            return
        pid = self.pid
        if pid is not None:
            for child in descendants(pid):
                _signal(child, signal.SIGKILL if signum == signal.SIGKILL else signum)
            if signum == signal.SIGKILL:
                with contextlib.suppress(ProcessLookupError):  # sshd may have died already
                    os.killpg(pid, signal.SIGKILL)
        self._process.stop(timeout=10)
        self._process = None
        self._wait_port_closed()

    def _wait_port_closed(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
            except OSError:
                return
            time.sleep(0.05)
        raise RuntimeError(f"port {self.port} still answers after sshd was stopped")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- what a client needs ---------------------------------------------------------------

    def sftp_url(self, path: str | Path) -> str:
        """duplicity's URL for the absolute `path` on this server. duplicity drops the first
        slash after the host (the rest is relative to the login directory), hence `//`."""
        absolute = str(path)
        if not absolute.startswith("/"):
            raise ValueError(f"sftp_url wants an absolute path, got {absolute!r}")
        return f"sftp://{self.user}@{self.host}:{self.port}/{absolute}"

    @property
    def ssh_options(self) -> str:
        """The `--ssh-options` value for duplicity: its paramiko backend (sftp://) reads the
        key and the known_hosts file from these two options; the pexpect backend passes all
        of them to ssh/sftp."""
        return (f"-oIdentityFile={self.client_key} -oUserKnownHostsFile={self.known_hosts} "
                "-oStrictHostKeyChecking=yes -oIdentitiesOnly=yes")  # fmt: skip

    def ssh_argv(self, *remote: str, key: Path | None = None) -> list[str]:
        """argv of OpenSSH's client running `remote` on this server, non-interactive, with
        strict host key checking and no config or agent of the host's root involved."""
        return ["ssh", "-F", "/dev/null", "-p", str(self.port),
                "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
                "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "GlobalKnownHostsFile=/dev/null",
                "-i", str(key or self.client_key), f"{self.user}@{self.host}", *remote]  # fmt: skip


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
