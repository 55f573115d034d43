"""The JupyterHub REST API client shared by the culler and the stats collector.

Speaks to JupyterHub 4, 5 and 6 with a service token: always asks for paginated replies
(`Accept: application/jupyterhub-pagination+json`) and still takes a plain list; retries
connection errors, timeouts and 5xx replies with exponential backoff; turns a 403 into an error
naming the scope the hub asks for; returns plain frozen dataclasses. One client may be shared by
threads (the culler stops servers concurrently): requests.Session's connection pool is
thread-safe for this use and the request counter is locked.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import requests
import urllib3
import urllib3.connection
from requests.adapters import HTTPAdapter

from hubsidecars.logs import log_event

PAGINATION_MEDIA_TYPE = "application/jupyterhub-pagination+json"
TOKEN_CREDENTIAL = "hub-api-token"
TOKEN_ENV_VAR = "JUPYTERHUB_API_TOKEN"
# The hub caps a page at 200 items, whatever limit is asked for.
MAX_PAGE_SIZE = 200
_HUB_HEADER = "X-JupyterHub-Version"
# An answer bigger than this is refused unread: a hub page of 200 users is well under 1 MB.
MAX_ANSWER_BYTES = 64 * 2**20
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_SCOPES_IN_MESSAGE = re.compile(r"requires any of \[([^\]]*)\]")
_ERRNO = re.compile(r"\[Errno -?\d+\] [^)'\"]*")

log = logging.getLogger("hubsidecars.hubapi")


class HubError(Exception):
    """The hub answered with an error the caller has to handle (or could not be asked)."""

    def __init__(self, message: str, *, status: int | None = None, method: str = "",
                 path: str = "", hub_message: str = "") -> None:  # fmt: skip
        super().__init__(message)
        self.status = status
        self.method = method
        self.path = path
        self.hub_message = hub_message


class HubUnavailable(HubError):
    """No usable answer after every retry: connection refused or reset, timeout, or 5xx."""


class MissingScope(HubError):
    """403 because the token lacks a scope; `scopes` are the ones the hub says would do."""

    def __init__(self, message: str, *, scopes: tuple[str, ...], **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.scopes = scopes


class TokenRejected(HubError):
    """The hub does not know the token (401, or 403 "Missing or invalid credentials")."""


@dataclass(frozen=True)
class Server:
    """One (default or named) server of a user, as the hub sees it.

    A field the token's scopes hide is None and its name is in `hidden` (e.g. `started` and
    `last_activity` need read:servers / read:users:activity).
    """

    user: str
    name: str
    url: str | None
    started: datetime | None
    last_activity: datetime | None
    pending: str | None
    ready: bool | None
    progress_url: str | None = None
    hidden: frozenset[str] = frozenset()


@dataclass(frozen=True)
class User:
    """A hub user; `servers` maps server name ("" for the default) to its running or pending
    server. A field the token's scopes hide is None (or empty) and its name is in `hidden`:
    `created` needs read:users, `servers` read:servers, `groups` read:users or read:groups."""

    name: str
    admin: bool | None
    groups: tuple[str, ...]
    created: datetime | None
    last_activity: datetime | None
    servers: Mapping[str, Server] = field(default_factory=dict)
    hidden: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Group:
    name: str
    users: tuple[str, ...]
    hidden: frozenset[str] = frozenset()


def parse_time(value: str | None) -> datetime | None:
    """The hub's ISO 8601 UTC timestamps ("...Z", or with an offset) as aware datetimes."""
    if not value:
        return None
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:  # the hub means UTC even when it leaves the zone out
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def server_from_model(user: str, name: str, model: Mapping[str, Any]) -> Server:
    fields = ("url", "started", "last_activity", "pending", "ready")
    return Server(
        user=user,
        name=name,
        url=model.get("url"),
        started=parse_time(model.get("started")),
        last_activity=parse_time(model.get("last_activity")),
        pending=model.get("pending"),
        ready=model.get("ready"),
        progress_url=model.get("progress_url"),
        hidden=frozenset(key for key in fields if key not in model),
    )


