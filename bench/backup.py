"""Benchmark hub-backup against bare duplicity doing the same work, and an unchanged hourly run.

Homes: --homes homes of --files files each (realparts/homes.py make_homes: nested dirs,
small files, junk the backup excludes, distinct owners) and one home of --big-mb MB of random
bytes (big_home). Encryption: a symmetric passphrase (hub-backup reads it from a 0600 file, bare
duplicity gets it as PASSPHRASE, as hub-backup hands it over). Targets: file:// on the same disk.

Phases, one after the other in one run (the page cache is flushed to disk with sync before each):
(a) bare duplicity, serially: for every home the very command line hub-backup runs (built with
    backup.duplicity.Duplicity.argv from the same config, options mirrored from
    Duplicity.backup; checked against what hub-backup logged in (b)), the same environment, an
    unlinked --log-fd file; then one `gpgconf --kill gpg-agent`, as hub-backup does.
(b) `hub-backup run` at parallelism 1 (the CLI as a subprocess, a TOML config, fresh archive
    dir, state dir and targets): every chain's first run, so a full each. Ratio (b)/(a).
(c) the same at parallelism 2, fresh again: speed-up (b)/(c).
(d) an unchanged hourly run: `hub-backup run` again on (c)'s state right after, nothing
    changed (parallelism 2, the default; skip_unchanged on, the default, so each home is
    checked for changes and duplicity is not started). Goal < 60 s for 200 homes.
(e) bare duplicity's own incremental on unchanged homes, serially, on --hourly-sample of
    (a)'s chains: the per-chain floor of running duplicity at all.
(f) the same sample with gpg's passphrase hashing turned down (--gpg-options=--s2k-count=N,
    --low-s2k-count): a full, then an unchanged incremental. With a symmetric passphrase every
    gpg call duplicity makes (5 in an unchanged incremental) hashes it; at gpg's default count
    that is ~0.2 CPU s a call, most of what a small chain costs.
hub-backup runs with --log-level debug --log-format json: each duplicity command it ran is then
logged with its duration, which splits hub-backup's wall time into duplicity's time and its
own (start-up before the first command, gaps between chains, the end after the last). Peak RSS
and own CPU of hub-backup = VmHWM and utime+stime of the hub-backup process alone (duplicity
and gpg are its children, not counted), polled from /proc every 50 ms and read once more
after it exits, before it is reaped; CPU of a whole phase = user+sys of all its processes
(wait4 / RUSAGE_CHILDREN; gpg-agent, a daemon, is not counted in any phase).

On a shared machine the wall ratio moves with what else runs (the table shows the 1-minute
load average as each phase began); the CPU ratio does not.

Run as root: python bench/backup.py [--homes 200 --files 50 --big-mb 200]; quick: --quick
(20 homes, 20 MB). --keep DIR keeps hub-backup's logs and state. Everything else lives in a
temporary directory removed at the end. A full run took 35 minutes here with the 2 cores at a
load of 6 from other work (so roughly 15 on an idle machine); the quick one 1.5 minutes idle,
plus up to 5 minutes of waiting (see wait_out_the_clock_margin).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Run as a script, bench/ comes first on the path and this file would shadow the backup package.
if sys.path[0] == str(Path(__file__).resolve().parent):
    sys.path[0] = str(REPO)

from backup import settings as backup_settings  # noqa: E402
from backup.build import build_jobs  # noqa: E402
from backup.selection import CLOCK_MARGIN_S  # noqa: E402
from hubsidecars.commands import BASE_ENV  # noqa: E402
from hubsidecars.config import load_settings  # noqa: E402
from realparts.homes import big_home, make_homes  # noqa: E402

VENV_BIN = REPO / ".venv" / "bin"
HUB_BACKUP = VENV_BIN / "hub-backup"
DUPLICITY = VENV_BIN / "duplicity"
PASSPHRASE = "bench passphrase: not a secret worth keeping 42"
FIRST_UID = 20000
BIG_UID = 30000
RATIO_GOAL = 1.05
HOURLY_GOAL_S = 60.0
_LOG_FD = re.compile(r"^--log-fd=\d+$")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- the setup ------------------------------------------------------------------------------


def build_homes(source: Path, homes: int, files: int, megabyte_files: int, big_mb: int) -> int:
    """The small homes (u000, u001, ...) and the big one ("big"); returns the number of homes."""
    users = {f"u{index:03d}": FIRST_UID + index for index in range(homes)}
    make_homes(source, users, files_per_home=files, megabyte_files=megabyte_files)
    if big_mb:
        big_home(source, "big", big_mb, uid=BIG_UID)
    return homes + (1 if big_mb else 0)


def write_config(path: Path, *, source: Path, target_root: Path, passphrase_file: Path,
                 work: Path, parallelism: int) -> Path:  # fmt: skip
    """A hub-backup TOML config whose archive dir, state dir and targets live under `work`."""
    values = {
        "source": str(source),
        "target": f"file://{target_root}/{{user}}",
        "passphrase_file": str(passphrase_file),
        "archive_dir": str(work / "cache"),
        "state_dir": str(work / "state"),
        "parallelism": parallelism,
        "duplicity": str(DUPLICITY),
    }
    path.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items()))
    return path


def load_jobs(config: Path):
    """hub-backup's own BackupJobs for `config` (its Duplicity, Encryption, chains)."""
    settings = backup_settings.resolve(
        load_settings(backup_settings.BackupSettings, backup_settings.ENV_PREFIX,
                      {"config": str(config)}, environ={})  # fmt: skip
    )
    return build_jobs(settings)


