"""The HTTP layer: Falcon resources that translate between HTTP and AccountStore."""

from __future__ import annotations

import hmac
import logging

import falcon

from hubsidecars.logs import log_event
from restuser.accounts import AccountBusy, AccountError, AccountStore
from restuser.names import BadName, RefusedName
from restuser.openapi import openapi_document
from restuser.passwd import Account

log = logging.getLogger("restuser.app")

# Reachable without the token: liveness checks and the API description.
PUBLIC_PATHS = frozenset({"/healthz", "/openapi.json"})


def _error(status: str, description: str, **kwargs) -> falcon.HTTPError:
    return falcon.HTTPError(status, title=status, description=description, **kwargs)


def _account_or_error(store: AccountStore, name: str, ensure: bool) -> tuple[Account | None, bool]:
    try:
        if ensure:
            return store.ensure(name)
        return store.lookup(name), False
    except BadName as error:
        raise _error(falcon.HTTP_400, str(error)) from None
    except RefusedName as error:
        raise _error(falcon.HTTP_403, str(error)) from None
    except AccountBusy as error:
        raise _error(falcon.HTTP_503, f"the account database stayed locked: {error}",
                     headers={"Retry-After": "1"}) from None  # fmt: skip
    except AccountError as error:
        raise _error(falcon.HTTP_500, str(error)) from None


class UserResource:
    def __init__(self, store: AccountStore) -> None:
        self.store = store

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        account, _ = _account_or_error(self.store, name, ensure=False)
        if account is None:
            raise _error(falcon.HTTP_404, f"no account named {name!r}")
        resp.media = account.to_json(created=False)

    def on_post(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        account, created = _account_or_error(self.store, name, ensure=True)
        resp.status = falcon.HTTP_201 if created else falcon.HTTP_200
        resp.media = account.to_json(created=created)


class CompatUserResource:
    """minrk/restuser's `POST /{name}`: always 200 with the pwd-style keys it answered."""

    def __init__(self, store: AccountStore) -> None:
        self.store = store

    def on_post(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        account, created = _account_or_error(self.store, name, ensure=True)
        resp.media = {**account.to_json(created=created), "dir": account.home}


class SlashInNameResource:
    """A name holding "/" (sent as %2F, decoded by the server) lands here instead of a 404."""

    def _refuse(self, req: falcon.Request, resp: falcon.Response, **_: str) -> None:
        raise _error(falcon.HTTP_400, "account names must not contain '/'")

    on_get = on_post = _refuse


class HealthResource:
    def __init__(self, store: AccountStore) -> None:
        self.store = store

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        problems = self.store.problems()
        if problems:
            raise _error(falcon.HTTP_503, "; ".join(problems))
        resp.media = {"status": "ok"}


class OpenAPIResource:
    def __init__(self, name_pattern: str) -> None:
        self.document = openapi_document(name_pattern)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self.document


class BearerTokenMiddleware:
    def __init__(self, token: str) -> None:
        self.expected = f"Bearer {token}".encode()

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.path in PUBLIC_PATHS:
            return
        offered = (req.get_header("Authorization") or "").encode("utf-8", "replace")
        if not hmac.compare_digest(offered, self.expected):
            raise _error(falcon.HTTP_401, "a valid 'Authorization: Bearer TOKEN' header is required",
                         headers={"WWW-Authenticate": "Bearer"})  # fmt: skip


def _json_errors(req: falcon.Request, resp: falcon.Response, error: falcon.HTTPError) -> None:
    """Every error is JSON {"title", "description"}, whatever the client's Accept header says."""
    resp.content_type = falcon.MEDIA_JSON
    resp.media = {"title": error.title, "description": error.description or error.title}


def _unexpected(req: falcon.Request, resp: falcon.Response, error: Exception, params: dict) -> None:
    log_event(
        log, "unexpected error", logging.ERROR, exc_info=error, method=req.method, path=req.path
    )
    raise _error(falcon.HTTP_500, "unexpected error; see the service log")


def create_app(store: AccountStore, token: str | None = None) -> falcon.App:
    middleware = [BearerTokenMiddleware(token)] if token else []
    app = falcon.App(middleware=middleware)
    app.set_error_serializer(_json_errors)
    app.add_error_handler(Exception, _unexpected)
    app.add_route("/healthz", HealthResource(store))
    app.add_route("/openapi.json", OpenAPIResource(store.policy.pattern))
    app.add_route("/users/{name}", UserResource(store))
    app.add_route("/users/{name}/{rest:path}", SlashInNameResource())
    app.add_route("/{name}", CompatUserResource(store))
    app.add_route("/{name}/{rest:path}", SlashInNameResource())
    return app
