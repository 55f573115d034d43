"""./scripts/demo as a newcomer runs it: the real script, its real hub, restuser, culler,
hub-stats (collector and charts page) and hub-backup (real duplicity and gpg, a file:// target).

The culler's times and hub-stats's interval are shortened through the demo's environment
variables; everything else is what `./scripts/demo` does by default. Ctrl-C is sent as a
terminal sends it: SIGINT to the demo's foreground process group.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from realparts.net import free_port
from realparts.process import as_if_from_a_terminal
from realparts.restuser import REPO
from realparts.waiting import wait_until

# One worker: each demo takes the hub's and the proxy's usual ports (8081, 8001) when they are
# free when it checks, so two demos starting together on two workers could both pick them.
pytestmark = [pytest.mark.realhub, pytest.mark.xdist_group("demo")]

DEMO = REPO / "scripts" / "demo"
BANNER = re.compile(r"The demo hub is up .* Open (http://127\.0\.0\.1:\d+) and log in")
CHARTS_PAGE = re.compile(r"Charts page: (http://127\.0\.0\.1:\d+)\n")
# Longer than hub-stats's 5 s between polls plus a slow spawn: the last activity the culler
# counts from can be the spawn's start, and the test needs a poll that saw the server ready.
CULL_TIMEOUT_S = 15
RESTORED = re.compile(r"hub-backup restored newcomer's Welcome\.ipynb from the backup: (/\S+), "
                      r"the same bytes as in the home\n")  # fmt: skip


class DemoRun:
    """One `scripts/demo` process with its output in a file."""

    def __init__(self, scratch: Path, output: Path, **env: str) -> None:
        self.scratch = scratch
        self.output_path = output
        environment = {
            **os.environ,
            "HUB_SIDECARS_DEMO_DIR": str(scratch),
            "HUB_SIDECARS_DEMO_CULL_TIMEOUT": f"{CULL_TIMEOUT_S}s",
            "HUB_SIDECARS_DEMO_CULL_EVERY": "2s",
            "HUB_SIDECARS_DEMO_ACTIVITY_INTERVAL": "2",
            "HUB_SIDECARS_DEMO_STATS_EVERY": "5s",  # hub-stats's minimum
            **env,
        }
        with open(output, "wb") as sink:
            self.process = subprocess.Popen(
                [str(DEMO)], stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=environment, cwd=REPO, start_new_session=True,
                preexec_fn=as_if_from_a_terminal,
            )  # fmt: skip
        self.url = ""
        self.stats_url = ""
        self.seen: dict[int, bytes] = {}  # every process of this run seen so far (latest)
        # every command line seen, kept apart from `seen`: with pid_max 32768 and other tests
        # forking beside this one, a pid is reused within minutes and its entry overwritten
        self.command_lines: set[bytes] = set()

    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def wait_until_up(self, timeout: float = 120) -> str:
        """The URL the banner tells the newcomer to open (the hub answers by then)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if found := BANNER.search(self.output()):
                self.url = found.group(1)
                charts = CHARTS_PAGE.search(self.output())
                assert charts, self.output()
                self.stats_url = charts.group(1)
                return self.url
            if self.process.poll() is not None:
                raise AssertionError(f"the demo exited {self.process.returncode}:\n{self.output()}")
            time.sleep(0.2)
        raise AssertionError(f"no banner within {timeout} s:\n{self.output()}\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(
            f"--- {log.name}:\n{log.read_text(errors='replace')[-3000:]}"
            for log in sorted((self.scratch / "logs").glob("*.log"))
        )

    def processes(self) -> dict[int, bytes]:
        """Every process descending from the demo (the hub's proxy and single-user servers
        included, although they run in sessions of their own), with its command line."""
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(parent, []).append(int(entry.name))
        found, todo = {}, [self.process.pid]
        while todo:
            pid = todo.pop()
            try:
                found[pid] = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            todo.extend(children.get(pid, []))
        self.seen.update(found)
        self.command_lines.update(found.values())
        return found

    def ctrl_c(self, timeout: float = 60) -> float:
        """SIGINT to the demo's foreground process group, as the terminal sends it; returns the
        seconds until the demo exited."""
        started = time.monotonic()
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the demo did not stop:\n{self.output()}") from None
        assert code == 0, self.output()
        return time.monotonic() - started

    def kill(self) -> None:
        """Teardown after a failed test: whatever is left of this run (the processes seen
        while it ran, which may have lost their parent since)."""
        self.processes()
        for pid in still_running(self.seen, pids=True):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def demos(tmp_path):
    started: list[DemoRun] = []

    def start(scratch: Path, **env: str) -> DemoRun:
        run = DemoRun(scratch, tmp_path / f"demo{len(started)}.out", **env)
        started.append(run)
        return run

    yield start
    for run in started:
        run.kill()


