"""The signing and validation API (``signing/api.py``) in the OpenAPI document (see ``core.openapi``)."""

from __future__ import annotations

from core.openapi import (
    DATE_TIME,
    INTEGER,
    STRING,
    bearer,
    header,
    json_body,
    json_response,
    nullable,
    obj,
    operation,
    part,
    path_parameter,
    problems,
    query_parameter,
    ref,
)
from core.web.i18n import N_
from signing.pdf.pades import LEVELS
from signing.report import INDICATIONS

TAG = "signing"
PDF = {"type": "string", "format": "binary", "contentMediaType": "application/pdf"}
NUMBER = {"type": "number"}


def _pdf_body(fields: dict) -> dict:
    """The PDF as the body, or as the ``file`` field of a form with the options beside it."""
    return {
        "required": True,
        "content": {
            "application/pdf": {"schema": PDF},
            "multipart/form-data": {"schema": obj({"file": PDF, **fields}, required=("file",))},
        },
    }


SEAL_OPTIONS = {
    "seal": {"type": "string", "description": "Which of the client's seals (default: its only one)."},
    "level": {"type": "string", "enum": list(LEVELS), "description": "PAdES baseline level."},
    "page": {"type": "integer", "description": "Page of the visible seal, from 1 (default: the last)."},
    "x": NUMBER,
    "y": NUMBER,
    "width": NUMBER,
    "height": NUMBER,
    "reason": {"type": "string", "maxLength": 200},
    "visible": {"type": "string", "enum": ["true", "false"]},
}

IDENTITY = obj(
    {
        "name": STRING,
        "subject": STRING,
        "identifier_kind": nullable(STRING),
        "identifier": nullable(STRING),
        "identifier_masked": nullable(STRING),
    },
    required=("name", "subject"),
)

REPORT = obj(
    {
        "indication": nullable({"enum": sorted(INDICATIONS.values())}),
        "document": obj({"sha256": STRING, "size": INTEGER, "revisions": INTEGER}, required=("sha256", "size")),
        "signatures_count": INTEGER,
        "valid_signatures_count": INTEGER,
        "signatures": {
            "type": "array",
            "items": obj(
                {
                    "indication": STRING,
                    "sub_indication": nullable(STRING),
                    "hallmark_document": obj({"id": STRING, "verify_url": STRING}),
                },
                required=("indication",),
            ),
        },
        "document_timestamps": {"type": "array"},
    },
    required=("indication", "document", "signatures"),
    description="A validation report in the spirit of ETSI EN 319 102-1: the file's verdict and each signature's.",
)

DOCUMENT = obj(
    {
        "id": STRING,
        "kind": STRING,
        "seal": nullable(STRING),
        "signer": nullable(STRING),
        "signer_id": nullable(STRING),
        "signed_at": DATE_TIME,
        "level": STRING,
        "sha256": STRING,
        "size": INTEGER,
        "certificate": obj(
            {"serial": STRING, "status": STRING, "revoked_at": nullable(STRING), "reason": nullable(STRING)}, required=("serial", "status")
        ),
        "verify_url": STRING,
    },
    required=("id", "kind", "signed_at", "sha256", "certificate", "verify_url"),
)

REMOTE_REQUEST = obj(
    {
        "pdf": {"type": "string", "description": "The PDF, base64."},
        "certificate": {"type": "string", "description": "The USB key's signing certificate, DER in base64."},
        "chain": {"type": "array", "items": STRING, "maxItems": 5, "description": "Its issuers, DER in base64."},
        "level": STRING,
        "reason": {"type": "string", "maxLength": 200},
        "options": obj({k: v for k, v in SEAL_OPTIONS.items() if k not in ("seal", "level", "reason")}),
        "expected_identifier": {"type": "string", "description": "The resident ID or credit code the signer must have."},
    },
    required=("pdf", "certificate"),
)

