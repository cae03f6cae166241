"""Certificate revocation lists (RFC 5280 section 5): one full CRL per authority.

A CRL is published in the transaction that revokes a certificate (through
``ca.status.publication``), when an authority is created, and by the scheduler before the
current one runs out (:func:`publish_due`). Every CRL published is kept; the one
with the highest number is served.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ca import issuance
from ca.context import CAContext
from ca.models import CRL, Authority, Certificate
from core.db import utc_now
from core.problems import Problem

NEXT_UPDATE = timedelta(hours=24)
# publish_due replaces a CRL this long before its nextUpdate, so relying parties
# that fetch late in its life still get one with hours to spare.
REPUBLISH_BEFORE = timedelta(hours=6)
# RFC 5280 5.3: an entry may leave the CRL once it has appeared on one CRL after the
# certificate expired; keeping it for twice the CRL lifetime satisfies that.
KEEP_AFTER_EXPIRY = 2 * NEXT_UPDATE

log = logging.getLogger("hallmark.ca.crl")


def publish(ctx: CAContext, session: Session, authority: str, *, only_if_due: bool = False) -> CRL | None:
    """Sign and store the next full CRL of ``authority`` in the caller's transaction.

    With ``only_if_due`` it does nothing (returns None) when, once the row lock is
    held, the current CRL is no longer due: another worker or node published first.
    """
    # The row lock serialises CRL numbers between concurrent revocations and nodes
    # (SQLite has no row locks; its BEGIN IMMEDIATE serialises writers instead).
    row = session.get(Authority, authority, with_for_update=True)
    if row is None:
        raise Problem(404, "Not Found", f"no certificate authority named {authority!r}")
    now = utc_now()
    if only_if_due:
        current = _current_row(session, authority)
        if current is not None and current.next_update - now > REPUBLISH_BEFORE:
            return None
    loaded = ctx.authority(authority, session)
    number = (row.crl_number or 0) + 1
    row.crl_number = number

    ski = loaded.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(loaded.certificate.subject)
        .last_update(now)
        .next_update(now + NEXT_UPDATE)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
    )
    revoked = session.execute(
        select(Certificate.serial, Certificate.revoked_at, Certificate.revocation_reason)
        .where(
            Certificate.authority == authority,
            Certificate.status == "revoked",
            Certificate.not_after >= now - KEEP_AFTER_EXPIRY,
        )
        .order_by(Certificate.serial)
    )
    for serial, revoked_at, reason in revoked:
        entry = x509.RevokedCertificateBuilder().serial_number(int(serial, 16)).revocation_date(revoked_at.replace(microsecond=0))
        # RFC 5280 5.3.1: the reason code extension should be absent rather than "unspecified".
        if reason and reason != "unspecified":
            entry = entry.add_extension(x509.CRLReason(x509.ReasonFlags(reason)), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    signer = ctx.signer(loaded.key_uri)
    crl = builder.sign(signer, issuance.signature_hash(signer))
    published = CRL(authority=authority, number=number, this_update=now, next_update=now + NEXT_UPDATE, der=crl.public_bytes(Encoding.DER))
    session.add(published)
    session.flush()
    return published


def publish_due(ctx: CAContext) -> int:
    """Publish a CRL for every authority whose current one is missing or ends within 6 h; how many."""
    count = 0
    for name in ctx.authority_names():
        try:
            with ctx.sessions() as session, session.begin():
                if publish(ctx, session, name, only_if_due=True) is not None:
                    count += 1
        except Exception:
            # One authority failing (HSM hiccup, lock timeout) must not stop the others.
            log.exception("publishing the CRL of %s failed", name)
    return count


def _current_row(session: Session, authority: str) -> CRL | None:
    return session.scalars(select(CRL).where(CRL.authority == authority).order_by(CRL.number.desc()).limit(1)).first()


def current(ctx: CAContext, authority: str) -> CRL:
    """The newest CRL of ``authority``; a 404 problem when there is no such authority or CRL."""
    ctx.authority(authority)  # 404 problem for a name that is not ours
    with ctx.sessions() as session:
        row = _current_row(session, authority)
    if row is None:
        raise Problem(404, "Not Found", f"certificate authority {authority!r} has not published a CRL yet")
    return row


def current_der(ctx: CAContext, authority: str) -> bytes:
    return current(ctx, authority).der


def latest_numbers(session: Session) -> dict[str, int]:
    """Highest CRL number per authority (what a revocation always changes)."""
    return dict(session.execute(select(CRL.authority, func.max(CRL.number)).group_by(CRL.authority)).all())
