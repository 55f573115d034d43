"""activity.sqlite opens in the real Datasette with the shipped metadata: every table, view and
column has a title or description, and Datasette shows them with the data."""

from __future__ import annotations

import html
import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from realparts.restuser import REPO
from stats import datasette
from stats.export import export_snapshot
from tests.stats.activity_data import record_some_polls

SHIPPED = REPO / "stats" / "datasette-metadata.json"
DATASETTE = REPO / ".venv/bin/datasette"


def test_shipped_metadata_is_the_generators_output():
    assert SHIPPED.read_text(encoding="utf-8") == datasette.render(), (
        "stats/datasette-metadata.json differs from the schema's descriptions; regenerate it: "
        ".venv/bin/python -m stats.datasette > stats/datasette-metadata.json"
    )
    assert datasette.shipped_metadata() == SHIPPED.read_text(encoding="utf-8")


def test_the_module_prints_metadata_for_another_file_name():
    done = subprocess.run([str(REPO / ".venv/bin/python"), "-m", "stats.datasette",
                           "--database", "activity-2026"], cwd=REPO, capture_output=True,
                          text=True, check=True)  # fmt: skip
    assert list(json.loads(done.stdout)["databases"]) == ["activity-2026"]


@pytest.fixture(scope="module")
def activity_file(tmp_path_factory) -> Path:
    """What an analyst downloads: a snapshot named activity.sqlite, with polls in it."""
    work = tmp_path_factory.mktemp("datasette")
    record_some_polls(work / "live.sqlite", polls=10)
    return Path(export_snapshot(str(work / "live.sqlite"), str(work / "activity.sqlite")))


def objects_and_columns(path: Path) -> dict[str, list[str]]:
    conn = sqlite3.connect(path)
    names = [row[0] for row in conn.execute(
        "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
        "AND name NOT LIKE 'sqlite_%'")]  # fmt: skip
    found = {name: [row[1] for row in conn.execute(f"PRAGMA table_info([{name}])")]
             for name in names}  # fmt: skip
    conn.close()
    return found


def test_every_table_view_and_column_is_described(activity_file):
    described = datasette.metadata()["databases"]["activity"]["tables"]
    present = objects_and_columns(activity_file)
    assert sorted(described) == sorted(present)
    for name, columns in present.items():
        entry = described[name]
        assert entry["title"] and entry["description"], name
        assert sorted(entry["columns"]) == sorted(columns), name
        assert all(text.strip() for text in entry["columns"].values()), name


def get(activity_file: Path, path: str) -> str:
    done = subprocess.run([str(DATASETTE), str(activity_file), "--metadata", str(SHIPPED),
                           "--get", path], capture_output=True, text=True, timeout=120,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_datasette_serves_a_view_with_its_rows(activity_file):
    rows = json.loads(get(activity_file, "/activity/daily_active_users.json?_shape=array"))
    conn = sqlite3.connect(activity_file)
    expected = [{"day": day, "active_users": n}
                for day, n in conn.execute("SELECT * FROM daily_active_users")]  # fmt: skip
    assert rows == expected and any(row["active_users"] > 0 for row in rows), rows
    legacy = json.loads(get(activity_file, "/activity/activity.json?_shape=array&_size=max"))
    assert len(legacy) == conn.execute("SELECT count(*) FROM activity").fetchone()[0] > 100


def test_datasette_shows_the_descriptions(activity_file):
    served = json.loads(get(activity_file, "/-/metadata.json"))
    assert served == json.loads(SHIPPED.read_text(encoding="utf-8"))
    about, columns = datasette.VIEW_DOCS["daily_active_users"]
    page = html.unescape(get(activity_file, "/activity/daily_active_users"))
    assert about in page
    assert "Daily active users" in page
    assert columns["active_users"] in page  # column descriptions too
    index = html.unescape(get(activity_file, "/activity"))
    assert datasette.DESCRIPTION in index
