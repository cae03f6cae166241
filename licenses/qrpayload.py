"""Signed payloads for licence QR codes: the code on a licence file and the 亮证 code shown on a phone.

A payload is a compact JWS (ES256, :mod:`licenses.signer`'s key, header ``typ``
:data:`TYP`) over short claims, short because every byte makes the code denser
and harder for a phone camera (or a printed file's 25 mm square) to read:

======= ====================================================================
claim   meaning
======= ====================================================================
``v``   format version, 1
``id``  the licence identifier (GB/T 36904)
``t``   licence-type code; left out when ``id`` is a GB/T 36904 identifier (it contains it)
``i``   issuing department's unified social credit code; left out likewise
``h``   the holder's code, masked (never the full resident ID)
``n``   the holder's display name (an enterprise's name; a person's masked)
``vf``  valid from, ``YYYY-MM-DD``
``vu``  valid until, ``YYYY-MM-DD``, or ``null`` for no end date
``exp`` when the payload (not the licence) stops being acceptable, Unix seconds
``st``  where to check the live status; left out when it is the signing library's own
        verification page, ``<public URL>/licences/verify/<id>``
``sl``  the licence's W3C Bitstring Status List number (an integer); left out for a licence without an entry
``si``  its index in that list (an integer, the same in the revocation and the suspension list)
``k``   ``"file"`` (printed on the licence file) or ``"show"`` (亮证, minutes)
======= ====================================================================

``sl`` and ``si`` name the licence's status-list entry (:mod:`licenses.statuslist`)
without a URL, to keep the code small: the lists are at
``<public URL>/licences/status/<i>/<sl>/revocation`` and ``.../suspension``, the
public URL being the QR text's own origin and ``i`` the issuer (from the
identifier when left out). A verifier fetches the whole list (cached for its
``ttl``) and reads bit ``si``, so Hallmark never learns which licence was checked.

The QR text is a URL, ``<public URL>/licences/v#<JWS>`` (:data:`QR_PATH`): a
phone camera opens the verification page, and the payload, being the fragment,
never reaches a server log. An offline verifier takes everything after the
``#``, fetches the JWK Set once from ``<public URL>/api/licences/jwks`` and checks
the signature, ``typ`` and ``exp`` with any JOSE library; it learns validity as
of signing, and the live status from ``st`` (or the default above) when online.
:func:`read` does all of this and gives the claims back under long names, the
left-out ones filled in.
"""

from __future__ import annotations

import io
from datetime import UTC, date, datetime, timedelta
from html import escape

import qrcode
from qrcode.constants import ERROR_CORRECT_M

from core.identifiers import InvalidIdentifier
from licenses import identifiers, signer
from licenses.context import LicencesContext
from licenses.signer import Malformed
from signing.pdf import stamp

TYP = "licence-qr+jwt"
VERSION = 1
QR_PATH = "/licences/v"
KINDS = ("file", "show")
# Short claim name -> the name read() gives it.
CLAIMS = {
    "v": "version",
    "id": "identifier",
    "t": "type_code",
    "i": "issuer_code",
    "h": "holder_masked",
    "n": "holder_name",
    "vf": "valid_from",
    "vu": "valid_until",
    "exp": "expires_at",
    "st": "status_url",
    "sl": "status_list",
    "si": "status_index",
    "k": "kind",
}
_TEXT_CLAIMS = ("id", "h", "n", "vf")
QUIET_ZONE = 4  # modules of white around the code, as ISO/IEC 18004 asks


