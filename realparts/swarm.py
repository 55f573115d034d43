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

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from realparts.hostcheck import mounts
from realparts.hub import HubStarter, RealHub
from realparts.net import free_port
from realparts.waiting import wait_until

REPO = Path(__file__).resolve().parents[1]
ADVERTISE = "10.213.0.1"
CGROUP_ROOT = Path("/sys/fs/cgroup")
NETNS_DIR = Path("/run/netns")
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

    def start(self, timeout: float = 60) -> SwarmEngine:
        self.mounts_before = set(mounts())
        self.netns_dir_before = (NETNS_DIR.is_dir(), str(NETNS_DIR) in self.mounts_before)
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
        self._undo_netns_dir()
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
        # Its daemons mount in a mount namespace of their own: only the namespace's file and
        # the engine's directory are its in the host's (the default engine's /run/docker/...
        # mounts come and go with other tests' containers).
        for point in set(mounts()) - self.mounts_before:
            if point.startswith(str(self.dir)) or point in (f"/run/netns/{self.netns}",
                                                             str(NETNS_DIR)):
                found.append(f"mount {point}")
        found += [f"cgroup {path}" for path in self._cgroups()]
        found += [f"process {pid} {argv}" for pid, argv in self._processes()]
        return found

    def _undo_netns_dir(self) -> None:
        """The first `ip netns add` of a host makes /run/netns (a directory bound onto itself):
        gone again once the last namespace is, when it was not there before."""
        existed, was_mounted = getattr(self, "netns_dir_before", (True, True))
        if not NETNS_DIR.is_dir() or any(NETNS_DIR.iterdir()):
            return  # another namespace lives there
        if not was_mounted and str(NETNS_DIR) in mounts():
            subprocess.run(["umount", str(NETNS_DIR)], check=False, capture_output=True)
        if not existed and str(NETNS_DIR) not in mounts():
            NETNS_DIR.rmdir()

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
                raw = (entry / "cmdline").read_bytes()
                argv = raw.replace(b"\0", b" ").decode(errors="replace")
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


# --- reaching the namespace's loopback from the test's -----------------------------------------

CLONE_NEWNET = 0x40000000


def socket_in_netns(netns: str) -> socket.socket:
    """A TCP socket created inside `netns`: a socket belongs to the network namespace of the
    thread that creates it, so a short-lived thread enters the namespace (setns changes the
    calling thread only) and makes it; the test's own threads never leave theirs."""
    made: list = []

    def make() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            with open(f"/run/netns/{netns}") as handle:
                if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns")
            made.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        except BaseException as exc:  # handed to the caller
            made.append(exc)

    thread = threading.Thread(target=make)
    thread.start()
    thread.join()
    if isinstance(made[0], BaseException):
        raise made[0]
    return made[0]


class Forwarder:
    """Listens on the test's 127.0.0.1 and passes each connection to 127.0.0.1:`port` inside
    the namespace (loopback to loopback: nothing leaves either namespace). The test and
    hub-culler reach a hub in the namespace through it."""

    def __init__(self, netns: str, port: int) -> None:
        self.netns, self.target = netns, port
        self.listener = socket.create_server(("127.0.0.1", free_port()))
        self.port = self.listener.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket_in_netns(self.netns)
        try:
            upstream.connect(("127.0.0.1", self.target))
        except OSError:
            upstream.close()
            client.close()
            return
        threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()
        _pump(client, upstream)

    def close(self) -> None:
        self.closed = True
        self.listener.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


# --- images: loaded from the default engine or imported, never pulled -------------------------


def copy_image(engine: SwarmEngine, image: str) -> str:
    """`image` from the default engine into the swarm's (docker save | docker load)."""
    save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
    try:
        subprocess.run(["docker", "load", "-q"], stdin=save.stdout, env=engine.env(),
                       check=True, capture_output=True, timeout=300)  # fmt: skip
    finally:
        save.stdout.close()
        save.wait()
    return image


SERVER_IMAGE = "hub-sidecars-singleuser:test"


def hub_venv(version: str = "5") -> Path:
    return (REPO / f".venv-hub{version}").resolve()


def server_mounts(version: str = "5") -> list[str]:
    """Host directories a single-user server needs, bind-mounted read-only at the same path:
    /usr, the hub venv and the Python it was made from (when not under /usr)."""
    venv = hub_venv(version)
    home = ""
    for line in (venv / "pyvenv.cfg").read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "home":
            home = value.strip()
    paths = ["/usr", str(venv)]
    prefix = Path(home).parent if home else None
    if prefix is not None and not str(prefix).startswith("/usr"):
        paths.append(str(prefix))
    return paths