def user_from_model(model: Mapping[str, Any]) -> User:
    name = model["name"]
    servers = model.get("servers") or {}
    fields = ("admin", "groups", "created", "last_activity", "servers")
    return User(
        name=name,
        admin=model.get("admin"),
        groups=tuple(model.get("groups") or ()),
        created=parse_time(model.get("created")),
        last_activity=parse_time(model.get("last_activity")),
        servers={key: server_from_model(name, key, value) for key, value in servers.items()},
        hidden=frozenset(key for key in fields if key not in model),
    )


def group_from_model(model: Mapping[str, Any]) -> Group:
    return Group(
        name=model["name"],
        users=tuple(model.get("users") or ()),
        hidden=frozenset({"users"} - set(model)),
    )


def load_token(token_file: str | None = None, environ: dict[str, str] | None = None) -> str:
    """The service token: `token_file`, else $CREDENTIALS_DIRECTORY/hub-api-token, else
    $JUPYTERHUB_API_TOKEN (removed from the environment once read). Raises ConfigError when
    there is none."""
    from hubsidecars.config import ConfigError
    from hubsidecars.secrets import read_secret

    token = read_secret(token_file, TOKEN_CREDENTIAL, environ=environ, env_var=TOKEN_ENV_VAR)
    if not token:
        raise ConfigError(
            f"no hub API token: give a token file, a systemd credential named "
            f"{TOKEN_CREDENTIAL}, or {TOKEN_ENV_VAR}"
        )
    return token


