"""The charts page in a real headless Chromium with no internet: the real `hub-stats serve` on
loopback TCP with a token (sent as a browser sends it after the password prompt), every
request the page makes checked, the drawn SVG marks read back and compared with the data put
in, and a screenshot kept (tmp_path/page.png) for a person to look at."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from realparts.chromium import HeadlessChromium
from realparts.net import Endpoint, free_port
from realparts.stats_serve import StatsServeProcess
from tests.stats import activity_data as known

TOKEN = "stats-page-token-0123456789abcdef"

# Each chart's marks as the page drew them: aria-label, and the on-screen height of bars.
READ_MARKS = """
(function () {
  var result = {};
  document.querySelectorAll("div.vega").forEach(function (chart) {
    var marks = chart.querySelectorAll("svg [aria-roledescription]");
    result[chart.id] = Array.prototype.map.call(marks, function (mark) {
      var box = mark.getBoundingClientRect();
      return {role: mark.getAttribute("aria-roledescription"),
              label: mark.getAttribute("aria-label") || "",
              height: box.height, width: box.width};
    });
  });
  return result;
})()
"""


@pytest.fixture
def served_page(tmp_path: Path):
    db = tmp_path / "activity.sqlite"
    known.fill(str(db))
    token_file = tmp_path / "stats.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    endpoint = Endpoint(port=free_port())
    service = StatsServeProcess(db, endpoint, tmp_path / "serve.log",
                                ["--serve-token-file", str(token_file)]).start()  # fmt: skip
    yield endpoint
    service.stop()


@pytest.fixture
def browser(tmp_path: Path):
    chromium = HeadlessChromium(tmp_path).start()
    yield chromium
    chromium.stop()


def open_page(browser: HeadlessChromium, endpoint: Endpoint, password: str | None):
    """The page as a browser gets it once the user typed `password` at the prompt (Basic)."""
    page = browser.new_page()
    if password is not None:
        credentials = base64.b64encode(f"analyst:{password}".encode()).decode()
        page.set_headers({"Authorization": f"Basic {credentials}"})
    page.navigate(f"{endpoint.base_url}/")
    return page


def bar_labels(marks: list[dict], pattern: str) -> dict[str, tuple[int, float]]:
    """{x value: (y value, bar height on screen)} of the bars whose label matches."""
    found = {}
    for mark in marks:
        matched = re.fullmatch(pattern, mark["label"])
        if mark["role"] == "bar" and matched:
            found[matched.group(1)] = (int(matched.group(2)), mark["height"])
    return found


def test_page_draws_the_charts_offline_with_the_data_put_in(served_page, browser, tmp_path):
    page = open_page(browser, served_page, TOKEN)
    assert page.navigation_error == ""
    assert page.wait_for('document.body && document.body.getAttribute("data-charts")') == "done"
    drawn = page.evaluate('Array.from(document.querySelectorAll("div.vega"))'
                          '.map(e => e.id + "=" + e.getAttribute("data-drawn"))')  # fmt: skip
    assert drawn == ["chart-daily_active_users=yes", "chart-concurrent_servers=yes",
                     "chart-hour_of_week=yes"]  # fmt: skip
    shot = page.screenshot(tmp_path / "page.png")
    marks = page.evaluate(READ_MARKS)

    daily = bar_labels(marks["chart-daily_active_users"],
                       r"day \(UTC\): (\S+); active users: (\d+)")  # fmt: skip
    assert {day: value for day, (value, _) in daily.items()} == known.DAILY_ACTIVE_USERS
    # the bars are drawn to scale: 3 users stand three times as tall as 1
    heights = {value: height for value, height in daily.values()}
    assert heights[1] > 10 and heights[3] == pytest.approx(3 * heights[1], rel=0.05)

    points = [int(mark["label"].rsplit(": ", 1)[1]) for mark in marks["chart-concurrent_servers"]
              if mark["role"] == "point"]  # fmt: skip
    assert points == known.SERVERS_PER_POLL

    cells = [mark for mark in marks["chart-hour_of_week"] if mark["role"] == "rect mark"]
    assert len(cells) == 7 * 24 and all(cell["width"] > 5 for cell in cells)
    busy = {cell["label"] for cell in cells if not cell["label"].endswith(": 0 user-hours")}
    weekdays = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
    assert busy == {f"{weekdays[day]} {hour:02d}:00: {count} user-hours"
                    for (day, hour), count in known.HOUR_OF_WEEK.items()}  # fmt: skip

    # the figures of /stats.json are on the page too
    text = page.evaluate("document.body.innerText")
    assert known.LAST_OK_POLL in text and "hub answered 502 Bad Gateway" in text

    # nothing but the service itself was asked for anything, and nothing went wrong
    origins = {urlsplit(url)._replace(path="", query="", fragment="").geturl()
               for url in page.requests if not url.startswith("data:")}  # fmt: skip
    assert origins == {served_page.base_url}
    assert all(status == 200 for status in page.responses.values()), page.responses
    assert page.errors == []
    assert shot.stat().st_size > 20_000
    page.close()


@pytest.mark.parametrize("password", [None, "not-the-token-at-all"])
def test_page_without_the_token_shows_no_data(served_page, browser, password):
    page = open_page(browser, served_page, password)
    # Chromium asked for a password it could not get (headless: no prompt): no page at all
    assert page.navigation_error == "net::ERR_INVALID_AUTH_CREDENTIALS"
    assert page.responses.get(f"{served_page.base_url}/") in (None, 401)
    text = page.evaluate("document.body ? document.body.innerText : ''")
    assert known.LAST_OK_POLL not in text and "users" not in text
    page.close()


def test_a_page_opened_with_the_token_in_its_address_says_what_is_wrong(served_page, browser):
    """http://user:TOKEN@host/: the browser sends the page's request with the token, but
    loads none of the page's scripts (their addresses would carry it too): the page must say
    so instead of showing headings and no charts."""
    page = browser.new_page()
    page.navigate(f"http://analyst:{TOKEN}@{served_page.host}:{served_page.port}/")
    assert page.navigation_error == ""
    # loaded: every script the page names has run or failed by then
    assert page.wait_for('document.readyState === "complete" && document.body.innerText')
    text = page.evaluate("document.body.innerText")
    assert "Daily active users" in text  # the page itself came
    assert page.evaluate('document.body.getAttribute("data-charts")') != "done"
    assert "could not be drawn" in text and "without the token in the address" in text, text


def test_the_warning_is_gone_once_the_charts_are_drawn(served_page, browser):
    page = open_page(browser, served_page, TOKEN)
    assert page.wait_for('document.body && document.body.getAttribute("data-charts")') == "done"
    text = page.evaluate("document.body.innerText")
    assert "could not be drawn" not in text
