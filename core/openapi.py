"""Pieces of the OpenAPI 3.1 document every JSON API describes itself with, as plain data.

Each component that serves a JSON API declares its part of the document
(``Component.openapi``): its paths, its schemas and the scopes its bearer tokens
carry. The composition root merges the parts (:func:`merge`) into the one
document served at ``/api/openapi.json``. This module has no Flask in it: the
helpers only build dicts, so a component's description is data that tests and
the page read alike.

Conventions, shared by every part:

* errors are RFC 9457 problem documents (``application/problem+json``, schema
  ``Problem``), described with :func:`problems`;
* a view guarded by ``ApiResource.require(*scopes)`` is described with
  ``security=bearer(*scopes)``: an OAuth 2.0 access token (client credentials,
  or the authorization code flow for a person's own token) in the
  ``Authorization: Bearer`` header, whose audience names the API;
* summaries are English msgids (marked with ``N_``): the page shows them in the
  reader's language through the owning package's catalogue.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

VERSION = "3.1.0"
PROBLEM_MEDIA_TYPE = "application/problem+json"
OAUTH = "oauth2"  # the security scheme of every bearer-token API
CLIENT_BASIC = "clientBasic"  # HTTP Basic client authentication at the token, introspection and revocation endpoints

REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    304: "Not Modified",
    400: "Bad Request: the request is malformed",
    401: "Unauthorized: no access token, or one that is not valid for this API",
    403: "Forbidden: the token lacks a scope or the caller a grant",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content: the request is well-formed but cannot be acted on",
    429: "Too Many Requests",
    503: "Service Unavailable: a part the service needs (database, HSM, registry) is not answering",
}

PROBLEM_SCHEMA = {
    "type": "object",
    "description": "An RFC 9457 problem document. ``code``, where present, is a stable machine-readable name of the refusal.",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "code": {"type": "string"},
    },
}

# A JWK set (RFC 7517): the identity provider's and the licence library's published keys.
JWKS_SCHEMA = {
    "type": "object",
    "required": ["keys"],
    "properties": {"keys": {"type": "array", "items": {"type": "object", "required": ["kty"], "properties": {"kty": {"type": "string"}}}}},
}

# Statuses every operation may answer: no route or method here, a body over the size limit, the service itself unwell.
ALWAYS = (404, 405, 413, 503)


def ref(name: str) -> dict:
    """A reference to ``components.schemas[name]``."""
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: dict) -> dict:
    """``schema`` or null (JSON Schema 2020-12, as OpenAPI 3.1 uses it)."""
    return {"anyOf": [schema, {"type": "null"}]}


def obj(properties: Mapping[str, Any], required: Iterable[str] = (), **extra) -> dict:
    """A JSON object schema; other properties are allowed unless ``additionalProperties`` is given."""
    schema: dict = {"type": "object", "properties": dict(properties)}
    required = list(required)
    if required:
        schema["required"] = required
    schema.update(extra)
    return schema


STRING = {"type": "string"}
DATE_TIME = {"type": "string", "format": "date-time"}
DATE = {"type": "string", "format": "date"}
INTEGER = {"type": "integer"}
BOOLEAN = {"type": "boolean"}
STRINGS = {"type": "array", "items": STRING}


def problem(description: str | None = None, status: int | None = None) -> dict:
    """A response carrying a problem document."""
    return {
        "description": description or REASONS.get(status or 0, "An error"),
        "content": {PROBLEM_MEDIA_TYPE: {"schema": ref("Problem")}},
    }


def problems(*statuses: int, always: bool = True) -> dict[str, dict]:
    """Problem responses for ``statuses`` (and the ones every API may answer, unless ``always`` is false)."""
    codes = sorted(set(statuses) | (set(ALWAYS) if always else set()))
    return {str(status): problem(status=status) for status in codes}


def json_response(description: str, schema: dict, headers: Mapping[str, dict] | None = None) -> dict:
    response: dict = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = dict(headers)
    return response


def json_body(schema: dict, required: bool = True) -> dict:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def header(description: str, schema: dict = STRING) -> dict:
    return {"description": description, "schema": schema}


def path_parameter(name: str, description: str, schema: dict | None = None) -> dict:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": schema or STRING}


def query_parameter(name: str, description: str, schema: dict | None = None, required: bool = False) -> dict:
    return {"name": name, "in": "query", "required": required, "description": description, "schema": schema or STRING}


def page_parameters(default_limit: int, max_limit: int = 500) -> list[dict]:
    """``limit`` and ``offset`` of a list API (``core.problems.page_args``)."""
    from core.problems import MAX_OFFSET

    return [
        query_parameter("limit", "How many to return.", {"type": "integer", "minimum": 1, "maximum": max_limit, "default": default_limit}),
        query_parameter("offset", "How many to skip.", {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0}),
    ]


def bearer(*scopes: str) -> list[dict]:
    """The security of a view guarded by ``ApiResource.require(*scopes)`` (no scopes: any token for the API)."""
    return [{OAUTH: list(scopes)}]


def operation(
    operation_id: str,
    summary: str,
    *,
    tag: str,
    responses: Mapping[str, dict],
    security: list[dict] | None = None,
    description: str | None = None,
    parameters: Iterable[dict] = (),
    body: dict | None = None,
) -> dict:
    """One operation. ``security`` None: public (no token). With a token, 401 and 403 problems are added."""
    answers = dict(responses)
    op: dict = {"operationId": operation_id, "summary": summary, "tags": [tag]}
    if description:
        op["description"] = description
    parameters = list(parameters)
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = body
    if security is None:
        op["security"] = []
    else:
        op["security"] = security
        answers.setdefault("401", problem(status=401))
        answers.setdefault("403", problem(status=403))
    op["responses"] = dict(sorted(answers.items()))
    return op


def part(
    paths: Mapping[str, Mapping[str, dict]],
    *,
    schemas: Mapping[str, dict] | None = None,
    tags: Iterable[tuple[str, str]] = (),
    scopes: Mapping[str, str] | None = None,
    security_schemes: Mapping[str, dict] | None = None,
) -> dict:
    """A component's part of the document: paths, its schemas, its tags (name, description), its scopes (name: meaning)
    and any security scheme of its own besides the bearer tokens every API takes (``oauth2``)."""
    document: dict = {"paths": {path: dict(ops) for path, ops in paths.items()}, "tags": [{"name": n, "description": d} for n, d in tags]}
    components: dict = {}
    if schemas:
        components["schemas"] = dict(schemas)
    if scopes or security_schemes:
        components["securitySchemes"] = {**(security_schemes or {}), **({OAUTH: {"x-scopes": dict(scopes)}} if scopes else {})}
    if components:
        document["components"] = components
    return document


def merge(parts: Iterable[Mapping], *, title: str, version: str, description: str, token_url: str, authorize_url: str) -> dict:
    """The whole document from the components' parts: paths and schemas must not clash, tags keep list order.

    The ``oauth2`` scheme gets every scope the parts declare, for the client-credentials flow
    (approval systems, halls, staff consoles) and the authorization code flow (a person's own
    token, e.g. ``hallmark-key enroll`` and userinfo).
    """
    paths: dict[str, dict] = {}
    schemas: dict[str, dict] = {"Problem": PROBLEM_SCHEMA, "JWKS": JWKS_SCHEMA}
    scopes: dict[str, str] = {}
    tags: list[dict] = []
    extra_schemes: dict[str, dict] = {}
    for piece in parts:
        for path, ops in piece.get("paths", {}).items():
            for method, op in ops.items():
                if method in paths.get(path, {}):
                    raise ValueError(f"two components describe {method.upper()} {path}")
                paths.setdefault(path, {})[method] = op
        components = piece.get("components", {})
        for name, schema in components.get("schemas", {}).items():
            if name in schemas and schemas[name] != schema:
                raise ValueError(f"two components describe the schema {name!r} differently")
            schemas[name] = schema
        for name, scheme in components.get("securitySchemes", {}).items():
            if name == OAUTH:
                scopes.update(scheme.get("x-scopes", {}))
            else:
                extra_schemes[name] = scheme
        tags.extend(tag for tag in piece.get("tags", ()) if tag["name"] not in {t["name"] for t in tags})
    schemes = {
        OAUTH: {
            "type": "oauth2",
            "description": "An access token from the token endpoint, in the Authorization header (RFC 6750). Ask for it "
            "with the API's URL as the resource parameter (RFC 8707): a token is accepted only by the API its audience names.",
            "flows": {
                "clientCredentials": {"tokenUrl": token_url, "scopes": dict(sorted(scopes.items()))},
                "authorizationCode": {"authorizationUrl": authorize_url, "tokenUrl": token_url, "scopes": dict(sorted(scopes.items()))},
            },
        },
        **extra_schemes,
    }
    return {
        "openapi": VERSION,
        "info": {"title": title, "version": version, "description": description},
        "servers": [{"url": "/"}],
        "tags": tags,
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": dict(sorted(schemas.items())), "securitySchemes": schemes},
    }


def operations(document: Mapping) -> list[tuple[str, str, dict]]:
    """Every (method, path, operation) of a document, in path order."""
    methods = ("get", "put", "post", "delete", "patch", "head", "options")
    return [(method, path, op) for path, ops in document.get("paths", {}).items() for method, op in ops.items() if method in methods]
