"""Remote signing with a USB key: the server prepares, the key signs, the server finishes.

1. :func:`prepare` checks the signer's certificate (a path to our root or a
   recognised CA, not revoked, a signing key usage, and optionally the identifier
   the hall expects), adds the signature field to the PDF, reserves room for the
   signature, computes the document digest and builds the CAdES signed attributes
   (content type, message digest, signing certificate v2). It stores all of that
   in a session and answers with ``to_sign``: the DER of those signed attributes.
2. The key signs ``to_sign`` with a hash-and-sign mechanism (ECDSA or PKCS#1 v1.5
   with SHA-256): exactly what ``hallmark-key``'s local agent does with
   ``POST /v1/sign {"purpose": "document", "data": to_sign}``.
3. :func:`finish` verifies that signature against the certificate over the
   stored attributes (a key that signed anything else is refused), wraps it in the
   CMS with a timestamp from our TSA, writes it into the reserved space, and for
   B-LT/B-LTA adds the DSS and the document timestamp. The signed file is
   recorded and audited like a seal, and the prepared copy is deleted.

Sessions expire after :attr:`SigningContext.remote_session_lifetime` (10 min);
an expired or finished session is refused with 410 or 409. Nothing is stored
unless prepare succeeded entirely; nothing is recorded unless finish did.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging

from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import signers
from pyhanko.sign.general import SigningError
from pyhanko.sign.signers.pdf_byterange import PreparedByteRangeDigest
from pyhanko.sign.signers.pdf_cms import PdfCMSSignedAttributes
from pyhanko.sign.signers.pdf_signer import PdfTimeStamper
from pyhanko.sign.validation.dss import async_add_validation_info
from pyhanko_certvalidator.errors import ValidationError
from sqlalchemy import delete

from ca import validation as ca_validation
from core import audit
from core.db import utc_now
from core.problems import Problem
from signing import report, trust
from signing.context import SigningContext
from signing.models import RemoteSession
from signing.pdf import pades, preview, stamp
from signing.pdf import reading as pdfinput
from signing.pdf.signers import GivenSignature

log = logging.getLogger("hallmark.signing.remote")

MAX_CERTIFICATE_BYTES = 16 * 1024
SIGNATURE_ALGORITHMS = {"ec": "ecdsa-with-SHA256", "rsa": "sha256WithRSAEncryption"}


def _bad(detail: str, code: str, status: int = 422) -> Problem:
    titles = {400: "Bad Request", 409: "Conflict", 410: "Gone", 422: "Unprocessable Content"}
    return Problem(status, titles[status], detail, code=code)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _load_certificate(der: bytes, what: str) -> tuple[x509.Certificate, asn1_x509.Certificate]:
    if len(der) > MAX_CERTIFICATE_BYTES:
        raise _bad(f"the {what} is larger than {MAX_CERTIFICATE_BYTES // 1024} KiB", "bad_certificate", 400)
    try:
        certificate = x509.load_der_x509_certificate(der)
        parsed = asn1_x509.Certificate.load(der)
        parsed.native  # noqa: B018 - a malformed extension fails here, not half-way through signing
    except (ValueError, TypeError):
        raise _bad(f"the {what} is not a DER X.509 certificate", "bad_certificate", 400) from None
    return certificate, parsed


def _check_certificate(sctx: SigningContext, certificate: x509.Certificate, chain: list[bytes]) -> None:
    result = ca_validation.validate(sctx.ca, certificate, intermediates=chain)
    if not result.ok:
        code = "certificate_revoked" if result.status == "revoked" else "certificate_not_valid"
        raise _bad(f"the signer's certificate is not acceptable ({result.status}): {result.reason}", code)
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not usage.content_commitment:
        # A login (digitalSignature-only) key must not put a person's name under a document.
        raise _bad(
            "the signer's certificate may not sign documents (no nonRepudiation key usage); use the signing certificate",
            "certificate_usage",
        )
    if not isinstance(certificate.public_key(), (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
        raise _bad("only ECDSA and RSA keys can sign here", "certificate_key")


class _PlaceholderSigner(GivenSignature):
    """Signs nothing: prepare only needs the certificate to build the field and the signed attributes."""

    def __init__(self, certificate: asn1_x509.Certificate, chain: list[asn1_x509.Certificate]):
        super().__init__(b"", certificate, chain)


async def _prepare(
    sctx: SigningContext,
    reader,
    level: str,
    certificate,
    certificate_parsed,
    chain_parsed,
    serials,
    placement,
    reason,
    field_name,
    document_id,
    external,
):
    writer = IncrementalPdfFileWriter.from_reader(reader)
    page_count = int(reader.root["/Pages"]["/Count"])
    spec = pades.field_spec(writer, page_count, field_name, placement)
    signer = _PlaceholderSigner(certificate_parsed, chain_parsed)
    meta = pades.signature_metadata(
        sctx,
        field_name,
        level,
        serials,
        reason=reason,
        name=None,
        key_usage=pades.key_usage_for(certificate_parsed),
        allow_fetching=external,
    )
    pdf_signer = signers.PdfSigner(meta, signer, stamp_style=stamp.SealStampStyle(image=None), new_field_spec=spec)
    reserve = pades.reserve_bytes([certificate_parsed.dump(), *(c.dump() for c in chain_parsed)], certificate.public_key(), level != "B-B")
    prepared, _, output = await pdf_signer.async_digest_doc_for_signing(
        writer, bytes_reserved=reserve, appearance_text_params={"url": sctx.verify_url(document_id)}
    )
    signed_attrs = await signer.signed_attrs(
        prepared.document_digest,
        pades.MD_ALGORITHM,
        PdfCMSSignedAttributes(signing_time=utc_now()),
        use_pades=True,
    )
    return prepared, output.getvalue(), signed_attrs


def prepare(
    sctx: SigningContext,
    data: bytes,
    certificate_der: bytes,
    chain_der: list[bytes],
    *,
    level: str | None,
    placement: pades.Placement,
    reason: str | None,
    expected_identifier: str | None,
    actor: str,
) -> dict:
    level = pades.check_level(level)
    reader = pdfinput.read(data, limit=sctx.max_pdf_bytes)
    certificate, parsed = _load_certificate(certificate_der, "certificate")
    chain = [_load_certificate(der, "chain certificate")[1] for der in chain_der]
    identity = report.signer(parsed, certificate)
    if expected_identifier is not None:
        stated = (identity["identifier"] or {}).get("value")
        if stated is None or stated.upper() != expected_identifier.strip().upper():
            raise _bad("the certificate is not the applicant's: its identifier differs from the one expected", "identity_mismatch")
    _check_certificate(sctx, certificate, chain_der)
    session_id, document_id = pades.new_document_id(), pades.new_document_id()
    field_name = pades.unique_field_name(reader, f"Signature-{session_id[:8]}")
    external = not trust.material(sctx.ca).store.is_ours(parsed)
    serials = [format(certificate.serial_number, "x")]
    tsa_serial = trust.tsa_serial(sctx.ca) if level != "B-B" else None
    if tsa_serial:
        serials.append(tsa_serial)
    try:
        prepared, prepared_pdf, signed_attrs = asyncio.run(
            _prepare(sctx, reader, level, certificate, parsed, chain, serials, placement, reason, field_name, document_id, external)
        )
    except (SigningError, ValidationError) as exc:
        raise pades.signing_failure(exc) from None
    except (PdfError, KeyError, ValueError, TypeError) as exc:
        log.info("refused a PDF that cannot be prepared: %s", exc)
        raise pdfinput.refuse(422, "corrupt", "the PDF is damaged and cannot be prepared for signing") from None
    now = utc_now()
    expires = now + sctx.remote_session_lifetime
    row = RemoteSession(
        id=session_id,
        actor=actor[:200],
        created_at=now,
        expires_at=expires,
        status="pending",
        level=level,
        field_name=field_name,
        md_algorithm=pades.MD_ALGORITHM,
        certificate=certificate_der,
        chain=json.dumps([base64.b64encode(d).decode() for d in chain_der]),
        prepared_pdf=prepared_pdf,
        reserved_start=prepared.reserved_region_start,
        reserved_end=prepared.reserved_region_end,
        document_digest=prepared.document_digest,
        signed_attrs=signed_attrs.dump(),
        document_id=document_id,
    )
    with sctx.sessions() as session, session.begin():
        # Prepared copies of abandoned sessions are dropped as new ones arrive.
        session.execute(delete(RemoteSession).where(RemoteSession.expires_at < now, RemoteSession.status == "pending"))
        session.add(row)
        audit.record(
            session,
            actor=actor,
            action="signing.remote.prepared",
            target=session_id,
            details={"level": level, "certificate": serials[0], "signer": identity["subject"][:200]},
        )
    kind = "ec" if isinstance(certificate.public_key(), ec.EllipticCurvePublicKey) else "rsa"
    return {
        "session": session_id,
        "expires_at": expires.isoformat(),
        "to_sign": _b64url(row.signed_attrs),
        "digest_algorithm": "sha256",
        "signature_algorithm": SIGNATURE_ALGORITHMS[kind],
        "level": level,
        "signer": _public_identity(identity),
        "finish": f"/api/sign/remote/{session_id}/finish",
    }


def _public_identity(identity: dict) -> dict:
    """The identity as the hall receives it: the full identifier, so it can match the applicant."""
    found = identity.get("identifier")
    return {
        "name": identity["name"],
        "subject": identity["subject"],
        "identifier_kind": found["kind"] if found else None,
        "identifier": found["value"] if found else None,
        "identifier_masked": found["masked"] if found else None,
    }


def verify_signature(certificate: x509.Certificate, signed_attrs: bytes, signature: bytes) -> None:
    public_key = certificate.public_key()
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, signed_attrs, ec.ECDSA(hashes.SHA256()))
        else:
            public_key.verify(signature, signed_attrs, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        raise _bad(
            "the signature does not match the prepared document: the key signed something other than 'to_sign'",
            "signature_mismatch",
        ) from None


async def _finish(sctx: SigningContext, row: RemoteSession, certificate_parsed, chain, signature: bytes) -> bytes:
    signer = GivenSignature(signature, certificate_parsed, chain)
    timestamper = sctx.timestamper() if row.level != "B-B" else None
    signed_attrs = cms.CMSAttributes.load(row.signed_attrs)
    content = await signer.async_sign_prescribed_attributes(row.md_algorithm, signed_attrs, timestamper=timestamper)
    output = io.BytesIO(row.prepared_pdf)
    PreparedByteRangeDigest(row.document_digest, row.reserved_start, row.reserved_end).fill_with_cms(output, content)
    if row.level in ("B-LT", "B-LTA"):
        serials = [format(certificate_parsed.serial_number, "x")]
        tsa_serial = trust.tsa_serial(sctx.ca)
        if tsa_serial:
            serials.append(tsa_serial)
        external = not trust.material(sctx.ca).store.is_ours(certificate_parsed)
        context = trust.signing_context(sctx.ca, serials, allow_fetching=external)
        reader = PdfFileReader(output, strict=False)
        embedded = next(s for s in reader.embedded_signatures if s.field_name == row.field_name)
        await async_add_validation_info(embedded, context, in_place=True, add_vri_entry=False)
        if row.level == "B-LTA":
            writer = IncrementalPdfFileWriter(output, strict=False)
            await PdfTimeStamper(timestamper).async_timestamp_pdf(
                writer, row.md_algorithm, trust.signing_context(sctx.ca, serials[1:]), in_place=True
            )
    return output.getvalue()


def finish(sctx: SigningContext, session_id: str, signature: bytes, *, actor: str) -> dict:
    with sctx.sessions() as session:
        row = session.get(RemoteSession, session_id)
    if row is None or row.actor != actor:  # only the client that prepared it may finish (and learn that it exists)
        raise Problem(404, "Not Found", "there is no remote-signing session with this id", code="no_such_session")
    if row.status != "pending":
        raise _bad("this remote-signing session was finished already", "session_finished", 409)
    if row.expires_at <= utc_now():
        raise _bad("this remote-signing session expired; prepare the document again", "session_expired", 410)
    certificate, parsed = _load_certificate(row.certificate, "certificate")
    chain = [_load_certificate(base64.b64decode(c), "chain certificate")[1] for c in json.loads(row.chain)]
    verify_signature(certificate, row.signed_attrs, signature)
    try:
        signed = asyncio.run(_finish(sctx, row, parsed, chain, signature))
    except trust.TimeStampUnavailable:
        raise Problem(
            503,
            "Service Unavailable",
            "the time-stamping authority could not timestamp the signature; finish again",
            code="tsa_unavailable",
        ) from None
    except (SigningError, ValidationError) as exc:
        raise pades.signing_failure(exc) from None
    identity = report.signer(parsed, certificate)
    found = identity["identifier"]
    shown = preview.of(signed)  # before the transaction: rendering page 1 takes a while
    with sctx.sessions() as session, session.begin():
        current = session.get(RemoteSession, session_id, with_for_update=True)
        if current is None or current.actor != actor or current.status != "pending":
            raise _bad("this remote-signing session was finished already", "session_finished", 409)
        current.status = "finished"
        current.prepared_pdf = b""
        document = pades.record(
            sctx,
            session=session,
            shown=shown,
            document_id=row.document_id,
            kind="token",
            seal_name=None,
            certificate=parsed,
            certificate_serial=format(parsed.serial_number, "x"),
            level=row.level,
            field_name=row.field_name,
            output=signed,
            signature=signature,
            actor=actor,
            action="signing.remote.finished",
            signer_display=identity["subject"],
            id_kind=found["kind"] if found else None,
            id_masked=found["masked"] if found else None,
            details={"session": session_id},
        )
    return {
        "document_id": document.id,
        "verify_url": sctx.verify_url(document.id),
        "level": row.level,
        "signer": _public_identity(identity),
        "sha256": document.sha256,
        "pdf": base64.b64encode(signed).decode("ascii"),
    }
