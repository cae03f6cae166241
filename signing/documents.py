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

_ID = re.compile(r"^[A-Za-z0-9_-]{16,32}$")


def get(sctx: SigningContext, document_id: str) -> SignedDocument:
    if not _ID.match(document_id or ""):
        raise Problem(404, "Not Found", "no document has this verification code", code="no_such_document")
    with sctx.sessions() as session:
        row = session.get(SignedDocument, document_id)
    if row is None:
        raise Problem(404, "Not Found", "no document has this verification code", code="no_such_document")
    return row


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
        "certificate": {"serial": row.certificate_serial, "status": state.status, "revoked_at": state.revoked_at, "reason": state.reason},
        "verify_url": sctx.verify_url(row.id),
    }


@dataclass
class Comparison:
    outcome: str  # identical | signed_then_changed | tampered | not_this_document
    report: dict
    entry: dict | None


def compare(sctx: SigningContext, row: SignedDocument, data: bytes) -> Comparison:
    """Check an uploaded file against the record: the same bytes, our signature intact in it, or neither."""
    found = report.validate(sctx.ca, data, limit=sctx.max_pdf_bytes, with_records=True)
    entry = next((s for s in found["signatures"] if s.get("signature_sha256") == row.signature_sha256), None)
    if hashlib.sha256(data).hexdigest() == row.sha256:
        outcome = "identical"
    elif entry is None:
        outcome = "not_this_document"
    elif entry["sub_indication"] == "HASH_FAILURE" or (entry.get("errors") and not _intact(entry)):
        outcome = "tampered"
    elif entry.get("modified_after_signing"):
        outcome = "signed_then_changed"
    else:
        outcome = "signed_copy"  # our signature intact; only validation data or timestamps were added since
    return Comparison(outcome, found, entry)


def _intact(entry: dict) -> bool:
    return entry["sub_indication"] != "HASH_FAILURE" and not any("digest does not match" in e for e in entry["errors"])