def backup_argv(jobs, chain, log_fd: int, extra: tuple[str, ...] = ()) -> list[str]:
    """The command line hub-backup runs for `chain` in `run` (backup.actions.run ->
    Duplicity.backup): its options mirrored here, the rest from Duplicity.argv itself.
    `extra` options go after them (a variant hub-backup does not run)."""
    settings = jobs.options
    options = ["--allow-source-mismatch", f"--volsize={jobs.duplicity.volsize_mb}",
               f"--full-if-older-than={max(1, int(settings.full_every))}s"]  # fmt: skip
    options += [f"--exclude={anchored(chain.source, pattern)}" for pattern in settings.excludes]
    options += extra
    return jobs.duplicity.argv("backup", options, [os.path.abspath(chain.source), chain.target],
                               name=chain.name, encryption=jobs.encryption,
                               log_fd=log_fd)  # fmt: skip


def anchored(home: str, pattern: str) -> str:
    """An exclude as hub-backup gives it: relative patterns anchored at the home."""
    if pattern.startswith(("/", "**")):
        return pattern
    return f"{home.rstrip('/')}/{pattern}"


def comparable(argv: list[str]) -> list[str]:
    """`argv` with its --log-fd number (which differs run to run) left out."""
    return ["--log-fd=N" if _LOG_FD.match(arg) else arg for arg in argv]


# --- measuring processes --------------------------------------------------------------------


@dataclass
class Measured:
    label: str
    wall_s: float
    cpu_s: float  # user+sys of every process of the phase
    chains: int
    own_cpu_s: float | None = None  # hub-backup's own process
    peak_rss_mib: float | None = None
    kinds: dict[str, int] = field(default_factory=dict)
    split: dict[str, float] = field(default_factory=dict)  # duplicity vs hub-backup's own time
    target_bytes: int = 0
    load: tuple[float, ...] = ()


