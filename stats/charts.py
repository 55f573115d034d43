"""The main charts of activity.sqlite as Vega-Lite specs, with their data inlined.

One set of specs serves both the charts page of `hub-stats serve` (drawn in the browser by
the Vega bundle the app serves itself) and `hub-stats charts` (drawn into PNG or SVG files
by vl-convert), so the report and the page show the same charts.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import sqlite_utils

VEGA_LITE_SCHEMA = "https://vega.github.io/schema/vega-lite/v6.json"  # an id, never fetched
WIDTH, HEIGHT = 640, 220
# Up to this many days of polls, concurrent servers are drawn poll by poll (a demo, a first
# week); beyond it, one bar per day with the day's peak (a term, a year).
PER_POLL_MAX_DAYS = 3
# Up to this many days on a day axis, one tick a day (beyond, Vega's weeks and months).
DAY_TICKS_MAX_DAYS = 14
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
IMAGE_FORMATS = ("png", "svg")


@dataclass(frozen=True)
class Chart:
    name: str  # file name of the image, id on the page
    title: str
    about: str  # one sentence under the chart on the page
    spec: dict[str, Any]


def build_charts(db: sqlite_utils.Database) -> list[Chart]:
    """The main charts, in page order, from the views of `db`."""
    return [daily_active_users_chart(db), concurrent_servers_chart(db), hour_of_week_chart(db)]


def _base(title: str, description: str, values: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "$schema": VEGA_LITE_SCHEMA,
        "title": title,
        "description": description,
        "width": WIDTH,
        "height": HEIGHT,
        "data": {"values": values},
        "config": {"view": {"stroke": None}, "axis": {"labelFontSize": 11}},
    }


def _count_axis(values: list[dict[str, Any]], field: str, title: str) -> dict[str, Any]:
    """A y encoding for a count (users, servers): whole-number ticks only. Vega's tickMinStep
    alone still draws 0.5 steps when the largest count is 1 or 2; asking for no more ticks
    than the largest count keeps every step whole."""
    peak = max((row[field] or 0 for row in values), default=0)
    return {"field": field, "type": "quantitative", "title": title,
            "axis": {"tickMinStep": 1, "tickCount": max(1, min(int(peak), 5))}}  # fmt: skip


def _day_axis(values: list[dict[str, Any]], title: str) -> dict[str, Any]:
    """An x encoding of one bar per day. Over a few days Vega would tick every few hours,
    and each tick would repeat its day's date: tick once a day there instead."""
    axis: dict[str, Any] = {"format": "%Y-%m-%d", "labelAngle": -40}
    days = [date.fromisoformat(str(row["day"])[:10]) for row in values]
    if days and (max(days) - min(days)).days < DAY_TICKS_MAX_DAYS:
        axis["tickCount"] = {"interval": "day", "step": 1}
    return {"field": "day", "type": "temporal", "timeUnit": "utcyearmonthdate", "title": title,
            "axis": axis}  # fmt: skip


def _rows(db: sqlite_utils.Database, sql: str) -> list[dict[str, Any]]:
    cursor = db.execute(sql)
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def daily_active_users_chart(db: sqlite_utils.Database) -> Chart:
    return _bars_per_day(
        db, "daily_active_users", "active_users",
        Chart("daily_active_users", "Daily active users",
              "Distinct users with any activity, per day (UTC).", {}),
        "active users", "#4c78a8",
    )  # fmt: skip


def _bars_per_day(db: sqlite_utils.Database, view: str, field: str, chart: Chart,
                  counted: str, color: str) -> Chart:  # fmt: skip
    """One bar per day of `view` (one of ours: a constant, never a client's): its `field`
    counted, `counted` naming it on the axis."""
    values = _rows(db, f"SELECT day, {field} FROM {view} ORDER BY day")
    spec = _base(chart.title, chart.about, values)
    spec.update({
        "mark": {"type": "bar", "tooltip": True, "color": color, "width": {"band": 0.85}},
        "encoding": {
            "x": _day_axis(values, "day (UTC)"),
            "y": _count_axis(values, field, counted),
        },
    })  # fmt: skip
    return Chart(chart.name, chart.title, chart.about, spec)


def concurrent_servers_chart(db: sqlite_utils.Database) -> Chart:
    days = db.execute("SELECT count(DISTINCT substr(time, 1, 10)) FROM polls WHERE ok = 1")
    if days.fetchone()[0] <= PER_POLL_MAX_DAYS:
        return _servers_per_poll(db)
    return _peak_servers_per_day(db)


