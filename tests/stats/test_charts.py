"""`hub-stats charts OUT_DIR`: the charts as image files, showing the data put in."""

from __future__ import annotations

import re
import struct
import subprocess
from pathlib import Path
from xml.etree import ElementTree

import pytest

from realparts.stats import HUB_STATS
from stats.charts import build_charts, render_charts
from stats.schema import connect
from tests.stats import activity_data as known

NAMES = ["daily_active_users", "concurrent_servers", "hour_of_week"]


@pytest.fixture
def activity_db(tmp_path: Path) -> Path:
    path = tmp_path / "activity.sqlite"
    known.fill(str(path))
    return path


def aria_labels(svg_path: Path) -> list[str]:
    """The labels Vega gives the marks: their values, as a screen reader reads them."""
    root = ElementTree.parse(svg_path).getroot()  # also proves the SVG is well-formed XML
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return [element.get("aria-label") for element in root.iter() if element.get("aria-label")]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is no PNG"
    assert data.endswith(b"IEND\xaeB`\x82"), f"{path} is cut short"
    return struct.unpack(">II", data[16:24])


def test_svg_charts_show_the_known_figures(activity_db, tmp_path):
    written = render_charts(str(activity_db), str(tmp_path / "out"), image_format="svg")
    assert written == [str(tmp_path / "out" / f"{name}.svg") for name in NAMES]

    daily = aria_labels(tmp_path / "out" / "daily_active_users.svg")
    bars = dict(re.fullmatch(r"day \(UTC\): (\S+); active users: (\d+)", label).groups()
                for label in daily if label.startswith("day (UTC):"))  # fmt: skip
    assert {day: int(count) for day, count in bars.items()} == known.DAILY_ACTIVE_USERS
    assert "Title text 'Daily active users'" in daily

    servers = aria_labels(tmp_path / "out" / "concurrent_servers.svg")
    points = [int(label.rsplit(": ", 1)[1]) for label in servers
              if label.startswith("poll time (UTC):")]  # fmt: skip
    # the line carries one label per point too (Vega labels the whole line once)
    assert points[-len(known.SERVERS_PER_POLL) :] == known.SERVERS_PER_POLL

    cells = aria_labels(tmp_path / "out" / "hour_of_week.svg")
    busy = {label for label in cells
            if re.fullmatch(r"\w{3} \d\d:00: [1-9]\d* user-hours", label)}  # fmt: skip
    weekdays = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
    assert busy == {f"{weekdays[day]} {hour:02d}:00: {count} user-hours"
                    for (day, hour), count in known.HOUR_OF_WEEK.items()}  # fmt: skip
    assert sum(1 for label in cells if label.endswith(" user-hours")) == 7 * 24


def test_png_charts_are_whole_images(activity_db, tmp_path):
    written = render_charts(str(activity_db), str(tmp_path), image_format="png")
    assert [Path(path).name for path in written] == [f"{name}.png" for name in NAMES]
    for path in written:
        width, height = png_size(Path(path))
        assert width >= 600 and height >= 200, (path, width, height)
    assert not list(tmp_path.glob("*.tmp"))


def test_more_than_three_days_draws_the_daily_peak(activity_db, tmp_path):
    known.add_later_day(str(activity_db))
    render_charts(str(activity_db), str(tmp_path), image_format="svg")
    labels = aria_labels(tmp_path / "concurrent_servers.svg")
    bars = dict(re.fullmatch(r"day \(UTC\): (\S+); peak servers: (\d+)", label).groups()
                for label in labels if label.startswith("day (UTC):"))  # fmt: skip
    assert {day: int(peak) for day, peak in bars.items()} == {
        **known.PEAK_SERVERS_PER_DAY,
        "2026-03-09": 2,
    }
    assert "Title text 'Peak concurrent servers'" in labels


def test_the_page_and_the_files_draw_the_same_specs(activity_db):
    """One set of specs: what the page inlines is what the files are drawn from."""
    from stats.queries import ActivityStore

    db = connect(str(activity_db), readonly=True)
    try:
        direct = [chart.spec for chart in build_charts(db)]
    finally:
        db.conn.close()
    assert [chart.spec for chart in ActivityStore(str(activity_db)).charts()] == direct


