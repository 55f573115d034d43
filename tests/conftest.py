"""Fixtures shared by every service's tests: prefix roots and real service processes."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

from hubsidecars.config import CONFIG_DIR_ENV
from realparts import hostcheck, proctree
from realparts.net import Endpoint, free_port
from realparts.restuser import REPO, RestuserProcess
from restuser.prefix import init_prefix

_HOST_CHECK = pytest.StashKey[tuple]()


# --- markers: one per real part, set from what a test uses ------------------------------------

# A test is marked with a real part when its fixtures start it (so a new test cannot miss its
# marker); parts started without a fixture are marked by module here or with `pytestmark`.
PARTS_BY_FIXTURE = {
    "start_hub": "hub", "start_module_hub": "hub",
    "docker_engine": "docker",
    "swarm_engine": "swarm", "swarm_hubs": "swarm",
    "systemd_image": "systemd", "systemd_container": "systemd",
    "ssh_server": "sshd",
    "browser": "chromium",
}  # fmt: skip
# Every backup test module runs duplicity (and gpg) but these, which only parse and check.
PURE_BACKUP_MODULES = {"test_restore_times.py", "test_state.py", "test_settings.py"}
ALIASES = {"realhub": "hub", "realsystemd": "systemd"}  # the markers' earlier names
REAL_PARTS = ("hub", "docker", "swarm", "systemd", "duplicity", "chromium", "sshd")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        parts = {PARTS_BY_FIXTURE[name] for name in item.fixturenames if name in PARTS_BY_FIXTURE}
        parts |= {ALIASES[mark.name] for mark in item.iter_markers() if mark.name in ALIASES}
        parts |= {mark.name for mark in item.iter_markers() if mark.name in REAL_PARTS}
        path = item.path
        if (path.parent.name == "backup" and path.name not in PURE_BACKUP_MODULES) or \
                path.name in ("test_backup_systemd.py", "test_demo.py", "test_backup_bench.py"):
            parts.add("duplicity")
        if "systemd" in parts:
            parts.add("docker")
        if "swarm_hubs" in item.fixturenames:
            parts.add("hub")
        for part in parts:
            item.add_marker(part)
        if not parts:
            item.add_marker("fast")
        group = _worker_group(item, parts)
        if group and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(group))


SHARED_SCOPES = {"module", "package", "class"}


def _worker_group(item, parts: set[str]) -> str | None:
    """Which tests must share one pytest-xdist worker (scripts/test runs --dist loadgroup);
    None for a test that shares nothing with its neighbours, which any idle worker may take."""
    if "docker" in parts or "swarm" in parts:
        # One engine: the culler's sweeps and the stats sampler see every container on it.
        # The swarm's tests too, although their engine is their own: while a systemd
        # container boots (PID 1 with the host's cgroup v1 hierarchies bound in), every
        # engine's container stats come back empty ("the engine gave no counters"; measured
        # with tests/e2e beside tests/culler/test_docker_spawners.py on two workers).
        return "docker-engine"
    fixtures = item._fixtureinfo.name2fixturedefs.values()
    if any(defs and defs[-1].scope in SHARED_SCOPES for defs in fixtures):
        return item.nodeid.split("::", 1)[0]  # a module's tests share its module-scoped parts
    return None


@pytest.fixture(autouse=True)
def _root_for_real_parts(request):
    """Real parts need root (useradd --prefix, mounts, dockerd, setpriv); pure tests do not."""
    if os.geteuid() != 0 and (request.node.get_closest_marker("fast") is None
                              or "prefix_root" in request.fixturenames):  # fmt: skip
        pytest.fail("this test starts real parts (accounts with useradd --prefix, daemons, "
                    "mounts): run the suite as root", pytrace=False)  # fmt: skip


# --- the host as the suite found it (realparts/hostcheck.py) -----------------------------


BASETEMP_PREFIX = "/tmp/hst-"  # short: GnuPG homes and unix sockets below it have 107 bytes


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """A short directory of the run's own for temporary files, unless --basetemp says another:
    pytest's /tmp/pytest-of-USER/pytest-N plus xdist's popen-gwN/ left gpg-agent's sockets too
    little of their 107 bytes."""
    if os.environ.get(hostcheck.MARKER) or config.option.basetemp or config.option.collectonly:
        return
    config.option.basetemp = tempfile.mkdtemp(prefix=os.path.basename(BASETEMP_PREFIX),
                                              dir=os.path.dirname(BASETEMP_PREFIX))  # fmt: skip


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist starts its workers
def pytest_sessionstart(session):
    """Before anything starts: note the host's state, then send every temporary file of the
    run (duplicity's tempdirs, Chromium's profiles, ...) into the run's own directory by TMPDIR.
    A process already carrying a run's marker is part of that run (an xdist worker): its
    controller does this once."""
    config = session.config
    if os.environ.get(hostcheck.MARKER) or config.option.collectonly:
        return
    before = hostcheck.HostSnapshot.take()
    basetemp = config._tmp_path_factory.getbasetemp()
    tmp = basetemp / "tmp"
    tmp.mkdir(exist_ok=True)
    run_id = uuid.uuid4().hex
    os.environ[hostcheck.MARKER] = run_id
    os.environ["TMPDIR"] = str(tmp)
    tempfile.tempdir = None  # tempfile caches the directory it found first
    # Nothing the run starts reads the host's /etc/hub-sidecars/NAME.toml: an empty directory
    # of the run's own stands in for it (hubsidecars.config.default_config_file).
    (basetemp / "etc-hub-sidecars").mkdir(exist_ok=True)
    os.environ[CONFIG_DIR_ENV] = str(basetemp / "etc-hub-sidecars")
    config.stash[_HOST_CHECK] = (run_id, before, basetemp)


def pytest_sessionfinish(session, exitstatus):
    """After the last fixture is gone: fail the run on anything it left on the host; on success
    remove the run's temporary directory (kept after a failure, for its logs)."""
    if _HOST_CHECK not in session.config.stash:
        return
    run_id, before, basetemp = session.config.stash[_HOST_CHECK]
    after = hostcheck.HostSnapshot.take()
    own_pids = {os.getpid(), *proctree.descendants(os.getpid())}
    found = hostcheck.leftovers(before, after, run_id, [str(REPO), str(basetemp)], own_pids)
    if os.environ.get("HUB_SIDECARS_HOST_CHECK") == "0":
        found = []  # a shared development machine where other work changes the host meanwhile
    mounted_inside = [point for point in after.mounts if point.startswith(f"{basetemp}/")]
    if exitstatus == 0 and not found and not mounted_inside:
        shutil.rmtree(basetemp, ignore_errors=True)
        parent = basetemp.parent  # /tmp/pytest-of-USER: gone too if this run made it
        if parent.parent == Path("/tmp") and parent.name not in before.tmp_entries:
            shutil.rmtree(parent, ignore_errors=True)
    if found:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = ["the run left the host changed:", *(f"  {line}" for line in found)]
        if reporter is not None:
            reporter.section("host check", sep="=", red=True, bold=True)
            for line in lines:
                reporter.write_line(line)
        else:
            print("\n".join(lines))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def prefix_root(tmp_path: Path) -> Path:
    """A scratch root with the host's system accounts; useradd --prefix writes only here."""
    root = tmp_path / "root"
    init_prefix(root)
    return root


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "restuser.token"
    path.write_text("s3cret-test-token-" + os.urandom(8).hex() + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def start_restuser(tmp_path: Path, prefix_root: Path):
    """Factory: start real `hub-restuser serve` processes; all are stopped at teardown."""
    started: list[RestuserProcess] = []

    def start(
        tcp=False, extra_args=None, env=None, launcher=None, headers=None, endpoint=None, bind=None
    ):
        if endpoint is None:
            endpoint = (
                Endpoint(port=free_port())
                if tcp
                else Endpoint(unix=str(tmp_path / f"r{len(started)}.sock"))
            )
        service = RestuserProcess(
            prefix_root,
            endpoint,
            tmp_path / f"restuser{len(started)}.log",
            extra_args,
            env,
            launcher,
            bind,
        )
        started.append(service)
        return service.start(headers=headers)

    yield start
    for service in started:
        service.stop()


@pytest.fixture
def start_hub(tmp_path: Path):
    """Factory: start a real JupyterHub for one test (realparts/hub.py):
    `start_hub(services, extra_config="", spawner="simple"|"responder", version="6"|"5"|"4")`.
    Every hub it started is stopped at teardown."""
    from realparts.hub import HubStarter

    starter = HubStarter(tmp_path)
    yield starter
    starter.close()


@pytest.fixture(scope="module")
def start_module_hub(tmp_path_factory):
    """Like start_hub, but the hubs live until the module's last test: for tests that share a
    hub without disturbing each other."""
    from realparts.hub import HubStarter

    starter = HubStarter(tmp_path_factory.mktemp("hubs"))
    yield starter
    starter.close()


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory):
    """A real Docker engine (started here with --bridge=none unless one already answers)."""
    from realparts.docker import DockerEngine

    engine = DockerEngine(tmp_path_factory.mktemp("dockerd") / "dockerd.log").start()
    yield engine
    engine.stop()


