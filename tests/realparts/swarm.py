"""A real one-node Docker Swarm of the test's own, in a network namespace the test creates.

The suite's default engine (/var/run/docker.sock) is left alone: this is a second containerd and
dockerd, started by `nsenter --net` into a fresh network namespace and `unshare --mount` with
tmpfs over /run, /etc/docker and /var/lib, so nothing lands in the host's directories and every
mount they make dies with them. Its state, sockets and logs live in one directory of the test
run. The namespace has loopback and a veth pair whose two ends both stay inside (swarm wants an
advertise address): no route leads out of it. Talk to the engine with `env` (DOCKER_HOST), per
call, never globally. `stop` removes services and containers, leaves the swarm, stops both
daemons, deletes the namespace and the cgroups the containers had, and checks that nothing
is left (`leftovers`).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.realparts.hostcheck import mounts
from tests.realparts.waiting import wait_until

ADVERTISE = "10.213.0.1"
CGROUP_ROOT = Path("/sys/fs/cgroup")
DAEMONS = ("containerd", "dockerd", "runc", "docker-")

CONTAINERD_CONFIG = """\
version = 2
root = "{dir}/containerd/root"
state = "{dir}/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{dir}/containerd.sock"
[ttrpc]
  address = "{dir}/containerd-ttrpc.sock"
[debug]
  address = ""
"""

# Both daemons in one private mount namespace: started together by one shell, which on SIGTERM
# stops dockerd first (it still needs containerd to stop its containers), then containerd.
LAUNCHER = r"""
set -e
mount -t tmpfs -o mode=755 hsw-run /run
mount -t tmpfs -o mode=755 hsw-etc /etc/docker
mount -t tmpfs -o mode=755 hsw-lib /var/lib
mkdir -p /var/lib/docker
containerd --config "$DIR/containerd.toml" >>"$DIR/containerd.log" 2>&1 &
containerd=$!
for _ in $(seq 100); do [ -S "$DIR/containerd.sock" ] && break; sleep 0.1; done
DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 dockerd -H "unix://$DIR/docker.sock" \
    --data-root "$DIR/data" --exec-root "$DIR/exec" --pidfile "$DIR/docker.pid" \
    --config-file "$DIR/daemon.json" --containerd "$DIR/containerd.sock" \
    --containerd-namespace "$NAME" --containerd-plugins-namespace "$NAME-plugins" \
    --cgroup-parent "$NAME" >>"$DIR/dockerd.log" 2>&1 &
