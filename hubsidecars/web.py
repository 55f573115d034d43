"""The HTTP conventions every hub-sidecars API follows, in one Falcon (ASGI) app factory.

- Every error is JSON `{"title", "description"}`, whatever the client's Accept header says;
  errors nobody expected are logged with their traceback and answered with a bare 500.
- `HEAD` is answered wherever `GET` is.
- With a token, every path but the public ones needs `Authorization: Bearer TOKEN` (the
  scheme compared case-insensitively, as HTTP says; the token in constant time). An app that
  browsers open (stats' page) names a `browser_realm`: a browser, which cannot add that
  header, then gets a password prompt (HTTP Basic: any user name, the token as password).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from collections.abc import Iterable
from typing import Any

import falcon
import falcon.asgi

from hubsidecars.logs import log_event

log = logging.getLogger("hubsidecars.web")


def http_error(status: str, description: str, **kwargs: Any) -> falcon.HTTPError:
    return falcon.HTTPError(status, title=status, description=description, **kwargs)


def error_body(title: str, description: str) -> dict[str, str]:
    return {"title": title, "description": description or title}


class BearerTokenMiddleware:
    def __init__(self, token: str, public_paths: Iterable[str],
                 browser_realm: str | None = None) -> None:  # fmt: skip
        self.token = token.encode()
        self.public_paths = frozenset(public_paths)
        self.browser_realm = browser_realm

    def offered(self, header: str) -> bytes | None:
        """The token the Authorization header offers: Bearer, or (with a browser realm) the
        password of Basic; None when it offers none."""
        scheme, _, credentials = header.partition(" ")
        scheme, credentials = scheme.lower(), credentials.strip()
        if scheme == "bearer":
            return credentials.encode("utf-8", "replace")
        if scheme == "basic" and self.browser_realm:
            try:
                decoded = base64.b64decode(credentials, validate=True)
            except (binascii.Error, ValueError):
                return None
            return decoded.partition(b":")[2]
        return None

    async def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.path in self.public_paths:
            return
        offered = self.offered(req.get_header("Authorization") or "")
        if offered is not None and hmac.compare_digest(offered, self.token):
            return
        if not self.browser_realm:
            raise http_error(falcon.HTTP_401,
                             "a valid 'Authorization: Bearer TOKEN' header is required",
                             headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        # One challenge only (Falcon sends one header of a name): a browser asks for a
        # password on Basic, and says that it wants HTML; API clients get Bearer.
        browser = "text/html" in (req.get_header("Accept") or "")
        challenge = f'Basic realm="{self.browser_realm}", charset="UTF-8"' if browser else "Bearer"
        raise http_error(
            falcon.HTTP_401,
            "the token is required: 'Authorization: Bearer TOKEN', or in a browser any user "
            "name with the token as password",
            headers={"WWW-Authenticate": challenge},
        )  # fmt: skip


def _json_errors(req: falcon.Request, resp: falcon.Response, error: falcon.HTTPError) -> None:
    resp.content_type = falcon.MEDIA_JSON
    resp.media = error_body(error.title, error.description)


async def _unexpected(req: falcon.Request, resp: falcon.Response, error: Exception, params: dict):
    log_event(
        log, "unexpected error", logging.ERROR, exc_info=error, method=req.method, path=req.path
    )
    raise http_error(falcon.HTTP_500, "unexpected error; see the service log")


class JsonApp(falcon.asgi.App):
    """A Falcon ASGI app with the conventions above; routes gain HEAD where they have GET."""

    def __init__(self, token: str | None = None, public_paths: Iterable[str] = (),
                 browser_realm: str | None = None) -> None:  # fmt: skip
        middleware = [BearerTokenMiddleware(token, public_paths, browser_realm)] if token else []
        super().__init__(middleware=middleware)
        self.set_error_serializer(_json_errors)
        # Falcon picks the most specific handler, so HTTPError (404, 405, ...) keeps its own:
        # only exceptions nobody turned into an HTTP answer reach _unexpected.
        self.add_error_handler(Exception, _unexpected)

    def add_route(self, uri_template: str, resource: object, **kwargs: Any) -> None:
        if getattr(resource, "on_get", None) and not hasattr(resource, "on_head"):
            resource.on_head = resource.on_get  # type: ignore[attr-defined]
        super().add_route(uri_template, resource, **kwargs)