class ProcessWatch:
    """Polls one process's VmHWM and its own CPU time (threads included, children not)."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_kib = 0
        self.cpu_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def sample(self) -> None:
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return
        match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        if match:  # a zombie has no memory left to report
            self.peak_kib = max(self.peak_kib, int(match.group(1)))
        fields = stat.rsplit(")", 1)[1].split()
        self.cpu_s = max(self.cpu_s, (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def finish(self) -> None:
        """Call once the process has exited but before it is reaped: the final CPU time."""
        self._stop.set()
        self._thread.join()
        self.sample()


def run_hub_backup(label: str, config: Path, log_path: Path) -> tuple[Measured, list[dict]]:
    """`hub-backup run` as a subprocess; its JSON log lines are returned too."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("HUB_BACKUP") and key != "CREDENTIALS_DIRECTORY"}  # fmt: skip
    argv = [str(HUB_BACKUP), "run", "--config", str(config), "--log-level", "debug",
            "--log-format", "json"]  # fmt: skip
    load = os.getloadavg()
    with open(log_path, "wb") as log_file:
        started = time.time()
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file,
                                   stderr=log_file, env=env)  # fmt: skip
        watch = ProcessWatch(process.pid)
        os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)
        ended = time.time()
        watch.finish()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    events = read_log(log_path)
    if process.returncode != 0:
        raise SystemExit(f"{label}: hub-backup exited {process.returncode}; log: {log_path}\n"
                         + log_path.read_text()[-2000:])  # fmt: skip
    backed_up = [event for event in events
                 if event.get("msg") in ("backed up", "unchanged since its last backup")]
    kinds: dict[str, int] = {}
    for event in backed_up:
        kind = event.get("kind", "unchanged" if event["msg"].startswith("unchanged") else "?")
        kinds[kind] = kinds.get(kind, 0) + 1
    return Measured(
        label, ended - started, usage.ru_utime + usage.ru_stime, len(backed_up),
        own_cpu_s=watch.cpu_s, peak_rss_mib=watch.peak_kib / 1024, kinds=kinds,
        split=time_split(events, started, ended), load=load,
    ), events  # fmt: skip


def read_log(path: Path) -> list[dict]:
    events = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue  # not ours (a stray line of a child)
    return events


def commands(events: list[dict], tool: str) -> list[tuple[float, float, str]]:
    """(start, end, argv) in epoch seconds of every `tool` command hub-backup logged."""
    found = []
    for event in events:
        if event.get("tool") != tool or "duration_ms" not in event or "ts" not in event:
            continue
        end = datetime.fromisoformat(event["ts"]).timestamp()
        found.append((end - event["duration_ms"] / 1000, end, event.get("argv", "")))
    return sorted(found)


def time_split(events: list[dict], started: float, ended: float) -> dict[str, float]:
    """Where hub-backup's wall time went: duplicity's commands (their sum, and the time at
    least one ran), gpgconf's, and hub-backup's own before, between and after them."""
    runs = commands(events, "duplicity")
    if not runs:
        return {}
    busy = 0.0
    covered_until = runs[0][0]
    for start, end, _ in runs:  # the union of the intervals: the time some duplicity ran
        busy += max(0.0, end - max(start, covered_until))
        covered_until = max(covered_until, end)
    gaps = [max(0.0, nxt[0] - prev[1]) for prev, nxt in zip(runs, runs[1:], strict=False)]
    return {
        "duplicity_sum_s": sum(end - start for start, end, _ in runs),
        "duplicity_busy_s": busy,
        "gpgconf_s": sum(end - start for start, end, _ in commands(events, "gpgconf")),
        "startup_s": runs[0][0] - started,
        "end_s": ended - max(end for _, end, _ in runs),
        "idle_between_s": (ended - started) - busy - (runs[0][0] - started)
        - (ended - max(end for _, end, _ in runs)),
        "gap_mean_ms": 1000 * sum(gaps) / len(gaps) if gaps else 0.0,
    }


def run_bare(label: str, jobs, chains, extra: tuple[str, ...] = ()) -> Measured:
    """Every chain's command, bare, one after the other, then the agent stopped."""
    env = {**BASE_ENV, **jobs.duplicity.env(jobs.encryption)}
    load = os.getloadavg()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    for chain in chains:
        run_bare_one(jobs, chain, env, extra)
    subprocess.run(["gpgconf", "--kill", "gpg-agent"], env={**BASE_ENV, **env},
                   stdin=subprocess.DEVNULL, capture_output=True, check=True)  # fmt: skip
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return Measured(label, wall, cpu, len(chains), load=load)


def run_bare_one(jobs, chain, env: dict[str, str], extra: tuple[str, ...] = ()) -> None:
    # What Duplicity._run does around the command: the GnuPG home and the archive dir exist.
    os.makedirs(jobs.duplicity.gnupg_home, mode=0o700, exist_ok=True)
    os.makedirs(jobs.duplicity.archive_dir, mode=0o700, exist_ok=True)
    with tempfile.TemporaryFile() as log_file:
        argv = backup_argv(jobs, chain, log_file.fileno(), extra)
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, env=env,
                              pass_fds=(log_file.fileno(),), start_new_session=True)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"bare duplicity failed ({done.returncode}) for {chain.name}:\n"
                         + done.stderr.decode(errors="replace")[-2000:])  # fmt: skip


