"""Validation reports for signed PDFs, shaped like the ETSI TS 119 102-2 / EU DSS simple report.

One entry per signature, validated with pyHanko's implementation of ETSI EN 319 102-1:

* a signature followed by document timestamps (PAdES B-LTA) goes through the
  long-term process (5.6.3), with the timestamp chain as proof of existence;
* every other signature goes through validation with time (5.5): the signature
  timestamp, when there is one, is the best signature time, so a certificate
  revoked after a timestamped signature does not undo it.

Revocation data comes from the file's DSS and from our own current CRLs (so a
B-B or B-T signature of ours is still checked against our records); nothing is
fetched. The trust store is :func:`ca.trust.snapshot`, the one certificate login
reads: our root, the recognised external CAs and our cross-certificates. The
signer's revocation status is required, except below a CA recognised under the
``soft`` policy, which path validation also accepts without one: there it is
reported ``unknown`` with a warning.

Indications are TOTAL_PASSED, INDETERMINATE and TOTAL_FAILED with ETSI
sub-indications (HASH_FAILURE, REVOKED_NO_POE, NO_CERTIFICATE_CHAIN_FOUND, ...),
and one of our own: ILLEGAL_MODIFICATIONS, for a signature whose signed revision
is intact but whose later revisions change the document in ways no signature
permits (pyHanko's difference analysis: modification level OTHER, or beyond a
certification signature's DocMDP level). Such a file no longer shows what was
signed, so it fails, as pyHanko's own bottom line and Adobe's reader fail it.

This report is the one verdict: ``indication`` of each signature, and the
document's ``indication`` (the worst of its signatures'). An edited signed range
counts as modified after signing (``modifications`` ``SIGNED_CONTENT``), so no
entry says "not modified" beside a hash failure. Pages and the CLI render these
fields and decide nothing of their own.
The report carries the signer's identifier as the certificate states it (resident
ID or credit code, with where it was read from); the JSON API gives it in full
and masked, pages show it masked only.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from asn1crypto import x509 as asn1_x509
from asn1crypto.crl import CertificateList
from asn1crypto.ocsp import OCSPResponse
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from pyhanko.pdf_utils.decode_limits import DecodePurpose
from pyhanko.sign.ades.report import AdESStatus
from pyhanko.sign.validation import ades
from pyhanko.sign.validation.dss import DocumentSecurityStore, NoDSSFoundError
from pyhanko.sign.validation.pdf_embedded import EmbeddedPdfSignature
from pyhanko.sign.validation.policy_decl import LocalKnowledge, PdfSignatureValidationSpec
from pyhanko.sign.validation.status import ModificationInfo, PdfSignatureStatus
from pyhanko_certvalidator.revinfo.archival import CRLContainer, OCSPContainer
from sqlalchemy import select

from ca import identity as ca_identity
from ca import trust as ca_trust
from ca import validation
from ca.context import CAContext
from core.identifiers import mask_resident_ids
from core.problems import Problem
from signing import trust
from signing.pdf import reading as pdfinput

log = logging.getLogger("hallmark.signing.report")

INDICATIONS = {AdESStatus.PASSED: "TOTAL_PASSED", AdESStatus.INDETERMINATE: "INDETERMINATE", AdESStatus.FAILED: "TOTAL_FAILED"}
ILLEGAL_MODIFICATIONS = "ILLEGAL_MODIFICATIONS"  # ours, beside ETSI's sub-indications (see above)
SIGNED_CONTENT = "SIGNED_CONTENT"  # ``modifications`` when the signed range itself was edited
_WORST_FIRST = ("TOTAL_FAILED", "INDETERMINATE", "TOTAL_PASSED")
POLICY = "Hallmark: ETSI EN 319 102-1 with our root and recognised CAs as anchors; revocation data from the file and our records; nothing fetched"


# -- identity in a certificate ----------------------------------------------------------------


def signer(certificate: asn1_x509.Certificate, loaded: x509.Certificate | None = None) -> dict:
    """Who signs: the holder's name, the subject (RFC 4514 text, resident IDs masked) and the
    resident ID or credit code the certificate states, with where it was read from
    (:func:`ca.identity.stated_identity`). ``loaded`` is the same certificate parsed by cryptography, if at hand.
    """
    loaded = loaded or x509.load_der_x509_certificate(certificate.dump())
    found = ca_identity.stated_identity(loaded)
    return {
        "name": ca_identity.holder_name(loaded) or certificate.subject.human_friendly,
        "subject": ca_identity.display_name(loaded.subject),
        "identifier": found.as_dict() if found is not None else None,
    }


def _short(name: asn1_x509.Name) -> str:
    native = name.native
    return native.get("common_name") or native.get("organization_name") or name.human_friendly


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else None


# -- reading what the file carries -------------------------------------------------------------


@dataclass
class _DSS:
    knowledge: LocalKnowledge
    ocsp_serials: set
    crl_issuers: set


def _read_dss(reader) -> _DSS:
    try:
        dss = DocumentSecurityStore.read_dss(reader)
    except NoDSSFoundError:
        return _DSS(LocalKnowledge(), set(), set())
    ocsps, crls, serials, issuers = [], [], set(), set()
    for ref in dss.ocsps:
        response = OCSPResponse.load(ref.get_object().read_data(DecodePurpose.OCSP_RESPONSE))
        for container in OCSPContainer.load_multi(response):
            ocsps.append(container)
        try:
            for single in response.basic_ocsp_response["tbs_response_data"]["responses"]:
                serials.add(single["cert_id"]["serial_number"].native)
        except (KeyError, ValueError, TypeError):
            pass
    for ref in dss.crls:
        crl = CertificateList.load(ref.get_object().read_data(DecodePurpose.CRL))
        crls.append(CRLContainer(crl_data=crl))
        issuers.add(crl.issuer.hashable)
    return _DSS(LocalKnowledge(known_ocsps=ocsps, known_crls=crls, known_certs=list(dss.load_certs())), serials, issuers)


def _pades_level(signature: EmbeddedPdfSignature, status: PdfSignatureStatus | None, dss: _DSS, doc_timestamps_after: int) -> str:
    subfilter = str(signature.sig_object.get("/SubFilter", ""))
    if subfilter != "/ETSI.CAdES.detached":
        return "PDF-NOT-ETSI"  # adbe.pkcs7.detached and friends: a PDF signature, not a PAdES baseline one
    timestamped = bool(status and status.timestamp_validity) or _has_signature_timestamp(signature)
    level = "PAdES-BASELINE-B"
    if timestamped:
        level = "PAdES-BASELINE-T"
        certificate = signature.signer_cert
        if certificate.serial_number in dss.ocsp_serials or certificate.issuer.hashable in dss.crl_issuers:
            level = "PAdES-BASELINE-LT"
            if doc_timestamps_after:
                level = "PAdES-BASELINE-LTA"
    return level


def _has_signature_timestamp(signature: EmbeddedPdfSignature) -> bool:
    attributes = signature.signer_info["unsigned_attrs"]
    if not attributes:
        return False
    return any(attribute["type"].native == "signature_time_stamp_token" for attribute in attributes)


def _claimed_signing_time(signature: EmbeddedPdfSignature) -> datetime | None:
    try:
        return signature.self_reported_timestamp
    except (ValueError, KeyError, AttributeError):
        return None


# -- one signature ----------------------------------------------------------------------------


async def _validate(ctx: CAContext, signature: EmbeddedPdfSignature, dss: _DSS, doc_timestamps_after: int, found: ca_trust.Snapshot):
    """(process, pyHanko's result, the revocation policy the signer's certificate falls under)."""
    signer = signature.signer_cert
    if found.store.is_ours(signer):
        policy = "hallmark"  # the common case, without building a path: seals and our residents' certificates
    else:
        certificates = [*signature.other_embedded_certs, *dss.knowledge.known_certs]
        policy = await validation.revocation_policy(found.store, signer, certificates) or "hard"
    process, result = await _run_process(ctx, signature, dss, doc_timestamps_after, found, policy)
    return process, result, policy


async def _run_process(ctx, signature: EmbeddedPdfSignature, dss: _DSS, doc_timestamps_after: int, found, policy: str):
    spec = trust.validation_spec(ctx, dss.knowledge, found, revocation_policy=policy)
    signature.compute_integrity_info()
    if doc_timestamps_after:
        return "long-term (ETSI EN 319 102-1 5.6.3)", await ades.ades_lta_validation(signature, PdfSignatureValidationSpec(spec))
    arguments = {
        "raw_digest": signature.compute_digest(),
        "extra_status_kwargs": signature.summarise_integrity_info(),
        "status_cls": PdfSignatureStatus,
    }
    if _has_signature_timestamp(signature):
        return "with time (ETSI EN 319 102-1 5.5)", await ades.ades_with_time_validation(signature.signed_data, spec, **arguments)
    # pyHanko's basic validation builds its status without the PDF integrity fields.
    basic = await ades.ades_basic_validation(signature.signed_data, spec, raw_digest=arguments["raw_digest"])
    return "basic (ETSI EN 319 102-1 5.3)", basic


def _revocation(
    status: PdfSignatureStatus | None, certificate: asn1_x509.Certificate, dss: _DSS, indication_sub: str | None, policy: str
) -> dict:
    details = status.revocation_details if status is not None else None
    embedded = certificate.serial_number in dss.ocsp_serials or certificate.issuer.hashable in dss.crl_issuers
    source = "the file's DSS and Hallmark's current CRLs" if embedded else "Hallmark's current CRLs"
    if details is not None:
        return {
            "status": "revoked",
            "revoked_at": _iso(details.revocation_date),
            "reason": details.revocation_reason.native if details.revocation_reason is not None else None,
            "ca_revoked": details.ca_revoked,
            "checked_with": source,
            "policy": policy,
        }
    if indication_sub and indication_sub.startswith("REVOKED"):
        return {"status": "revoked", "checked_with": source, "policy": policy}
    if indication_sub in ("TRY_LATER", "NO_CERTIFICATE_CHAIN_FOUND", "CERTIFICATE_CHAIN_GENERAL_FAILURE"):
        return {"status": "unknown", "checked_with": source, "policy": policy}
    trusted = status is not None and status.trusted
    if trusted and policy == "soft" and not embedded:
        # Accepted without revocation data, as the soft policy of the signer's CA allows: do not call it good.
        return {"status": "unknown", "checked_with": source, "policy": policy}
    return {"status": "good" if trusted else "unknown", "checked_with": source, "policy": policy}


def _timestamp(status: PdfSignatureStatus | None) -> dict | None:
    validity = status.timestamp_validity if status is not None else None
    if validity is None:
        return None
    tsa_certificate = validity.signing_cert
    return {
        "time": _iso(validity.timestamp),
        "authority": _short(tsa_certificate.subject) if tsa_certificate is not None else None,
        "intact": validity.intact,
        "valid": validity.valid,
        "trusted": validity.trusted,
    }


def _signature_entry(
    number: int, signature: EmbeddedPdfSignature, process: str, result, dss: _DSS, doc_timestamps_after: int, policy: str
) -> dict:
    status: PdfSignatureStatus | None = result.api_status
    sub = result.ades_subindic
    indication = INDICATIONS[sub.status]
    sub_indication = None if sub.status is AdESStatus.PASSED else sub.name
    certificate = signature.signer_cert
    loaded = x509.load_der_x509_certificate(certificate.dump())
    integrity = ModificationInfo(**signature.summarise_integrity_info())
    coverage, modification = integrity.coverage, integrity.modification_level
    modifications = modification.name if modification is not None else None
    # Validation data and document timestamps added later (LTA_UPDATES) do not change the document.
    modified = None if modification is None else modification.name not in ("NONE", "LTA_UPDATES")
    intact = status is None or status.intact
    if not intact or sub_indication == "HASH_FAILURE":
        intact, modified, modifications = False, True, SIGNED_CONTENT  # the signed bytes themselves were edited
    elif integrity.docmdp_ok is False and indication != "TOTAL_FAILED":
        indication, sub_indication = "TOTAL_FAILED", ILLEGAL_MODIFICATIONS
    entry = {
        "id": f"S-{number}",
        "field": signature.field_name,
        "indication": indication,
        "sub_indication": sub_indication,
        "validation_process": process,
        "signer": signer(certificate, loaded),
        "certificate": {
            "serial": format(certificate.serial_number, "x"),
            "issuer": ca_identity.display_name(loaded.issuer),
            "issuer_name": _short(certificate.issuer),
            "not_before": _iso(certificate.not_valid_before),
            "not_after": _iso(certificate.not_valid_after),
            "sha256": certificate.sha256.hex(),
        },
        "signing_time": _iso(_claimed_signing_time(signature)),
        "best_signature_time": _iso(getattr(result, "best_signature_time", None)),
        "timestamp": _timestamp(status),
        "revocation": _revocation(status, certificate, dss, sub_indication, policy),
        "coverage": coverage.name if coverage is not None else None,
        "covers_whole_file": coverage is not None and coverage.name == "ENTIRE_FILE",
        "modified_after_signing": modified,
        "modifications": modifications,
        "pades_level": _pades_level(signature, status, dss, doc_timestamps_after),
        "signature_sha256": hashlib.sha256(signature.signer_info["signature"].native).hexdigest(),
        "errors": [],
        "warnings": [],
    }
    if not intact:
        entry["errors"].append("the signed bytes were changed after signing: the document digest does not match")
    elif status is not None and not status.valid:
        entry["errors"].append("the cryptographic signature does not verify")
    if sub_indication == ILLEGAL_MODIFICATIONS:
        entry["errors"].append(
            f"a later revision changes the document in a way no signature permits ({modifications.lower().replace('_', ' ')}): "
            "the file no longer shows what was signed"
        )
    if result.failure_msg and INDICATIONS[sub.status] != "TOTAL_PASSED":
        entry["errors"].append(mask_resident_ids(result.failure_msg)[:500])
    if indication == "TOTAL_PASSED" and entry["revocation"]["status"] == "unknown" and policy == "soft":
        entry["warnings"].append(
            "the signer's revocation status is not known (no revocation data in the file); "
            "accepted under the soft revocation policy of the CA that issued the certificate"
        )
    if modified and intact and sub_indication != ILLEGAL_MODIFICATIONS:
        entry["warnings"].append(f"the file was changed after this signature ({modifications.lower().replace('_', ' ')})")
    return entry


def _failed_entry(number: int, signature: EmbeddedPdfSignature, reason: str) -> dict:
    return {
        "id": f"S-{number}",
        "field": signature.field_name,
        "indication": "TOTAL_FAILED",
        "sub_indication": "FORMAT_FAILURE",
        "validation_process": None,
        "signer": None,
        "errors": [reason],
        "warnings": [],
    }


async def _doc_timestamp_entry(signature: EmbeddedPdfSignature) -> dict:
    entry = {"field": signature.field_name, "time": None, "authority": None, "intact": False}
    try:
        tst_info = signature.signed_data["encap_content_info"]["content"].parsed
        entry["time"] = _iso(tst_info["gen_time"].native)
        entry["authority"] = _short(signature.signer_cert.subject)
        signature.compute_integrity_info()
        digest = signature.compute_digest()
        entry["intact"] = tst_info["message_imprint"]["hashed_message"].native == digest
    except pdfinput.DAMAGED as exc:
        entry["error"] = str(exc)[:200]
    return entry


# -- the whole file -----------------------------------------------------------------------------


async def async_validate(
    ctx: CAContext,
    data: bytes,
    *,
    limit: int = pdfinput.MAX_PDF_BYTES,
    found: ca_trust.Snapshot | None = None,
    caps: pdfinput.Caps = pdfinput.DEFAULT_CAPS,
) -> dict:
    reader = pdfinput.read(data, limit=limit)
    found = found or trust.material(ctx)
    now = datetime.now(UTC)
    try:
        embedded = list(reader.embedded_signatures)
    except pdfinput.DAMAGED as exc:
        log.info("cannot enumerate signatures: %s", exc)
        raise pdfinput.refuse(422, "corrupt", "the PDF's signature fields cannot be read") from None
    pdfinput.check_caps(reader, caps, len(embedded))  # before any signature is checked
    try:
        dss = _read_dss(reader)
    except pdfinput.DAMAGED as exc:
        log.info("cannot read the DSS: %s: %s", type(exc).__name__, exc)
        raise pdfinput.refuse(422, "corrupt", "the PDF's validation data (its DSS) is damaged and cannot be read") from None
    signatures, timestamps = [], []
    regular = [s for s in embedded if s.sig_object_type != "/DocTimeStamp"]
    for signature in embedded:
        if signature.sig_object_type == "/DocTimeStamp":
            timestamps.append(await _doc_timestamp_entry(signature))
    for number, signature in enumerate(regular, start=1):
        doc_timestamps_after = sum(
            1 for s in embedded if s.sig_object_type == "/DocTimeStamp" and s.signed_revision > signature.signed_revision
        )
        try:
            process, result, policy = await _validate(ctx, signature, dss, doc_timestamps_after, found)
            signatures.append(_signature_entry(number, signature, process, result, dss, doc_timestamps_after, policy))
        except (*pdfinput.DAMAGED, NotImplementedError, UnsupportedAlgorithm) as exc:
            log.info("signature %s could not be processed: %s", signature.field_name, exc)
            signatures.append(_failed_entry(number, signature, f"the signature cannot be processed: {type(exc).__name__}"))
    passed = sum(1 for s in signatures if s["indication"] == "TOTAL_PASSED")
    return {
        "validation_time": _iso(now),
        "policy": POLICY,
        "indication": document_indication(signatures),
        "document": {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "revisions": reader.xrefs.total_revisions},
        "signatures_count": len(signatures),
        "valid_signatures_count": passed,
        "signatures": signatures,
        "document_timestamps": timestamps,
    }


def document_indication(signatures: list[dict]) -> str | None:
    """The file's verdict: the worst indication among its signatures (None: it has none)."""
    found = {entry["indication"] for entry in signatures}
    return next((indication for indication in _WORST_FIRST if indication in found), None)


