"""Sealing PDFs with department seals (PAdES baseline B-B, B-T, B-LT, B-LTA).

=======  ==================================================================================
level    what the signed file carries
=======  ==================================================================================
B-B      the CAdES signature (signing certificate v2, content type, message digest)
B-T      + a signature timestamp from our TSA (called in-process, not over HTTP)
B-LT     + a DSS with the certificates and revocation data (our pre-signed OCSP responses
         and our CRLs) needed to validate the signature and its timestamp later
B-LTA    + a document timestamp over all of that
=======  ==================================================================================

B-LT is the default. A signature is always added as an incremental update, so
signatures already in the file stay valid. Before anything is signed at B-LT or
above, pyHanko validates the seal certificate and the TSA certificate against the
revocation data that will be embedded; a revoked seal is refused.

Per document, the only work left is what has to be: reading the file, the stamp's
QR code, one HSM signature and one timestamp. The seal's certificates, image
streams and signer are prepared once per process, and space for the signature is
reserved from the certificate sizes instead of by a throwaway dry-run signature.

Every seal is recorded (:class:`~signing.models.SignedDocument`: the verification
page's data) and audited in one transaction before the file is returned.
"""

from __future__ import annotations

import hashlib
import io
import logging
import secrets
from dataclasses import dataclass

from asn1crypto import x509 as asn1_x509
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.sign import fields, signers
from pyhanko.sign.general import SigningError
from pyhanko.sign.signers.pdf_signer import DSSContentSettings, SigDSSPlacementPreference
from pyhanko_certvalidator.errors import ValidationError

from ca import identity as ca_identity
from core import audit
from core.db import utc_now
from core.identifiers import mask_credit_code
from core.problems import Problem
from signing import seals, trust
from signing.context import SigningContext
from signing.models import SignedDocument
from signing.pdf import preview, stamp
from signing.pdf import reading as pdfinput
from signing.pdf.signers import KeySigner

log = logging.getLogger("hallmark.signing.pades")