REMOTE_PREPARED = obj(
    {
        "session": STRING,
        "expires_at": DATE_TIME,
        "to_sign": {"type": "string", "description": "The signed attributes to sign, base64url."},
        "digest_algorithm": STRING,
        "signature_algorithm": STRING,
        "level": STRING,
        "signer": ref("SigningIdentity"),
        "finish": STRING,
    },
    required=("session", "expires_at", "to_sign", "finish"),
)

REMOTE_FINISHED = obj(
    {
        "document_id": STRING,
        "verify_url": STRING,
        "level": STRING,
        "signer": ref("SigningIdentity"),
        "sha256": STRING,
        "pdf": {"type": "string", "description": "The signed PDF, base64."},
    },
    required=("document_id", "verify_url", "pdf"),
)


def openapi() -> dict:
    sealed_headers = {
        "Hallmark-Document-Id": header("The sealed document's id."),
        "Hallmark-Verify-URL": header("Where anyone can check it."),
        "Hallmark-Level": header("The PAdES level reached."),
    }
    paths = {
        "/api/sign/pdf": {
            "post": operation(
                "sign_seal_pdf",
                N_("Seal a PDF with the client's electronic seal"),
                tag=TAG,
                security=bearer("sign:seal"),
                parameters=[query_parameter(name, "Option (also a form field).", schema) for name, schema in SEAL_OPTIONS.items()],
                body=_pdf_body(SEAL_OPTIONS),
                responses={
                    "200": {"description": "The sealed PDF.", "headers": sealed_headers, "content": {"application/pdf": {"schema": PDF}}},
                    **problems(400, 409, 415, 422),
                },
            )
        },
        "/api/validate": {
            "post": operation(
                "sign_validate_pdf",
                N_("Validate the signatures and seals of a PDF"),
                tag=TAG,
                security=bearer("sign:validate"),
                body=_pdf_body({}),
                responses={"200": json_response("The validation report.", ref("SigningReport")), **problems(400, 415, 422, 429)},
            )
        },
        "/api/sign/documents/{document_id}": {
            "get": operation(
                "sign_get_document",
                N_("What the verification page shows about a document sealed here"),
                tag=TAG,
                parameters=[path_parameter("document_id", "The document's id (from Hallmark-Document-Id or the QR code).")],
                responses={"200": json_response("The document's record.", ref("SigningDocument")), **problems(400)},
            )
        },
        "/api/sign/remote": {
            "post": operation(
                "sign_remote_prepare",
                N_("Prepare a PDF for signing with a USB key"),
                tag=TAG,
                security=bearer("sign:remote"),
                description="The server prepares the PDF and answers the bytes the key must sign; the key signs them on the "
                "person's PC (hallmark-key) and the hall sends the signature to finish.",
                body=json_body(ref("SigningRemoteRequest")),
                responses={"201": json_response("What the key must sign.", ref("SigningRemotePrepared")), **problems(400, 403, 409, 422)},
            )
        },
        "/api/sign/remote/{session_id}/finish": {
            "post": operation(
                "sign_remote_finish",
                N_("Finish a USB-key signature: embed it and answer the signed PDF"),
                tag=TAG,
                security=bearer("sign:remote"),
                parameters=[path_parameter("session_id", "The session from the prepare call.")],
                body=json_body(obj({"signature": {"type": "string", "description": "The signature, base64."}}, required=("signature",))),
                responses={"200": json_response("The signed PDF and who signed.", ref("SigningRemoteFinished")), **problems(400, 409, 422)},
            )
        },
    }
    return part(
        paths,
        schemas={
            "SigningReport": REPORT,
            "SigningDocument": DOCUMENT,
            "SigningIdentity": IDENTITY,
            "SigningRemoteRequest": REMOTE_REQUEST,
            "SigningRemotePrepared": REMOTE_PREPARED,
            "SigningRemoteFinished": REMOTE_FINISHED,
        },
        tags=[(TAG, N_("Trusted electronic files: seal PDFs, sign with USB keys, validate."))],
        scopes={
            "sign:seal": N_("Seal PDFs with the client's department seal."),
            "sign:validate": N_("Validate signed PDFs."),
            "sign:remote": N_("Sign PDFs with a person's or enterprise's USB key (remote signing)."),
        },
    )