def argv_check(jobs, events: list[dict]) -> tuple[int, int, list[str]]:
    """How many of hub-backup's logged duplicity command lines equal the bench's for the same
    chain: (equal, compared, the first difference)."""
    by_name = {chain.name: chain for chain in jobs.chains()}
    equal, compared, first = 0, 0, []
    for _, _, logged in commands(events, "duplicity"):
        logged_argv = shlex.split(logged)
        name = next((arg.split("=", 1)[1] for arg in logged_argv if arg.startswith("--name=")),
                    None)  # fmt: skip
        if name not in by_name:
            continue
        ours = comparable(backup_argv(jobs, by_name[name], 0))
        compared += 1
        if comparable(logged_argv) == ours:
            equal += 1
        elif not first:
            first = [f"hub-backup: {shlex.join(comparable(logged_argv))}",
                     f"bench:      {shlex.join(ours)}"]  # fmt: skip
    return equal, compared, first


def tree_bytes(top: Path) -> int:
    return sum(path.stat().st_size for path in top.rglob("*") if path.is_file())


# --- the run --------------------------------------------------------------------------------


def phase_config(scratch: Path, name: str, source: Path, secret: Path, parallelism: int) -> Path:
    work = scratch / name
    work.mkdir()
    return write_config(work / "backup.toml", source=source, target_root=work / "targets",
                        passphrase_file=secret, work=work, parallelism=parallelism)  # fmt: skip


def wait_out_the_clock_margin(built: float) -> None:
    """(d) measures runs that find their homes unchanged since (c) began; changes stamped
    up to CLOCK_MARGIN_S before a backup began count as made after it (a file server's
    clock may lag), so (c) must begin that long after the homes were built."""
    wait = built + CLOCK_MARGIN_S + 1 - time.time()
    if wait > 0:
        print(f"waiting {wait:.0f} s: the homes must be {CLOCK_MARGIN_S:.0f} s old when (c) "
              "begins, for (d) to find them unchanged", flush=True)  # fmt: skip
        time.sleep(wait)


def run_all(args, scratch: Path) -> dict:
    source = scratch / "homes"
    started = time.monotonic()
    homes = build_homes(source, args.homes, args.files, args.megabyte_files, args.big_mb)
    results: dict = {"homes": homes, "build_s": time.monotonic() - started}
    built = time.time()
    print(f"built {homes} homes in {results['build_s']:.0f} s", flush=True)
    secret = scratch / "passphrase"
    secret.write_text(PASSPHRASE + "\n")
    secret.chmod(0o600)
    configs = {name: phase_config(scratch, name, source, secret, parallelism)
               for name, parallelism in (("a", 1), ("b", 1), ("c", 2))}  # fmt: skip

    os.sync()
    print("(a) bare duplicity, serially ...", flush=True)
    bare_jobs = load_jobs(configs["a"])
    chains = bare_jobs.chains()
    results["a"] = run_bare("(a) bare duplicity, serial", bare_jobs, chains)
    results["a"].kinds = {"full": len(chains)}
    results["a"].target_bytes = tree_bytes(scratch / "a" / "targets")

    for name, label in (("b", "(b) hub-backup run, parallelism 1"),
                        ("c", "(c) hub-backup run, parallelism 2")):  # fmt: skip
        os.sync()
        if name == "c":
            wait_out_the_clock_margin(built)
        print(f"{label} ...", flush=True)
        measured, events = run_hub_backup(label, configs[name], scratch / name / "run.log")
        measured.target_bytes = tree_bytes(scratch / name / "targets")
        results[name] = measured
        if name == "b":
            results["argv"] = argv_check(load_jobs(configs["b"]), events)

    os.sync()
    label = "(d) hub-backup run, unchanged, parallelism 2"
    print(f"{label} ...", flush=True)
    before = tree_bytes(scratch / "c" / "targets")
    results["d"], _ = run_hub_backup(label, configs["c"], scratch / "c" / "hourly.log")
    results["d"].target_bytes = tree_bytes(scratch / "c" / "targets") - before

    sample = [chain for chain in chains if chain.user != "big"][: args.hourly_sample]
    if sample:
        os.sync()
        label = f"(e) bare incremental, unchanged, {len(sample)} homes"
        print(f"{label} ...", flush=True)
        before = tree_bytes(scratch / "a" / "targets")
        results["e"] = run_bare(label, bare_jobs, sample)
        results["e"].kinds = {"incremental": len(sample)}
        results["e"].target_bytes = tree_bytes(scratch / "a" / "targets") - before
    if sample and args.low_s2k_count:
        results.update(low_s2k_phases(args, scratch, source, secret, sample))
    return results