class _QuietFetchWarning(logging.Filter):
    """Our validation contexts hold every OCSP response and CRL on purpose; pyHanko warns about that each time."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "fetching is not allowed" not in record.getMessage()


logging.getLogger("pyhanko.sign.signers.pdf_signer").addFilter(_QuietFetchWarning())

LEVELS = ("B-B", "B-T", "B-LT", "B-LTA")
DEFAULT_LEVEL = "B-LT"
MD_ALGORITHM = "sha256"
MAX_FIELD_CHARS = 60
# Reserved just above what our CMS takes: every validator parses the /Contents hex string character
# by character, padding included. Should a larger timestamp ever not fit, signing is redone with
# pyHanko's own estimate (see seal_pdf).
TIMESTAMP_TOKEN_ALLOWANCE = 2800  # our TSA's token with its two certificates takes about 2.3 KB
CMS_OVERHEAD = 768  # signed attributes, signer info, algorithm identifiers, framing


def check_level(level: str | None) -> str:
    if level is not None and not isinstance(level, str):
        raise Problem(422, "Unprocessable Content", f"level must be one of {', '.join(LEVELS)}", code="bad_level")
    level = (level or DEFAULT_LEVEL).strip().upper()
    if not level.startswith("B-"):
        level = "B-" + level
    if level not in LEVELS:
        raise Problem(422, "Unprocessable Content", f"level must be one of {', '.join(LEVELS)}, not {level!r}", code="bad_level")
    return level


@dataclass(frozen=True)
class Placement:
    """Where the visible stamp goes: a 1-based page (default the last) and a box in points from the bottom left."""

    page: int | None = None
    x: float | None = None
    y: float | None = None
    width: float = stamp.DEFAULT_WIDTH
    height: float = stamp.DEFAULT_HEIGHT
    visible: bool = True


@dataclass
class SignedResult:
    pdf: bytes
    document: SignedDocument
    verify_url: str


def reserve_bytes(certificates_der: list[bytes], public_key, timestamped: bool) -> int:
    """Hex characters to reserve for the CMS: certificates + signature + timestamp, doubled for hex, with slack."""
    from signing.pdf.signers import signature_size

    size = sum(len(der) for der in certificates_der) + signature_size(public_key) + CMS_OVERHEAD
    if timestamped:
        size += TIMESTAMP_TOKEN_ALLOWANCE
    return 2 * size + 512


def new_document_id() -> str:
    return secrets.token_urlsafe(16)  # 22 characters, 128 bits


def _page_box(writer: IncrementalPdfFileWriter, page_index: int) -> tuple[float, float, float, float]:
    page_ref, _ = writer.find_page_for_modification(page_index)
    node = page_ref.get_object()
    for _ in range(32):  # MediaBox is inheritable (ISO 32000-1 7.7.3.4)
        box = node.get("/CropBox") or node.get("/MediaBox")
        if box is not None:
            values = [float(v) for v in box]
            return min(values[0], values[2]), min(values[1], values[3]), max(values[0], values[2]), max(values[1], values[3])
        parent = node.get("/Parent")
        if parent is None:
            break
        node = parent.get_object()
    return 0.0, 0.0, 595.0, 842.0  # A4


def field_spec(writer: IncrementalPdfFileWriter, page_count: int, field_name: str, placement: Placement) -> fields.SigFieldSpec:
    """The new signature field, visible on the requested page and position; a 422 when that is off the page."""
    if not placement.visible:
        return fields.SigFieldSpec(field_name)
    page = placement.page if placement.page is not None else page_count
    if not 1 <= page <= page_count:
        raise Problem(422, "Unprocessable Content", f"page {page} does not exist: the PDF has {page_count} page(s)", code="bad_page")
    if not (20 <= placement.width <= 600 and 20 <= placement.height <= 600):
        raise Problem(422, "Unprocessable Content", "the stamp must be 20 to 600 points wide and high", code="bad_position")
    x0, y0, x1, y1 = _page_box(writer, page - 1)
    if placement.x is None or placement.y is None:
        box = stamp.default_box((x0, y0, x1, y1), placement.width, placement.height)
    else:
        box = (placement.x, placement.y, placement.x + placement.width, placement.y + placement.height)
    if box[0] < x0 - 0.5 or box[1] < y0 - 0.5 or box[2] > x1 + 0.5 or box[3] > y1 + 0.5:
        raise Problem(
            422,
            "Unprocessable Content",
            f"the stamp at ({box[0]:g}, {box[1]:g}) sized {placement.width:g}x{placement.height:g} does not fit on page {page} "
            f"({x1 - x0:g}x{y1 - y0:g} points)",
            code="bad_position",
        )
    return fields.SigFieldSpec(field_name, on_page=page - 1, box=tuple(round(v) for v in box))


def unique_field_name(reader, base: str) -> str:
    existing = set()
    try:
        form = reader.root.get("/AcroForm")
        for ref in form.get_object().get("/Fields", []) if form is not None else []:
            name = ref.get_object().get("/T")
            if name is not None:
                existing.add(str(name))
    except (PdfError, AttributeError, KeyError, TypeError):
        pass
    name, counter = base, 1
    while name in existing:
        counter += 1
        name = f"{base}-{counter}"
    return name[:MAX_FIELD_CHARS]


def key_usage_for(certificate: asn1_x509.Certificate) -> set[str]:
    """The usage pyHanko checks before signing (it requires every one named): nonRepudiation when present."""
    usage = set(certificate.key_usage_value.native) if certificate.key_usage_value else set()
    return {"non_repudiation"} if "non_repudiation" in usage or not usage else {"digital_signature"}


def signature_metadata(
    sctx: SigningContext,
    field_name: str,
    level: str,
    leaf_serials: list[str],
    *,
    reason: str | None,
    name: str | None,
    key_usage: set[str],
    allow_fetching: bool = False,
) -> signers.PdfSignatureMetadata:
    long_term = level in ("B-LT", "B-LTA")
    return signers.PdfSignatureMetadata(
        field_name=field_name,
        md_algorithm=MD_ALGORITHM,
        subfilter=fields.SigSeedSubFilter.PADES,
        reason=reason,
        name=name,
        embed_validation_info=long_term,
        use_pades_lta=level == "B-LTA",
        validation_context=trust.signing_context(sctx.ca, leaf_serials, allow_fetching=allow_fetching) if long_term else None,
        signer_key_usage=key_usage,
        dss_settings=DSSContentSettings(placement=SigDSSPlacementPreference.SEPARATE_REVISION, include_vri=False),
    )


def signing_failure(exc: Exception) -> Problem:
    """A pyHanko refusal as a problem: the certificate did not validate, or the document forbids signing."""
    cause = exc.__cause__ or exc
    text = str(cause) or type(cause).__name__
    if "revoked" in text.lower():
        return Problem(409, "Conflict", "the signing certificate is revoked", code="certificate_revoked")
    if isinstance(exc, ValidationError) or (isinstance(exc, SigningError) and "validated" in str(exc)):
        return Problem(409, "Conflict", f"the signing certificate does not validate: {text[:300]}", code="certificate_invalid")
    return Problem(422, "Unprocessable Content", f"the PDF cannot be signed: {text[:300]}", code="cannot_sign")


def record(
    sctx: SigningContext,
    *,
    document_id: str,
    kind: str,
    seal_name: str | None,
    certificate: asn1_x509.Certificate,
    certificate_serial: str,
    level: str,
    field_name: str,
    output: bytes,
    signature: bytes,
    actor: str,
    action: str,
    signer_display: str,
    id_kind: str | None,
    id_masked: str | None,
    details: dict | None = None,
    session=None,
    shown: preview.Preview | None = None,
) -> SignedDocument:
    """Store the document record and its audit event together (the file is returned only after this commits).

    With ``session`` the record joins the caller's transaction. ``shown``: the title, page count and
    first-page picture for the verification page (:func:`signing.pdf.preview.of`, made before any
    transaction: rendering takes a while).
    """
    row = SignedDocument(
        id=document_id,
        kind=kind,
        seal_name=seal_name,
        signer=signer_display[:400],
        signer_id_kind=id_kind,
        signer_id_masked=id_masked,
        certificate_serial=certificate_serial,
        certificate_fingerprint=certificate.sha256.hex(),
        level=level,
        field_name=field_name,
        signed_at=utc_now(),
        sha256=hashlib.sha256(output).hexdigest(),
        signature_sha256=hashlib.sha256(signature).hexdigest(),
        size=len(output),
        actor=actor[:200],
        title=shown.title if shown else None,
        pages=shown.pages if shown else None,
        thumbnail_png=shown.thumbnail_png if shown else None,
    )

    def store(session) -> None:
        session.add(row)
        session.flush()
        audit.record(
            session,
            actor=actor,
            action=action,
            target=document_id,
            details={
                "seal": seal_name,
                "level": level,
                "sha256": row.sha256,
                "size": row.size,
                "certificate": certificate_serial,
                "signer": row.signer,
                **(details or {}),
            },
        )

    if session is not None:
        store(session)
        return row
    with sctx.sessions() as own, own.begin():
        store(own)
    return row


_signers: dict[tuple[int, str], tuple] = {}


def _seal_parts(sctx: SigningContext, seal: seals.LoadedSeal):
    """(asn1 certificate, asn1 issuer, HSM key, prepared image), once per seal certificate per process."""
    key = (id(sctx), seal.serial + seal.fingerprint)
    found = _signers.get(key)
    if found is None:
        certificate = asn1_x509.Certificate.load(seal.certificate_der)
        issuer = asn1_x509.Certificate.load(_der(seal.issuer))
        found = _signers[key] = (certificate, issuer, sctx.ca.signer(seal.key_uri), stamp.prepare_image(seal.image_png))
    return found


def _der(certificate) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return certificate.public_bytes(Encoding.DER)


def seal_pdf(
    sctx: SigningContext,
    data: bytes,
    *,
    seal_name: str,
    level: str | None = None,
    placement: Placement = Placement(),
    reason: str | None = None,
    actor: str,
    first_page_picture: bool = True,
) -> SignedResult:
    """Seal ``data`` with the named seal; the signed file, its record and the verification URL.

    ``first_page_picture``: render page 1 for the record's verification page (~18 ms of CPU
    in pdftoppm); a caller with a verification page of its own (the licence library) skips it.
    """
    level = check_level(level)
    reader = pdfinput.read(data, limit=sctx.max_pdf_bytes)
    picture = preview.Rendering(data) if first_page_picture else None  # rendered while we seal
    seal = seals.load(sctx.ca, seal_name)
    certificate, issuer, key, image = _seal_parts(sctx, seal)
    document_id = new_document_id()
    verify_url = sctx.verify_url(document_id)
    try:
        writer = IncrementalPdfFileWriter.from_reader(reader)
        page_count = int(reader.root["/Pages"]["/Count"])
        field_name = unique_field_name(reader, f"Seal-{document_id[:8]}")
        spec = field_spec(writer, page_count, field_name, placement)
    except (PdfError, KeyError, ValueError, TypeError) as exc:
        log.info("refused a PDF that cannot take a signature field: %s", exc)
        raise pdfinput.refuse(422, "corrupt", "the PDF's page tree cannot be read, so no seal can be placed") from None
    leaf_serials = [seal.serial]
    if level != "B-B":
        tsa_serial = trust.tsa_serial(sctx.ca)
        if tsa_serial:
            leaf_serials.append(tsa_serial)

    def attempt(writer, reserve: int | None) -> tuple[bytes, bytes]:
        signer = KeySigner(key, certificate, [issuer])
        meta = signature_metadata(
            sctx, field_name, level, leaf_serials, reason=reason, name=seal.department, key_usage=key_usage_for(certificate)
        )
        pdf_signer = signers.PdfSigner(
            meta,
            signer,
            timestamper=sctx.timestamper() if level != "B-B" else None,
            stamp_style=stamp.SealStampStyle(image=image),
            new_field_spec=spec,
        )
        output = io.BytesIO()
        pdf_signer.sign_pdf(writer, bytes_reserved=reserve, appearance_text_params={"url": verify_url}, output=output)
        return output.getvalue(), signer.signature

    try:
        try:
            signed, signature = attempt(
                writer, reserve_bytes([seal.certificate_der, issuer.dump()], seal.certificate.public_key(), level != "B-B")
            )
        except SigningError as exc:
            if "larger than expected" not in str(exc):
                raise
            log.warning("the reserved signature space was too small (%s); signing again with pyHanko's estimate", exc)
            signed, signature = attempt(IncrementalPdfFileWriter.from_reader(pdfinput.read(data, limit=sctx.max_pdf_bytes)), None)
    except trust.TimeStampUnavailable:
        raise Problem(
            503, "Service Unavailable", "the time-stamping authority could not timestamp the seal; try again", code="tsa_unavailable"
        ) from None
    except (SigningError, ValidationError) as exc:
        raise signing_failure(exc) from None
    except PdfError as exc:
        log.info("refused a PDF pyHanko could not update: %s", exc)
        raise pdfinput.refuse(422, "corrupt", "the PDF is damaged and cannot be signed") from None
    shown = preview.Preview(*preview.title_and_pages(reader), picture.result() if picture is not None else None)
    row = record(
        sctx,
        shown=shown,
        document_id=document_id,
        kind="seal",
        seal_name=seal.name,
        certificate=certificate,
        certificate_serial=seal.serial,
        level=level,
        field_name=field_name,
        output=signed,
        signature=signature,
        actor=actor,
        action="signing.pdf.sealed",
        signer_display=f"{seal.department} ({ca_identity.CREDIT_CODE_PREFIX}{mask_credit_code(seal.credit_code)})",
        id_kind="credit_code",
        id_masked=mask_credit_code(seal.credit_code),
    )
    return SignedResult(signed, row, verify_url)
