"""Is an uploaded PDF a licence file (or a stamped copy) from this library, intact, and what is the licence's standing?

The file goes through signing's validation report (:func:`signing.report.validate`,
ETSI EN 319 102-1 with our trust store); every signature this service made names
its signing record, and a licence or a copy names the record of its sealed file.
That record is how a file is recognised, not its name or its text, so neither a
lookalike PDF nor a genuine file someone changed passes.

Verdicts (``verdict`` in the answer), kept apart the way every licence answer keeps
a licence's state apart from an error:

=========================== ===============================================================
``genuine_current``         our seal, intact, and the licence (and the copy) valid now
``genuine_but_<state>``     our seal, intact, but the licence is ``suspended``, ``revoked``,
                            ``withdrawn``, ``cancelled``, ``expired`` or ``superseded``
``copy_expired``            an intact stamped copy past its last day
``modified``                the seal of one of our files, but the file was changed after
                            sealing (the signature no longer matches, or content was added)
``seal_not_verified``       one of our files, unchanged as far as can be told, but its seal
                            does not validate now (the report's indication says why)
``not_a_licence``           a readable PDF, signed or not, that is no licence file of ours
=========================== ===============================================================

What is no readable PDF at all is refused with a 422 problem ``not_a_pdf`` (413
``too_large`` above signing's limit), never a 500.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import select

from core.db import read_only
from core.problems import Problem
from licenses import copies, library, lifecycle
from licenses.context import LicencesContext
from licenses.models import Issuer, Licence, StampedCopy
from signing.models import Seal, SignedDocument

GENUINE_CURRENT = "genuine_current"
GENUINE_BUT = "genuine_but_"
COPY_EXPIRED = "copy_expired"
MODIFIED = "modified"
SEAL_NOT_VERIFIED = "seal_not_verified"
NOT_A_LICENCE = "not_a_licence"
NOT_A_PDF = "not_a_pdf"


def verdicts() -> tuple[str, ...]:
    """Every verdict verify_file can give (for pages and API documentation)."""
    states = tuple(GENUINE_BUT + state for state in lifecycle.STATES if state != lifecycle.VALID)
    return (GENUINE_CURRENT, *states, COPY_EXPIRED, MODIFIED, SEAL_NOT_VERIFIED, NOT_A_LICENCE)


def _validated(ctx: LicencesContext, pdf) -> dict:
    if not isinstance(pdf, (bytes, bytearray, memoryview)):
        raise Problem(422, "Unprocessable Content", "send the licence file as the request body", code=NOT_A_PDF, verdict=NOT_A_PDF)
    sctx = ctx.signing
    try:
        return sctx.validate(bytes(pdf))  # within the signing section's caps and time bound
    except Problem as exc:
        if exc.status != 422:
            raise  # 413 too_large stays what it is
        # not_a_pdf, corrupt or encrypted: none of these can be a licence file (ours are never encrypted).
        raise Problem(
            422, "Unprocessable Content", exc.detail, code=NOT_A_PDF, verdict=NOT_A_PDF, reason=exc.extensions.get("code")
        ) from None


def _broken(entry: dict) -> bool:
    """The signature no longer matches the signed bytes, or its value does not verify."""
    if entry.get("sub_indication") in ("HASH_FAILURE", "SIG_CRYPTO_FAILURE"):
        return True
    return any("digest does not match" in e or "does not verify" in e for e in entry.get("errors", ()))


def _seal(entry: dict, record: SignedDocument) -> dict:
    return {
        "document_id": record.id,
        "seal": record.seal_name,
        "signer": record.signer,
        "signed_at": record.signed_at.isoformat(),
        "level": entry.get("pades_level"),
        "indication": entry.get("indication"),
        "sub_indication": entry.get("sub_indication"),
        "timestamp": (entry.get("timestamp") or {}).get("time"),
        "modified_after_signing": bool(entry.get("modified_after_signing")),
    }


def _file_facts(found: dict) -> dict:
    return {
        "sha256": found["document"]["sha256"],
        "size": found["document"]["size"],
        "signatures": found["signatures_count"],
        "valid_signatures": found["valid_signatures_count"],
        "sealed_by_this_service": any(e.get("hallmark_document_id") for e in found["signatures"]),
    }


def _not_a_licence(found: dict) -> dict:
    return {
        "verdict": NOT_A_LICENCE,
        "usable": False,
        "kind": None,
        "detail": "this PDF is not a licence file or stamped copy from this library",
        "licence": None,
        "copy": None,
        "seal": None,
        "file": {**_file_facts(found), "identical_to_issued": False},
    }


def verify_file(ctx: LicencesContext, pdf: bytes, *, today: date | None = None) -> dict:
    """The verdict on an uploaded file (see the module's table), with the licence's description and, for a copy, the copy's.

    A 422 problem ``not_a_pdf`` for what is no readable PDF, 413 ``too_large`` above the size limit.
    """
    found = _validated(ctx, pdf)
    today = today or lifecycle.today()
    ours = {e["hallmark_document_id"]: e for e in found["signatures"] if e.get("hallmark_document_id")}
    if not ours:
        return _not_a_licence(found)
    with read_only(ctx.sessions) as db:
        licence = db.scalars(select(Licence).where(Licence.document_id.in_(ours)).limit(1)).first()
        stamped = None
        if licence is None:
            stamped = db.scalars(select(StampedCopy).where(StampedCopy.document_id.in_(ours)).limit(1)).first()
            if stamped is not None:
                licence = lifecycle.find(db, stamped.identifier)
        if licence is None:
            return _not_a_licence(found)
        document_id = stamped.document_id if stamped is not None else licence.document_id
        record = db.get(SignedDocument, document_id)
        seal = db.get(Seal, record.seal_name) if record is not None and record.seal_name else None
        issuer = db.get(Issuer, licence.issuer_code)
        if record is None or seal is None or issuer is None or seal.credit_code != issuer.credit_code:
            return _not_a_licence(found)  # a record we cannot tie to the issuing department's seal vouches for nothing
        entry = ours[document_id]
        expected = stamped.pdf_sha256 if stamped is not None else licence.pdf_sha256
        identical = found["document"]["sha256"] == expected
        status = lifecycle.status(licence, today)
        body = {
            "usable": False,
            "kind": "copy" if stamped is not None else "licence",
            "licence": library.describe(ctx, db, licence),
            "copy": copies.describe(stamped, today) if stamped is not None else None,
            "seal": _seal(entry, record),
            "file": {**_file_facts(found), "identical_to_issued": identical},
        }
    body["licence"]["status"] = status.as_json()  # as of ``today``, like the verdict
    body["verdict"], body["detail"] = _verdict(entry, identical, status, body["copy"])
    body["usable"] = body["verdict"] == GENUINE_CURRENT
    return body


def _verdict(entry: dict, identical: bool, status: lifecycle.Status, copy: dict | None) -> tuple[str, str]:
    if not identical:
        if _broken(entry):
            return MODIFIED, "the file was changed after it was sealed: the seal's signature no longer matches its content"
        if entry.get("modified_after_signing"):
            return MODIFIED, "content was added to the file after it was sealed; only the sealed version counts"
        if entry.get("indication") != "TOTAL_PASSED":
            reason = entry.get("sub_indication") or entry.get("indication")
            return SEAL_NOT_VERIFIED, f"the file carries the issuer's seal, but the seal does not validate now ({reason})"
    if copy is not None and copy["expired"]:
        return COPY_EXPIRED, f"this stamped copy could be used until {copy['valid_until']} and has expired"
    if status.state != lifecycle.VALID:
        return GENUINE_BUT + status.state, f"the file is genuine and intact, but the licence is {status.state}"
    what = "stamped copy" if copy is not None else "licence file"
    return GENUINE_CURRENT, f"a genuine, intact {what}; the licence is valid"