def login(url: str, name: str) -> requests.Session:
    """Through the hub's real login form (any password), following its redirects."""
    session = requests.Session()
    page = session.get(f"{url}/hub/login", timeout=30)
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
    reply = session.post(f"{url}/hub/login", timeout=60,
                         data={"username": name, "password": "anything", "_xsrf": xsrf.group(1)})  # fmt: skip
    assert reply.status_code == 200, reply.text[:300]
    return session


def query(db: Path, sql: str, *args) -> list[tuple]:
    """Rows of `sql` from the demo's activity.sqlite, read as an analyst would (read-only)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def banner_command(shown: str, label: str) -> str:
    """The command the banner gives after `label` (e.g. "Download:")."""
    found = re.search(rf"^ +{label} +(.+)$", shown, re.MULTILINE)
    assert found, shown
    return found.group(1)


class ProcessWatch:
    """Samples the demo's processes (their command lines) ten times a second in a thread, to
    see the short-lived ones: hub-backup, duplicity and gpg."""

    def __init__(self, demo: DemoRun) -> None:
        self.demo = demo
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while not self.stopping.wait(0.1):
            self.demo.processes()

    def stop(self) -> list[bytes]:
        """Every command line seen so far."""
        self.stopping.set()
        self.thread.join()
        return sorted(self.demo.command_lines)


def backup_processes(gnupg_home: Path) -> list[str]:
    """The command lines of duplicity, gpg and gpg-agent working for the demo's hub-backup:
    every process with `gnupg_home` as GNUPGHOME (they run in sessions of their own) or, for
    gpg-agent, as --homedir."""
    setting, home = f"GNUPGHOME={gnupg_home}".encode(), str(gnupg_home).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            words = (entry / "cmdline").read_bytes().split(b"\0")
            environment = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if setting in environment or (b"gpg-agent" in words[0] and home in words):
            found.append(b" ".join(words).decode(errors="replace"))
    return found


def still_running(before: dict[int, bytes], pids: bool = False) -> list:
    """Those of `before` (pid: command line) still running: their command lines, or pids."""
    left = []
    for pid, cmdline in before.items():
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes() == cmdline:
                left.append(pid if pids else cmdline.replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            pass
    return left


def test_login_creates_the_account_the_idle_server_is_culled_and_ctrl_c_stops_everything(
    demos, tmp_path
):
    scratch = tmp_path / "scratch"
    # The preferred port is taken: the demo says which one it chose instead.
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    started = time.monotonic()
    demo = demos(scratch, HUB_SIDECARS_DEMO_PORT=str(taken.getsockname()[1]))
    url = demo.wait_until_up()
    start_seconds = time.monotonic() - started
    assert url != f"http://127.0.0.1:{taken.getsockname()[1]}"
    taken.close()
    # The culler's token: the test watches the hub with it, as the culler does.
    token_file = scratch / "culler.token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    hub_api = requests.Session()
    hub_api.headers["Authorization"] = f"token {token_file.read_text().strip()}"

    def server_of(name: str) -> dict | None:
        reply = hub_api.get(f"{url}/hub/api/users/{name}", timeout=10)
        assert reply.status_code == 200, reply.text[:300]
        return reply.json().get("servers", {}).get("")

    # Logging in spawns the server; the pre-spawn hook made the account through restuser.
    # Its new home is backed up at once: the watch sees hub-backup's, duplicity's and gpg's
    # command lines meanwhile.
    watch = ProcessWatch(demo)
    session = login(url, "newcomer")
    wait_until(lambda: (server_of("newcomer") or {}).get("ready"), 60,
               lambda: f"newcomer's server to start:\n{demo.logs()}")  # fmt: skip
    passwd = (scratch / "root" / "etc" / "passwd").read_text()
    entry = re.search(r"^newcomer:x:(\d+):\d+::/home/newcomer:", passwd, re.MULTILINE)
    assert entry and 20000 <= int(entry.group(1)) <= 29999, passwd
    assert (scratch / "root" / "home" / "newcomer" / "Welcome.ipynb").exists()
    assert "newcomer:" not in Path("/etc/passwd").read_text()
    # What the browser shows: JupyterLab (after the server's OAuth round with the hub), on the
    # home that restuser filled from skel/.
    landing = session.get(f"{url}/user/newcomer/", timeout=30)
    assert landing.status_code == 200 and landing.url.endswith("/user/newcomer/lab"), landing.url
    assert "JupyterLab" in landing.text
    listing = session.get(f"{url}/user/newcomer/api/contents", timeout=30)
    assert "Welcome.ipynb" in {item["name"] for item in listing.json()["content"]}
    culled_at_least_after = time.monotonic() + CULL_TIMEOUT_S

    # hub-stats recorded the user and the server's run (a poll that saw it ready).
    activity_db = scratch / "activity.sqlite"
    sessions_of_newcomer = ("SELECT id, ready_poll, end_poll FROM sessions "
                            "WHERE user = 'newcomer' AND server_name = ''")  # fmt: skip
    def recorded_ready() -> bool:
        # The user keeps working meanwhile (an API call is activity the server reports).
        session.get(f"{url}/user/newcomer/api/contents", timeout=30)
        return any(ready for _, ready, _ in query(activity_db, sessions_of_newcomer))

    wait_until(recorded_ready, 30, lambda: f"a poll with newcomer's server:\n{demo.logs()}",
               every=0.5)  # fmt: skip
    assert query(activity_db, "SELECT name FROM users") == [("newcomer",)]
    # The charts page and its API, on the served port, with the token from the file the banner
    # names (0600); nothing without it.
    stats_token_file = scratch / "stats-token"
    assert stats_token_file.stat().st_mode & 0o777 == 0o600
    stats_token = stats_token_file.read_text().strip()
    stats_url = demo.stats_url
    assert requests.get(f"{stats_url}/stats.json", timeout=10).status_code == 401
    now = requests.get(f"{stats_url}/stats.json", timeout=10,
                       headers={"Authorization": f"Bearer {stats_token}"})  # fmt: skip
    assert now.status_code == 200, now.text[:300]
    assert now.json()["users"] == 1 and now.json()["last_poll"]["ok"], now.json()
    page = requests.get(f"{stats_url}/", auth=("anyone", stats_token), timeout=60,
                        headers={"Accept": "text/html"})  # fmt: skip
    assert page.status_code == 200 and "JupyterHub activity" in page.text, page.text[:300]
    # The banner's commands, run as given: the download, and the query on the live file.
    shown = demo.output()
    download = banner_command(shown, "Download:")
    subprocess.run(["bash", "-c", download], cwd=tmp_path, check=True, timeout=60)
    downloaded = tmp_path / "activity.sqlite"
    assert query(downloaded, "PRAGMA integrity_check") == [("ok",)]
    assert any(ready for _, ready, _ in query(downloaded, sessions_of_newcomer))
    daily_users = f"sqlite3 {activity_db} 'select * from daily_active_users'"
    assert daily_users in shown, shown
    daily = subprocess.run(["bash", "-c", daily_users], capture_output=True, text=True,
                           check=True, timeout=30)  # fmt: skip
    assert re.fullmatch(r"\d{4}-\d\d-\d\d\|1\n", daily.stdout), daily.stdout
    for told in ("Usage statistics", f"cat {stats_token_file}",
                 f"hub-stats charts --db {activity_db} DIR"):  # fmt: skip
        assert told in shown, shown

    # Nobody uses it any more: the culler stops it, and its status file says so meanwhile.
    def status_with_the_cull() -> dict | None:
        try:
            status = json.loads((scratch / "culler-status.json").read_text())
        except (OSError, ValueError):
            return None
        culled = [d for d in status["decisions"] if d["result"] == "culled"]
        return status if culled and "newcomer" in culled[0]["target"] else None

    status = wait_until(status_with_the_cull, 60, lambda: f"a culling pass:\n{demo.logs()}")
    assert time.monotonic() >= culled_at_least_after - 1  # not before the timeout
    assert status["ok"] and status["counts"]["culled"] == 1, status
    assert server_of("newcomer") is None
    # hub-stats saw the stop too: newcomer's run has ended in the file.
    wait_until(lambda: all(end for _, _, end in query(activity_db, sessions_of_newcomer)), 30,
               lambda: f"a poll after the cull:\n{demo.logs()}")  # fmt: skip
    # The status file is written before the pass's summary is logged.
    culler_log = scratch / "logs" / "culler.log"
    wait_until(lambda: re.search(r'msg="pass done" .*summary="seen=1 idle=1 .*culled=1 ',
                                 culler_log.read_text()), 10, culler_log.read_text)  # fmt: skip
    # The terminal showed the new account and the culling pass as they happened.
    shown = demo.output()
    assert re.search(r"restuser created the account newcomer \(uid \d+\)", shown), shown
    wait_until(lambda: re.search(r"culler pass \d+: seen=1 idle=1 .*culled=1 ", demo.output()),
               10, demo.output)  # fmt: skip
    # It told the newcomer where to look.
    for told in (f"tail -f {scratch}/logs/culler.log", f"python3 -m json.tool {scratch}/culler-status.json",
                 "Ctrl-C"):  # fmt: skip
        assert told in shown, shown

    # The new home was backed up (a full, encrypted, into the file:// target), the status shown
    # and Welcome.ipynb restored from the backup into a staging directory, byte for byte.
    home = scratch / "root" / "home" / "newcomer"
    found = wait_until(lambda: RESTORED.search(demo.output()), 90,
                       lambda: f"the demo's restore:\n{demo.output()}\n{demo.logs()}")  # fmt: skip
    restored = Path(found.group(1))
    assert restored.parent.parent == scratch / "restored", restored
    assert restored.read_bytes() == (home / "Welcome.ipynb").read_bytes()
    assert restored.read_bytes() == (REPO / "skel" / "Welcome.ipynb").read_bytes()
    commands_seen = watch.stop()
    shown = demo.output()
    assert re.search(r"\d\d:\d\d:\d\d hub-backup backed up newcomer \(full, [\d.]+ s\)\n", shown)
    assert re.search(r"hub-backup status:\n +user +newest full .*\n +newcomer +\d{4}-.* ok\n",
                     shown), shown  # fmt: skip
    volumes = list((scratch / "backups" / "newcomer").glob("duplicity-full.*.vol1.difftar.gpg"))
    assert len(volumes) == 1, volumes
    assert b"Welcome" not in volumes[0].read_bytes()  # encrypted
    # The banner's commands, as a newcomer runs them: the status, and the restore the demo
    # suggests after its own, into a directory of theirs.
    status = subprocess.run(["bash", "-c", banner_command(shown, "Status:") + " --json"],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert status.returncode == 0, status.stderr
    rows = {row["user"]: row for row in json.loads(status.stdout)}
    assert list(rows) == ["newcomer"], rows
    assert rows["newcomer"]["last_success"] and rows["newcomer"]["newest_full"], rows
    assert not rows["newcomer"]["stale"] and not rows["newcomer"]["last_error"], rows
    mine = tmp_path / "my-restore"
    restore = banner_command(shown, "Restore files yourself:").replace(" DIR ", f" {mine} ")
    subprocess.run(["bash", "-c", restore], check=True, timeout=120, capture_output=True)
    assert (mine / "Welcome.ipynb").read_bytes() == (home / "Welcome.ipynb").read_bytes()
    # The passphrase: a file of root's alone, in no command line, output, log or setting.
    passphrase_file = scratch / "backup.passphrase"
    assert passphrase_file.stat().st_mode & 0o777 == 0o600
    passphrase = passphrase_file.read_text().strip()
    assert len(passphrase) >= 32
    assert any(b"duplicity" in command for command in commands_seen), commands_seen
    assert not [command for command in commands_seen if passphrase.encode() in command]
    assert passphrase not in demo.output() and passphrase not in demo.logs()
    assert passphrase not in (scratch / "backup.toml").read_text()

    # A running server, then Ctrl-C: every process the demo started is gone.
    session.get(f"{url}/hub/spawn", timeout=60)
    wait_until(lambda: (server_of("newcomer") or {}).get("ready"), 60, demo.logs)
    running = demo.processes()
    commands = b"\n".join(running.values())
    for part in (b"hub-restuser", b"jupyterhub", b"hub-culler", b"configurable-http-proxy",
                 b"jupyterhub-singleuser", b"hub-stats\0--url", b"hub-stats\0serve"):  # fmt: skip
        assert part in commands, commands
    stop_seconds = demo.ctrl_c()
    assert still_running(running) == []
    assert backup_processes(scratch / "backup" / "gnupg") == []
    assert passphrase not in demo.output()
    for gone in (url, stats_url):
        with pytest.raises(requests.ConnectionError):
            requests.get(gone, timeout=5)
    print(f"demo up in {start_seconds:.1f} s, stopped in {stop_seconds:.1f} s")


def test_a_second_demo_in_the_same_directory_is_refused_and_a_rerun_works(demos, tmp_path):
    scratch = tmp_path / "scratch"
    first = demos(scratch, HUB_SIDECARS_DEMO_PORT=str(free_port()))
    first.wait_until_up()

    second = demos(scratch)
    assert second.process.wait(60) == 1
    assert "another ./scripts/demo is running in" in second.output()
    assert first.process.poll() is None

    stats_token = (scratch / "stats-token").read_text().strip()
    passphrase = (scratch / "backup.passphrase").read_text()
    first.ctrl_c()
    # A home with a big file, and backups every second: the re-run is in the middle of one
    # most of the time, and its Ctrl-C comes while duplicity works.
    bulky = scratch / "root" / "home" / "bulky"
    bulky.mkdir(parents=True)
    (bulky / "data.bin").write_bytes(os.urandom(64 << 20))
    started = time.monotonic()
    rerun = demos(scratch, HUB_SIDECARS_DEMO_BACKUP_EVERY="1s")
    url = rerun.wait_until_up()
    assert requests.get(f"{url}/hub/api/", timeout=10).status_code == 200
    # A browser logged in to the charts page before the re-run still is: the same token.
    now = requests.get(f"{rerun.stats_url}/stats.json", auth=("x", stats_token), timeout=10)
    assert now.status_code == 200 and now.json()["last_poll"]["ok"], now.text[:300]
    # The backups made before stay readable: the same passphrase.
    assert (scratch / "backup.passphrase").read_text() == passphrase
    print(f"rerun up in {time.monotonic() - started:.1f} s")
    gnupg_home = scratch / "backup" / "gnupg"
    wait_until(lambda: any("duplicity" in c for c in backup_processes(gnupg_home)), 60,
               lambda: f"a backup of bulky:\n{rerun.output()}\n{rerun.logs()}")  # fmt: skip
    running = rerun.processes()
    stop_seconds = rerun.ctrl_c()
    assert still_running(running) == []
    # The backup in flight stopped with the rest, at once, its duplicity and gpg-agent too.
    assert backup_processes(gnupg_home) == []
    assert stop_seconds < 25 and "did not stop" not in rerun.output(), rerun.output()
    (bulky / "data.bin").unlink()
