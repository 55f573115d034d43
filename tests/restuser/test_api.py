"""The HTTP contract of DESIGN.md, through falcon.testing with a real AccountStore."""

from __future__ import annotations

import falcon.testing
import pytest

from realparts.accountdb import snapshot
from restuser.app import create_app

ACCOUNT_KEYS = {"name", "uid", "gid", "home", "shell", "created"}


@pytest.fixture
def client(store):
    return falcon.testing.TestClient(create_app(store))


def test_create_then_recreate(client):
    first = client.simulate_post("/users/alice")
    assert first.status_code == 201
    assert set(first.json) == ACCOUNT_KEYS and first.json["created"] is True
    again = client.simulate_post("/users/alice", json={"anything": "ignored"})
    assert again.status_code == 200
    assert again.json == {**first.json, "created": False}


def test_lookup_and_404(client):
    missing = client.simulate_get("/users/alice")
    assert missing.status_code == 404 and missing.json["title"].startswith("404")
    created = client.simulate_post("/users/alice").json
    found = client.simulate_get("/users/alice")
    assert found.status_code == 200 and found.json == {**created, "created": False}


def test_compat_route_answers_the_original_keys(client):
    reply = client.simulate_post("/carol")
    assert reply.status_code == 200
    assert {"name", "dir", "shell", "uid", "gid"} <= set(reply.json)
    assert reply.json["dir"] == "/home/carol" and reply.json["name"] == "carol"
    # The same account through the new route.
    assert client.simulate_get("/users/carol").json["uid"] == reply.json["uid"]


def test_health(client):
    reply = client.simulate_get("/healthz")
    assert reply.status_code == 200 and reply.json == {"status": "ok"}


def test_health_is_503_when_creation_cannot_work(make_store, tmp_path):
    skel = tmp_path / "skel"
    skel.mkdir()
    client = falcon.testing.TestClient(create_app(make_store(skel=str(skel))))
    skel.rmdir()
    reply = client.simulate_get("/healthz")
    assert reply.status_code == 503 and "skeleton" in reply.json["description"]


@pytest.mark.parametrize(
    "method, path, status",
    [
        ("POST", "/users/Alice", 400),
        ("POST", "/users/root", 403),
        ("POST", "/users/daemon", 403),
        ("GET", "/users/1abc", 400),
        ("DELETE", "/users/alice", 405),
        ("GET", "/alice", 405),
        ("POST", "/healthz", 405),
    ],
)
def test_errors_are_json_with_title_and_description(client, prefix_root, method, path, status):
    before = snapshot(prefix_root)
    reply = client.simulate_request(method, path, headers={"Accept": "application/xml"})
    assert reply.status_code == status
    assert reply.headers["content-type"].startswith("application/json")
    assert set(reply.json) == {"title", "description"} and reply.json["description"]
    assert snapshot(prefix_root) == before


def test_token_protects_everything_but_health_and_spec(store):
    client = falcon.testing.TestClient(create_app(store, token="t0ken"))
    assert client.simulate_post("/users/alice").status_code == 401
    wrong = client.simulate_post("/users/alice", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    assert client.simulate_get("/healthz").status_code == 200
    assert client.simulate_get("/openapi.json").status_code == 200
    ok = client.simulate_post("/users/alice", headers={"Authorization": "Bearer t0ken"})
    assert ok.status_code == 201


def test_openapi_document_describes_every_route(client):
    spec = client.simulate_get("/openapi.json").json
    assert spec["openapi"].startswith("3.")
    assert set(spec["paths"]) == {"/users/{name}", "/{name}", "/healthz", "/openapi.json"}
    assert set(spec["paths"]["/users/{name}"]["post"]["responses"]) >= {
        "200",
        "201",
        "400",
        "403",
        "503",
    }


def test_unexpected_errors_are_logged_and_json(client, monkeypatch, caplog):
    from restuser.accounts import AccountStore

    def broken(self, name):
        raise RuntimeError("boom")

    monkeypatch.setattr(AccountStore, "lookup", broken)
    reply = client.simulate_get("/users/alice")
    assert reply.status_code == 500 and reply.json["description"].startswith("unexpected error")
    assert any("unexpected error" in record.getMessage() for record in caplog.records)