@pytest.fixture(scope="session")
def swarm_engine(tmp_path_factory):
    """A one-node Docker Swarm of the run's own, in a network namespace the test creates
    (realparts/swarm.py); talk to it with `swarm_engine.env()` (DOCKER_HOST), never the
    default engine's socket. Torn down completely at the end, checked."""
    from realparts.swarm import SwarmEngine

    engine = SwarmEngine(tmp_path_factory.mktemp("swarm")).start()
    yield engine
    engine.stop()


@pytest.fixture(scope="module")
def swarm_hubs(swarm_engine, tmp_path_factory):
    """Factory: `swarm_hubs(kind, services, extra_config="")` starts a real JupyterHub 5 in the
    swarm's namespace spawning with dockerspawner's DockerSpawner ("docker") or SwarmSpawner
    ("swarm"), or jhub-swarmspawner ("jhub"); all stopped at the module's end."""
    from realparts.swarm import SwarmHubs

    hubs = SwarmHubs(swarm_engine, tmp_path_factory.mktemp("swarmhubs"))
    yield hubs
    hubs.close()


@pytest.fixture(scope="session")
def systemd_image(docker_engine, tmp_path_factory) -> str:
    from realparts.systemd import ensure_image

    return ensure_image(tmp_path_factory.mktemp("systemd-image"))


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory) -> Path:
    """Wheels of this checkout and its dependencies, to install inside containers offline."""
    import subprocess
    import sys

    from realparts.restuser import REPO

    target = tmp_path_factory.mktemp("wheels")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "-w", str(target), str(REPO)],
                   check=True, capture_output=True, timeout=600)  # fmt: skip
    # scripts/install also puts duplicity (hub-backup's, no cloud SDKs) into its venv.
    subprocess.run(["bash", "-c", 'source scripts/lib.sh && duplicity_wheels "$1"', "-",
                    str(target)], cwd=REPO, check=True, capture_output=True,
                   timeout=600)  # fmt: skip
    return target