class HubClient:
    """A JupyterHub REST API client for one service token.

    `api_url` is the hub API URL (e.g. http://127.0.0.1:8000/hub/api), `public_url` the origin
    through which users' servers are reached (default: the origin of `api_url`). `timeout` is
    seconds per attempt: per connect and read, and for the attempt whole, headers and body
    (cut a tenth later, so that a silent peer ends on its read timeout); a failed attempt is
    retried `retries` times, after `backoff`, 2*`backoff`, 4*`backoff`... seconds (capped at
    `backoff_max`). `verify` is True,
    False or a CA bundle path; `client_cert`/`client_key` for a hub that wants client TLS.
    """

    def __init__(
        self,
        api_url: str,
        token: str,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        backoff_max: float = 30.0,
        verify: bool | str = True,
        client_cert: str | None = None,
        client_key: str | None = None,
        page_size: int = MAX_PAGE_SIZE,
        public_url: str | None = None,
        pool_size: int = 32,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not token:
            raise ValueError("the hub API token is empty")
        self.api_url = api_url.rstrip("/")
        if public_url is None:
            parts = urlsplit(self.api_url)
            public_url = f"{parts.scheme}://{parts.netloc}"
        self.public_url = public_url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.page_size = max(1, min(page_size, MAX_PAGE_SIZE))
        self._sleep = sleep
        self._token = token
        self._count_lock = threading.Lock()
        self._requests_made = 0
        if session is None:
            session = requests.Session()
            adapter = _DeadlineAdapter(pool_connections=4, pool_maxsize=pool_size)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        # No ~/.netrc and no credentials from the environment: they would replace the token.
        session.trust_env = False
        session.verify = verify
        if client_cert:
            session.cert = (client_cert, client_key) if client_key else client_cert
        self.session = session

    def __repr__(self) -> str:  # never the token
        return f"HubClient({self.api_url!r})"

    @property
    def requests_made(self) -> int:
        """HTTP requests sent so far, retries included."""
        with self._count_lock:
            return self._requests_made

    # -- generic ---------------------------------------------------------------------------

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                json: Any = None, accept: str = "application/json") -> requests.Response:  # fmt: skip
        """Send `method` to the hub API `path` (e.g. "/users/ada"); return the 2xx/3xx/404
        response. Raises HubUnavailable, TokenRejected, MissingScope or HubError."""
        return self._send(method, self.api_url + path, path, params=params, json=json,
                          accept=accept)  # fmt: skip

    def get_json(self, path: str, **params: Any) -> Any:
        """GET a hub API path and return its JSON, or None on 404."""
        reply = self.request("GET", path, params=params or None)
        return None if reply.status_code == 404 else _json(reply, "GET", path)

    def iter_pages(self, path: str, params: Mapping[str, Any] | None = None) -> Iterator[dict]:
        """Every item of a paginated hub collection (users, groups, ...), page after page.

        Follows `_pagination.next` until the hub says there is none: with state=ready the hub
        filters after the query, so a short page does not mean the end. Takes a plain list too
        (one page, as the hub sends it without pagination support)."""
        query = dict(params or {})
        offset = 0
        total = None
        while True:
            reply = self.request("GET", path, params={**query, "offset": offset,
                                 "limit": self.page_size}, accept=PAGINATION_MEDIA_TYPE)  # fmt: skip
            if reply.status_code == 404:
                raise HubError(f"GET {path}: not found (404)", status=404, method="GET", path=path)
            page = _json(reply, "GET", path)
            if isinstance(page, list):
                yield from page
                return
            items = page.get("items") if isinstance(page, dict) else None
            if not isinstance(items, list):
                raise HubError(f"GET {path}: the answer is not a page of items")
            yield from items
            pagination = page.get("_pagination")
            following = pagination.get("next") if isinstance(pagination, dict) else None
            if not following:
                return
            if total is None and isinstance(pagination.get("total"), int):
                total = pagination["total"]
            try:
                next_offset = int(following["offset"])
            except (KeyError, TypeError, ValueError):
                raise HubError(f"GET {path}: the next page's offset is unreadable") from None
            if next_offset <= offset:  # a hub must move forward; never loop forever
                raise HubError(f"GET {path}: pagination did not advance past offset {offset}")
            if total is not None and next_offset > total + MAX_PAGE_SIZE:
                raise HubError(f"GET {path}: pagination runs past the {total} items the hub "
                               "announced")  # fmt: skip
            offset = next_offset

    # -- users and servers -----------------------------------------------------------------

    def iter_users(self, state: str | None = None, *,
                   on_malformed: Callable[[Any, Exception], None] | None = None,
                   ) -> Iterator[User]:  # fmt: skip
        """Every user (state "ready", "active" or "inactive" filters by their servers).
        Needs list:users; read:servers for servers, read:users:activity for activity.

        A user model that cannot be read (a timestamp that is not ISO 8601, `servers` not a
        mapping...) goes to `on_malformed(model, error)` and the listing goes on; without it,
        it raises HubError."""
        params = {"state": state} if state else {}
        for model in self.iter_pages("/users", params):
            try:
                yield user_from_model(model)
            except (KeyError, TypeError, ValueError, AttributeError) as error:
                if on_malformed is None:
                    name = model.get("name") if isinstance(model, dict) else None
                    raise HubError(f"GET /users: user {name!r} is malformed: "
                                   f"{type(error).__name__}: {error}") from None  # fmt: skip
                on_malformed(model, error)

    def get_user(self, name: str) -> User | None:
        """One user, fresh from the hub; None when there is no such user."""
        model = self.get_json(f"/users/{quote(name, safe='')}")
        return None if model is None else user_from_model(model)

    def iter_groups(self) -> Iterator[Group]:
        """Every group (list:groups; member names need read:groups)."""
        for model in self.iter_pages("/groups"):
            yield group_from_model(model)

    def stop_server(self, user: str, server_name: str = "", remove: bool = False) -> str:
        """Ask the hub to stop a server. Returns "stopped" (204: stopped, or was not running),
        "stopping" (202: the stop goes on in the background; poll get_user to follow it) or
        "absent" (no such user or named server). `remove` also deletes a named server.
        Needs delete:servers."""
        path = f"/users/{quote(user, safe='')}/server"
        if server_name:
            path = f"/users/{quote(user, safe='')}/servers/{quote(server_name, safe='')}"
        body = {"remove": True} if remove else None
        try:
            reply = self.request("DELETE", path, json=body)
        except HubUnavailable as error:
            # JupyterHub 4 answers 500 instead of 404 for a user that does not exist.
            if error.status == 500 and self.get_user(user) is None:
                return "absent"
            raise
        if reply.status_code == 404:
            return "absent"
        return "stopping" if reply.status_code == 202 else "stopped"

    def delete_user(self, name: str) -> bool:
        """Delete a user (the hub stops their servers first). False when there was no such
        user. Needs delete:users."""
        reply = self.request("DELETE", f"/users/{quote(name, safe='')}")
        return reply.status_code != 404

    def create_user_token(self, user: str, *, scopes: list[str], expires_in: int,
                          note: str) -> tuple[str, str]:  # fmt: skip
        """A new API token owned by `user`, limited to `scopes` (which the user must hold),
        expiring after `expires_in` seconds; returns (token id, token). Needs tokens."""
        path = f"/users/{quote(user, safe='')}/tokens"
        reply = self.request("POST", path, json={"scopes": scopes, "expires_in": expires_in,
                                                 "note": note})  # fmt: skip
        if reply.status_code == 404:
            raise HubError(f"POST {path}: no such user", status=404, method="POST", path=path)
        model = _json(reply, "POST", path)
        try:
            return str(model["id"]), str(model["token"])
        except (KeyError, TypeError):
            raise HubError(f"POST {path}: the answer holds no token") from None

    def delete_user_token(self, user: str, token_id: str) -> None:
        """Revoke a token made by create_user_token (gone already is fine)."""
        self.request("DELETE", f"/users/{quote(user, safe='')}/tokens/{quote(token_id, safe='')}")

    def user_server_get(self, server: Server, path: str, *, timeout: float | None = None,
                        retries: int | None = None, token: str | None = None,
                        max_bytes: int = 2**20) -> requests.Response:  # fmt: skip
        """GET `path` (e.g. "api/kernels") from a user's server through the proxy; the whole
        reply, read, whatever its status below 400 or 404 (redirects are not followed: a
        server that sends the token to log in answers 302). Raises HubError for a transport
        failure, a 5xx, another 4xx or an answer over `max_bytes` (refused unread). `timeout`
        and `retries` override the client's for this request (a probe should give up
        quickly); `timeout` bounds the whole answer, not each read. `token` replaces the
        client's own: whatever is sent to a user's server, its user can read, so send a token
        of theirs (create_user_token)."""
        base = server.url or f"/user/{quote(server.user, safe='')}/"
        if server.name and not server.url:
            base += f"{quote(server.name, safe='')}/"
        url = f"{self.public_url}{base}{path.lstrip('/')}"
        return self._send("GET", url, url[len(self.public_url) :], from_hub=False,
                          timeout=timeout, retries=retries, redirects=False, token=token,
                          max_bytes=max_bytes)  # fmt: skip

    def user_server_json(self, server: Server, path: str, *, timeout: float | None = None,
                         retries: int | None = None, token: str | None = None,
                         max_bytes: int = 2**20) -> Any:  # fmt: skip
        """user_server_get's answer as JSON; None on 404; a redirect raises HubError."""
        reply = self.user_server_get(server, path, timeout=timeout, retries=retries,
                                     token=token, max_bytes=max_bytes)  # fmt: skip
        base = reply.url[len(self.public_url) :] if reply.url else path
        if reply.status_code == 404:
            return None
        if reply.status_code >= 300:
            where = reply.headers.get("Location", "")
            raise HubError(f"GET {base}: {reply.status_code} {where}".rstrip(),
                           status=reply.status_code, method="GET", path=base)  # fmt: skip
        return _json(reply, "GET", base)

    # -- the hub itself --------------------------------------------------------------------

    def version(self) -> str:
        """The hub's version (GET /hub/api/ needs no scope)."""
        model = self.get_json("/")
        if not isinstance(model, dict) or not isinstance(model.get("version"), str):
            raise HubError(f"{self.api_url}/ does not answer as JupyterHub's API does (no "
                           "version): is the URL the hub API's, ending in /hub/api?")  # fmt: skip
        return model["version"]

    def hub_info(self) -> dict:
        """GET /info: version, python, spawner and authenticator classes (read:hub)."""
        return self.get_json("/info")

    # -- transport -------------------------------------------------------------------------

    def _send(self, method: str, url: str, path: str, *, params=None, json=None,
              accept: str = "application/json", from_hub: bool = True,
              timeout: float | None = None, retries: int | None = None,
              redirects: bool = True, token: str | None = None,
              max_bytes: int = MAX_ANSWER_BYTES) -> requests.Response:  # fmt: skip
        headers = {"Authorization": f"token {token or self._token}", "Accept": accept}
        timeout = self.timeout if timeout is None else timeout
        retries = self.retries if retries is None else retries
        attempt = 0
        while True:
            attempt += 1
            with self._count_lock:
                self._requests_made += 1
            # a little after `timeout`, so that a silent peer still ends on its read timeout
            whole = _Deadline(timeout + max(0.05, 0.1 * timeout))
            try:
                deadline = time.monotonic() + timeout
                with whole:
                    reply = self.session.request(method, url, params=params, json=json,
                                                 headers=headers, timeout=timeout,
                                                 allow_redirects=redirects, stream=True)  # fmt: skip
                    _read_body(reply, deadline, max_bytes, f"{method} {path}")
            except requests.RequestException as error:
                failure, status, retryable = _describe(error), None, _may_retry(method, error)
                if whole.expired and not isinstance(error, requests.Timeout):
                    failure, retryable = str(_TooSlow.MESSAGE), method.upper() in _IDEMPOTENT
            except HubError as error:  # an answer over the size cap
                raise HubError(self._scrub(str(error)), status=error.status, method=method,
                               path=path) from None  # fmt: skip
            except _TooSlow as error:
                failure, status, retryable = str(error), None, True
            else:
                status = reply.status_code
                # Every hub reply carries X-JupyterHub-Version; a 404 without it comes from the
                # proxy while a restarting hub has not added its route yet.
                not_the_hub = status == 404 and from_hub and _HUB_HEADER not in reply.headers
                if status < 500 and not not_the_hub:
                    return _checked(reply, method, path, scrub=self._scrub)
                failure = self._scrub(f"{status} {_hub_message(reply)}".strip())
                if not_the_hub:
                    failure = f"404 from the proxy, not the hub ({failure})"
                retryable = True
            if not retryable or attempt > retries:
                raise HubUnavailable(
                    f"{method} {path}: hub unavailable after {attempt} attempt(s): {failure}",
                    status=status, method=method, path=path,
                )  # fmt: skip
            delay = min(self.backoff * 2 ** (attempt - 1), self.backoff_max)
            log_event(log, "hub request failed, retrying", logging.WARNING, method=method,
                      path=path, attempt=attempt, retry_in_s=round(delay, 3),
                      error=failure)  # fmt: skip
            self._sleep(delay)


    def _scrub(self, text: str) -> str:
        """A message without the token, whatever an answer echoed back."""
        return text.replace(self._token, "[token]") if self._token else text