def server_image(engine: SwarmEngine, name: str = SERVER_IMAGE) -> str:
    """A single-user server's image with nothing in it but the directories Linux and Jupyter
    expect and root's passwd entry; /usr and the hub's venv are bind-mounted read-only."""
    if engine.docker("image", "inspect", name, check=False).returncode == 0:
        return name
    with tempfile.TemporaryDirectory() as root:
        base = Path(root)
        for directory in ("etc", "root", "tmp", "proc", "sys", "dev", "run", "home", "var/tmp"):
            (base / directory).mkdir(parents=True)
        (base / "tmp").chmod(0o1777)
        for link in ("bin", "lib", "lib64", "sbin"):
            (base / link).symlink_to(f"usr/{link}")
        (base / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                         "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
        (base / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        try:
            subprocess.run(["docker", "import", "-", name], stdin=tar.stdout, env=engine.env(),
                           check=True, capture_output=True, timeout=120)  # fmt: skip
        finally:
            tar.stdout.close()
            tar.wait()
    return name


# --- hubs with the real Docker spawners, inside the namespace ---------------------------------

SPAWNER_KINDS = ("docker", "swarm", "jhub")
SPAWNER_CLASSES = {
    "docker": "realparts.swarm_spawners.HostDockerSpawner",
    "swarm": "realparts.swarm_spawners.HostSwarmSpawner",
    "jhub": "realparts.swarm_spawners.HostJhubSwarmSpawner",
}


def spawner_config(kind: str, image: str) -> str:
    """The hub's configuration for `kind` of spawner, each with its default naming."""
    venv = hub_venv("5")
    command = [str(venv / "bin" / "jupyterhub-singleuser"), "--allow-root"]
    mounts = server_mounts("5")
    common = f"""
c.JupyterHub.spawner_class = {SPAWNER_CLASSES[kind]!r}
c.JupyterHub.allow_named_servers = True
c.Spawner.start_timeout = 60
c.Spawner.http_timeout = 60
"""
    if kind in ("docker", "swarm"):
        volumes = {path: {"bind": path, "mode": "ro"} for path in mounts}
        return common + f"""
c.DockerSpawner.image = {image!r}
c.DockerSpawner.network_name = "host"
c.DockerSpawner.use_internal_ip = True  # no port bindings (refused on the host network)
c.DockerSpawner.cmd = {command[:1]!r}
c.DockerSpawner.args = {command[1:]!r}
c.DockerSpawner.volumes = {volumes!r}
c.DockerSpawner.notebook_dir = "/root"
"""
    spec_mounts = [{"type": "bind", "source": path, "target": path, "read_only": True}
                   for path in mounts]  # fmt: skip
    return common + f"""
c.Spawner.ip = "127.0.0.1"
c.SwarmSpawner.images = [{{"name": "server", "image": {image!r}, "command": {command!r}}}]
c.SwarmSpawner.networks = ["host"]
c.SwarmSpawner.container_spec = {{"mounts": {spec_mounts!r}}}
"""


class SwarmHubs(HubStarter):
    """Real JupyterHubs (5.x, from .venv-hub5) in the swarm's namespace, one spawner kind each;
    `hub.url` is a Forwarder's, so the test and hub-culler use the hub as any other."""

    def __init__(self, engine: SwarmEngine, parent: Path) -> None:
        super().__init__(parent)
        self.engine = engine
        self.forwarders: list[Forwarder] = []

    def __call__(self, kind: str, services: list, extra_config: str = "") -> RealHub:
        if kind not in SPAWNER_KINDS:
            raise ValueError(f"kind must be one of {SPAWNER_KINDS}, not {kind!r}")
        image = server_image(self.engine)
        workdir = self.parent / f"hub{len(self.hubs)}-{kind}"
        workdir.mkdir()
        hub = RealHub(workdir, services, spawner_config(kind, image) + extra_config,
                      version="5", command_prefix=tuple(self.engine.nsenter()),
                      extra_env={"DOCKER_HOST": self.engine.docker_host})  # fmt: skip
        hub.spawner = "simple"  # RealHub's own spawner config is replaced by the one above
        hub.spawner_config = lambda: ""  # type: ignore[method-assign]
        forwarder = Forwarder(self.engine.netns, hub.proxy_port)
        self.forwarders.append(forwarder)
        hub.url = f"http://127.0.0.1:{forwarder.port}"
        hub.api_url = f"{hub.url}/hub/api"
        # what the servers get as JUPYTERHUB_API_URL: the hub's own address in the namespace
        hub.server_api_url = f"http://127.0.0.1:{hub.hub_port}/hub/api"
        hub.kind = kind
        return self._start(hub)

    def close(self) -> None:
        super().close()
        for forwarder in self.forwarders:
            forwarder.close()


def restart_forgetting(hub, database: Path) -> None:
    """Stop the hub (its servers keep running: cleanup_servers must be False), put back a
    database saved earlier, start it again: the servers spawned since are running on the
    engine, unknown to the hub (what a crashed or restored hub leaves behind)."""
    hub.process.stop()  # not hub.stop(): that kills every process with the hub's API URL
    pid_file = hub.workdir / "proxy.pid"
    if pid_file.exists() and pid_file.read_text().strip().isdigit():
        pid = int(pid_file.read_text())
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        wait_until(lambda: not Path(f"/proc/{pid}").exists(), 30, "the old proxy to exit")
    hub.restore_db(database)
    hub.start()


def engine_objects(engine: SwarmEngine) -> dict[str, str]:
    """Running containers and services by name: "container" or "service" (a service's task
    containers are left out: the culler acts on the service)."""
    found = {}
    columns = '{{.Names}}\t{{.Label "com.docker.swarm.service.id"}}'
    for line in engine.docker("ps", "--format", columns).stdout.splitlines():
        name, _, service = line.partition("\t")
        if not service:
            found[name] = "container"
    for name in engine.docker("service", "ls", "--format", "{{.Name}}").stdout.split():
        found[name] = "service"
    return found
