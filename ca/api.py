"""JSON API of the CA: issue, look up, list and revoke certificates (bearer tokens with ca:* scopes)."""

from __future__ import annotations

from flask import Blueprint, g, request

from ca import context as ca_context
from ca import issuance, queries, revocation
from ca.context import CAContext
from core.bearer import ApiResource
from core.problems import Problem, json_object_body, page_args

# This API as an OAuth resource (RFC 8707): tokens must name public URL + /api/ca in their audience.
RESOURCE = ApiResource("/api/ca", scopes=("ca:issue", "ca:read", "ca:revoke"))
bp = Blueprint("ca_api", __name__, url_prefix=RESOURCE.root)


def _ctx() -> CAContext:
    return ca_context.current()


def _actor() -> str:
    return f"client:{g.token.get('client_id') or g.token['sub']}"


@bp.post("/certificates")
@RESOURCE.require("ca:issue")
def issue_certificate():
    body = json_object_body()
    for key in ("profile", "csr", "name"):
        if not isinstance(body.get(key), str):
            raise Problem(400, "Bad Request", f"'{key}' is required and must be a string")
    sans = body.get("san", [])
    if not isinstance(sans, list) or not all(isinstance(s, str) for s in sans):
        raise Problem(400, "Bad Request", "'san' must be a list of strings")
    subject_id = body.get("subject_id")
    if subject_id is not None and not isinstance(subject_id, str):
        raise Problem(400, "Bad Request", "'subject_id' must be a string")
    identity = issuance.Identity(name=body["name"], subject_id=subject_id, sans=tuple(sans))
    row, _ = issuance.issue(_ctx(), body["profile"], body["csr"], identity, actor=_actor())
    response = queries.as_json(row, include_pem=True)
    return response, 201, {"Location": f"/api/ca/certificates/{row.serial}"}


@bp.get("/certificates/<serial>")
@RESOURCE.require("ca:read")
def get_certificate(serial):
    return queries.as_json(queries.get(_ctx(), serial), include_pem=True)


@bp.get("/certificates")
@RESOURCE.require("ca:read")
def list_certificates():
    args = request.args
    limit, offset = page_args(default_limit=50)
    rows = queries.search(
        _ctx(),
        subject_id=args.get("subject_id"),
        status=args.get("status"),
        profile=args.get("profile"),
        authority=args.get("authority"),
        limit=limit,
        offset=offset,
    )
    return {"certificates": [queries.as_json(r) for r in rows], "limit": limit, "offset": offset}


@bp.post("/certificates/<serial>/revoke")
@RESOURCE.require("ca:revoke")
def revoke_certificate(serial):
    body = json_object_body()
    reason = body.get("reason", "unspecified")
    if not isinstance(reason, str):
        raise Problem(400, "Bad Request", "'reason' must be a string")
    row = revocation.revoke(_ctx(), serial, reason, actor=_actor())
    return queries.as_json(row)
