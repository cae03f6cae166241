"""The OpenAPI 3.1 document of every JSON API, ``/api/openapi.json``, and the page that shows it, ``/developers/api``.

Each component describes its own API (``Component.openapi``, built with
``core.openapi``); this module merges the parts once, when the app is built (two
parts describing one operation or one schema differently stop the app there), serves
the document, and renders the reference page from it on the server: the shared
layout, no script, nothing fetched from elsewhere, Chinese first.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from flask import Blueprint, current_app, render_template
from flask_babel import gettext

from core import openapi, web
from core.web.i18n import N_

DOCUMENT_PATH = "/api/openapi.json"
PAGE_PATH = "/developers/api"
EXTENSION = "hallmark.openapi"
TRANSLATIONS = Path(__file__).parent / "translations"
TAG = "meta"

bp = Blueprint("hallmark_openapi", __name__, template_folder="templates")
web.pages(bp)

DESCRIPTION = (
    "The JSON APIs of Hallmark: the certificate authority, identity (OAuth 2.0 and OpenID Connect), trusted electronic "
    "files (sealing, remote signing, validation) and the electronic licence library. Errors are RFC 9457 problem "
    "documents (application/problem+json); the OAuth endpoints answer OAuth error objects as their RFCs say. Each API "
    "accepts access tokens whose audience names it (RFC 8707): ask the token endpoint with resource=<public URL><API root>."
)


def _own_part() -> dict:
    """The document describes itself too: every route under /api is in it."""
    return openapi.part(
        {
            DOCUMENT_PATH: {
                "get": openapi.operation(
                    "openapi_document",
                    N_("This document: every JSON API in OpenAPI 3.1"),
                    tag=TAG,
                    responses={"200": openapi.json_response("The OpenAPI document.", {"type": "object", "required": ["openapi", "paths"]})}
                    | openapi.problems(),
                )
            }
        },
        tags=[(TAG, N_("The API description itself."))],
    )


def build(components, public_url: str) -> dict:
    """The whole document from the components' parts, in list order."""
    parts = [part.openapi() for part in components if part.openapi is not None]
    try:
        version = metadata.version("hallmark")
    except metadata.PackageNotFoundError:  # a source tree without an installed distribution
        version = "0"
    return openapi.merge(
        [*parts, _own_part()],
        title="Hallmark",
        version=version,
        description=DESCRIPTION,
        token_url=public_url.rstrip("/") + "/oauth/token",
        authorize_url=public_url.rstrip("/") + "/oauth/authorize",
    )


def install(app, components, public_url: str) -> None:
    """Build the document now (a clash between parts stops the app here) and serve it and its page."""
    app.extensions[EXTENSION] = build(components, public_url)
    web.add_translations(app, TRANSLATIONS)
    web.landing_link(app, "developers", PAGE_PATH, N_("API reference"), N_("Every JSON API: paths, scopes, requests, answers."), 20)
    app.register_blueprint(bp)


def document() -> dict:
    return current_app.extensions[EXTENSION]


@bp.get(DOCUMENT_PATH)
def served():
    # The same for every node and every caller until the next release: caches may keep it a while.
    return document(), 200, {"Cache-Control": "public, max-age=300", "Access-Control-Allow-Origin": "*"}


@bp.get(PAGE_PATH)
def page():
    doc = document()
    return render_template("hallmark/api.html", tags=_sections(doc), schemes=_schemes(doc), document_path=DOCUMENT_PATH)


# -- what the page shows, read from the document ------------------------------------------------


def _sections(doc: dict) -> list[dict]:
    """Operations grouped by tag, in the document's tag order."""
    by_tag: dict[str, list[dict]] = {tag["name"]: [] for tag in doc.get("tags", ())}
    for method, path, op in openapi.operations(doc):
        by_tag.setdefault(op["tags"][0], []).append(_shown(doc, method, path, op))
    described = {tag["name"]: tag.get("description", "") for tag in doc.get("tags", ())}
    return [{"name": name, "description": _text(described.get(name, "")), "operations": ops} for name, ops in by_tag.items() if ops]


def _shown(doc: dict, method: str, path: str, op: dict) -> dict:
    security = op.get("security") or []
    scopes = sorted({scope for requirement in security for scopes in requirement.values() for scope in scopes})
    auth = "none"
    if any(openapi.OAUTH in requirement for requirement in security):
        auth = "bearer"
    elif security:
        auth = "client"
    body = op.get("requestBody", {}).get("content", {})
    return {
        "id": op["operationId"],
        "method": method.upper(),
        "path": path,
        "summary": _text(op["summary"]),
        "description": op.get("description", ""),
        "auth": auth,
        "scopes": scopes,
        "parameters": [
            {"name": p["name"], "in": p["in"], "required": p.get("required", False), "type": _type(doc, p.get("schema", {}))}
            for p in op.get("parameters", ())
        ],
        "body": [{"media_type": media, "fields": _fields(doc, content.get("schema", {}))} for media, content in body.items()],
        "responses": [
            {"status": status, "description": response.get("description", ""), "media_types": sorted(response.get("content", {}))}
            for status, response in op.get("responses", {}).items()
        ],
    }


def _resolve(doc: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _type(doc: dict, schema: dict) -> str:
    schema = _resolve(doc, schema)
    if "enum" in schema:
        return " | ".join(str(v) for v in schema["enum"])
    if "anyOf" in schema:
        return " | ".join(_type(doc, s) for s in schema["anyOf"])
    if "const" in schema:
        return str(schema["const"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"[{_type(doc, schema.get('items', {}))}]"
    return schema.get("format", kind) if kind == "string" else str(kind)


def _fields(doc: dict, schema: dict) -> list[dict]:
    schema = _resolve(doc, schema)
    required = set(schema.get("required", ()))
    if schema.get("type") != "object":
        return [{"name": "", "type": _type(doc, schema), "required": True, "description": schema.get("description", "")}]
    return [
        {"name": name, "type": _type(doc, sub), "required": name in required, "description": _resolve(doc, sub).get("description", "")}
        for name, sub in schema.get("properties", {}).items()
    ]


def _schemes(doc: dict) -> dict:
    oauth = doc["components"]["securitySchemes"][openapi.OAUTH]
    flows = oauth["flows"]["clientCredentials"]
    return {"token_url": flows["tokenUrl"], "scopes": [(scope, _text(text)) for scope, text in sorted(flows["scopes"].items())]}


def _text(msgid: str) -> str:
    """A summary, tag or scope of the document in the reader's language (the msgids are the document's English)."""
    return gettext(msgid) if msgid else ""