dockerd=$!
stop() {
    kill -TERM "$dockerd" 2>/dev/null || true
    wait "$dockerd" || true
    kill -TERM "$containerd" 2>/dev/null || true
    wait "$containerd" || true
    exit 0
}
trap stop TERM INT
wait
"""


class SwarmEngine:
    """A private dockerd (a swarm manager once `start` returns) in its own network namespace."""

    def __init__(self, directory: Path, name: str | None = None) -> None:
        self.dir = directory
        self.name = name or f"hsw{os.getpid()}"
        self.netns = self.name
        self.socket = directory / "docker.sock"
        self.launcher: subprocess.Popen | None = None
        self.mounts_before: set[str] = set()

    # --- talking to it ---

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket}"

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """An environment whose docker CLI and SDK talk to this engine."""
        env = dict(os.environ if base is None else base)
        env["DOCKER_HOST"] = self.docker_host
        return env

    def docker(self, *args: str, check: bool = True, timeout: float = 120,
               **kwargs) -> subprocess.CompletedProcess:  # fmt: skip
        return subprocess.run(["docker", *args], capture_output=True, text=True, check=check,
                              timeout=timeout, env=self.env(), **kwargs)  # fmt: skip

    def nsenter(self) -> list[str]:
        """The prefix that runs a command in the namespace's network (not `ip netns exec`:
        that remounts /sys, and a dockerd started so finds no cgroups)."""
        return ["nsenter", f"--net=/run/netns/{self.netns}"]

    def answers(self) -> bool:
        if not self.socket.exists():
            return False
        return self.docker("version", "--format", "{{.Server.Version}}",
                           check=False, timeout=10).returncode == 0  # fmt: skip

    # --- up ---

    def start(self, timeout: float = 60) -> "SwarmEngine":
        self.mounts_before = set(mounts())
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "containerd.toml").write_text(CONTAINERD_CONFIG.format(dir=self.dir))
        (self.dir / "daemon.json").write_text("{}\n")
        self._ip("netns", "add", self.netns)
        try:
            self._ip("-n", self.netns, "link", "set", "lo", "up")
            self._ip("-n", self.netns, "link", "add", "hs0", "type", "veth", "peer", "name", "hs1")
            self._ip("-n", self.netns, "addr", "add", f"{ADVERTISE}/24", "dev", "hs0")
            self._ip("-n", self.netns, "link", "set", "hs0", "up")
            self._ip("-n", self.netns, "link", "set", "hs1", "up")
            env = {**os.environ, "DIR": str(self.dir), "NAME": self.name}
            self.launcher = subprocess.Popen(
                [*self.nsenter(), "unshare", "--mount", "--propagation", "slave",
                 "sh", "-c", LAUNCHER],
                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=open(self.dir / "launcher.log", "ab"), start_new_session=True,
            )  # fmt: skip
            wait_until(lambda: self.launcher.poll() is not None or self.answers(), timeout,
                       lambda: f"the swarm's dockerd answering:\n{self.logs()}")  # fmt: skip
            if self.launcher.poll() is not None:
                raise RuntimeError(f"the swarm's daemons exited:\n{self.logs()}")
            self.docker("swarm", "init", "--advertise-addr", ADVERTISE,
                        "--listen-addr", f"{ADVERTISE}:2377")  # fmt: skip
        except BaseException:
            self.stop()
            raise
        return self

    def logs(self) -> str:
        parts = []
        for name in ("launcher.log", "containerd.log", "dockerd.log"):
            path = self.dir / name
            if path.exists():
                parts.append(f"--- {name}\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    # --- down ---

    def stop(self) -> None:
        """Everything `start` made, undone; raises (after undoing all it can) if anything is
        left over."""
        if self.launcher is not None and self.launcher.poll() is None:
            if self.answers():
                self.clear()
                self.docker("swarm", "leave", "--force", check=False)
            self.launcher.send_signal(signal.SIGTERM)
            try:
                self.launcher.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.launcher.pid, signal.SIGKILL)
                self.launcher.wait()
            self._kill_stragglers()
        self.launcher = None
        if self.netns in self._netns_list():
            self._ip("netns", "del", self.netns)
        self._remove_cgroups()
        shutil.rmtree(self.dir / "data", ignore_errors=True)
        shutil.rmtree(self.dir / "containerd", ignore_errors=True)
        shutil.rmtree(self.dir / "exec", ignore_errors=True)
        left = self.leftovers()
        if left:
            raise AssertionError("the swarm left: " + "; ".join(left))

    def clear(self) -> None:
        """Remove every service and container, killed at once (busybox's sleep as PID 1
        ignores SIGTERM: a plain stop would wait 10 s per task)."""
        services = self.docker("service", "ls", "-q", check=False).stdout.split()
        if services:
            self.docker("service", "rm", *services, check=False)
        running = self.docker("ps", "-q", check=False).stdout.split()
        if running:
            self.docker("kill", *running, check=False)
        wait_until(lambda: not self.docker("ps", "-q", check=False).stdout.split(), 30,
                   "the engine's containers to stop")  # fmt: skip
        containers = self.docker("ps", "-aq", check=False).stdout.split()
        if containers:
            self.docker("rm", "-f", *containers, check=False)

    def leftovers(self) -> list[str]:
        found = []
        if self.netns in self._netns_list():
            found.append(f"network namespace {self.netns}")
        for point in set(mounts()) - self.mounts_before:
            if point.startswith(str(self.dir)) or point.startswith(("/run/docker", "/run/netns/")):
                found.append(f"mount {point}")
        found += [f"cgroup {path}" for path in self._cgroups()]
        found += [f"process {pid} {argv}" for pid, argv in self._processes()]
        return found

    # --- helpers ---

    @staticmethod
    def _ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)

    @staticmethod
    def _netns_list() -> list[str]:
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        return [line.split()[0] for line in out.splitlines() if line.strip()]

    def _cgroups(self) -> list[Path]:
        """The --cgroup-parent directories in every hierarchy (cgroup v1 is global)."""
        found = []
        for hierarchy in CGROUP_ROOT.iterdir() if CGROUP_ROOT.is_dir() else ():
            path = hierarchy / self.name
            if path.is_dir():
                found.append(path)
        return found

    def _remove_cgroups(self) -> None:
        for path in self._cgroups():
            # children first (a container's cgroup below the parent one)
            for child in sorted((p for p in path.rglob("*") if p.is_dir()),
                                key=lambda p: len(p.parts), reverse=True):  # fmt: skip
                try:
                    child.rmdir()
                except OSError:
                    pass
            try:
                path.rmdir()
            except OSError:
                pass

    def _processes(self) -> list[tuple[int, str]]:
        """The engine's daemons and shims still running (their command lines name its
        directory or containerd namespace)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            daemon = os.path.basename(argv.split(" ", 1)[0]).startswith(DAEMONS)
            if daemon and (str(self.dir) in argv or f"namespace {self.name}" in argv):
                found.append((int(entry.name), argv.strip()))
        return found

    def _kill_stragglers(self) -> None:
        deadline = time.monotonic() + 10
        while self._processes() and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid, _ in self._processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
