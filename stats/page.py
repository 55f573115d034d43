"""The HTML charts page of `hub-stats serve`: the charts' specs inlined as JSON, drawn in the
browser by the Vega bundle the app serves itself (static/vega.js), so the page needs nothing
from the internet, ever; and the current figures of /stats.json as a short table."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from stats.charts import Chart

# Draws every chart whose spec is in #chart-specs into #chart-NAME, as SVG (crisp, and its
# marks carry aria-labels with their values); marks the page when all are drawn or failed.
# The page says that its charts could not be drawn until this script takes that back: where
# the scripts never run, the reader sees why instead of headings over empty space.
PAGE_SCRIPT = """\
"use strict";
(function () {
  if (typeof vegaEmbed === "undefined") {
    return;  // static/vega.js did not load: the page's own warning stays up
  }
  document.getElementById("charts-missing").remove();
  var specs = JSON.parse(document.getElementById("chart-specs").textContent);
  var options = {renderer: "svg",
                 actions: {export: true, source: false, compiled: false, editor: false}};
  var drawing = Object.keys(specs).map(function (name) {
    var target = document.getElementById("chart-" + name);
    return vegaEmbed(target, specs[name], options).then(function () {
      target.setAttribute("data-drawn", "yes");
    }, function (error) {
      target.setAttribute("data-drawn", "failed");
      target.textContent = "This chart could not be drawn: " + error;
    });
  });
  Promise.all(drawing).then(function () {
    document.body.setAttribute("data-charts", "done");
  });
})();
"""

STYLE = """\
body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 60rem;
       padding: 0 1rem; color: #222; }
h1 { font-size: 1.5rem; margin-bottom: 0.2rem; }
.now td, .now th { padding: 0.15rem 0.8rem 0.15rem 0; text-align: left; }
.now th { font-weight: normal; color: #555; }
section.chart { margin: 1.5rem 0; }
section.chart p { color: #555; margin: 0.2rem 0 0.5rem; }
.warn { color: #a30; }
ul.views { columns: 2; }
"""


def _json_for_script(value: Any) -> str:
    """JSON safe inside <script>: no '<' can end the element or open a comment."""
    return json.dumps(value, separators=(",", ":")).replace("<", "\\u003c")


def _now_rows(now: Mapping[str, Any]) -> list[tuple[str, str]]:
    if not now.get("last_successful_poll"):
        return [("last successful poll", "none yet")]
    rows = [
        ("last successful poll", now["last_successful_poll"]),
        ("users", str(now["users"])),
        ("active users", (f"{now['active_users']} (a server and activity within the last "
                          f"{now['interval_s']:g} s)")),
        ("servers running", str(now["servers_running"])),
        ("servers starting or stopping", str(now["servers_pending"])),
    ]  # fmt: skip
    for host, figures in (now.get("docker") or {}).get("hosts", {}).items():
        figures_text = (f"containers: {figures['containers']}, "
                        f"CPU: {figures['cpu_percent']:g} %, "
                        f"memory: {figures['memory_bytes'] / 2**20:.0f} MiB")  # fmt: skip
        rows.append((f"Docker host {host}", figures_text))
    return rows


# Shown until page.js runs. The usual cause, met by new users: a browser loads none of a
# page's scripts when the page's address holds credentials (http://user:TOKEN@host/), since
# every relative address on the page then carries them too.
CHARTS_MISSING = (
    '<p id="charts-missing" class="warn">The charts could not be drawn: the page\'s scripts '
    "(static/vega.js and static/page.js) did not run. A browser loads no scripts for a page "
    "opened with the token in its address (http://user:TOKEN@host/): open this page without "
    "the token in the address, and type the token when the browser asks for a password (any "
    "user name). Otherwise, scripts may be turned off for this site.</p>"
)


def render_page(charts: Sequence[Chart], now: Mapping[str, Any],
                views: Mapping[str, str], bundle_version: str) -> str:  # fmt: skip
    """The whole page. `views` maps view name to its one-line description; every link is
    relative, so the page also works behind a reverse proxy under a path."""
    rows = "".join(f"<tr><th>{escape(name)}</th><td>{escape(value)}</td></tr>"
                   for name, value in _now_rows(now))  # fmt: skip
    last = now.get("last_poll") or {}
    warning = ""
    if last and not last.get("ok"):
        warning = (f'<p class="warn">The latest poll ({escape(str(last.get("time")))}) failed: '
                   f"{escape(str(last.get('error')))}</p>")  # fmt: skip
    sections = "".join(
        f'<section class="chart"><h2>{escape(chart.title)}</h2><p>{escape(chart.about)}</p>'
        f'<div id="chart-{escape(chart.name)}" class="vega"></div></section>'
        for chart in charts
    )
    view_items = "".join(
        f'<li><a href="views/{escape(name)}.csv">{escape(name)}.csv</a>: {escape(about)}</li>'
        for name, about in views.items()
    )
    specs = _json_for_script({chart.name: chart.spec for chart in charts})
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>JupyterHub activity</title>
<style>{STYLE}</style>
</head>
<body>
<h1>JupyterHub activity</h1>
<table class="now">{rows}</table>
{warning}
<p><a href="activity.sqlite" download>Download activity.sqlite</a> (a consistent snapshot;
opens in sqlite3, Datasette, pandas) &middot; <a href="stats.json">stats.json</a></p>
{CHARTS_MISSING}
{sections}
<h2>Views as CSV</h2>
<ul class="views">{view_items}</ul>
<script id="chart-specs" type="application/json">{specs}</script>
<script src="static/vega.js?v={escape(bundle_version)}"></script>
<script src="static/page.js?v={escape(bundle_version)}"></script>
</body>
</html>
"""
