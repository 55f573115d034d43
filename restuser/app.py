"""The HTTP layer: Falcon (ASGI) resources that translate between HTTP and AccountStore.

Creating an account waits on a lock and runs useradd: it runs on a small thread pool, so
that lookups and health checks (answered on the event loop in microseconds) never queue
behind creations.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import falcon

from hubsidecars.web import JsonApp, http_error
from restuser import accounts
from restuser.accounts import AccountStore
from restuser.names import BadName, RefusedName
from restuser.openapi import openapi_document

# Reachable without the token: liveness checks and the API description.
PUBLIC_PATHS = frozenset({"/healthz", "/openapi.json"})


class UserResource:
    def __init__(self, store: AccountStore, creators: ThreadPoolExecutor) -> None:
        self.store = store
        self.creators = creators

    async def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        account = self.store.lookup(name)
        if account is None:
            raise http_error(falcon.HTTP_404, f"no account named {name!r}")
        resp.media = account.to_json(created=False)

    async def on_post(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        account, created = await self.ensure(name)
        resp.status = falcon.HTTP_201 if created else falcon.HTTP_200
        resp.media = account.to_json(created=created)

    async def ensure(self, name: str):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.creators, self.store.ensure, name)


class CompatUserResource(UserResource):
    """minrk/restuser's `POST /{name}`: always 200 with the pwd-style keys it answered."""

    on_get = None  # type: ignore[assignment]  # the original API had no lookup route

    async def on_post(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        account, created = await self.ensure(name)
        resp.media = {**account.to_json(created=created), "dir": account.home}


class SlashInNameResource:
    """A name holding "/" (sent as %2F, decoded by the server) lands here instead of a 404."""

    async def on_get(self, req: falcon.Request, resp: falcon.Response, **_: str) -> None:
        raise http_error(falcon.HTTP_400, "account names must not contain '/'")

    on_post = on_get


class HealthResource:
    def __init__(self, store: AccountStore) -> None:
        self.store = store

    async def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        problems = self.store.problems()
        if problems:
            raise http_error(falcon.HTTP_503, "; ".join(problem.public for problem in problems))
        resp.media = {"status": "ok"}


class OpenAPIResource:
    def __init__(self, name_pattern: str) -> None:
        self.document = openapi_document(name_pattern)

    async def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self.document


def _answer(status: str, retry_after: bool = False):
    """An error handler turning a domain exception into `status` with its (client-safe)
    message; the details are in the service log."""
    headers = {"Retry-After": "1"} if retry_after else None

    async def handle(req, resp, error, params) -> None:
        raise http_error(status, str(error), headers=headers)

    return handle


def create_app(
    store: AccountStore, token: str | None = None, creator_threads: int = 4
) -> falcon.App:
    app = JsonApp(token, PUBLIC_PATHS)
    app.add_error_handler(BadName, _answer(falcon.HTTP_400))
    app.add_error_handler(RefusedName, _answer(falcon.HTTP_403))
    app.add_error_handler(accounts.HomeInTheWay, _answer(falcon.HTTP_409))
    app.add_error_handler(accounts.AccountIncomplete, _answer(falcon.HTTP_503, retry_after=True))
    app.add_error_handler(accounts.AccountBusy, _answer(falcon.HTTP_503, retry_after=True))
    app.add_error_handler(accounts.AccountError, _answer(falcon.HTTP_500))
    creators = ThreadPoolExecutor(creator_threads, thread_name_prefix="create")
    app.add_route("/healthz", HealthResource(store))
    app.add_route("/openapi.json", OpenAPIResource(store.policy.pattern))
    app.add_route("/users/{name}", UserResource(store, creators))
    app.add_route("/users/{name}/{rest:path}", SlashInNameResource())
    app.add_route("/{name}", CompatUserResource(store, creators))
    app.add_route("/{name}/{rest:path}", SlashInNameResource())
    return app
