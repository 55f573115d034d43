"""How a daemon reaches the hub: the settings the culler and the collector share, and the
client built from them.

The names and defaults are jupyterhub-idle-culler's (`--url`, `--api-page-size`,
`--ssl-enabled`, `--internal-certs-location`, $JUPYTERHUB_API_URL, $JUPYTERHUB_REQUEST_TIMEOUT),
so a command line written for it carries over.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from hubsidecars.config import ConfigError, Duration, setting
from hubsidecars.hubapi import MAX_PAGE_SIZE, HubClient, load_token

DEFAULT_URL = "http://127.0.0.1:8081/hub/api"
# What the hub gives a service it starts itself.
HUB_URL_ENV = "JUPYTERHUB_API_URL"
HUB_TIMEOUT_ENV = "JUPYTERHUB_REQUEST_TIMEOUT"


@dataclass(frozen=True, kw_only=True)
class HubConnectionSettings:
    url: str = setting(
        "",
        f"the JupyterHub API URL (default: ${HUB_URL_ENV}, else {DEFAULT_URL})",
        metavar="URL",
        heading="The hub, and how to reach it.",
        in_example=True,
    )
    token_file: str = setting(
        "",
        "file holding the hub API token (mode 0600 or 0640, owned by root or this service's "
        "user); else the systemd credential hub-api-token; else $JUPYTERHUB_API_TOKEN",
        metavar="FILE",
    )
    request_timeout: Duration = setting(
        60.0, f"timeout of one request to the hub (default also from ${HUB_TIMEOUT_ENV})",
        min=1, max=3600,
    )  # fmt: skip
    api_page_size: int = setting(
        0, "users per page when listing users (0: the hub's maximum, 200)", metavar="N", min=0,
    )  # fmt: skip
    ssl_enabled: bool = setting(
        False, "the hub API uses JupyterHub's internal TLS: verify it with the internal CA and "
        "present the hub-internal certificate from --internal-certs-location",
    )  # fmt: skip
    internal_certs_location: str = setting(
        "internal-ssl", "JupyterHub's internal-ssl directory (with --ssl-enabled)", metavar="DIR"
    )
    ca_file: str = setting(
        "", "CA bundle to verify an https hub with (default: the system's)", metavar="FILE"
    )


def resolve_hub_connection(settings, environ: Mapping[str, str] | None = None):
    """`settings` with url and request_timeout filled from the environment where they defer to
    it, checked; raises ConfigError with a one-line reason."""
    environ = os.environ if environ is None else environ
    url = settings.url or environ.get(HUB_URL_ENV) or DEFAULT_URL
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"url must be an http(s) URL, got {parts.scheme or 'no scheme'}://…")
    if parts.username or parts.password:
        raise ConfigError("url must hold no user name or password (the hub API token "
                          "authenticates; credentials in a URL end up in logs)")
    changes = {"url": url.rstrip("/")}
    if settings.request_timeout == 60.0 and environ.get(HUB_TIMEOUT_ENV):
        try:
            changes["request_timeout"] = float(environ[HUB_TIMEOUT_ENV])
        except ValueError:
            raise ConfigError(f"{HUB_TIMEOUT_ENV} must be a number of seconds") from None
    for key in ("token_file", "ca_file"):
        value = getattr(settings, key)
        if value and not os.path.isabs(value):
            raise ConfigError(f"{key} must be an absolute path, got {value!r}")
    return dataclasses.replace(settings, **changes)


def hub_client(settings, *, public_url: str | None = None, pool_size: int = 10) -> HubClient:
    """The hub API client for `settings` (after resolve_hub_connection), with the token read
    from the token file, the credential or the environment."""
    token = load_token(settings.token_file or None)
    verify: bool | str = settings.ca_file or True
    cert = key = None
    if settings.ssl_enabled:
        certs = settings.internal_certs_location.rstrip("/")
        verify = f"{certs}/hub-ca/hub-ca.crt"
        cert, key = f"{certs}/hub-internal/hub-internal.crt", f"{certs}/hub-internal/hub-internal.key"
    return HubClient(
        settings.url, token, timeout=settings.request_timeout, verify=verify, client_cert=cert,
        client_key=key, page_size=settings.api_page_size or MAX_PAGE_SIZE,
        public_url=public_url or None, pool_size=pool_size,
    )  # fmt: skip
