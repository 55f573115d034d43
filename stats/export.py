"""Copies of activity.sqlite for analysts: a whole-file snapshot, or every view as CSV.

Both read one consistent moment of the database while the collector keeps writing: the
snapshot is one `VACUUM INTO` (a single read transaction; WAL lets the collector commit
meanwhile), the CSV files are all read inside one read transaction. A poll is one transaction,
so a copy holds whole polls only.

Nothing half-written ever appears at the target: the copy is made in a hidden file beside it,
checked, fsync'd and only then given its name. By default an existing target is refused
(`ExportError`, exit 2 in `hub-stats export`; a copy that cannot be written, ExportFailed, is
exit 1): an analyst's earlier copy is never replaced by accident; `overwrite=True` replaces it
atomically (the web download uses that for its cache).
The snapshot is a standalone file: journal_mode DELETE (no -wal/-shm beside it needed),
`PRAGMA integrity_check` ok, same schema version, views and descriptions as the original. It
is created with mode 0600, like everything holding user names.
"""

from __future__ import annotations

import csv
import errno
import os
import sqlite3
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

from hubsidecars.config import ConfigError
from hubsidecars.errors import EXIT_FAILED
from stats.schema import VIEWS


class ExportError(ConfigError):
    """An export refused for a reason the user can fix (one line; exit 2 from the CLI)."""


class ExportFailed(ExportError):
    """The copy could not be written (a full disk, an I/O error): a failed command, exit 1."""

    exit_code = EXIT_FAILED


def export_snapshot(db_path: str, out_path: str, *, overwrite: bool = False) -> str:
    """Write a consistent, standalone copy of `db_path` to `out_path`; returns out_path.
    A failure to write the copy (a full disk included) is one ExportError, and leaves
    nothing beside the target."""
    source = _open_source(db_path)
    out = Path(out_path)
    if not overwrite and out.exists():
        raise ExportError(f"{out} exists: choose another name or remove it first")
    if not out.parent.is_dir():
        raise ExportError(f"{out.parent} is not a directory")
    handle, temporary = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial",
                                         dir=out.parent)  # fmt: skip
    os.close(handle)  # VACUUM INTO accepts an existing file when it is empty
    try:
        try:
            source.execute("VACUUM INTO ?", [temporary])
        finally:
            source.close()
        _make_standalone(temporary)
        _fsync_file(temporary)
        if overwrite:
            os.replace(temporary, out)
        else:
            # link() refuses an existing name: no window in which another file could be lost
            try:
                os.link(temporary, out)
            except FileExistsError:
                raise ExportError(f"{out} exists: choose another name or remove it first") from None
            os.unlink(temporary)
        _fsync_dir(out.parent)
    except (sqlite3.Error, OSError) as error:
        _remove_with_journals(temporary)
        raise ExportFailed(f"cannot write the copy at {out}: {_describe(error)}") from None
    except BaseException:
        _remove_with_journals(temporary)
        raise
    return str(out)


def _remove_with_journals(path: str) -> None:
    """The file and whatever SQLite made beside it while writing it (VACUUM INTO writes
    through a rollback journal; a WAL copy has -wal and -shm)."""
    for suffix in ("", "-journal", "-wal", "-shm"):
        Path(path + suffix).unlink(missing_ok=True)


def _describe(error: sqlite3.Error | OSError) -> str:
    """The error in a few words for one line; a full disk said plainly."""
    if isinstance(error, OSError):
        if error.errno == errno.ENOSPC:
            return "its file system is full"
        return error.strerror or str(error)
    if getattr(error, "sqlite_errorname", "") == "SQLITE_FULL":
        return "its file system is full"
    return str(error)


def export_csv(db_path: str, out_dir: str) -> list[str]:
    """Each view of VIEWS as OUT_DIR/NAME.csv (UTF-8, a header row, NULL as an empty field,
    text that a spreadsheet would run as a formula quoted: see `write_csv`), all read from
    the same moment of the database. Existing files of those names are replaced (each
    atomically; new files are 0600). Returns the paths written, in VIEWS order."""
    source = _open_source(db_path)
    target = Path(out_dir)
    written = []
    try:
        target.mkdir(parents=True, exist_ok=True)
        source.execute("BEGIN")  # one read transaction: every file shows the same polls
        missing = [name for name in VIEWS if not _has_view(source, name)]
        if missing:
            raise ExportError(
                f"{db_path} lacks the views {', '.join(missing)}: it was written by another "
                "hub-stats version; open it once with this one"
            )
        for name in VIEWS:
            cursor = source.execute(f"SELECT * FROM [{name}]")
            header = [column[0] for column in cursor.description]
            written.append(_write_csv(target / f"{name}.csv", header, cursor))
        source.execute("COMMIT")
        _fsync_dir(target)
    except (sqlite3.Error, OSError) as error:
        raise ExportFailed(f"cannot write the CSV files in {target}: {_describe(error)}") from None
    finally:
        source.close()
    return written


# A spreadsheet runs a cell that starts with one of these as a formula (OWASP's list): the
# hub lets users pick names such as '=HYPERLINK(...)' under some authenticators.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """A text value a spreadsheet would run as a formula gets a leading single quote (shown
    as text, the quote hidden, by Excel, LibreOffice and Google Sheets); others unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def write_csv(out: TextIO, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """The one CSV writer of hub-stats (export --csv and the web's /views/NAME.csv): a
    header row, NULL as an empty field, formula-like text quoted (`spreadsheet_safe`)."""
    writer = csv.writer(out)
    writer.writerow([spreadsheet_safe(name) for name in header])
    writer.writerows([spreadsheet_safe(value) for value in row] for row in rows)


def _open_source(db_path: str) -> sqlite3.Connection:
    """The collector's database, read-only (its WAL included)."""
    if not Path(db_path).is_file():
        raise ExportError(f"no activity database at {db_path}")
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as error:
        raise ExportError(f"cannot read {db_path}: {error}") from None
    return conn


def _has_view(conn: sqlite3.Connection, name: str) -> bool:
    query = "SELECT 1 FROM sqlite_master WHERE type = 'view' AND name = ?"
    return conn.execute(query, [name]).fetchone() is not None


def _make_standalone(path: str) -> None:
    """Leave WAL mode (the copy travels alone, without -wal and -shm) and check the copy."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = DELETE").fetchone()
        result = conn.execute("PRAGMA integrity_check").fetchall()
        if result != [("ok",)]:
            raise RuntimeError(f"the snapshot failed its integrity check: {result[:5]}")
    finally:
        conn.close()


def _write_csv(path: Path, header: list[str], rows) -> str:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial",
                                         dir=path.parent)  # fmt: skip
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            write_csv(out, header, rows)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return str(path)


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