class _TooSlow(Exception):
    """The answer did not arrive whole within the request's timeout."""

    MESSAGE = "the answer was not complete within the timeout"


_current = threading.local()


class _Deadline:
    """A whole-request deadline: when `seconds` have passed, the socket the request is using
    is shut down, so a peer that sends its headers (or body) a byte at a time cannot hold the
    request past its timeout; requests' own timeout bounds each read only. The socket is
    handed over by _DeadlineConnection when the request waits for its answer."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._sock = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        _current.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        _current.deadline = None
        with self._lock:
            self._sock = None

    def attach(self, sock) -> None:
        with self._lock:
            self._sock = sock
            if self.expired:
                _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            if self._sock is not None:
                _shut(self._sock)


def _shut(sock) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _DeadlineConnectionMixin:
    def getresponse(self, *args, **kwargs):
        deadline = getattr(_current, "deadline", None)
        if deadline is not None and getattr(self, "sock", None) is not None:
            deadline.attach(self.sock)
        return super().getresponse(*args, **kwargs)


class _DeadlineHTTPConnection(_DeadlineConnectionMixin, urllib3.connection.HTTPConnection):
    pass


class _DeadlineHTTPSConnection(_DeadlineConnectionMixin, urllib3.connection.HTTPSConnection):
    pass


class _DeadlineHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _DeadlineHTTPConnection


class _DeadlineHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _DeadlineHTTPSConnection


class _DeadlineAdapter(HTTPAdapter):
    """requests' adapter whose connections hand their socket to the request's _Deadline."""

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _DeadlineHTTPPool,
                                                   "https": _DeadlineHTTPSPool}  # fmt: skip


def _read_body(reply: requests.Response, deadline: float, max_bytes: int, where: str) -> None:
    """Read a streamed answer into `reply` within `deadline` and `max_bytes`: requests' own
    timeout bounds each read, so an answer sent a byte at a time would never end."""
    chunks, size = [], 0
    try:
        while True:
            if time.monotonic() > deadline:
                raise _TooSlow(_TooSlow.MESSAGE)
            try:
                chunk = reply.raw.read1(65536, decode_content=True)
            except urllib3.exceptions.ReadTimeoutError as error:
                raise requests.ReadTimeout(error) from None
            except urllib3.exceptions.DecodeError as error:
                raise requests.exceptions.ContentDecodingError(error) from None
            except (urllib3.exceptions.ProtocolError, OSError) as error:
                raise requests.ConnectionError(error) from None
            if not chunk:
                break
            size += len(chunk)
            if size > max_bytes:
                raise HubError(f"{where}: the answer is larger than {max_bytes} bytes; refused",
                               status=reply.status_code)  # fmt: skip
            chunks.append(chunk)
    except BaseException:
        reply.close()
        raise
    reply._content = b"".join(chunks)
    reply._content_consumed = True
    reply.close()


def _json(reply: requests.Response, method: str, path: str) -> Any:
    try:
        return reply.json()
    except (ValueError, RecursionError):  # RecursionError: JSON nested too deep to read
        kind = reply.headers.get("Content-Type", "no content type")
        raise HubError(f"{method} {path}: the answer is not JSON ({reply.status_code}, {kind})",
                       status=reply.status_code, method=method, path=path) from None  # fmt: skip


def _checked(reply: requests.Response, method: str, path: str,
             scrub=lambda text: text) -> requests.Response:  # fmt: skip
    """Return a 2xx/3xx/404 reply; turn other 4xx into the matching error."""
    status = reply.status_code
    if status < 400 or status == 404:
        return reply
    message = scrub(_hub_message(reply))
    where = f"{method} {path}"
    if status == 401 or (status == 403 and "invalid credentials" in message.lower()):
        raise TokenRejected(f"{where}: the hub rejected the API token ({status}: {message})",
                            status=status, method=method, path=path, hub_message=message)  # fmt: skip
    if status == 403:
        found = _SCOPES_IN_MESSAGE.search(message)
        scopes = tuple(s.strip() for s in found.group(1).split(",") if s.strip()) if found else ()
        wanted = " or ".join(scopes) if scopes else "a scope it did not name"
        raise MissingScope(f"{where}: the API token lacks {wanted} (403: {message})",
                           scopes=scopes, status=status, method=method, path=path,
                           hub_message=message)  # fmt: skip
    raise HubError(f"{where}: {status} {message}".rstrip(), status=status, method=method,
                   path=path, hub_message=message)  # fmt: skip


def _hub_message(reply: requests.Response) -> str:
    try:
        body = reply.json()
    except (ValueError, RecursionError):
        return reply.text[:200].strip()
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return reply.reason or ""


def _may_retry(method: str, error: requests.RequestException) -> bool:
    """Idempotent requests are retried on any transport failure; others only when the
    connection was never made, so a POST the hub may have acted on is not sent twice."""
    if method.upper() in _IDEMPOTENT:
        return isinstance(error, (requests.ConnectionError, requests.Timeout))
    if isinstance(error, requests.ConnectTimeout):
        return True
    if isinstance(error, requests.ConnectionError):
        reason = getattr(error.args[0], "reason", None) if error.args else None
        return type(reason).__name__ == "NewConnectionError"
    return False


def _describe(error: requests.RequestException) -> str:
    """A short reason ("ReadTimeout", "ConnectionError: [Errno 111] Connection refused"):
    requests' own text repeats the URL and object addresses."""
    errno = _ERRNO.search(str(error))
    return f"{type(error).__name__}: {errno.group(0)}" if errno else type(error).__name__