def test_an_empty_database_still_draws_three_charts(tmp_path):
    path = tmp_path / "empty.sqlite"
    connect(str(path)).conn.close()
    written = render_charts(str(path), str(tmp_path / "out"), image_format="svg")
    assert len(written) == 3
    for name in written:
        aria_labels(Path(name))


def test_the_command_writes_the_files_and_prints_their_paths(activity_db, tmp_path):
    out = tmp_path / "report"
    done = subprocess.run([str(HUB_STATS), "charts", str(out), "--format", "svg",
                           "--db", str(activity_db)], check=False, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(out / f"{name}.svg") for name in NAMES]
    default = subprocess.run([str(HUB_STATS), "charts", str(out), "--db", str(activity_db)],
                             check=False, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert default.returncode == 0, default.stderr
    for name in NAMES:
        png_size(out / f"{name}.png")


def test_the_command_without_a_database_says_so_in_one_line(tmp_path):
    missing = tmp_path / "nowhere.sqlite"
    done = subprocess.run([str(HUB_STATS), "charts", str(tmp_path / "out"), "--db",
                           str(missing)], check=False, capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == f"hub-stats: error: no activity database at {missing} (set --db)"
    assert not missing.exists()


def test_the_heatmap_adds_up_the_same_hour_of_different_weeks(tmp_path):
    """Monday 09:00 in two weeks: one cell with both user-hours, not one row per week
    (the view grouped by the full hour when its inner column shadowed the outer `hour`)."""
    from datetime import UTC, datetime

    from hubsidecars.hubapi import User
    from stats.recorder import record_poll

    path = tmp_path / "weeks.sqlite"
    db = connect(str(path))
    for day in (2, 9, 16):  # three Mondays of March 2026
        moment = datetime(2026, 3, day, 9, 30, tzinfo=UTC)
        record_poll(db, [User("ann", False, (), None, moment),
                         User("ben", False, (), None, moment if day == 9 else None)],
                    time=moment, interval=300)  # fmt: skip
    rows = db.execute("SELECT weekday, hour, user_hours FROM hour_of_week").fetchall()
    db.conn.close()
    assert rows == [(0, 9, 4)]  # ann thrice, ben once
    render_charts(str(path), str(tmp_path), image_format="svg")
    cells = [label for label in aria_labels(tmp_path / "hour_of_week.svg")
             if label.endswith(" user-hours") and not label.endswith(": 0 user-hours")]  # fmt: skip
    assert cells == ["Mon 09:00: 4 user-hours"]


def sqlite_steps(db_path: Path, sql: str) -> int:
    """How much work SQLite does for `sql`: virtual machine steps, counted in thousands
    (deterministic, unlike a time)."""
    import sqlite3

    conn = sqlite3.connect(db_path)
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    conn.set_progress_handler(count, 1000)
    conn.execute(sql).fetchall()
    conn.close()
    return steps[0]


def synthetic_days(path: Path, days: int, users: int = 40) -> None:
    """`days` of hourly polls and one activity event per user per poll, written directly."""
    import sqlite3

    connect(str(path)).conn.close()
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO polls (id, time, interval_s, ok, users, servers_running) "
            "SELECT i, strftime('%Y-%m-%dT%H:%M:%S.000+00:00', '2026-01-01', "
            "'+' || (i * 3600) || ' seconds'), 3600, 1, ?, 1 FROM n", [days * 24, users],
        )  # fmt: skip
        conn.execute(
            "WITH RECURSIVE u(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM u "
            "WHERE value < ?) INSERT INTO activity_events (poll_id, user, server_name, "
            "last_activity) SELECT p.id, 'u' || u.value, NULL, p.time FROM polls p, u",
            [users],
        )  # fmt: skip
    conn.close()


def test_daily_active_users_costs_linear_time_in_the_days_recorded(tmp_path):
    """The charts page reads this view on every load: a year must not cost a minute. The
    work for 40 days is about twice that for 20, not four times (a join of every day with
    every event was quadratic: 68 s of CPU for a synthetic year of 500 users)."""
    costs = {}
    for days in (20, 40):
        path = tmp_path / f"days{days}.sqlite"
        synthetic_days(path, days)
        costs[days] = sqlite_steps(path, "SELECT * FROM daily_active_users")
    assert costs[40] < 2.6 * costs[20], costs


def axis_labels(svg_path: Path) -> dict[str, list[str]]:
    """{"X": [...], "Y": [...]}: the tick labels of each axis, as drawn."""
    root = ElementTree.parse(svg_path).getroot()
    found = {}
    for group in root.iter("{http://www.w3.org/2000/svg}g"):
        which = (group.get("aria-label") or "")[:1]
        if group.get("aria-roledescription") == "axis" and which in "XY":
            found[which] = [text.text for labels in group.iter()
                            if "role-axis-label" in (labels.get("class") or "")
                            for text in labels.iter("{http://www.w3.org/2000/svg}text")]  # fmt: skip
    return found


def one_day_of_polls(path: Path, users: int) -> None:
    """Three hourly polls on Monday 2026-03-02, `users` users active and a server each."""
    from datetime import UTC, datetime

    from hubsidecars.hubapi import Server, User
    from stats.recorder import record_poll

    db = connect(str(path))
    for hour in (9, 10, 11):
        moment = datetime(2026, 3, 2, hour, tzinfo=UTC)
        record_poll(db, [User(f"u{n}", False, (), None, moment, servers={"": Server(
            f"u{n}", "", f"/user/u{n}/", moment, moment, None, True)}) for n in range(users)],
            time=moment, interval=3600)  # fmt: skip
    db.conn.close()


@pytest.mark.parametrize("users", [1, 2])
def test_count_axes_show_whole_numbers_only(tmp_path, users):
    """A count of users or servers has no halves: with one or two users the axes read
    0, 1 (, 2), never 0.5 or 1.5."""
    one_day_of_polls(tmp_path / "activity.sqlite", users)
    render_charts(str(tmp_path / "activity.sqlite"), str(tmp_path), image_format="svg")
    for name in ("daily_active_users", "concurrent_servers"):
        ticks = axis_labels(tmp_path / f"{name}.svg")["Y"]
        assert ticks == [str(count) for count in range(users + 1)], (name, ticks)


def test_a_one_day_window_names_each_date_once(tmp_path):
    one_day_of_polls(tmp_path / "activity.sqlite", 1)
    render_charts(str(tmp_path / "activity.sqlite"), str(tmp_path), image_format="svg")
    dates = axis_labels(tmp_path / "daily_active_users.svg")["X"]
    assert "2026-03-02" in dates and len(dates) == len(set(dates)), dates


def test_a_week_of_days_names_each_date_once(activity_db, tmp_path):
    render_charts(str(activity_db), str(tmp_path), image_format="svg")
    dates = axis_labels(tmp_path / "daily_active_users.svg")["X"]
    assert set(known.DAILY_ACTIVE_USERS) <= set(dates) and len(dates) == len(set(dates)), dates


def test_the_command_takes_a_relative_db_path(activity_db, tmp_path):
    """`hub-stats charts report --db activity.sqlite` in the database's directory, as any
    command takes a relative path."""
    done = subprocess.run([str(HUB_STATS), "charts", "report", "--format", "svg", "--db",
                           activity_db.name], check=False, capture_output=True, text=True,
                          timeout=120, cwd=activity_db.parent)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [f"report/{name}.svg" for name in NAMES]
    for name in NAMES:
        aria_labels(tmp_path / "report" / f"{name}.svg")


def test_the_default_config_file_names_the_database(activity_db, tmp_path):
    """/etc/hub-sidecars/stats.toml is read without --config (the suite moves that directory
    with HUB_SIDECARS_CONFIG_DIR, so the host's /etc is never read)."""
    import os

    (tmp_path / "stats.toml").write_text(f'db = "{activity_db}"\n')
    done = subprocess.run([str(HUB_STATS), "charts", str(tmp_path / "out"), "--format", "svg"],
                          check=False, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HUB_SIDECARS_CONFIG_DIR": str(tmp_path)})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(tmp_path / "out" / f"{name}.svg") for name in NAMES]
