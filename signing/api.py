"""JSON/PDF API of trusted electronic files (bearer tokens; scopes ``sign:seal``, ``sign:remote``, ``sign:validate``).

=====================================  ============  ===============================================
method and path                        scope         body → answer
=====================================  ============  ===============================================
``POST /api/sign/pdf``                 sign:seal     the PDF (``application/pdf``, or multipart
                                                     ``file``); options as query or form fields:
                                                     ``seal``, ``level``, ``page``, ``x``, ``y``,
                                                     ``width``, ``height``, ``reason``,
                                                     ``visible`` → the sealed PDF
``POST /api/sign/remote``              sign:remote   JSON: ``pdf`` (base64), ``certificate``, ...
                                                     → the bytes the USB key must sign
``POST /api/sign/remote/<id>/finish``  sign:remote   JSON: ``signature`` → the signed PDF (base64)
                                                     and the signer's identity
``POST /api/validate``                 sign:validate the PDF → the validation report (JSON)
``GET /api/sign/documents/<id>``       (public)      what the verification page shows, as JSON
=====================================  ============  ===============================================
"""

from __future__ import annotations

import base64
import binascii
import math

from flask import Blueprint, Response, g, request

from core.bearer import ApiResource
from core.problems import Problem, json_object_body
from signing import context as signing_context
from signing import documents, limits, remote
from signing.context import SigningContext
from signing.pdf import pades

# This API as an OAuth resource (RFC 8707): tokens must name public URL + /api/sign in their audience
# (``/api/validate`` belongs to it too).
RESOURCE = ApiResource("/api/sign", scopes=("sign:seal", "sign:validate", "sign:remote"))
bp = Blueprint("signing_api", __name__)


def _ctx() -> SigningContext:
    return signing_context.current()


def _client() -> str:
    return str(g.token.get("client_id") or g.token["sub"])


def _pdf_and_options() -> tuple[bytes, dict]:
    """The PDF from the body (raw or multipart ``file``) and the options (query string, then form fields)."""
    limit = _ctx().max_pdf_bytes
    options = dict(request.args)
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            raise Problem(400, "Bad Request", "send the PDF in a form field named 'file'", code="no_file")
        data = upload.read(limit + 1)
        options.update(dict(request.form.items()))
    elif request.mimetype in ("application/pdf", "application/octet-stream"):
        data = request.get_data(cache=False)
    else:
        raise Problem(
            415,
            "Unsupported Media Type",
            "send the PDF as application/pdf, or as multipart/form-data with a 'file' field",
            code="media_type",
        )
    return data, options


def _number(options: dict, name: str, default=None):
    value = options.get(name)
    if value in (None, ""):
        return default
    try:
        number = float(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else None
    except ValueError:
        number = None
    if number is None or not math.isfinite(number):
        raise Problem(400, "Bad Request", f"'{name}' must be a finite number", code="bad_option")
    return number


def _reason(value) -> str | None:
    if value is not None and (not isinstance(value, str) or len(value) > 200):
        raise Problem(400, "Bad Request", "'reason' is text of at most 200 characters", code="bad_option")
    return value


def placement_from(options: dict) -> pades.Placement:
    page = _number(options, "page")
    visible = str(options.get("visible", "true")).lower() not in ("0", "false", "no")
    if page is not None and page != int(page):
        raise Problem(400, "Bad Request", "'page' must be a whole number", code="bad_option")
    return pades.Placement(
        page=int(page) if page is not None else None,
        x=_number(options, "x"),
        y=_number(options, "y"),
        width=_number(options, "width", pades.stamp.DEFAULT_WIDTH),
        height=_number(options, "height", pades.stamp.DEFAULT_HEIGHT),
        visible=visible,
    )


def pdf_response(data: bytes, headers: dict) -> Response:
    response = Response(data, mimetype="application/pdf")
    response.headers.update(headers)
    return response


@bp.post("/api/sign/pdf")
@RESOURCE.require("sign:seal")
def seal_pdf():
    from signing import seals

    data, options = _pdf_and_options()
    sctx = _ctx()
    client = _client()
    seal_name = seals.choose_for_client(sctx.ca, client, options.get("seal"))
    reason = _reason(options.get("reason"))
    result = pades.seal_pdf(
        sctx,
        data,
        seal_name=seal_name,
        level=options.get("level"),
        placement=placement_from(options),
        reason=reason,
        actor=f"client:{client}",
    )
    return pdf_response(
        result.pdf,
        {
            "Hallmark-Document-Id": result.document.id,
            "Hallmark-Verify-URL": result.verify_url,
            "Hallmark-Level": result.document.level,
            "Content-Disposition": f'attachment; filename="sealed-{result.document.id}.pdf"',
        },
    )


@bp.post("/api/validate")
@RESOURCE.require("sign:validate")
def validate_pdf():
    sctx = _ctx()
    limits.allow_validation(sctx, request.remote_addr or "")  # per client address, before the upload is read
    data, _ = _pdf_and_options()
    return link_records(sctx, sctx.validate(data))


def link_records(sctx: SigningContext, found: dict) -> dict:
    """Each signature this service made links to its verification page."""
    for entry in found["signatures"]:
        document_id = entry.pop("hallmark_document_id", None)
        if document_id:
            entry["hallmark_document"] = {"id": document_id, "verify_url": sctx.verify_url(document_id)}
    return found


@bp.get("/api/sign/documents/<document_id>")
def document(document_id):
    sctx = _ctx()
    return documents.describe(sctx, documents.get(sctx, document_id))


# -- remote signing with a USB key ----------------------------------------------------------------


def _base64(value, name: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise Problem(400, "Bad Request", f"'{name}' is required: base64 or base64url text", code="bad_field")
    text = value.strip().replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise Problem(400, "Bad Request", f"'{name}' is not base64", code="bad_field") from None


@bp.post("/api/sign/remote")
@RESOURCE.require("sign:remote")
def remote_prepare():
    body = json_object_body()
    sctx = _ctx()
    data = _base64(body.get("pdf"), "pdf")
    certificate = _base64(body.get("certificate"), "certificate")
    chain = body.get("chain") or []
    if not isinstance(chain, list) or len(chain) > 5:
        raise Problem(400, "Bad Request", "'chain' must be a list of at most 5 base64 certificates", code="bad_field")
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise Problem(400, "Bad Request", "'options' must be an object", code="bad_field")
    expected = body.get("expected_identifier")
    if expected is not None and not isinstance(expected, str):
        raise Problem(400, "Bad Request", "'expected_identifier' must be a string", code="bad_field")
    prepared = remote.prepare(
        sctx,
        data,
        certificate,
        [_base64(c, "chain") for c in chain],
        level=body.get("level"),
        placement=placement_from({**options, "visible": options.get("visible", "false")}),
        reason=_reason(body.get("reason")),
        expected_identifier=expected,
        actor=f"client:{_client()}",
    )
    return prepared, 201


@bp.post("/api/sign/remote/<session_id>/finish")
@RESOURCE.require("sign:remote")
def remote_finish(session_id):
    body = json_object_body()
    signature = _base64(body.get("signature"), "signature")
    finished = remote.finish(_ctx(), session_id, signature, actor=f"client:{_client()}")
    return finished
