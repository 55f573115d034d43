"""The served OpenAPI document matches the live service: schemathesis finds no failure."""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import settings

from realparts.net import Endpoint, free_port
from realparts.restuser import RestuserProcess
from restuser.openapi import openapi_document
from restuser.prefix import init_prefix

schema = schemathesis.openapi.from_dict(openapi_document())


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    scratch = tmp_path_factory.mktemp("schemathesis")
    init_prefix(scratch / "root")
    token = os.urandom(16).hex()
    token_file = scratch / "token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    service = RestuserProcess(
        scratch / "root", Endpoint(port=free_port()), scratch / "restuser.log",
        ["--token-file", str(token_file), "--workers", "2"],
    ).start()  # fmt: skip
    yield service, token
    service.stop()


def test_served_document_is_the_one_tested(live):
    service, _ = live
    assert service.endpoint.request("GET", "/openapi.json").json() == openapi_document()


@schema.parametrize()
@settings(max_examples=120, deadline=None)
def test_api_conforms_to_its_spec(case, live):
    service, token = live
    case.call_and_validate(
        base_url=service.endpoint.base_url, headers={"Authorization": f"Bearer {token}"}
    )
