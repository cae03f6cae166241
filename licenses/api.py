"""JSON API of the licence library for approval and issuing systems (bearer tokens; scopes ``licences:read``, ``licences:issue``).

Sharing calls (scope ``licences:read``) state ``purpose`` and ``matter`` and are
allowed by the holder's consent in the token or by a standing grant
(``licenses.sharing``); each answer carries the access-log entry and its signed
``receipt``. Issuing calls (scope ``licences:issue``) need an issue grant for the
type and the department's seal grant (``licenses.grants.check_issuing_client``).

=============================================  ==============  ===================================================
method and path                                scope           in → out
=============================================  ==============  ===================================================
``GET /api/licences/<identifier>``             licences:read   ``purpose``, ``matter``, ``mode`` (compare | read),
                                                               ``fields`` → the licence, its status (+ face in read)
``GET /api/licences``                          licences:read   ``type``, ``holder_type`` (111 | 001), ``holder``,
                                                               ``purpose``, ``matter``, ``mode`` → the holder's licences
``POST /api/licences/compare``                 licences:read   ``identifier`` or ``type`` + holder, ``claims``,
                                                               ``purpose``, ``matter`` → per field match / no_match /
                                                               absent, status; its ``receipt`` signs the result
``POST /api/licences/qr``                      licences:read   ``qr`` (the scanned text), ``purpose``, ``matter``,
                                                               ``mode`` → as a lookup
``POST /api/licences/<identifier>/copy``       licences:read   ``purpose``, ``matter``, ``until`` → a stamped copy (PDF)
``POST /api/licences/verify``                  licences:read   a PDF (+ ``purpose``, ``matter``) → the verdict
``GET /api/licences/types/<code>/fields``      (any token)     → the type's face fields
``GET /api/licences/jwks``                     (none)          → the key receipts and QR payloads verify with
``POST /api/licences/issue``                   licences:issue  ``type``, ``issuer``, ``holder``, ``face``, ``request_id``,
                                                               ... → 201, the licence
``POST /api/licences/<identifier>/<action>``   licences:issue  suspend | resume | revoke | withdraw | cancel (``reason``);
                                                               renew (``valid_until``, ``face``) | change (``face``,
                                                               ``reason``) → the licence (201 for a new version)
=============================================  ==============  ===================================================
"""

from __future__ import annotations

from datetime import date

from flask import Blueprint, Response, g, request

from core.bearer import ApiResource
from core.db import read_only
from core.problems import Problem, json_object_body
from licenses import catalogue, context, grants, issuance, issuers, library, lifecycle, sharing, signer
from licenses.context import LicencesContext

READ, ISSUE = "licences:read", "licences:issue"
# This API as an OAuth resource (RFC 8707): tokens must name public URL + /api/licences in their audience.
RESOURCE = ApiResource("/api/licences", scopes=(READ, ISSUE))
bp = Blueprint("licenses_api", __name__)
STATE_ACTIONS = tuple(lifecycle.ACTIONS)
VERSION_ACTIONS = ("renew", "change")


def _ctx() -> LicencesContext:
    return context.current()


def _caller() -> sharing.Caller:
    return sharing.caller_of(_ctx(), g.token)


def _fields(value) -> list[str] | None:
    if value in (None, ""):
        return None
    if isinstance(value, list):
        return [str(v) for v in value][: sharing.MAX_CLAIMS]
    return [part.strip() for part in str(value).split(",") if part.strip()][: sharing.MAX_CLAIMS]


def _day(value, name: str) -> date | None:
    if value in (None, ""):
        return None
    try:
        return date.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        pass
    raise Problem(422, "Unprocessable Content", f"{name} must be a date (YYYY-MM-DD)", code="bad_date")


# -- sharing ------------------------------------------------------------------------------------


@bp.get("/api/licences/<identifier>")
@RESOURCE.require(READ)
def lookup(identifier):
    caller, args = _caller(), request.args
    use = sharing.use_of(args.get("purpose"), args.get("matter"), args.get("mode"))
    return sharing.lookup(_ctx(), caller, identifier, use, fields=_fields(args.get("fields")))


@bp.get("/api/licences")
@RESOURCE.require(READ)
def query():
    caller, args = _caller(), request.args
    use = sharing.use_of(args.get("purpose"), args.get("matter"), args.get("mode"))
    return sharing.query(
        _ctx(),
        caller,
        type_code=args.get("type", ""),
        use=use,
        holder_type=args.get("holder_type"),
        holder_code=args.get("holder"),
        fields=_fields(args.get("fields")),
    )


@bp.post("/api/licences/compare")
@RESOURCE.require(READ)
def compare():
    caller, body = _caller(), json_object_body()
    use = sharing.use_of(body.get("purpose"), body.get("matter"), grants.COMPARE)
    return sharing.compare(
        _ctx(),
        caller,
        use,
        claims=body.get("claims"),
        identifier=_text(body, "identifier"),
        type_code=_text(body, "type"),
        holder_type=_text(body, "holder_type"),
        holder_code=_text(body, "holder"),
    )


