"""Serving the licence status lists (:mod:`licenses.statuslist`): public, no token, cacheable.

``GET /licences/status/<issuer>/<list number>/<purpose>`` answers the list's
status list credential as a VC-JWT (``application/vc+jwt``, header ``typ``
``vc+jwt``, ES256 with the library's key published at ``/api/licences/jwks``).
``Cache-Control: public, max-age`` equals the credential's ``ttl`` (milliseconds
there), so verifiers and caches in between serve it for that long and Hallmark
does not see who checks which licence. The weak ETag names the list's version:
``If-None-Match`` with it gets ``304``.
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from core.db import read_only
from core.problems import Problem
from licenses import context, statuslist

bp = Blueprint("licences_status_lists", __name__)


def _not_found(detail: str) -> Problem:
    return Problem(404, "Not Found", detail, code="unknown_status_list")


@bp.get("/licences/status/<issuer>/<number>/<purpose>")
def status_list(issuer: str, number: str, purpose: str):
    if purpose not in statuslist.PURPOSES:
        raise _not_found(f"a status list's purpose is {' or '.join(statuslist.PURPOSES)}, not {purpose[:40]!r}")
    if not number.isdigit() or len(number) > 9 or len(issuer) > 18:
        raise _not_found("there is no such status list")
    ctx = context.current()
    with read_only(ctx.sessions) as db:
        row = statuslist.find(db, issuer, int(number), purpose)
        if row is None:
            raise _not_found("there is no such status list")
        served = statuslist.signed(ctx, row)
    ttl = ctx.settings.status_list_ttl_seconds
    headers = {"Cache-Control": f"public, max-age={ttl}", "ETag": served.etag, "Access-Control-Allow-Origin": "*"}
    wanted = _tags(request.headers.get("If-None-Match", ""))
    if "*" in wanted or served.etag in wanted:
        return Response(status=304, headers=headers)
    return Response(served.token, status=200, mimetype=statuslist.MEDIA_TYPE, headers=headers)


def _tags(header: str) -> set[str]:
    """The entity tags of an If-None-Match header, compared weakly (RFC 9110 13.1.2): W/ prefixes dropped."""
    tags = {tag.strip() for tag in header.split(",") if tag.strip()}
    return {tag.removeprefix("W/") for tag in tags} | {f"W/{tag.removeprefix('W/')}" for tag in tags}
