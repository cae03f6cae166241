"""Finding certificates: by serial, subject identifier, status, profile."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import and_, or_, select

from ca.context import CAContext
from ca.models import Certificate
from ca.revocation import normalise_serial
from core.identifiers import InvalidIdentifier, lookup_hash, validate_credit_code, validate_resident_id
from core.problems import Problem

STATUSES = ("valid", "revoked", "expired")


def subject_id_hash(ctx: CAContext, subject_id: str) -> str:
    """The keyed lookup hash of a resident ID or credit code, whichever it is."""
    try:
        return lookup_hash(ctx.lookup_key, "resident_id", validate_resident_id(subject_id).value)
    except InvalidIdentifier as as_resident:
        try:
            return lookup_hash(ctx.lookup_key, "credit_code", validate_credit_code(subject_id).value)
        except InvalidIdentifier:
            raise Problem(
                400, "Bad Request", f"subject_id is neither a valid resident ID nor a credit code ({as_resident.reason})"
            ) from None


def get(ctx: CAContext, serial: str) -> Certificate:
    serial = normalise_serial(serial)
    with ctx.sessions() as session:
        row = session.get(Certificate, serial)
    if row is None:
        raise Problem(404, "Not Found", f"no certificate with serial {serial} was issued here")
    return row


def search(
    ctx: CAContext, *, subject_id=None, status=None, profile=None, authority=None, limit=50, offset=0, after: str | None = None
) -> list[Certificate]:
    """Newest first. With ``after`` (keyset paging): "" for the first page, then :func:`cursor` of the last row shown."""
    if after is not None:
        query = select(Certificate).order_by(Certificate.issued_at.desc(), Certificate.serial.desc())
        if after:
            issued_at, serial = _parse_cursor(after)
            query = query.where(
                or_(Certificate.issued_at < issued_at, and_(Certificate.issued_at == issued_at, Certificate.serial < serial))
            )
    else:
        query = select(Certificate).order_by(Certificate.issued_at.desc(), Certificate.serial)
    now = datetime.now(UTC)
    if subject_id:
        query = query.where(Certificate.subject_id_hash == subject_id_hash(ctx, subject_id))
    if status:
        if status not in STATUSES:
            raise Problem(400, "Bad Request", f"status must be one of {', '.join(STATUSES)}")
        if status == "expired":
            query = query.where(Certificate.status == "valid", Certificate.not_after < now)
        elif status == "valid":
            query = query.where(Certificate.status == "valid", Certificate.not_after >= now)
        else:
            query = query.where(Certificate.status == "revoked")
    if profile:
        query = query.where(Certificate.profile == profile)
    if authority:
        query = query.where(Certificate.authority == authority)
    if not 1 <= limit <= 500 or offset < 0:
        raise Problem(400, "Bad Request", "limit must be 1..500 and offset not negative")
    with ctx.sessions() as session:
        return list(session.scalars(query.limit(limit).offset(offset)))


def cursor(row: Certificate) -> str:
    """Where the next page starts after ``row`` (``search(after=...)``)."""
    return f"{row.issued_at.astimezone(UTC):%Y%m%dT%H%M%S%f}.{row.serial}"


def _parse_cursor(text: str) -> tuple[datetime, str]:
    moment, _, serial = (text or "").partition(".")
    try:
        issued_at = datetime.strptime(moment, "%Y%m%dT%H%M%S%f").replace(tzinfo=UTC)
    except ValueError:
        raise Problem(400, "Bad Request", "the page cursor is not one this list gave") from None
    return issued_at, normalise_serial(serial)


def status_of(row: Certificate, now: datetime | None = None) -> str:
    if row.status == "revoked":
        return "revoked"
    return "expired" if row.not_after < (now or datetime.now(UTC)) else "valid"


def as_json(row: Certificate, include_pem: bool = False) -> dict:
    body = {
        "serial": row.serial,
        "authority": row.authority,
        "profile": row.profile,
        "subject": row.subject,
        "subject_id": row.subject_id_masked,
        "status": status_of(row),
        "not_before": row.not_before.isoformat(),
        "not_after": row.not_after.isoformat(),
        "fingerprint_sha256": row.fingerprint,
        "issued_at": row.issued_at.isoformat(),
    }
    if row.status == "revoked":
        body["revoked_at"] = row.revoked_at.isoformat()
        body["revocation_reason"] = row.revocation_reason
    if include_pem:
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        body["certificate"] = x509.load_der_x509_certificate(row.der).public_bytes(Encoding.PEM).decode()
    return body
