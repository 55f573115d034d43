"""Hostile names get the right status and leave the account database byte-identical."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import falcon.testing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realparts.accountdb import snapshot
from realparts.restuser import UID_MIN
from restuser.app import create_app
from restuser.cli import build_store
from restuser.names import DEFAULT_DENY_NAMES
from restuser.prefix import init_prefix
from tests.restuser.conftest import store_settings

# (raw request path exactly as sent, expected status)
CORPUS = [
    ("/users/-rf", 400),
    ("/users/--help", 400),
    ("/users/%2D%2Dprefix%3D%2F", 400),
    ("/users/-o", 400),
    ("/users/..", 400),
    ("/users/%2e%2e", 400),
    ("/users/../../etc/passwd", 400),
    ("/users/..%2F..%2Fetc%2Fpasswd", 400),
    ("/users/alice%2Fbob", 400),
    ("/users/alice%2fbob", 400),
    ("/users/alice%20bob", 400),
    ("/users/alice+bob", 400),
    ("/users/%20alice", 400),
    ("/users/alice%00", 400),
    ("/users/alice%0A", 400),
    ("/users/alice%0D%0AX-Injected:%201", 400),
    ("/users/alice%09", 400),
    ("/users/alice%7F", 400),
    ("/users/%C3%A9lise", 400),
    ("/users/%EF%BD%81lice", 400),  # fullwidth "a"
    ("/users/%D0%B0lice", 400),  # Cyrillic "a"
    ("/users/alice%E2%80%8B", 400),  # zero-width space
    ("/users/%FF%FE", 400),  # not UTF-8
    ("/users/%", 400),
    ("/users/ALICE", 400),
    ("/users/Alice", 400),
    ("/users/1alice", 400),
    ("/users/_alice", 400),
    ("/users/alice.bob", 400),
    ("/users/alice$", 400),
    ("/users/%24%28id%29", 400),
    ("/users/alice;id", 400),
    ("/users/a%3Ab", 400),
    ("/users/" + "a" * 33, 400),
    ("/users/" + "a" * 2000, 400),
    ("/users/" + "a" * 10_000, 414),  # refused by gunicorn before the app
    ("/users/root", 403),
    ("/users/daemon", 403),
    ("/users/nobody", 403),
    ("/users/www-data", 403),
    ("/users/systemd-network", 403),
    ("/users/sshd", 403),
    ("/users/jupyterhub", 403),
    ("/-rf", 400),
    ("/..%2Fetc", 400),
    ("/root", 403),
    ("/ROOT", 400),
]


def test_corpus_over_the_real_service(start_restuser, prefix_root):
    endpoint = start_restuser().endpoint
    before = snapshot(prefix_root)
    wrong = []
    for path, expected in CORPUS:
        for method in ("POST", "GET"):
            if method == "GET" and not path.startswith("/users/"):
                continue
            reply = endpoint.request(method, path)
            if reply.status != expected:
                wrong.append((method, path[:80], reply.status, expected))
            elif expected != 414:
                assert set(reply.json()) == {"title", "description"}
    assert wrong == []
    assert snapshot(prefix_root) == before
    # The service is still healthy and still creates a normal account afterwards.
    assert endpoint.request("POST", "/users/alice").status == 201


NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
TRICKY = st.sampled_from(["-", "/", "..", "\n", "\x00", " ", "%", "é", "\u200b", "A", ":", "$"])
NAMES = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"[a-z][a-z0-9_-]{0,34}", fullmatch=True),
    st.builds(
        lambda a, b, c: a + b + c,
        st.from_regex(r"[a-z]{0,5}", fullmatch=True),
        TRICKY,
        st.from_regex(r"[a-z]{0,5}", fullmatch=True),
    ),  # fmt: skip
    st.sampled_from(["root", "daemon", "nobody", "systemd-x", "hub-admin", "messagebus"]),
)


def expected_status(name: str, root: Path, created: set[str]) -> int:
    """An oracle written from the contract, independent of restuser.names."""
    if "/" in name or not NAME.fullmatch(name):
        return 400
    if any(fnmatch.fnmatchcase(name, denied) for denied in DEFAULT_DENY_NAMES):
        return 403
    passwd = {line.split(":")[0]: int(line.split(":")[2])
              for line in (root / "etc/passwd").read_text().splitlines()}  # fmt: skip
    if name in passwd:
        return 200 if passwd[name] >= UID_MIN else 403
    groups = {line.split(":")[0] for line in (root / "etc/group").read_text().splitlines()}
    if name in groups and name not in created:
        return 403
    return 201


@pytest.fixture(scope="module")
def shared_service(tmp_path_factory):
    """One prefix and app for the whole property run, so repeated names are exercised too."""
    root = tmp_path_factory.mktemp("property") / "root"
    init_prefix(root)
    store = build_store(store_settings(root))
    return SimpleNamespace(
        root=root, client=falcon.testing.TestClient(create_app(store)), created=set()
    )


@settings(max_examples=300, deadline=None)
@given(name=NAMES)
def test_property_any_name(name, shared_service):
    root, created = shared_service.root, shared_service.created
    expected = expected_status(name, root, created)
    before = snapshot(root)
    reply = shared_service.client.simulate_post("/users/" + quote(name, safe=""))
    assert reply.status_code == expected, (name, reply.json)
    if expected == 201:
        created.add(name)
        assert reply.json["name"] == name
    else:
        assert snapshot(root) == before