def _text(body: dict, name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise Problem(422, "Unprocessable Content", f"{name} must be text", code="bad_field")
    return value


@bp.post("/api/licences/qr")
@RESOURCE.require(READ)
def qr():
    caller, body = _caller(), json_object_body()
    use = sharing.use_of(body.get("purpose"), body.get("matter"), body.get("mode"))
    return sharing.scanned(_ctx(), caller, body.get("qr"), use, fields=_fields(body.get("fields")))


@bp.post("/api/licences/<identifier>/copy")
@RESOURCE.require(READ)
def copy(identifier):
    caller, body = _caller(), json_object_body()
    use = sharing.use_of(body.get("purpose"), body.get("matter"), grants.COPY, modes=(grants.COPY,))
    until = _day(body.get("until"), "until")
    if until is None:
        raise Problem(422, "Unprocessable Content", "until is required: the last day the copy may be used (YYYY-MM-DD)", code="bad_date")
    made, access = sharing.stamped_copy(_ctx(), caller, identifier, use, until=until)
    response = Response(made.pdf, mimetype="application/pdf")
    response.headers.update(
        {
            "Content-Disposition": f'attachment; filename="{made.filename}"',
            "Hallmark-Copy-Until": made.until.isoformat(),
            "Hallmark-Verify-URL": made.verify_url,
            "Hallmark-Access-Seq": str(access.seq),
            "Hallmark-Receipt": access.receipt,
        }
    )
    return response


@bp.post("/api/licences/verify")
@RESOURCE.require(READ)
def verify():
    caller, options = _caller(), dict(request.args)
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            raise Problem(400, "Bad Request", "send the PDF in a form field named 'file'", code="no_file")
        data = upload.read()
        options.update(dict(request.form.items()))
    elif request.mimetype in ("application/pdf", "application/octet-stream"):
        data = request.get_data(cache=False)
    else:
        raise Problem(
            415, "Unsupported Media Type", "send the PDF as application/pdf, or multipart/form-data with 'file'", code="media_type"
        )
    use = sharing.use_of(options.get("purpose"), options.get("matter"), grants.COMPARE)
    return sharing.verify_upload(_ctx(), caller, data, use)


@bp.get("/api/licences/types/<code>/fields")
@RESOURCE.require()
def type_fields(code):
    return sharing.type_fields(_ctx(), code)


@bp.get(signer.JWKS_PATH)
def jwks():
    # Public, and the same for every node: verifiers may cache it (a new key only ever joins the set).
    return signer.jwks(_ctx()), 200, {"Cache-Control": "public, max-age=3600"}


# -- issuing ------------------------------------------------------------------------------------


def _issuer_client() -> str:
    return str(g.token.get("client_id") or g.token["sub"])


@bp.post("/api/licences/issue")
@RESOURCE.require(ISSUE)
def issue():
    body = json_object_body()
    ctx = _ctx()
    sharing.caller_of(ctx, g.token)  # a token the identity provider no longer honours is refused here too
    client = _issuer_client()
    face = body.get("face")
    order = issuance.Order(
        type_code=_text(body, "type") or "",
        issuer_code=_text(body, "issuer") or "",
        holder_code=_text(body, "holder") or "",
        face=face,
        valid_from=_day(body.get("valid_from"), "valid_from"),
        valid_until=_day(body.get("valid_until"), "valid_until"),
        serial=_text(body, "serial"),
        request_id=_text(body, "request_id"),
    )
    with read_only(ctx.sessions) as db:
        definition, issuer = catalogue.get(db, order.type_code), issuers.get(db, order.issuer_code)
        grants.check_issuing_client(db, client, definition.code, issuer.credit_code)
    licence = issuance.issue(ctx, order, actor=f"client:{client}", requester=f"client:{client}")
    return _licence_answer(ctx, licence.identifier), 201, {"Location": RESOURCE.root + "/" + licence.identifier}


def _licence_answer(ctx: LicencesContext, identifier: str) -> dict:
    with read_only(ctx.sessions) as db:
        return {"licence": library.describe(ctx, db, lifecycle.find(db, identifier))}


@bp.post("/api/licences/<identifier>/<action>")
@RESOURCE.require(ISSUE)
def change(identifier, action):
    if action not in STATE_ACTIONS + VERSION_ACTIONS:
        raise Problem(404, "Not Found", f"there is no licence action {action[:40]!r}", code="unknown_action")
    body = json_object_body() if request.content_length else {}
    ctx = _ctx()
    sharing.caller_of(ctx, g.token)
    client = _issuer_client()
    identifier = library.check_identifier(identifier)
    with read_only(ctx.sessions) as db:
        licence = lifecycle.find(db, identifier)
        grants.check_issuing_client(db, client, licence.type_code, licence.issuer_code)
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise Problem(422, "Unprocessable Content", "reason must be text", code="bad_field")
    actor = f"client:{client}"
    if action in STATE_ACTIONS:
        with ctx.sessions() as db, db.begin():
            lifecycle.change_state(db, identifier, action, reason=reason, actor=actor)
        return _licence_answer(ctx, identifier)
    face = body.get("face")
    if face is not None and not isinstance(face, dict):
        raise Problem(422, "Unprocessable Content", "face must be an object of the changed face fields", code="bad_face")
    licence = issuance.next_version(
        ctx,
        identifier,
        action=action,
        actor=actor,
        reason=reason,
        face_changes=face,
        valid_until=_day(body.get("valid_until"), "valid_until"),
    )
    return _licence_answer(ctx, licence.identifier), 201, {"Location": RESOURCE.root + "/" + licence.identifier}
