"""Fixtures shared by every service's tests: prefix roots and real service processes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from restuser.prefix import init_prefix
from tests.realparts.net import Endpoint, free_port
from tests.realparts.restuser import RestuserProcess


@pytest.fixture(scope="session", autouse=True)
def _require_root():
    if os.geteuid() != 0:
        pytest.exit("the test suite creates real accounts with useradd --prefix: run it as root", 2)


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
    """Factory: start a real JupyterHub for one test (tests/realparts/hub.py):
    `start_hub(services, extra_config="", spawner="simple"|"responder", version="6"|"5"|"4")`.
    Every hub it started is stopped at teardown."""
    from tests.realparts.hub import HubStarter

    starter = HubStarter(tmp_path)
    yield starter
    starter.close()


@pytest.fixture(scope="module")
def start_module_hub(tmp_path_factory):
    """Like start_hub, but the hubs live until the module's last test: for tests that share a
    hub without disturbing each other."""
    from tests.realparts.hub import HubStarter

    starter = HubStarter(tmp_path_factory.mktemp("hubs"))
    yield starter
    starter.close()


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory):
    """A real Docker engine (started here with --bridge=none unless one already answers)."""
    from tests.realparts.docker import DockerEngine

    engine = DockerEngine(tmp_path_factory.mktemp("dockerd") / "dockerd.log").start()
    yield engine
    engine.stop()


@pytest.fixture(scope="session")
def systemd_image(docker_engine, tmp_path_factory) -> str:
    from tests.realparts.systemd import ensure_image

    return ensure_image(tmp_path_factory.mktemp("systemd-image"))


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory) -> Path:
    """Wheels of this checkout and its dependencies, to install inside containers offline."""
    import subprocess
    import sys

    from tests.realparts.restuser import REPO

    target = tmp_path_factory.mktemp("wheels")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "-w", str(target), str(REPO)],
                   check=True, capture_output=True, timeout=600)  # fmt: skip
    # scripts/install also puts duplicity (hub-backup's, no cloud SDKs) into its venv.
    subprocess.run(["bash", "-c", 'source scripts/lib.sh && duplicity_wheels "$1"', "-",
                    str(target)], cwd=REPO, check=True, capture_output=True,
                   timeout=600)  # fmt: skip
    return target


@pytest.fixture(scope="module")
def systemd_container(systemd_image, wheelhouse):
    """A booted systemd container with this checkout's files in /src and wheels in /wheels.

    One boot per test module: tests sharing it must leave units as they found them (reset
    what they change) and use names of their own.
    """
    from tests.realparts.restuser import REPO
    from tests.realparts.systemd import SystemdContainer

    container = SystemdContainer(systemd_image).start()
    try:
        container.put_tree(REPO, ["scripts", "units", "skel", "docs"], "/src")
        container.put_tree(wheelhouse, ["."], "/wheels")
        yield container
    finally:
        container.stop()


@pytest.fixture(scope="module")
def ssh_server(tmp_path_factory):
    """A real OpenSSH sshd on 127.0.0.1 (tests/realparts/sshd.py) accepting one throwaway key
    for root, shared by the tests of a module; a test that stops or kills it restarts it."""
    from tests.realparts.sshd import SSHServer

    server = SSHServer(tmp_path_factory.mktemp("sshd")).start()
    yield server
    server.stop()


@pytest.fixture
def homes_root(tmp_path: Path) -> Path:
    """An empty directory for tests/realparts/homes.make_homes to build homes in."""
    root = tmp_path / "homes"
    root.mkdir()
    return root
