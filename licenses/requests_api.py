"""Requests for missing licences (索取) from approval systems: ``POST /api/licences/requests``, ``GET .../<id>``.

Scope ``licences:read``, like the sharing calls, and the same rule for whom: a
client may ask for a holder's licence of a type only where it could check one
(the holder's consent in its token for that type and matter, or a standing grant
for the type and matter), so a request cannot be used to learn who holds what.

``POST /api/licences/requests`` takes ``type``, ``issuer``, ``matter``,
``reason`` and the holder: ``holder_type`` (111 or 001) and ``holder``, or, with
a consent token, nothing (the token's holder; the department then completes the
holder's code when it issues). It answers ``201 {id, state, deadline, ...}``;
``409 duplicate_request`` names the open request already filed (``existing``).
``GET /api/licences/requests/<id>`` answers the request's state and, once
decided, the answer (the licence, or the reason for refusing); only the client
that filed it may read it (another client gets 404).
"""

from __future__ import annotations

import time

from flask import Blueprint, g

from core.db import read_only
from core.problems import Problem, json_object_body
from licenses import catalogue, context, grants, issuance, sharing
from licenses import requests as licence_requests
from licenses.api import READ, RESOURCE
from licenses.context import LicencesContext

bp = Blueprint("licenses_requests_api", __name__)
PATH = RESOURCE.root + "/requests"


def _ctx() -> LicencesContext:
    return context.current()


def _text(body: dict, name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise Problem(422, "Unprocessable Content", f"{name} must be text", code="bad_field")
    return value


def _same(a: str, b: str) -> bool:
    return grants.check_matter(a) == b if isinstance(a, str) and a.strip() else False


def _consented(caller: sharing.Caller, type_code: str, matter: str, holder_hash: str) -> bool:
    """The token carries the holder's unexpired consent for this type and matter."""
    if holder_hash not in {h.lookup_hash for h in caller.holders}:
        return False
    now = int(time.time())
    return any(
        type_code in (detail.get("datatypes") or ())
        and _same(detail.get("matter", ""), matter)
        and isinstance(detail.get("expires_at"), int)
        and detail["expires_at"] > now
        for detail in caller.details
    )


def _may_ask(db, caller: sharing.Caller, type_code: str, matter: str, holder_hash: str) -> None:
    if _consented(caller, type_code, matter, holder_hash) or grants.allowed(db, caller.client_id, type_code, grants.COMPARE, matter):
        return
    raise Problem(
        403,
        "Forbidden",
        f"client {caller.client_id!r} may ask for a licence of type {type_code} only where it may check one: with the holder's "
        f"consent for this type and matter, or a standing grant (hallmark licences grant add {caller.client_id} {type_code} "
        f"--matter {matter!r})",
        code="no_grant",
    )


@bp.post(PATH)
@RESOURCE.require(READ)
def ask():
    ctx, body = _ctx(), json_object_body()
    caller = sharing.caller_of(ctx, g.token)
    type_code, issuer_code = _text(body, "type") or "", _text(body, "issuer") or ""
    holder_type, holder_code = _text(body, "holder_type"), _text(body, "holder")
    matter = grants.check_matter(body.get("matter"))
    holder = None
    with read_only(ctx.sessions) as db:
        try:
            definition = catalogue.get(db, type_code)
        except Problem as problem:
            raise Problem(422, "Unprocessable Content", problem.detail, code="unknown_type") from None
        if holder_code:
            code, _kind, _masked = issuance.check_holder(holder_type or "", holder_code)
            holder_hash = issuance.holder_hash(ctx, holder_type, code)
        else:
            # From the consent token: its holder, when it is of the type's kind.
            holder = next((h for h in caller.holders if h.code_type == definition.holder_code_type), None)
            if holder is None:
                raise Problem(
                    422,
                    "Unprocessable Content",
                    "holder_type and holder are required (or a token carrying the holder's consent)",
                    code="bad_holder",
                )
            holder_hash = holder.lookup_hash
        _may_ask(db, caller, definition.code, matter, holder_hash)
    row = licence_requests.ask(
        ctx,
        type_code=definition.code,
        issuer_code=issuer_code,
        holder=holder,
        holder_type=holder_type if holder is None else None,
        holder_code=holder_code if holder is None else None,
        matter=matter,
        reason=body.get("reason"),
        requested_by=f"client:{caller.client_id}",
    )
    with read_only(ctx.sessions) as db:
        answer = licence_requests.as_json(ctx, db, row)
    return answer, 201, {"Location": PATH + "/" + row.id}


@bp.get(PATH + "/<request_id>")
@RESOURCE.require(READ)
def show(request_id):
    ctx = _ctx()
    caller = sharing.caller_of(ctx, g.token)
    with read_only(ctx.sessions) as db:
        row = licence_requests.get(db, request_id)
        if row.requested_by != f"client:{caller.client_id}":
            raise Problem(404, "Not Found", f"there is no licence request {request_id[:40]!r} of yours", code="unknown_request")
        return licence_requests.as_json(ctx, db, row)
