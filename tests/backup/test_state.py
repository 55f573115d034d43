"""The chain records: written atomically, read back the same, and a record holding what the
code cannot use (a hand edit, an older version, a restored /var) is set aside with a
warning instead of crashing status, metrics or a run."""

from __future__ import annotations

import json
import logging

import pytest

from backup.state import ChainRecord, StateStore

GOOD = {"chain": "home-ada", "user": "ada", "target": "file:///srv/backups/ada",
        "last_attempt": "2026-11-23T10:00:00+00:00", "last_success": "2026-11-23T10:00:00+00:00",
        "last_success_end": "2026-11-23T10:00:09+00:00", "exit_code": 0, "last_bytes": 1234,
        "last_duration_s": 9.5, "newest_full": "2026-11-20T10:00:00+00:00", "incrementals": 3,
        "owner_uid": 1001, "selection": "0123456789abcdef", "drill_ok": True}  # fmt: skip


def test_a_record_reads_back_as_saved(tmp_path):
    store = StateStore(tmp_path)
    store.save(ChainRecord(**GOOD))
    assert store.load("home-ada") == ChainRecord(**GOOD)


def test_a_record_of_an_older_version_reads_with_the_new_fields_at_their_defaults(tmp_path):
    store = StateStore(tmp_path)
    store.path("home-ada").write_text(json.dumps({**GOOD, "in_progress": True}))
    record = store.load("home-ada")
    assert record.in_progress and not record.unfinished and not record.incomplete


@pytest.mark.parametrize(("field", "value"), [
    ("last_success", "yesterday"),
    ("newest_full", "2026-11-20T10:00:00"),  # no offset
    ("last_duration_s", [1]),
    ("last_bytes", "lots"),
    ("exit_code", 0.5),
    ("owner_uid", "1001"),
    ("drill_ok", "yes"),
    ("incrementals", None),
    ("selection", 7),
    ("fulls", ["not a time"]),
    ("unfinished", "no"),
    ("incomplete", 1),
])  # fmt: skip
def test_a_record_with_a_value_the_code_cannot_use_is_set_aside(tmp_path, caplog, field,
                                                                value):  # fmt: skip
    store = StateStore(tmp_path)
    store.save(ChainRecord(**GOOD))
    path = store.path("home-ada")
    path.write_text(json.dumps({**GOOD, field: value}))
    with caplog.at_level(logging.WARNING):
        assert store.load("home-ada") is None
    [warning] = [r for r in caplog.records if "unreadable chain record" in r.getMessage()]
    assert warning.hub_fields["file"] == str(path)