def _day(value: date | str | None, name: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        value = value.date()
    if isinstance(value, date):
        return value.isoformat()
    try:
        return date.fromisoformat(value).isoformat()
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a date (YYYY-MM-DD), not {value!r}") from None


def qr_url(ctx: LicencesContext, token: str) -> str:
    """The text a QR code carries for a signed payload."""
    return f"{ctx.url(QR_PATH)}#{token}"


def payload(
    ctx: LicencesContext,
    *,
    identifier: str,
    type_code: str,
    issuer_code: str,
    holder_masked: str,
    holder_name: str,
    valid_from: date | str,
    valid_until: date | str | None,
    kind: str,
    lifetime: timedelta,
    status_url: str | None = None,
    status_entry: tuple[int, int] | None = None,
    now: datetime | None = None,
) -> str:
    """The QR text (a URL whose fragment is the signed payload) for a licence, valid for ``lifetime``.

    ``status_url`` defaults to the licence's verification page; ``status_entry`` is
    the licence's (status list number, index), when it has one. Plain values, so
    anything with these facts (a row, a view, a test) can be put in a code.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if lifetime <= timedelta(0):
        raise ValueError("a QR payload's lifetime must be positive")
    now = now or datetime.now(UTC)
    claims = {"v": VERSION, "id": identifier}
    if _codes_in(identifier) != (type_code, issuer_code):
        claims |= {"t": type_code, "i": issuer_code}
    claims |= {
        "h": holder_masked,
        "n": holder_name,
        "vf": _day(valid_from, "valid_from"),
        "vu": _day(valid_until, "valid_until"),
        "exp": int((now + lifetime).timestamp()),
    }
    if status_url and status_url != ctx.verify_url(identifier):
        claims["st"] = status_url
    if status_entry is not None:
        claims["sl"], claims["si"] = status_entry
    claims["k"] = kind
    return qr_url(ctx, signer.sign(ctx, claims, typ=TYP))


def _codes_in(identifier: str) -> tuple[str, str] | None:
    """(type code, issuer code) of a GB/T 36904 identifier; None for any other identifier."""
    try:
        parsed = identifiers.parse(identifier)
    except InvalidIdentifier:
        return None
    return parsed.type_code, parsed.issuer_code


def token_of(text: str) -> str:
    """The JWS in a scanned QR text: what follows ``#`` in the URL, or the text itself when it is a bare JWS."""
    text = (text or "").strip()
    return text.rpartition("#")[2]


def read(ctx: LicencesContext, text: str, *, now: datetime | None = None) -> dict:
    """The facts a scanned QR code vouches for (long names, see :data:`CLAIMS`), after checking it.

    Raises :class:`licenses.signer.Forged` for a code this library did not sign or
    that was changed, :class:`licenses.signer.Expired` for a genuine one past its
    ``exp`` (a 亮证 code after its minutes), :class:`licenses.signer.WrongType` or
    :class:`licenses.signer.Malformed` otherwise; each has ``code`` and ``problem()``.
    """
    claims = signer.verify(ctx, token_of(text), typ=TYP, now=now)
    if claims.get("v") != VERSION:
        raise Malformed(f"this licence QR code has format version {claims.get('v')!r}; this library reads version {VERSION}")
    if claims.get("k") not in KINDS:
        raise Malformed("this licence QR code does not say whether it is from a file or shown on a phone")
    missing = [name for name in _TEXT_CLAIMS if not isinstance(claims.get(name), str)]
    if missing or not isinstance(claims.get("exp"), int) or not isinstance(claims.get("vu"), (str, type(None))):
        raise Malformed(f"this licence QR code lacks {', '.join(missing) or 'exp or vu'}")
    if "t" not in claims or "i" not in claims:
        codes = _codes_in(claims["id"])
        if codes is None:
            raise Malformed("this licence QR code names neither its type and issuer nor a GB/T 36904 identifier holding them")
        claims = {"t": codes[0], "i": codes[1], **claims}
    claims.setdefault("st", ctx.verify_url(claims["id"]))
    claims.setdefault("sl", None)
    claims.setdefault("si", None)
    if any(claims[name] is not None and (not isinstance(claims[name], int) or isinstance(claims[name], bool)) for name in ("sl", "si")):
        raise Malformed("this licence QR code's status list entry is not a pair of whole numbers")
    if not isinstance(claims["t"], str) or not isinstance(claims["i"], str) or not isinstance(claims["st"], str):
        raise Malformed("this licence QR code's type, issuer or status address is not text")
    return {CLAIMS[name]: claims[name] for name in CLAIMS}


# -- pictures ----------------------------------------------------------------------------


def qr_png(text: str, *, module_pixels: int = 6) -> bytes:
    """The QR code of ``text`` as a PNG (black on white, with its quiet zone)."""
    code = qrcode.QRCode(error_correction=ERROR_CORRECT_M, border=QUIET_ZONE, box_size=module_pixels)
    code.add_data(text.encode("utf-8"))
    code.make(fit=True)
    out = io.BytesIO()
    code.make_image(fill_color="black", back_color="white").save(out, format="PNG")
    return out.getvalue()


def qr_svg(text: str, *, label: str = "") -> str:
    """The QR code of ``text`` as inline SVG for a page (no files, no scripts); it scales to its container.

    ``label`` (already translated) becomes the picture's accessible name; without one it is hidden from screen readers.
    """
    # M (15% recovery) as on the files: a printed code gets creased and stamped on; H would make it much denser.
    matrix = stamp.qr_matrix(text, border=QUIET_ZONE)
    size = len(matrix)
    runs = [f"M{x} {y}h{length}v1h-{length}z" for y, x, length in stamp.qr_runs(matrix)]
    names = f'role="img" aria-label="{escape(label, quote=True)}"' if label else 'aria-hidden="true"'
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {size} {size}" {names} shape-rendering="crispEdges">'
        f'<rect width="{size}" height="{size}" fill="#fff"/><path fill="#000" d="{"".join(runs)}"/></svg>'
    )
