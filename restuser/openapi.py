"""The OpenAPI 3 description of the restuser API, served at GET /openapi.json."""

from __future__ import annotations

from hubsidecars import suite_version
from restuser.names import DEFAULT_NAME_PATTERN


def _json(schema_ref: str) -> dict:
    return {
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}}
    }


def _responses(**codes: tuple[str, str]) -> dict:
    return {
        code.lstrip("_"): {"description": text, **_json(schema)}
        for code, (text, schema) in codes.items()
    }


_ERRORS_FOR_NAMES = {
    "_400": ("the name can never be an account name here", "Error"),
    "_401": ("missing or wrong bearer token (only when the service has a token)", "Error"),
    "_403": ("system account, reserved or denied name, or a clash with an existing group", "Error"),
    "_404": ("no such route (an empty name)", "Error"),
}
_ERRORS_FOR_CREATE = {
    "_500": ("useradd failed; nothing was left behind", "Error"),
    "_503": ("the account database stayed locked; retry later", "Error"),
}


def _name_parameter(name_pattern: str) -> dict:
    return {
        "name": "name",
        "in": "path",
        "required": True,
        "description": "account name, matching this service's configured pattern in full; names "
        "that do not are answered with 400, reserved ones with 403",
        "schema": {"type": "string", "pattern": f"^(?:{name_pattern})$"},
    }


def openapi_document(name_pattern: str = DEFAULT_NAME_PATTERN) -> dict:
    """The API description for a service whose names must match `name_pattern`."""
    account_properties = {
        "name": {"type": "string"},
        "uid": {"type": "integer"},
        "gid": {"type": "integer"},
        "home": {"type": "string"},
        "shell": {"type": "string"},
        "created": {"type": "boolean", "description": "true only when this call created it"},
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "hub-restuser",
            "version": suite_version(),
            "description": "Make sure a system account exists for a JupyterHub user. On a unix "
            "socket the socket's permissions are the access control; on TCP every route "
            "except /healthz and /openapi.json needs the bearer token.",
        },
        "paths": {
            "/users/{name}": {
                "parameters": [_name_parameter(name_pattern)],
                "get": {
                    "summary": "Look up an account",
                    "operationId": "getUser",
                    "responses": _responses(
                        _200=("the account", "Account"),
                        **{**_ERRORS_FOR_NAMES, "_404": ("no such account", "Error")},
                    ),
                },
                "post": {
                    "summary": "Make sure the account exists (idempotent)",
                    "operationId": "ensureUser",
                    "responses": _responses(
                        _200=("the account already existed; it was not changed", "Account"),
                        _201=("the account was created", "Account"),
                        **_ERRORS_FOR_NAMES,
                        **_ERRORS_FOR_CREATE,
                    ),
                },
            },
            "/{name}": {
                "parameters": [_name_parameter(name_pattern)],
                "post": {
                    "summary": "minrk/restuser compatible: make sure the account exists",
                    "operationId": "ensureUserCompat",
                    "responses": _responses(
                        _200=("the account, with the original 'dir' key", "CompatAccount"),
                        **_ERRORS_FOR_NAMES,
                        **_ERRORS_FOR_CREATE,
                    ),
                },
            },
            "/healthz": {
                "get": {
                    "summary": "Whether the service can create accounts now",
                    "operationId": "health",
                    "security": [],
                    "responses": _responses(
                        _200=("ready", "Health"), _503=("cannot create accounts; why", "Error")
                    ),
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "operationId": "openapi",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "the OpenAPI document",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }  # fmt: skip
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Account": {
                    "type": "object",
                    "required": list(account_properties),
                    "properties": account_properties,
                    "additionalProperties": False,
                },
                "CompatAccount": {
                    "type": "object",
                    "required": [*account_properties, "dir"],
                    "properties": {**account_properties, "dir": {"type": "string"}},
                    "additionalProperties": False,
                },
                "Health": {
                    "type": "object",
                    "required": ["status"],
                    "properties": {"status": {"type": "string", "enum": ["ok"]}},
                },
                "Error": {
                    "type": "object",
                    "required": ["title", "description"],
                    "properties": {"title": {"type": "string"}, "description": {"type": "string"}},
                },
            },
        },
        "security": [{"bearer": []}, {}],
    }
