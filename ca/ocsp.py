"""OCSP (RFC 6960, RFC 5019 lightweight profile): pre-signed responses and the responder.

Pre-signing: every certificate an issuing CA of ours issues gets a signed response
when it is stored, re-signed when it is revoked (same transaction) and before its
nextUpdate (:func:`refresh_due`, run by the scheduler).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp as x509_ocsp
from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from ca import hierarchy
from ca.context import CAContext, LoadedAuthority
from ca import issuance
from ca.models import Certificate, OCSPResponse

VALIDITY = timedelta(days=1)
log = logging.getLogger("hallmark.ca.ocsp")


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class Responder:
    """A delegated OCSP responder: its certificate and HSM key."""

    serial: str
    certificate: x509.Certificate
    key_uri: str


_responders: dict[str, Responder] = {}


def responder_for(session: Session, authority: str) -> Responder | None:
    """The current delegated responder of an issuing CA, or None (the root has none)."""
    row = hierarchy.service_certificate(session, "ocsp-signing", authority)
    if row is None:
        return None
    responder = _responders.get(row.serial)
    if responder is None:
        responder = _responders[row.serial] = Responder(row.serial, x509.load_der_x509_certificate(row.der), row.key_uri)
    return responder


def issuer_hashes(issuer: x509.Certificate, algorithm: hashes.HashAlgorithm) -> tuple[bytes, bytes]:
    """(issuerNameHash, issuerKeyHash) of a CertID, RFC 6960 4.1.1."""
    from asn1crypto import x509 as asn1_x509

    parsed = asn1_x509.Certificate.load(issuer.public_bytes(serialization.Encoding.DER))
    name = parsed["tbs_certificate"]["subject"].dump()
    key = parsed["tbs_certificate"]["subject_public_key_info"]["public_key"].contents[1:]  # BIT STRING without unused-bits octet
    digest = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}[algorithm.name]
    return digest(name).digest(), digest(key).digest()


def _status_args(row: Certificate):
    if row.status == "revoked":
        reason = None if row.revocation_reason in (None, "unspecified") else x509.ReasonFlags(row.revocation_reason)
        return x509_ocsp.OCSPCertStatus.REVOKED, row.revoked_at.replace(microsecond=0), reason
    return x509_ocsp.OCSPCertStatus.GOOD, None, None


def sign_single(
    ctx: CAContext,
    issuer: LoadedAuthority,
    responder: Responder,
    row: Certificate,
    *,
    algorithm: hashes.HashAlgorithm = hashes.SHA1(),
    now: datetime | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """A signed OCSP response (DER) about one certificate of ours."""
    now = now or _now()
    name_hash, key_hash = issuer_hashes(issuer.certificate, algorithm)
    status, revoked_at, reason = _status_args(row)
    builder = (
        x509_ocsp.OCSPResponseBuilder()
        .add_response_by_hash(name_hash, key_hash, int(row.serial, 16), algorithm, status, now, now + VALIDITY, revoked_at, reason)
        .responder_id(x509_ocsp.OCSPResponderEncoding.HASH, responder.certificate)
        .certificates([responder.certificate])
    )
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    signer = ctx.signer(responder.key_uri)
    return builder.sign(signer, issuance.signature_hash(signer)).public_bytes(serialization.Encoding.DER)


def presign(ctx: CAContext, session: Session, certificate_row: Certificate) -> bytes | None:
    """Sign and store (replace) the cached response for one certificate, in the caller's transaction.

    Skipped when the issuing authority has no delegated responder: the root (its
    children's status is in the root CRL), and the moment during ``hallmark ca
    init`` before a responder exists. A responder's own certificate is stored
    before anything else needs it, so the responder signs its own first answer.
    """
    issuer = ctx.authority(certificate_row.authority, session)
    if issuer.role == "root":
        return None
    responder = responder_for(session, certificate_row.authority)
    if responder is None:
        return None
    now = _now()
    der = sign_single(ctx, issuer, responder, certificate_row, now=now)
    _upsert(session, certificate_row.serial, certificate_row.authority, now, now + VALIDITY, der)
    return der


def _upsert(session: Session, serial: str, authority: str, produced_at: datetime, next_update: datetime, der: bytes) -> None:
    # An INSERT ... ON CONFLICT, so two nodes refreshing the same serial never collide.
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    values = {"serial": serial, "authority": authority, "produced_at": produced_at, "next_update": next_update, "der": der}
    statement = insert(OCSPResponse).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=[OCSPResponse.serial], set_={k: statement.excluded[k] for k in ("authority", "produced_at", "next_update", "der")}
    )
    session.execute(statement)
    # Keep an OCSPResponse loaded earlier in this session in step with the row.
    loaded = session.identity_map.get(identity_key(OCSPResponse, serial))
    if loaded is not None:
        session.expire(loaded)


REFRESH_BEFORE = timedelta(hours=12)
REFRESH_BATCH = 200


def refresh_due(ctx: CAContext, batch: int = REFRESH_BATCH) -> int:
    """Re-sign responses whose nextUpdate is within 12 h, and sign any issued certificate lacking one."""
    count = 0
    while True:
        with ctx.sessions() as session, session.begin():
            horizon = _now() + REFRESH_BEFORE
            due = session.scalars(
                select(Certificate)
                .join(OCSPResponse, OCSPResponse.serial == Certificate.serial)
                .where(OCSPResponse.next_update <= horizon)
                .order_by(OCSPResponse.next_update)
                .limit(batch)
            ).all()
            missing = session.scalars(
                select(Certificate)
                .outerjoin(OCSPResponse, OCSPResponse.serial == Certificate.serial)
                .where(OCSPResponse.serial.is_(None))
                .limit(batch)
            ).all()
            done = 0
            for row in [*due, *missing]:
                if presign(ctx, session, row) is not None:
                    done += 1
        count += done
        if done == 0 or len(due) + len(missing) < batch:
            return count
