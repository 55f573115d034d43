"""The duplicity adapter: builds duplicity 3.x command lines, runs them, reads their --log-fd
(backup.duplicity_log interprets it), and stops them all when hub-backup is stopped.

duplicity has no usable Python API, so it runs as a subprocess through hubsidecars.commands
(stdin /dev/null, minimal environment, own session, timeout). What we learn from a run comes from
its machine-readable log (`--log-fd`, written to an unlinked temporary file), never from the
human output, which is in local time and carries stray debug lines.

Secrets: the passphrase travels only in the child's environment (PASSPHRASE) and is masked in
everything logged or raised; a password inside a target URL is masked too. duplicity's own
lockfile is not relied on (it is broken: see REALPARTS); callers hold their own lock per chain.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import unquote, urlsplit

from backup.duplicity_log import (
    Collection,
    LogRecord,
    backup_kind,
    backup_set_time,
    backup_statistics,
    deleted_files,
    failure_detail,
    parse_collection,
    parse_log,
    unreadable_files,
    unrestored_files,
    verify_outcome,
)
from backup.gpg import GPGCONF, home_env, prepare_home
from backup.gpg import stop_agent as stop_gpg_agent
from hubsidecars.commands import (
    CommandError,
    CommandFailed,
    CommandNotStarted,
    CommandResult,
    RunningCommands,
    Tool,
    mask,
    run_command,
)

# duplicity's exit codes are its log.ErrorCode values (a FatalError exits with its code).
DUPLICITY = Tool(
    "duplicity",
    {
        1: "generic error (verify: differences found)",
        2: "bad command line",
        3: "hostname mismatch",
        4: "no manifests",
        5: "mismatched manifests",
        6: "unreadable manifests",
        7: "cannot open file list",
        8: "bad target URL",
        9: "bad archive dir",
        10: "deprecated option",
        11: "restore target not empty",
        12: "verify directory does not exist",
        13: "backup source does not exist",
        14: "file prefix error",
        15: "bad include/exclude pattern",
        16: "redundant inclusion",
        17: "incremental without a full backup",
        18: "no signatures found",
        19: "path to restore not found in backup",
        20: "no files to restore",
        21: "remote volume checksum mismatch",
        22: "unsigned volume",
        23: "user error (lock held or bad option)",
        30: "exception",
        31: "gpg failure",
        33: "not implemented",
        34: "cannot read free space",
        35: "not enough free space for temporary files",
        36: "cannot read the open files limit",
        37: "open files limit too low",
        38: "connection to the backend failed",
        39: "restart file not found",
        42: "source changed (hostname or path mismatch)",
        44: "volume of the wrong size",
        45: "encryption mismatch",
        46: "PYTHONOPTIMIZE set",
        48: "bad request",
        50: "backend error (target unreachable or unusable)",
        51: "backend permission denied",
        52: "backend not found",
        53: "backend out of space",
        54: "backend command error",
        55: "backend code error",
        56: "backend validation failed",
        70: "redundant filter",
        71: "trailing filter",
        72: "absolute path in files-from",
        73: "empty files-from",
        80: "bad signing key",
        81: "bad encryption key",
        82: "bad hidden encryption key",
    },
)
VERIFY_DIFFERENCES = "verify found differences"
_NO_ENV: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class Encryption:
    """How a chain is encrypted: exactly one of a GPG key (`key_id`) or a symmetric passphrase.

    `passphrase` is the symmetric passphrase, or, with `key_id`, the secret key's passphrase for
    restore and verify ("" or None for a key without one; a backup never needs it). Not shown in
    repr, so a logged or raised Encryption cannot leak it."""

    key_id: str | None = None
    passphrase: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.key_id is not None and not self.key_id.strip():
            raise ValueError("encryption key id is empty")
        if self.key_id is None and not self.passphrase:
            raise ValueError("encryption needs a key id or a symmetric passphrase")

    @property
    def symmetric(self) -> bool:
        return self.key_id is None

@dataclass(frozen=True)
class RunResult:
    """A duplicity run that ended as expected (errors raise DuplicityFailed instead).

    `bytes` is TotalDestinationSizeChange of the backup statistics: what the run added to the
    target (compressed, encrypted volumes and signatures), i.e. storage and transfer cost. The
    other figures (RawDeltaSize, SourceFileSize, NewFiles, ...) are in `statistics`."""

    action: str
    exit_code: int
    meaning: str
    elapsed: float  # seconds, measured by us around the whole run
    kind: str | None = None  # "full" / "incremental" for a backup, else None
    bytes: int | None = None
    statistics: Mapping[str, float] = field(default_factory=dict)
    differences: tuple[str, ...] = ()  # verify: duplicity's "Difference found" messages
    compared: int | None = None  # verify: files compared
    # backup: files duplicity could not read and left out (it still exits 0 and counts them
    # in the statistics' Errors): the backup is sound but incomplete.
    unreadable: tuple[str, ...] = ()
    set_time: str | None = None  # backup: the time duplicity gave the set (UTC ISO 8601)

    @property
    def errors(self) -> int:
        return max(len(self.unreadable), int(self.statistics.get("Errors", 0) or 0))

    @property
    def ok(self) -> bool:
        return self.exit_code == 0



class NoSpace(CommandNotStarted):
    """A file system duplicity must write to (its cache, gpg's home, temp files) is full."""


# Below this, duplicity's cache, gpg's home or a temporary file cannot be written.
SPACE_FLOOR = 1024 * 1024
INODE_FLOOR = 100


def require_space(*paths: str) -> None:
    """Raise NoSpace when the file system of one of `paths` has less than SPACE_FLOOR free
    (for root, the blocks reserved for root count as free; a path that cannot be examined
    is left to duplicity's own error)."""
    for path in paths:
        try:
            fs = os.statvfs(path)
        except OSError:
            continue
        root = os.geteuid() == 0
        free = (fs.f_bfree if root else fs.f_bavail) * fs.f_frsize
        inodes = fs.f_ffree if root else fs.f_favail
        if free < SPACE_FLOOR:
            raise NoSpace(f"no space left on the file system of {path} ({free} bytes free); "
                          "duplicity not started", DUPLICITY, ())  # fmt: skip
        if fs.f_files and inodes < INODE_FLOOR:
            raise NoSpace(f"no free inodes on the file system of {path} ({inodes} left); "
                          "duplicity not started", DUPLICITY, ())  # fmt: skip


class DuplicityFailed(CommandFailed):
    """duplicity exited with an error. str() is one line: the action, the exit code and its
    meaning, and the most useful line of duplicity's own report (secrets masked)."""

    def __init__(self, action: str, failed: CommandFailed, detail: str) -> None:
        super().__init__(failed.tool, failed.argv, failed.exit_code, failed.stderr, failed.stdout)
        self.action = action
        self.detail = detail
        if failed.exit_code == 1 and action != "verify":
            self.meaning = "generic error"
        if failed.exit_code < 0:
            message = f"duplicity {action} was {failed.meaning}"
        else:
            message = f"duplicity {action} failed with exit {failed.exit_code} ({self.meaning})"
        if detail:
            message += f": {detail}"
        self.args = (message,)


class RestoreIncomplete(CommandFailed):
    """duplicity restored, exit 0, but logged files it could not restore (a damaged or
    inconsistent chain: "First patch in sequence ... was a diff"). `files`: their paths,
    relative to the backed-up root."""

    def __init__(self, argv: Sequence[str], files: Sequence[str]) -> None:
        super().__init__(DUPLICITY, tuple(argv), 0, "")
        self.files = tuple(files)
        shown = ", ".join(self.files[:_FILES_NAMED])
        if len(self.files) > _FILES_NAMED:
            shown += f" and {len(self.files) - _FILES_NAMED} more"
        self.args = (f"duplicity could not restore {len(self.files)} file(s) (a damaged "
                     f"backup): {shown}",)  # fmt: skip


_FILES_NAMED = 10


class Duplicity:
    """Runs duplicity 3.x for one archive dir and one GnuPG home.

    Every method takes the chain's `name` (duplicity's --name: the subdirectory of the archive
    dir that caches the chain's signatures) and its Encryption. Raises DuplicityFailed for an
    error exit, CommandTimeout / CommandNotStarted (hubsidecars.commands) otherwise.

    The gpg-agent that runs leave behind is shared by every run on this GnuPG home; stop it with
    stop_agent() once no run is in progress (stopping it under a running duplicity breaks it)."""

    def __init__(
        self,
        executable: str,
        *,
        archive_dir: str,
        gnupg_home: str | None = None,
        tempdir: str | None = None,
        volsize_mb: int = 200,
        timeout: float = 6 * 3600,
        extra_env: Mapping[str, str] = _NO_ENV,
        ssh_options: str = "",
        num_retries: int | None = None,
        retry_delay: int | None = None,
        gpgconf: str = "gpgconf",
        logger: logging.Logger | None = None,
    ) -> None:
        if volsize_mb < 1:
            raise ValueError(f"volume size must be at least 1 MB, not {volsize_mb}")
        if num_retries is not None and num_retries < 1:
            # duplicity's --num-retries counts attempts: with 0 it skips every backend call
            # and fails later on a None listing (measured with 3.2.1 on sftp://).
            raise ValueError(f"num_retries counts attempts and must be at least 1, not "
                             f"{num_retries}")  # fmt: skip
        self.executable = executable
        self.archive_dir = os.path.abspath(archive_dir)
        # Without a home of our own, gpg would use (and leave an agent on) $HOME/.gnupg; the
        # default lives beside the chains' caches (a chain name cannot start with a dot: user
        # names cannot).
        self.gnupg_home = os.path.abspath(gnupg_home or os.path.join(self.archive_dir, ".gnupg"))
        self.tempdir = os.path.abspath(tempdir) if tempdir else None
        self.volsize_mb = volsize_mb
        self.timeout = timeout
        self.extra_env = dict(extra_env)
        self.ssh_options = ssh_options
        self.num_retries = num_retries
        self.retry_delay = retry_delay
        self.gpgconf = gpgconf
        self.logger = logger or logging.getLogger("backup.duplicity")
        # what terminate() stops; once it has, no duplicity may start
        self._running = RunningCommands()
        # duplicity runs in a session of its own (a Ctrl-C must not reach it half-way), so a
        # kill -9 of hub-backup alone would leave it running on: started through `setpriv
        # --pdeathsig KILL` (util-linux), it dies with the thread that started it.
        self._die_with_us = shutil.which("setpriv")

    # --- the verbs ---------------------------------------------------------------------------

    def backup(
        self,
        source: str,
        target: str,
        *,
        name: str,
        encryption: Encryption,
        full: bool = False,
        full_if_older_than: float | None = None,
        excludes: Sequence[str] = (),
        dry_run: bool = False,
    ) -> RunResult:
        """A full backup when `full`, else duplicity decides: an incremental on the current
        chain, a full when there is none or the last full is older than `full_if_older_than`
        seconds. --allow-source-mismatch: a home backed up from a renamed host or a moved
        source root continues its chain instead of failing with 42."""
        options = ["--allow-source-mismatch", f"--volsize={self.volsize_mb}"]
        if full_if_older_than is not None and not full:
            options.append(f"--full-if-older-than={max(1, int(full_if_older_than))}s")
        options += [f"--exclude={pattern}" for pattern in excludes]
        if dry_run:
            options.append("--dry-run")
        verb = "full" if full else "backup"
        records, result, elapsed = self._run(
            verb, options, [_local(source), target], name=name, encryption=encryption
        )
        statistics = backup_statistics(records)
        return RunResult(
            action=verb,
            exit_code=result.exit_code,
            meaning=result.meaning,
            elapsed=elapsed,
            kind=backup_kind(records, full_requested=full),
            bytes=_int_or_none(statistics.get("TotalDestinationSizeChange")),
            statistics=statistics,
            unreadable=unreadable_files(records),
            set_time=backup_set_time(records),
        )

    def collection_status(self, target: str, *, name: str, encryption: Encryption) -> Collection:
        records, _, _ = self._run(
            "collection-status", [], [target], name=name, encryption=encryption
        )
        return parse_collection(records)

    def remove_all_but_n_full(
        self, target: str, n: int, *, name: str, encryption: Encryption, dry_run: bool = False
    ) -> RunResult:
        """Delete every chain but the `n` newest. With `dry_run`, duplicity only lists them."""
        if n < 1:
            raise ValueError(f"keeping fewer than one full chain ({n}) would delete every backup")
        options = [] if dry_run else ["--force"]
        return self._simple("remove-all-but-n-full", options, [str(n), target], name, encryption)

    def cleanup(
        self, target: str, *, name: str, encryption: Encryption, dry_run: bool = False
    ) -> RunResult:
        """Delete the leftovers of failed runs (incomplete sets, orphaned files). A set whose
        `.part` manifest is still in the archive dir is not one of them (see discard_partial)."""
        options = [] if dry_run else ["--force"]
        return self._simple("cleanup", options, [target], name, encryption)

    def partial_files(self, name: str) -> list[str]:
        """The local halves of a set duplicity did not finish (its `.part` manifest and
        signatures in the chain's archive dir): while they exist, duplicity's next backup
        resumes that set instead of making it afresh."""
        _check_name(name)
        try:
            entries = os.listdir(os.path.join(self.archive_dir, name))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(entry for entry in entries
                      if entry.startswith("duplicity-") and entry.endswith(".part"))  # fmt: skip

    def discard_partial(self, target: str, *, name: str, encryption: Encryption) -> list[str]:
        """Remove a set the last backup did not finish, from the archive dir and the target,
        so that the next backup makes it afresh. Returns the names of the files removed.

        duplicity 3.2 resumes a set when its archive dir holds the set's `.part` manifest
        (dup_main's Restart), and its resume skips whatever sorts before the restart point
        (files added or changed there since are lost, or restored from the old volume). So
        the `.part` files go first; without them the target's volumes of that set have no
        manifest anywhere, duplicity counts them an incomplete set, and `cleanup --force`
        deletes exactly those (and orphaned signatures), nothing of a complete set."""
        removed = []
        for entry in self.partial_files(name):
            try:
                os.unlink(os.path.join(self.archive_dir, name, entry))
            except FileNotFoundError:
                continue
            removed.append(entry)
        records, _, _ = self._run("cleanup", ["--force"], [target], name=name,
                                  encryption=encryption)  # fmt: skip
        return removed + deleted_files(records)

    def restore(
        self,
        target: str,
        destination: str,
        *,
        name: str,
        encryption: Encryption,
        path: str | None = None,
        time: str | None = None,
        force: bool = False,
        pass_fds: Sequence[int] = (),
        numeric_owner: bool = False,
    ) -> RunResult:
        """Restore the chain (or `path` inside it, relative to the backed-up root) as of `time`
        (duplicity's time formats: "now", "3D", ISO 8601; default: the latest) into
        `destination`, which must not exist unless `force` (exit 11 otherwise). Raises
        RestoreIncomplete when duplicity could not restore some files (it exits 0 then). `pass_fds`
        stay open in duplicity, so that `destination` may be `/proc/self/fd/N/NAME`: a
        directory held open by the caller, whatever happens to the path leading to it.
        `numeric_owner`: files get the uid and gid they had when backed up; otherwise duplicity
        gives them the uid the owner's *name* has here (another person's, after a home name
        was handed to someone else: restore the previous owner's files with this)."""
        options = ["--numeric-owner"] if numeric_owner else []
        if path is not None:
            options.append(f"--path-to-restore={path}")
        if time is not None:
            options.append(f"--time={time}")
        if force:
            options.append("--force")
        records, result, elapsed = self._run("restore", options, [target, _local(destination)],
                                             name=name, encryption=encryption,
                                             pass_fds=pass_fds)  # fmt: skip
        missing = unrestored_files(records)
        if missing and path:  # duplicity names them relative to the path restored
            missing = tuple(path if name == "." else f"{path.rstrip('/')}/{name}"
                            for name in missing)  # fmt: skip
        if missing:
            raise RestoreIncomplete(result.argv, missing)
        return RunResult("restore", result.exit_code, result.meaning, elapsed)

    def verify(
        self,
        source: str,
        target: str,
        *,
        name: str,
        encryption: Encryption,
        compare_data: bool = True,
        path: str | None = None,
        excludes: Sequence[str] = (),
    ) -> RunResult:
        """Compare the latest backup with `source` (give the backup's `excludes`, or the
        excluded files count as differences). Differences are a result, not an error:
        exit 1 with duplicity's verify summary gives meaning VERIFY_DIFFERENCES, the
        `differences` messages and `compared`; a 1 without the summary is a failure."""
        options = ["--allow-source-mismatch"]
        if compare_data:
            options.append("--compare-data")
        if path is not None:
            options.append(f"--path-to-restore={path}")
        options += [f"--exclude={pattern}" for pattern in excludes]
        records, result, elapsed = self._run(
            "verify", options, [target, _local(source)], name=name, encryption=encryption,
            accept_differences=True,
        )  # fmt: skip
        compared, differences = verify_outcome(records)
        meaning = VERIFY_DIFFERENCES if result.exit_code == 1 else result.meaning
        return RunResult("verify", result.exit_code, meaning, elapsed,
                         differences=differences, compared=compared)  # fmt: skip

    def terminate(self, grace: float = 5.0) -> int:
        """Stop every duplicity this adapter runs (from another thread, e.g. on SIGTERM):
        SIGTERM to each one's process group, SIGKILL after `grace` seconds to what is left of
        it. What it was writing is redone by the next run (discard_partial). Returns how
        many. Call `finish_terminating` before the program exits: duplicity dies of SIGTERM
        at once, but a gpg it started handles SIGTERM and may be stuck (a frozen target)."""
        return self._running.terminate(grace)

    def finish_terminating(self) -> None:
        self._running.finish_terminating()

    def _launch_agent(self) -> None:
        """Start this GnuPG home's gpg-agent (if not running) from an environment without the
        passphrase: the agent duplicity's gpg would start inherits duplicity's environment,
        PASSPHRASE included, and outlives the run. A failure is left to gpg to report."""
        try:
            run_command([self.gpgconf, "--launch", "gpg-agent"], tool=GPGCONF, timeout=30,
                        env=home_env(self.gnupg_home), logger=self.logger)  # fmt: skip
        except CommandError:
            pass  # run_command has logged it; gpg starts an agent itself then

    def stop_agent(self) -> None:
        """Stop the gpg-agent of this GnuPG home (each duplicity run leaves one running)."""
        stop_gpg_agent(self.gnupg_home, gpgconf=self.gpgconf, logger=self.logger)

    # --- running -----------------------------------------------------------------------------

    def argv(
        self, verb: str, options: Sequence[str], positional: Sequence[str], *, name: str,
        encryption: Encryption, log_fd: int,
    ) -> list[str]:  # fmt: skip
        """The whole command line (no secret ever goes in it). Public so that a benchmark can
        run the very same commands bare."""
        common = [
            f"--archive-dir={self.archive_dir}",
            f"--name={name}",
            f"--log-fd={log_fd}",
            "--verbosity=notice",
        ]
        if encryption.key_id is not None:
            common.append(f"--encrypt-key={encryption.key_id}")
        if self.tempdir:
            common.append(f"--tempdir={self.tempdir}")
        if self.ssh_options:
            common.append(f"--ssh-options={self.ssh_options}")
        if self.num_retries is not None:
            common.append(f"--num-retries={self.num_retries}")
        if self.retry_delay is not None:
            common.append(f"--backend-retry-delay={self.retry_delay}")
        # through setpriv when there is one: see _die_with_us in __init__
        wrapper = [self._die_with_us, "--pdeathsig", "KILL", "--"] if self._die_with_us else []
        return [*wrapper, self.executable, verb, *options, *common, *positional]

    def env(self, encryption: Encryption) -> dict[str, str]:
        """The child's environment beyond hubsidecars.commands.BASE_ENV."""
        env = {**self.extra_env, **home_env(self.gnupg_home)}
        # Always set, even empty (key without passphrase, or a backup that needs none): unset,
        # duplicity would prompt on a terminal it does not have.
        env["PASSPHRASE"] = encryption.passphrase or ""
        # The temp dir whose space was checked (the caller's TMPDIR when no tempdir is set):
        # duplicity's minimal environment would otherwise send it to /tmp.
        env["TMPDIR"] = self.tempdir or tempfile.gettempdir()
        return env

    def _simple(self, verb, options, positional, name, encryption) -> RunResult:
        _, result, elapsed = self._run(verb, options, positional, name=name,
                                       encryption=encryption)  # fmt: skip
        return RunResult(verb, result.exit_code, result.meaning, elapsed)

    def _run(
        self, verb, options, positional, *, name, encryption, accept_differences=False,
        pass_fds: Sequence[int] = (),
    ) -> tuple[list[LogRecord], CommandResult, float]:
        _check_name(name)
        if self._running.stopping:
            raise CommandNotStarted("hub-backup is stopping: duplicity not started", DUPLICITY, ())
        prepare_home(self.gnupg_home)
        os.makedirs(self.archive_dir, mode=0o700, exist_ok=True)
        # On a full disk gpg reports a pinentry problem and duplicity a gpg failure: the
        # admin would edit gpg's configuration instead of freeing space.
        require_space(self.archive_dir, self.gnupg_home, self.tempdir or tempfile.gettempdir())
        if self._die_with_us and not shutil.which(self.executable):
            # setpriv would start, and fail to run it with an exit code of its own
            raise CommandNotStarted(f"duplicity could not be started: {self.executable} "
                                    "was not found or is not executable", DUPLICITY, ())  # fmt: skip
        holder = lock_holder(os.path.join(self.archive_dir, name, "lockfile"))
        if holder is not None:
            # duplicity itself would fail with exit 23 and "Could not release lockfile"
            raise CommandNotStarted(
                f"the chain {name} is held by a live duplicity (pid {holder[0]}: {holder[1]}); "
                "duplicity not started: wait for it to end or stop it", DUPLICITY, ())
        secrets = _secrets(encryption, positional)
        self._launch_agent()
        # An unlinked file, not a pipe: nobody reads a pipe while run_command waits, and a full
        # pipe would block duplicity forever.
        with tempfile.TemporaryFile(dir=self.tempdir) as log_file:
            fd = log_file.fileno()
            argv = self.argv(verb, options, positional, name=name, encryption=encryption,
                             log_fd=fd)  # fmt: skip
            ok_codes = (0, 1) if accept_differences else (0,)
            try:
                result = run_command(argv, tool=DUPLICITY, timeout=self.timeout,
                                     env=self.env(encryption), secrets=secrets, ok_codes=ok_codes,
                                     pass_fds=(fd, *pass_fds), logger=self.logger,
                                     on_start=self._running.started,
                                     failure_level=logging.DEBUG)  # fmt: skip
            except CommandFailed as failed:
                records = parse_log(_read(log_file))
                detail = mask(failure_detail(records, failed.stderr), secrets)
                if "[Errno 28]" in detail or "No space left on device" in detail:
                    # duplicity names a temporary file, maybe on a disk with room to spare
                    detail = (f"a file system is full (archive_dir {self.archive_dir}, temp "
                              f"dir {self.tempdir or tempfile.gettempdir()} or the target): "
                              f"{detail}")  # fmt: skip
                raise DuplicityFailed(verb, failed, detail) from None
            finally:
                self._running.forget_ended()
            records = parse_log(_read(log_file))
        if result.exit_code == 1 and verify_outcome(records)[0] is None:
            # Exit 1 is accepted from verify only as "differences found".
            failed = CommandFailed(DUPLICITY, result.argv, 1, mask(result.stderr, secrets))
            detail = mask(failure_detail(records, result.stderr), secrets)
            raise DuplicityFailed(verb, failed, detail)
        return records, result, result.duration_ms / 1000


# --- small helpers ---------------------------------------------------------------------------


def lock_holder(path: str, kind: str = "POSIX") -> tuple[int, str] | None:
    """(pid, command line) of a live process holding a lock of `kind` (POSIX: lockf/fcntl, as
    duplicity's lockfile; FLOCK: flock) on `path`, from /proc/locks, without taking it; None
    when none does or it cannot be told."""
    try:
        info = os.stat(path)
        with open("/proc/locks") as locks:
            lines = locks.read().splitlines()
    except OSError:
        return None
    wanted = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    for line in lines:
        words = line.split()
        # 1: POSIX  ADVISORY  WRITE 1234 08:01:5678 0 EOF   ("->" marks a blocked waiter)
        if "->" in words or len(words) < 6 or words[1] != kind or words[5] != wanted:
            continue
        pid = int(words[4])
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
        except OSError:
            continue
        shown = " ".join(part.decode(errors="replace") for part in argv[:3] if part)
        return pid, shown[:120]
    return None



def _read(log_file) -> str:
    log_file.flush()
    log_file.seek(0)
    return log_file.read().decode("utf-8", errors="replace")


def _local(path: str) -> str:
    """An absolute path: never mistaken for an option, independent of the child's cwd."""
    return os.path.abspath(path)


def _check_name(name: str) -> None:
    if not name or name.startswith(".") or "/" in name or "\0" in name:
        raise ValueError(f"unusable chain name {name!r}")


def _secrets(encryption: Encryption, positional: Sequence[str]) -> list[str]:
    """Everything to mask: the passphrase and any password inside a URL argument."""
    secrets = [encryption.passphrase] if encryption.passphrase else []
    for argument in positional:
        if "://" in argument:
            password = urlsplit(argument).password
            if password:
                secrets += [password, unquote(password)]
    return secrets


def _int_or_none(value: float | None) -> int | None:
    return None if value is None else int(value)