def _servers_per_poll(db: sqlite_utils.Database) -> Chart:
    values = _rows(db, "SELECT time, servers_running, servers_pending FROM polls "
                       "WHERE ok = 1 ORDER BY id")  # fmt: skip
    title = "Concurrent servers"
    spec = _base(title, "Servers running at each successful poll.", values)
    spec.update({
        "mark": {"type": "line", "point": True, "tooltip": True, "interpolate": "step-after",
                 "color": "#f58518"},
        "encoding": {
            "x": {"field": "time", "type": "temporal", "title": "poll time (UTC)",
                  "scale": {"type": "utc"}, "axis": {"format": "%m-%d %H:%M"}},
            "y": _count_axis(values, "servers_running", "servers running"),
        },
    })  # fmt: skip
    return Chart("concurrent_servers", title, spec["description"], spec)


def _peak_servers_per_day(db: sqlite_utils.Database) -> Chart:
    return _bars_per_day(
        db, "peak_concurrent_servers", "peak_servers",
        Chart("concurrent_servers", "Peak concurrent servers",
              "The most servers running at once, per day (at poll times).", {}),
        "peak servers", "#f58518",
    )  # fmt: skip


def hour_of_week_values(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every (weekday, hour) cell, zero where the view has no row: a heatmap with holes
    would hide the quiet hours it is meant to show."""
    found = {(row["weekday"], row["hour"]): row["user_hours"] for row in rows}
    return [
        {"weekday": day, "day_name": WEEKDAYS[day], "hour": hour,
         "user_hours": found.get((day, hour), 0),
         "label": f"{WEEKDAYS[day]} {hour:02d}:00: {found.get((day, hour), 0)} user-hours"}
        for day in range(7) for hour in range(24)
    ]  # fmt: skip


def hour_of_week_chart(db: sqlite_utils.Database) -> Chart:
    values = hour_of_week_values(_rows(db, "SELECT weekday, hour, user_hours FROM hour_of_week"))
    title = "Activity by hour of the week"
    spec = _base(title, "User-hours with activity per weekday and hour (UTC).", values)
    spec["height"] = 7 * 22
    spec.update({
        "mark": {"type": "rect"},
        "encoding": {
            "x": {"field": "hour", "type": "ordinal", "title": "hour (UTC)",
                  "axis": {"labelAngle": 0}},
            "y": {"field": "day_name", "type": "ordinal", "title": None, "sort": list(WEEKDAYS)},
            "color": {"field": "user_hours", "type": "quantitative", "title": "user-hours",
                      "scale": {"range": ["#f4f8fc", "#08519c"], "domainMin": 0}},
            # an aria-label per cell: screen readers, and tests, read the data in the SVG
            "description": {"field": "label"},
            "tooltip": [{"field": "day_name", "title": "day"}, {"field": "hour"},
                        {"field": "user_hours", "title": "user-hours"}],
        },
    })  # fmt: skip
    return Chart("hour_of_week", title, spec["description"], spec)


def render_image(spec: dict[str, Any], image_format: str) -> bytes:
    import vl_convert

    if image_format == "png":
        return vl_convert.vegalite_to_png(spec, scale=2)
    if image_format == "svg":
        return vl_convert.vegalite_to_svg(spec).encode()
    raise ValueError(f"image format must be one of {IMAGE_FORMATS}, got {image_format!r}")


def render_charts(db_path: str, out_dir: str, image_format: str = "png") -> list[str]:
    """Draw the charts of the database at `db_path` into OUT_DIR/NAME.png (or .svg); return
    the paths written. The database is only read."""
    from hubsidecars.config import ConfigError
    from stats.schema import connect

    if image_format not in IMAGE_FORMATS:
        raise ConfigError(f"image format must be one of {', '.join(IMAGE_FORMATS)}")
    if not os.path.exists(db_path):
        raise ConfigError(f"no activity database at {db_path} (set --db)")
    db = connect(db_path, readonly=True)
    try:
        charts = build_charts(db)
    finally:
        db.conn.close()
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for chart in charts:
        path = os.path.join(out_dir, f"{chart.name}.{image_format}")
        data = render_image(chart.spec, image_format)
        temporary = f"{path}.tmp"
        with open(temporary, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)  # a report build never picks up half an image
        written.append(path)
    return written
