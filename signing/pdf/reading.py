"""Reading a PDF someone sent us, refusing what cannot be signed or validated with a clear 4xx.

Every refusal is a :class:`~core.problems.Problem` with a stable ``code``:
``too_large`` (413), ``not_a_pdf``, ``encrypted``, ``corrupt`` (422); and, for a
file to validate, ``too_many_pages``, ``too_many_revisions``, ``too_many_signatures``
(413, :func:`check_caps`: what the file declares, read before any signature is checked).
"""

from __future__ import annotations

import io
import logging
import zlib
from dataclasses import dataclass

from pyhanko.pdf_utils.misc import PdfError
from pyhanko.pdf_utils.reader import PdfFileReader

from core.problems import Problem

MAX_PDF_BYTES = 8 * 1024 * 1024  # below the request limit, with room for base64 in JSON bodies
HEADER_WINDOW = 1024  # ISO 32000-1 7.5.2 tolerates bytes before %PDF-; readers look this far

log = logging.getLogger("hallmark.signing.pdf")

# What pyHanko (and asn1crypto under it) raise on damaged input, read now or later when an object is
# resolved: zlib.error (a damaged compressed stream) is no ValueError, and a mangled number in the file
# raises decimal.InvalidOperation, an ArithmeticError.
DAMAGED = (PdfError, KeyError, ValueError, TypeError, IndexError, AttributeError, RecursionError, ArithmeticError, zlib.error)


def refuse(status: int, code: str, detail: str) -> Problem:
    title = {413: "Content Too Large", 422: "Unprocessable Content"}.get(status, "Bad Request")
    return Problem(status, title, detail, code=code)


def check_size(data: bytes, limit: int = MAX_PDF_BYTES) -> None:
    if len(data) > limit:
        raise refuse(413, "too_large", f"the PDF is {len(data)} bytes; at most {limit} bytes ({limit // (1024 * 1024)} MiB) are accepted")


def read(data: bytes, *, limit: int = MAX_PDF_BYTES) -> PdfFileReader:
    """A parsed, unencrypted PDF; a 413/422 problem naming what is wrong otherwise."""
    check_size(data, limit)
    if not data:
        raise refuse(422, "not_a_pdf", "the request carried no file; send the PDF as the body (Content-Type: application/pdf)")
    if b"%PDF-" not in data[:HEADER_WINDOW]:
        raise refuse(422, "not_a_pdf", "this is not a PDF file (no %PDF- header)")
    try:
        reader = PdfFileReader(io.BytesIO(data), strict=False)
        encrypted = reader.encrypted
        if not encrypted:
            # Touch what signing and validation read, so a broken file fails here and not half-way.
            root = reader.root
            pages = reader.root["/Pages"]
            _ = (root.get("/AcroForm"), pages["/Count"], reader.trailer, reader.xrefs.total_revisions)
    except DAMAGED as exc:
        log.info("refused a corrupt PDF: %s: %s", type(exc).__name__, exc)
        raise refuse(422, "corrupt", "the PDF is damaged and cannot be read (its structure or cross-reference table is broken)") from None
    if encrypted:
        raise refuse(422, "encrypted", "the PDF is encrypted or password-protected; send it without encryption")
    return reader


@dataclass(frozen=True)
class Caps:
    """What a PDF to validate may hold (the signing section's ``validate_max_*`` settings)."""

    pages: int = 2000
    revisions: int = 100
    signatures: int = 50


DEFAULT_CAPS = Caps()


def check_caps(reader: PdfFileReader, caps: Caps, signatures: int) -> None:
    """A 413 problem when the file has more pages, revisions or ``signatures`` than ``caps`` allow.

    Cheap: the page tree's declared /Count, the number of cross-reference sections
    pyHanko read when it opened the file, and the signatures already found.
    """
    try:
        pages = reader.root["/Pages"]["/Count"]
        revisions = reader.xrefs.total_revisions
    except DAMAGED as exc:
        log.info("refused a corrupt PDF: %s: %s", type(exc).__name__, exc)
        raise refuse(422, "corrupt", "the PDF is damaged and cannot be read (its page tree is broken)") from None
    if not isinstance(pages, int) or pages < 0:
        raise refuse(422, "corrupt", "the PDF is damaged and cannot be read (its page count is not a number)")
    for code, what, found, cap in (
        ("too_many_pages", "pages", pages, caps.pages),
        ("too_many_revisions", "revisions (incremental updates)", revisions, caps.revisions),
        ("too_many_signatures", "signatures", signatures, caps.signatures),
    ):
        if found > cap:
            raise refuse(413, code, f"the PDF has {found} {what}; at most {cap} are validated here")
