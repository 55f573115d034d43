"""The shared writers: a file replaced whole (never written through a planted symlink), and
Prometheus text whose label values survive quotes, backslashes and newlines."""

from __future__ import annotations

import os

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hubsidecars.files import replace_file
from hubsidecars.prometheus import MetricsText


def test_replace_file_replaces_a_planted_symlink_instead_of_writing_through_it(tmp_path):
    precious = tmp_path / "precious"
    precious.write_text("keep me")
    planted = tmp_path / "state" / "status.json"
    planted.parent.mkdir()
    planted.symlink_to(precious)
    replace_file(planted, "{}\n", 0o600)
    assert precious.read_text() == "keep me"
    assert not planted.is_symlink() and planted.read_text() == "{}\n"
    assert (planted.stat().st_mode & 0o777) == 0o600
    assert [p.name for p in planted.parent.iterdir()] == ["status.json"]  # no temporary left


def test_replace_file_that_cannot_replace_raises_and_leaves_no_temporary(tmp_path):
    in_the_way = tmp_path / "metrics.prom"
    in_the_way.mkdir()
    (in_the_way / "inside").write_text("kept")
    with pytest.raises(OSError):
        replace_file(in_the_way, "new")
    assert (in_the_way / "inside").read_text() == "kept"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.prom"]


def test_metrics_text_escapes_label_values_and_keeps_every_digit():
    metrics = MetricsText("hub_test")
    hostile = 'a "quoted" \\ back\nslash'
    metrics.add("last_timestamp_seconds", "gauge", "When.", [({"user": hostile}, 1795000000.25)])
    metrics.add("chains", "gauge", "How many.", [("", 3)])
    families = {f.name: f for f in text_string_to_metric_families(metrics.text())}
    [sample] = families["hub_test_last_timestamp_seconds"].samples
    assert sample.labels == {"user": hostile}
    assert sample.value == 1795000000.25
    assert families["hub_test_chains"].samples[0].value == 3


def test_metrics_text_refuses_a_label_name_prometheus_would_reject():
    with pytest.raises(ValueError, match="label name"):
        MetricsText("hub_test").add("x", "gauge", "x", [({"bad-name": "v"}, 1)])


def test_private_directory_closes_an_open_one_and_refuses_someone_elses(tmp_path):
    from hubsidecars.config import ConfigError
    from hubsidecars.files import private_directory

    opened = tmp_path / "cache"
    opened.mkdir(mode=0o755)
    opened.chmod(0o755)
    private_directory(opened, "archive_dir")
    assert (opened.stat().st_mode & 0o777) == 0o700
    made = private_directory(tmp_path / "new" / "state", "state_dir")
    assert made.is_dir() and (made.stat().st_mode & 0o777) == 0o700

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 4242, 4242)
    with pytest.raises(ConfigError, match="belongs to uid 4242"):
        private_directory(theirs, "state_dir")

    # a symlink (systemd's DynamicUser state directories are) is followed, its target closed
    real = tmp_path / "private" / "real"
    real.mkdir(parents=True, mode=0o755)
    real.chmod(0o755)
    (tmp_path / "link").symlink_to(real)
    private_directory(tmp_path / "link", "state_dir")
    assert (real.stat().st_mode & 0o777) == 0o700