TIMEOUT_SECONDS = 30  # one validation's bound in time (the signing section's validate_timeout_seconds)


def validate(
    ctx: CAContext,
    data: bytes,
    *,
    limit: int = pdfinput.MAX_PDF_BYTES,
    with_records: bool = False,
    caps: pdfinput.Caps = pdfinput.DEFAULT_CAPS,
    timeout: float = TIMEOUT_SECONDS,
) -> dict:
    """The report for one PDF (a 413/422 problem for what is not a readable, unencrypted PDF).

    With ``with_records`` every signature this service made names its record
    (``hallmark_document_id``); the trust check and that lookup share one database session.
    ``caps``: the most pages, revisions and signatures validated (413 past them).
    ``timeout``: seconds the validation may take (503 past it). It ends the waits, which
    is where a validation can spend long: fetching an external CA's CRL or OCSP answer
    (each request is bounded too: ca.validation.FETCH_TIMEOUT, FETCH_LIMITS); the
    computing between waits is bounded by the caps.
    """
    with ctx.sessions() as session:
        found = trust.material(ctx, session)
        # End the read before the slow part: on SQLite every transaction holds the write lock (core.db).
        session.rollback()
        try:
            report = asyncio.run(asyncio.wait_for(async_validate(ctx, data, limit=limit, found=found, caps=caps), timeout))
        except TimeoutError:
            log.warning("validation stopped after %s s", timeout)
            raise Problem(
                503,
                "Service Unavailable",
                f"the validation took longer than {timeout:g} seconds (revocation data of an external CA did not come in time); "
                "try again later",
                headers={"Retry-After": "60"},
                code="validation_timeout",
            ) from None
        if with_records:
            records = document_records(session, report)
            for entry in report["signatures"]:
                if entry.get("signature_sha256") in records:
                    entry["hallmark_document_id"] = records[entry["signature_sha256"]]
    return report


def document_records(session, report: dict) -> dict:
    """Signature sha256 -> the document id we recorded when we made it (for links to /verify)."""
    from signing.models import SignedDocument

    digests = [s["signature_sha256"] for s in report["signatures"] if s.get("signature_sha256")]
    if not digests:
        return {}
    rows = session.execute(select(SignedDocument.signature_sha256, SignedDocument.id).where(SignedDocument.signature_sha256.in_(digests)))
    return dict(rows.all())