@pytest.fixture(scope="session")
def installed_image(systemd_image, wheelhouse):
    """(image, what scripts/install printed): the systemd image with this checkout installed
    by scripts/install once per run (tests/e2e/test_install_systemd.py tests installing again)."""
    from realparts.docker import docker
    from realparts.systemd import build_installed_image

    image, output = build_installed_image(systemd_image, REPO, wheelhouse)
    yield image, output
    docker("rmi", "-f", image, check=False)


@pytest.fixture(scope="module")
def systemd_container(installed_image):
    """A booted systemd container with the suite installed by scripts/install (nothing enabled),
    this checkout's files in /src and the wheels in /wheels.

    One boot per test module: tests sharing it must leave units as they found them (reset
    what they change) and use names of their own.
    """
    from realparts.systemd import SystemdContainer

    container = SystemdContainer(installed_image[0]).start()
    try:
        yield container
    finally:
        container.stop()


@pytest.fixture(scope="module")
def ssh_server(tmp_path_factory):
    """A real OpenSSH sshd on 127.0.0.1 (realparts/sshd.py) accepting one throwaway key
    for root, shared by the tests of a module; a test that stops or kills it restarts it."""
    from realparts.sshd import SSHServer

    server = SSHServer(tmp_path_factory.mktemp("sshd")).start()
    yield server
    server.stop()


@pytest.fixture
def homes_root(tmp_path: Path) -> Path:
    """An empty directory for realparts/homes.make_homes to build homes in."""
    root = tmp_path / "homes"
    root.mkdir()
    return root
