"""The HTTP conventions every hub-sidecars API follows, in one Falcon (ASGI) app factory.

- Every error is JSON `{"title", "description"}`, whatever the client's Accept header says;
  errors nobody expected are logged with their traceback and answered with a bare 500.
- `HEAD` is answered wherever `GET` is.
- With a token, every path but the public ones needs `Authorization: Bearer TOKEN` (the
  scheme compared case-insensitively, as HTTP says; the token in constant time).
"""

from __future__ import annotations

import hmac
import logging
from typing import Any, Iterable

import falcon
import falcon.asgi

from hubsidecars.logs import log_event

log = logging.getLogger("hubsidecars.web")


def http_error(status: str, description: str, **kwargs: Any) -> falcon.HTTPError:
    return falcon.HTTPError(status, title=status, description=description, **kwargs)


def error_body(title: str, description: str) -> dict[str, str]:
    return {"title": title, "description": description or title}


class BearerTokenMiddleware:
    def __init__(self, token: str, public_paths: Iterable[str]) -> None:
        self.token = token.encode()
        self.public_paths = frozenset(public_paths)

    async def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.path in self.public_paths:
            return
        scheme, _, offered = (req.get_header("Authorization") or "").partition(" ")
        valid = scheme.lower() == "bearer" and hmac.compare_digest(
            offered.strip().encode("utf-8", "replace"), self.token
        )
        if not valid:
            raise http_error(
                falcon.HTTP_401,
                "a valid 'Authorization: Bearer TOKEN' header is required",
                headers={"WWW-Authenticate": "Bearer"},
            )


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

    def __init__(self, token: str | None = None, public_paths: Iterable[str] = ()) -> None:
        middleware = [BearerTokenMiddleware(token, public_paths)] if token else []
        super().__init__(middleware=middleware)
        self.set_error_serializer(_json_errors)
        # Falcon picks the most specific handler, so HTTPError (404, 405, ...) keeps its own:
        # only exceptions nobody turned into an HTTP answer reach _unexpected.
        self.add_error_handler(Exception, _unexpected)

    def add_route(self, uri_template: str, resource: object, **kwargs: Any) -> None:
        if getattr(resource, "on_get", None) and not hasattr(resource, "on_head"):
            resource.on_head = resource.on_get  # type: ignore[attr-defined]
        super().add_route(uri_template, resource, **kwargs)