def low_s2k_phases(args, scratch: Path, source: Path, secret: Path, sample) -> dict:
    """Bare duplicity on the sample homes with gpg's passphrase hashing (s2k) turned down: a
    full, then an unchanged incremental. Every gpg call of a symmetric backup hashes the
    passphrase (gpg's default count costs ~0.2 CPU s a call); duplicity makes several a run."""
    extra = (f"--gpg-options=--s2k-count={args.low_s2k_count}",)
    jobs = load_jobs(phase_config(scratch, "f", source, secret, 1))
    chains = [chain for chain in jobs.chains() if chain.name in {c.name for c in sample}]
    found = {}
    for key, label, kind in (
        ("f1", f"(f1) bare full, s2k-count {args.low_s2k_count}", "full"),
        ("f2", f"(f2) bare incremental, unchanged, s2k {args.low_s2k_count}",
         "incremental"),
    ):  # fmt: skip
        os.sync()
        print(f"{label} ({len(chains)} homes) ...", flush=True)
        found[key] = run_bare(label, jobs, chains, extra)
        found[key].kinds = {kind: len(chains)}
    return found


def report(args, results: dict, total_s: float) -> None:
    rows = [results[key] for key in ("a", "b", "c", "d", "e", "f1", "f2") if key in results]
    print()
    print(f"hub-backup vs bare duplicity 3.2.1: {results['homes']} homes ({args.homes} x "
          f"{args.files} files, {args.megabyte_files} of them 1 MB, + one of {args.big_mb} MB); "
          f"symmetric gpg; file:// targets on the same disk; {os.cpu_count()} cores shared "
          f"with other work")  # fmt: skip
    print(f"{'phase':46} {'wall s':>8} {'CPU s':>7} {'chains':>7} {'own CPU':>8} "
          f"{'peak RSS':>9} {'target MB':>10} {'load 1m':>8}")  # fmt: skip
    for row in rows:
        own = "-" if row.own_cpu_s is None else f"{row.own_cpu_s:.1f}"
        rss = "-" if row.peak_rss_mib is None else f"{row.peak_rss_mib:.0f} MiB"
        kinds = ",".join(f"{count} {kind}" for kind, count in sorted(row.kinds.items()))
        print(f"{row.label:46} {row.wall_s:8.1f} {row.cpu_s:7.1f} {row.chains:7d} {own:>8} "
              f"{rss:>9} {row.target_bytes / 1e6:10.1f} {row.load[0]:8.2f}  {kinds}")  # fmt: skip
    print()
    for row in rows:
        if row.split:
            s = row.split
            print(f"{row.label}: duplicity ran {s['duplicity_busy_s']:.1f} s of "
                  f"{row.wall_s:.1f} s (sum of its commands {s['duplicity_sum_s']:.1f} s); "
                  f"hub-backup alone: start-up {s['startup_s']:.2f} s, between commands "
                  f"{s['idle_between_s']:.2f} s (mean gap {s['gap_mean_ms']:.0f} ms), end "
                  f"{s['end_s']:.2f} s; gpgconf {s['gpgconf_s']:.2f} s")  # fmt: skip
    equal, compared, first = results["argv"]
    print(f"duplicity command lines of (a) equal to those hub-backup ran in (b): "
          f"{equal}/{compared}" + ("" if equal == compared else "\n  " + "\n  ".join(first)))
    a, b, c, d = (results[key] for key in "abcd")
    ratio = b.wall_s / a.wall_s
    print(f"ratio (b)/(a) wall: {ratio:.3f} (goal <= {RATIO_GOAL}: "
          f"{'met' if ratio <= RATIO_GOAL else 'NOT met'}); CPU: {b.cpu_s / a.cpu_s:.3f}")
    print(f"speed-up (b)/(c) at parallelism 2: {b.wall_s / c.wall_s:.2f}x")
    hourly = d.wall_s * (200 / d.chains) if d.chains else float("nan")
    print(f"unchanged hourly run (d): {d.wall_s:.1f} s for {d.chains} chains, "
          f"{1000 * d.wall_s / max(d.chains, 1):.0f} ms per chain; scaled to 200 homes: "
          f"{hourly:.0f} s (goal < {HOURLY_GOAL_S:.0f} s: "
          f"{'met' if hourly < HOURLY_GOAL_S else 'NOT met'})")  # fmt: skip
    if "e" in results:
        e = results["e"]
        per = e.wall_s / e.chains
        print(f"bare duplicity's own unchanged incremental (e): {1000 * per:.0f} ms per home "
              f"serially, {e.cpu_s / e.chains:.2f} CPU s each; 200 homes would take "
              f"{200 * per:.0f} s serially, >= {200 * e.cpu_s / e.chains / os.cpu_count():.0f} "
              f"s on {os.cpu_count()} cores")  # fmt: skip
    if "f2" in results:
        f1, f2 = results["f1"], results["f2"]
        print(f"with gpg --s2k-count {args.low_s2k_count} (f): a full of a small home "
              f"{1000 * f1.wall_s / f1.chains:.0f} ms, an unchanged incremental "
              f"{1000 * f2.wall_s / f2.chains:.0f} ms ({f2.cpu_s / f2.chains:.2f} CPU s); 200 "
              f"unchanged homes would take {200 * f2.wall_s / f2.chains:.0f} s "
              "serially")  # fmt: skip
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; "
          f"benchmark run time {total_s / 60:.1f} min")  # fmt: skip


