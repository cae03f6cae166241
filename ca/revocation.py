"""Revoking certificates with RFC 5280 reason codes."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from cryptography import x509

from ca.context import CAContext
from ca.models import Certificate
from core import audit, events
from core.problems import Problem

# RFC 5280 section 5.3.1 names. certificateHold and removeFromCRL are left out on
# purpose: Hallmark does not suspend certificates, a revocation is final.
REASONS = {
    "unspecified": x509.ReasonFlags.unspecified,
    "keyCompromise": x509.ReasonFlags.key_compromise,
    "cACompromise": x509.ReasonFlags.ca_compromise,
    "affiliationChanged": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessationOfOperation": x509.ReasonFlags.cessation_of_operation,
    "privilegeWithdrawn": x509.ReasonFlags.privilege_withdrawn,
    "aACompromise": x509.ReasonFlags.aa_compromise,
}
_HEX = re.compile(r"^[0-9a-f]{1,40}$")


def normalise_serial(text: str) -> str:
    """Hex serial as stored: lower case, no separators, no leading zeros."""
    cleaned = (text or "").strip().lower().replace(":", "").removeprefix("0x")
    if not _HEX.match(cleaned) or not cleaned.strip("0"):
        raise Problem(400, "Bad Request", f"{text!r} is not a certificate serial number in hex")
    return cleaned.lstrip("0")


def revoke(ctx: CAContext, serial: str, reason: str, *, actor: str, at: datetime | None = None) -> Certificate:
    if reason not in REASONS:
        raise Problem(400, "Bad Request", f"unknown revocation reason {reason!r}; use one of {', '.join(REASONS)}")
    serial = normalise_serial(serial)
    with ctx.sessions() as session, session.begin():
        row = session.get(Certificate, serial, with_for_update=True)
        if row is None:
            raise Problem(404, "Not Found", f"no certificate with serial {serial} was issued here")
        if row.status == "revoked":
            raise Problem(
                409,
                "Conflict",
                f"certificate {serial} was already revoked on {row.revoked_at:%Y-%m-%d %H:%M:%S} UTC ({row.revocation_reason})",
            )
        row.status = "revoked"
        row.revoked_at = (at or datetime.now(UTC)).replace(microsecond=0)
        row.revocation_reason = reason
        session.flush()
        audit.record(
            session,
            actor=actor,
            action="ca.certificate.revoked",
            target=serial,
            details={"reason": reason, "authority": row.authority, "profile": row.profile},
        )
        # A new OCSP response and CRL are published by a subscriber (ca.status.publication), in this transaction.
        events.of(session).emit(events.CERTIFICATE_REVOKED, required=True, ctx=ctx, session=session, certificate=row)
    return row


def is_authority_certificate(row: Certificate) -> bool:
    """Whether a stored certificate is a CA certificate (a cross-certificate or other authority): basicConstraints cA."""
    try:
        constraints = x509.load_der_x509_certificate(row.der).extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    return bool(constraints.value.ca)


def _stored(ctx: CAContext, serial: str) -> Certificate:
    serial = normalise_serial(serial)
    with ctx.sessions() as session:
        row = session.get(Certificate, serial)
    if row is None:
        raise Problem(404, "Not Found", f"no certificate with serial {serial} was issued here")
    return row


def revoke_end_entity(ctx: CAContext, serial: str, reason: str, *, actor: str) -> Certificate:
    """Revoke an end-entity certificate; a CA certificate is refused (409): it needs :func:`revoke_authority`."""
    if is_authority_certificate(_stored(ctx, serial)):
        raise Problem(409, "Conflict", f"certificate {serial} is a CA certificate; revoking it needs a second CA officer's approval")
    return revoke(ctx, serial, reason, actor=actor)


def revoke_authority(ctx: CAContext, serial: str, reason: str, *, actor: str) -> Certificate:
    """Revoke a CA certificate we issued (a cross-certificate); an end-entity certificate is refused (409)."""
    if not is_authority_certificate(_stored(ctx, serial)):
        raise Problem(409, "Conflict", f"certificate {serial} is not a CA certificate")
    return revoke(ctx, serial, reason, actor=actor)
