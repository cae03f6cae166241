"""The verification page's questions: is this a document we sealed, by whom, when, and is an uploaded file the same?"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from ca.models import Certificate
from core.problems import Problem
from signing import report
from signing.context import SigningContext
from signing.models import SignedDocument
from signing.pdf import preview

_ID = re.compile(r"^[A-Za-z0-9_-]{16,32}$")


def get(sctx: SigningContext, document_id: str) -> SignedDocument:
    if not _ID.match(document_id or ""):
        raise Problem(404, "Not Found", "no document has this verification code", code="no_such_document")
    with sctx.sessions() as session:
        row = session.get(SignedDocument, document_id)
    if row is None:
        raise Problem(404, "Not Found", "no document has this verification code", code="no_such_document")
    return row


def thumbnail(row: SignedDocument) -> dict | None:
    """The picture of page 1 as a page shows it: PNG bytes, width and height (None: the record has none)."""
    if not row.thumbnail_png:
        return None
    try:
        width, height = preview.png_size(row.thumbnail_png)
    except ValueError:
        return None
    return {"png": row.thumbnail_png, "width": width, "height": height}


@dataclass(frozen=True)
class CertificateState:
    status: str  # valid | revoked | expired | unknown
    revoked_at: str | None = None
    reason: str | None = None


def certificate_state(sctx: SigningContext, row: SignedDocument) -> CertificateState:
    from core.db import utc_now

    with sctx.sessions() as session:
        certificate = session.get(Certificate, row.certificate_serial)
    if certificate is None:
        return CertificateState("unknown")  # a USB key of a recognised external CA
    if certificate.status == "revoked":
        return CertificateState(
            "revoked", certificate.revoked_at.isoformat() if certificate.revoked_at else None, certificate.revocation_reason
        )
    if certificate.not_after < utc_now():
        return CertificateState("expired")
    return CertificateState("valid")


def describe(sctx: SigningContext, row: SignedDocument) -> dict:
    """What the public may know about a document we signed (identifiers masked)."""
    state = certificate_state(sctx, row)
    return {
        "id": row.id,
        "kind": row.kind,
        "seal": row.seal_name,
        "signer": row.signer,
        "signer_id": row.signer_id_masked,
        "signed_at": row.signed_at.isoformat(),
        "level": row.level,
        "sha256": row.sha256,
        "size": row.size,
        # Which document this is (signing.pdf.preview): none for records older than these fields.
        "title": row.title,
        "pages": row.pages,
        "thumbnail": row.thumbnail_png is not None,
        "certificate": {"serial": row.certificate_serial, "status": state.status, "revoked_at": state.revoked_at, "reason": state.reason},
        "verify_url": sctx.verify_url(row.id),
    }


@dataclass
class Comparison:
    """An uploaded file against the record. ``outcome`` is the page's one verdict on it (see :data:`OUTCOMES`)."""

    outcome: str
    report: dict
    entry: dict | None

    @property
    def level(self) -> str:
        return OUTCOMES[self.outcome]


# Every outcome of a comparison and how it reads: ok, warn or bad. Pages show exactly one of these.
OUTCOMES = {
    "identical": "ok",  # the very bytes we returned
    "signed_copy": "ok",  # our signature intact; only validation data or timestamps added since
    "signed_then_changed": "warn",  # our signature intact; permitted changes since (another signature, a form field)
    "not_confirmed": "warn",  # our document, but the report cannot confirm the seal now (e.g. revoked, no proof of time)
    "tampered": "bad",  # the signed bytes were edited, or the signature does not verify
    "changed_after_sealing": "bad",  # a later revision changes what was sealed
    "not_this_document": "bad",  # our signature is not in it
}


def compare(sctx: SigningContext, row: SignedDocument, data: bytes) -> Comparison:
    """Check an uploaded file against the record: the same bytes, our signature intact in it, or neither.

    The outcome follows the validation report's verdict on our signature (:mod:`signing.report`),
    so the page never calls a file the report fails "the same document".
    """
    found = sctx.validate(data)
    entry = next((s for s in found["signatures"] if s.get("signature_sha256") == row.signature_sha256), None)
    identical = hashlib.sha256(data).hexdigest() == row.sha256
    if entry is None:
        outcome = "identical" if identical else "not_this_document"
    elif entry["indication"] == "TOTAL_FAILED":
        outcome = "changed_after_sealing" if entry["sub_indication"] == report.ILLEGAL_MODIFICATIONS else "tampered"
    elif entry["indication"] != "TOTAL_PASSED":
        outcome = "not_confirmed"
    elif identical:
        outcome = "identical"
    elif entry.get("modified_after_signing"):
        outcome = "signed_then_changed"
    else:
        outcome = "signed_copy"
    return Comparison(outcome, found, entry)
