"""A faster reader for PDF hex strings, installed into pyHanko's parser.

pyHanko 0.38 reads a hex string (``<48656C6C6F>``) one byte at a time through a
generator. A signature's ``/Contents`` is a hex string of 10-20 thousand
characters, so every validation (and every signature added to a signed file)
spent about a third of its time there. This reader finds the closing ``>``
chunk-wise and decodes with :mod:`binascii`; for the rare string holding a
comment (``%``), it hands over to pyHanko's own reader, so the result and the
stream position are the same in every case (``tests/signing/test_signing_units.py``
compares the two).
"""

from __future__ import annotations

import binascii

from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.misc import PdfStreamError

_ORIGINAL = generic.read_hex_string_from_stream
_WHITESPACE = b" \n\r\t\f\x00"  # pyHanko's PDF_WHITESPACE
_CHUNK = 16 * 1024


def read_hex_string_from_stream(stream):
    opening = stream.tell()
    stream.read(1)  # the "<"
    parts, consumed = [], 0
    while True:
        chunk = stream.read(_CHUNK)
        if not chunk:
            raise PdfStreamError("Stream ended prematurely")
        end = chunk.find(b">")
        if end >= 0:
            parts.append(chunk[:end])
            consumed += end
            break
        parts.append(chunk)
        consumed += len(chunk)
    body = b"".join(parts)
    if b"%" in body:
        stream.seek(opening)
        return _ORIGINAL(stream)
    stream.seek(opening + 1 + consumed + 1)
    digits = body.translate(None, _WHITESPACE)
    if digits.translate(None, generic.HEX_DIGITS):
        bad = digits.translate(None, generic.HEX_DIGITS)[:1]
        raise PdfStreamError("Unexpected token in hex string: " + repr(bad))
    if len(digits) % 2:
        digits += b"0"
    return generic.pdf_string(binascii.unhexlify(digits))


def install() -> None:
    """Use the fast reader in this process (idempotent)."""
    generic.read_hex_string_from_stream = read_hex_string_from_stream


install()