def stop_agents(scratch: Path) -> None:
    """Stop the gpg-agent of every GnuPG home the run used (a failed phase leaves one)."""
    for home in scratch.glob("*/cache/.gnupg"):
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env={**BASE_ENV, "GNUPGHOME": str(home)},
                       stdin=subprocess.DEVNULL, capture_output=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--homes", type=int, default=200)
    parser.add_argument("--files", type=int, default=50, help="files per home (at least 20)")
    parser.add_argument("--megabyte-files", type=int, default=0,
                        help="how many of each home's files are 1 MB")  # fmt: skip
    parser.add_argument("--big-mb", type=int, default=200, help="the big home's size (0: none)")
    parser.add_argument("--hourly-sample", type=int, default=20,
                        help="homes for bare duplicity's unchanged incremental (e)")  # fmt: skip
    parser.add_argument("--low-s2k-count", type=int, default=65536, metavar="N",
                        help="phase (f): the sample again with gpg --s2k-count N (0: skip)")
    parser.add_argument("--quick", action="store_true", help="20 homes, a 20 MB big home")
    parser.add_argument("--keep", metavar="DIR", help="keep hub-backup's logs and state here")
    parser.add_argument("--scratch", metavar="DIR", help="parent of the temporary directory")
    args = parser.parse_args()
    if args.quick:
        args.homes, args.big_mb, args.hourly_sample = 20, 20, 5
    if os.geteuid() != 0:
        raise SystemExit("run as root: the homes belong to many users")
    started = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="hub-backup-bench-", dir=args.scratch))
    try:
        results = run_all(args, scratch)
        report(args, results, time.monotonic() - started)
    finally:
        stop_agents(scratch)
        if args.keep:
            keep = Path(args.keep)
            keep.mkdir(parents=True, exist_ok=True)
            for name in "bc":
                for log in (scratch / name).glob("*.log"):
                    shutil.copy(log, keep / f"{name}-{log.name}")
                if (scratch / name / "state").exists():
                    shutil.copytree(scratch / name / "state", keep / f"{name}-state",
                                    dirs_exist_ok=True, ignore=shutil.ignore_patterns("locks"))
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
