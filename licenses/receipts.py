"""Signed use receipts: for each access-log entry, a JWS the caller keeps and anyone can check.

A receipt (ES256 with the library's key, ``typ`` :data:`TYP`) states what the log
entry says: its sequence number and hash, the client, purpose, matter, mode,
fields, result, licence and time. Offline, its signature is checked with the
JWKS at ``/api/licences/jwks``; a compare call's receipt also carries the comparison it
answered (``comparison``: the licence's status and match / no_match / absent per
field), so it is the signed result too. :func:`check` also asks the log whether entry
``seq`` still has that hash, so a receipt stands for an entry that is really in
the chain. Receipts carry no expiry (they are records) and no holder: the caller
already knows whom it asked about, and nobody else should learn it from a receipt.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.orm import Session

from licenses import accesslog, signer
from licenses.context import LicencesContext
from licenses.models import AccessEntry

TYP = "hallmark-receipt+jwt"


def claims_of(ctx: LicencesContext, entry: AccessEntry) -> dict:
    at = datetime.strptime(entry.at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return {
        "iss": ctx.public_url,
        "seq": entry.seq,
        "hash": entry.hash,
        "at": entry.at,
        "iat": int(at.timestamp()),
        "client": entry.client_id,
        "route": entry.route,
        "mode": entry.mode,
        "purpose": entry.purpose,
        "matter": entry.matter,
        "identifier": entry.identifier or None,
        "type": entry.type_code or None,
        "fields": accesslog.fields_of(entry),
        "result": entry.result,
    }


def issue(ctx: LicencesContext, entry: AccessEntry, comparison: dict | None = None) -> str:
    """The receipt of an access-log entry (the same facts whenever it is asked for again).

    ``comparison`` (a compare call's answer: ``status``, ``fields`` as field -> match / no_match / absent,
    ``all_match``) is signed in the same receipt, so one signature vouches for the access and for its result.
    """
    claims = claims_of(ctx, entry)
    if comparison is not None:
        claims["comparison"] = comparison
    return signer.sign(ctx, claims, typ=TYP)


def check(ctx: LicencesContext, db: Session, token: str) -> dict:
    """Whether a receipt is genuine and its entry is still in the log unchanged.

    ``{"valid": bool, "code": ..., "reason": ..., "receipt": claims or None}``;
    ``code`` is ``ok``, a :class:`licenses.signer.TokenRefused` code, ``unknown_entry``
    or ``entry_changed``.
    """
    try:
        claims = signer.verify(ctx, token, typ=TYP)
    except signer.TokenRefused as exc:
        return {"valid": False, "code": exc.code, "reason": str(exc), "receipt": None}
    seq = claims.get("seq")
    entry = db.get(AccessEntry, seq) if isinstance(seq, int) and not isinstance(seq, bool) else None
    if entry is None:
        return {"valid": False, "code": "unknown_entry", "reason": f"the access log has no entry #{seq}", "receipt": claims}
    if entry.hash != claims.get("hash") or accesslog.entry_hash(entry) != entry.hash:
        return {
            "valid": False,
            "code": "entry_changed",
            "reason": f"access-log entry #{seq} no longer matches this receipt: the log was altered",
            "receipt": claims,
        }
    return {"valid": True, "code": "ok", "reason": "", "receipt": claims}
