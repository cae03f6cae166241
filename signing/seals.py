"""Department seals: the certificate, the HSM key and the image, and which clients may use them.

A seal is added in one transaction: its department-seal certificate (issued by our
services CA for a key generated in the HSM) and the seal row are stored together
with their audit events, or not at all. The HSM key is created first (a token
has no transactions); a retry after a failure finds and reuses it by label.

Clients and departments. A client (hall, approval system) calls the sealing API
with a ``sign:seal`` access token; it may use the seals of the departments it was
granted (``hallmark sign seal grant CLIENT_ID DEPARTMENT``), a department being
known by its unified social credit code. A client with no grant uses no seal.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from ca import issuance, profiles
from ca.context import CAContext
from ca.models import Certificate
from core import audit
from core.db import utc_now
from core.identifiers import InvalidIdentifier, validate_credit_code
from core.problems import Problem
from hsm import KeyAlgorithm
from signing.models import Seal, SealGrant
from signing.pdf import sealimage

PROFILE = "department-seal"
MAX_NAME_CHARS = 100
_NAME = re.compile(r"^[^\x00-\x1f\x7f/\\?#%]{1,100}$")


def _bad(detail: str, status: int = 422, code: str = "bad_seal") -> Problem:
    return Problem(status, "Unprocessable Content" if status == 422 else "Bad Request", detail, code=code)


def _conflict(detail: str) -> Problem:
    return Problem(409, "Conflict", detail, code="seal_exists")


def check_credit_code(text: str) -> str:
    try:
        return validate_credit_code(text or "").value
    except InvalidIdentifier as exc:
        raise _bad(str(exc), code="bad_credit_code") from None


def _key(ctx: CAContext, label: str):
    """The seal key labelled ``label``, made if there is none yet (a retry after a failure reuses it)."""
    return next((k for k in ctx.keys.keys() if k.label == label), None) or ctx.keys.create_key(label, KeyAlgorithm.EC_P256)  # noqa: SIM118 - a key manager, not a dict


def _certify(ctx: CAContext, session, key, department: str, code: str, *, actor: str) -> Certificate:
    """A department-seal certificate for ``key``, issued and stored in ``session``'s transaction."""
    profile = profiles.get(PROFILE)
    subject, id_extensions, id_value = issuance.subject_for(profile, issuance.Identity(name=department, subject_id=code))
    issuer = ctx.authority(profile.issuer, session)
    certificate = issuance.build(
        ctx, profile, issuer, key.public_key, subject, serial=issuance.random_serial(session), extra_extensions=id_extensions
    )
    return issuance.store(
        ctx,
        session,
        certificate,
        authority=issuer.name,
        profile=PROFILE,
        id_kind="credit_code",
        id_value=id_value,
        actor=actor,
        key_uri=key.uri,
    )


def _key_label(name: str) -> str:
    return "hallmark-seal-" + hashlib.sha256(name.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SealInfo:
    name: str
    department: str
    credit_code: str
    certificate_serial: str
    status: str
    certificate_status: str
    not_after: str
    created_at: str

    def as_json(self) -> dict:
        return dict(self.__dict__)


def check_new(*, department: str, credit_code: str, name: str | None = None) -> tuple[str, str, str]:
    """A new seal's department name, credit code and seal name (the department's name when none is given), checked
    as :func:`add` checks them; 422 problems (``bad_seal``, ``bad_credit_code``) otherwise. Whether the name is free
    is not checked here."""
    department = issuance.check_name(department, "department name")
    code = check_credit_code(credit_code)
    name = (name or department).strip()
    if not _NAME.match(name):
        raise _bad(f"a seal name is 1-{MAX_NAME_CHARS} characters without control characters or / \\ ? # %")
    return department, code, name


def add(
    ctx: CAContext,
    *,
    department: str,
    credit_code: str,
    name: str | None = None,
    image: bytes | None = None,
    actor: str,
) -> Seal:
    """Create a seal: HSM key, department-seal certificate, image (a demo seal when none is given)."""
    department, code, name = check_new(department=department, credit_code=credit_code, name=name)
    png = sealimage.check_image(image) if image is not None else sealimage.demo_seal(department)
    with ctx.sessions() as session:
        if session.get(Seal, name) is not None:
            raise _conflict(f"there is already a seal named {name!r}")
    label = _key_label(name)
    key = _key(ctx, label)
    try:
        with ctx.sessions() as session, session.begin():
            row = _certify(ctx, session, key, department, code, actor=actor)
            seal = Seal(
                name=name,
                department=department,
                credit_code=code,
                certificate_serial=row.serial,
                key_uri=key.uri,
                image_png=png,
                status="active",
                created_at=utc_now(),
                created_by=actor[:200],
            )
            session.add(seal)
            session.flush()
            audit.record(
                session,
                actor=actor,
                action="signing.seal.added",
                target=name,
                details={"department": department, "credit_code": code, "certificate": row.serial, "key": key.uri},
            )
    except IntegrityError:
        raise _conflict(f"there is already a seal named {name!r}") from None
    return seal


def _info(seal: Seal, certificate: Certificate) -> SealInfo:
    return SealInfo(
        name=seal.name,
        department=seal.department,
        credit_code=seal.credit_code,
        certificate_serial=seal.certificate_serial,
        status=seal.status,
        certificate_status=certificate.status,
        not_after=certificate.not_after.isoformat(),
        created_at=seal.created_at.isoformat(),
    )


def list_seals(ctx: CAContext) -> list[SealInfo]:
    with ctx.sessions() as session:
        rows = session.execute(
            select(Seal, Certificate).join(Certificate, Certificate.serial == Seal.certificate_serial).order_by(Seal.name)
        )
        return [_info(seal, certificate) for seal, certificate in rows]


def get(session, name: str) -> Seal:
    seal = session.get(Seal, name)
    if seal is None:
        raise Problem(404, "Not Found", f"there is no seal named {name!r}", code="no_such_seal")
    return seal


def retire(ctx: CAContext, name: str, *, actor: str, reason: str | None = None, revoke_certificate: bool = False) -> Seal:
    """Stop a seal from sealing, for good; 409 (``seal_retired``) when it already is.

    With ``revoke_certificate`` its certificate is revoked too (``ca.revocation``, reason
    cessationOfOperation), after the seal is marked retired. Retiring again a retired seal whose certificate
    is still valid finishes that revocation (a retirement cut short between the two steps).
    Without it the certificate stays valid for what it sealed (revoke it through the CA if the
    key is compromised).
    """
    from sqlalchemy import update

    from ca import revocation

    with ctx.sessions() as session, session.begin():
        seal = get(session, name)
        serial, department, code = seal.certificate_serial, seal.department, seal.credit_code
        certificate_valid = session.get(Certificate, serial).status == "valid"
        changed = session.execute(update(Seal).where(Seal.name == seal.name, Seal.status == "active").values(status="retired")).rowcount
        if not changed and not (revoke_certificate and certificate_valid):
            raise Problem(409, "Conflict", f"the seal {name!r} is already retired", code="seal_retired")
        if changed:
            audit.record(
                session,
                actor=actor,
                action="signing.seal.retired",
                target=seal.name,
                details={"department": department, "credit_code": code, "certificate": serial, "reason": reason},
            )
    if revoke_certificate and certificate_valid:
        try:
            revocation.revoke(ctx, serial, "cessationOfOperation", actor=actor)
        except Problem as problem:
            if problem.status != 409:  # 409: revoked meanwhile (through the CA), which is what was wanted
                raise
    with ctx.sessions() as session:
        return get(session, name)


def rotate(ctx: CAContext, name: str, *, actor: str) -> Seal:
    """Give an active seal a new HSM key and a new department-seal certificate; its name, department and image stay.

    From the commit on, the seal signs with the new key and certificate (``load`` sees the new serial). The
    replaced certificate stays valid for what it sealed; revoke it through the CA if the old key is
    compromised. The new key's label is made from the seal's name and the certificate it replaces, so a
    retry after a failure reuses the key it made; a seal rotated meanwhile by someone else is refused (409).
    """
    with ctx.sessions() as session:
        seal = get(session, name)
        if seal.status != "active":
            raise Problem(409, "Conflict", f"the seal {name!r} is retired", code="seal_retired")
        old_serial, old_key, department, code = seal.certificate_serial, seal.key_uri, seal.department, seal.credit_code
    label = _key_label(name + "\x00" + old_serial)
    key = _key(ctx, label)
    with ctx.sessions() as session, session.begin():
        seal = get(session, name)
        if seal.certificate_serial != old_serial or seal.status != "active":
            raise Problem(409, "Conflict", f"the seal {name!r} was changed meanwhile; look at it again", code="seal_changed")
        row = _certify(ctx, session, key, department, code, actor=actor)
        seal.certificate_serial, seal.key_uri = row.serial, key.uri
        audit.record(
            session,
            actor=actor,
            action="signing.seal.rotated",
            target=name,
            details={
                "department": department,
                "credit_code": code,
                "old_certificate": old_serial,
                "certificate": row.serial,
                "old_key": old_key,
                "key": key.uri,
            },
        )
    return seal


def _department_code(session, department: str) -> str:
    """A department named by credit code, or by the department name of one of its seals."""
    try:
        return validate_credit_code(department).value
    except InvalidIdentifier:
        codes = set(session.scalars(select(Seal.credit_code).where(Seal.department == department.strip())))
        if len(codes) == 1:
            return codes.pop()
        if not codes:
            raise _bad(
                f"{department!r} is neither a unified social credit code nor the department of a seal", code="no_such_department"
            ) from None
        raise _bad(f"several departments are named {department!r}; give the credit code") from None


def grant(ctx: CAContext, client_id: str, department: str, *, actor: str) -> SealGrant:
    client_id = (client_id or "").strip()
    if not client_id or len(client_id) > 100:
        raise _bad("a client id of 1-100 characters is required", code="bad_client")
    with ctx.sessions() as session, session.begin():
        code = _department_code(session, department)
        existing = session.get(SealGrant, (client_id, code))
        if existing is not None:
            return existing
        row = SealGrant(client_id=client_id, credit_code=code, granted_at=utc_now(), granted_by=actor[:200])
        session.add(row)
        audit.record(session, actor=actor, action="signing.seal.granted", target=client_id, details={"credit_code": code})
    return row


def revoke_grant(ctx: CAContext, client_id: str, department: str, *, actor: str) -> bool:
    with ctx.sessions() as session, session.begin():
        code = _department_code(session, department)
        removed = session.execute(delete(SealGrant).where(SealGrant.client_id == client_id, SealGrant.credit_code == code)).rowcount
        if removed:
            audit.record(session, actor=actor, action="signing.seal.grant_revoked", target=client_id, details={"credit_code": code})
    return bool(removed)


def grants(ctx: CAContext) -> list[tuple[str, str]]:
    with ctx.sessions() as session:
        return [tuple(row) for row in session.execute(select(SealGrant.client_id, SealGrant.credit_code).order_by(SealGrant.client_id))]


def choose_for_client(ctx: CAContext, client_id: str, name: str | None) -> str:
    """The seal a client may use: the one named, or its only seal; 403/404/409 problems otherwise."""
    with ctx.sessions() as session:
        codes = set(session.scalars(select(SealGrant.credit_code).where(SealGrant.client_id == client_id)))
        if name:
            seal = get(session, name)
            if seal.credit_code not in codes:
                session.rollback()
                with session.begin():
                    # A client reaching for another department's seal is worth knowing about.
                    audit.record(
                        session,
                        actor=f"client:{client_id}",
                        action="signing.seal.refused",
                        target=seal.name,
                        details={"reason": "seal of another department", "credit_code": seal.credit_code},
                    )
                raise Problem(
                    403,
                    "Forbidden",
                    f"client {client_id!r} may not use the seal {name!r}: it belongs to another department",
                    code="seal_of_another_department",
                )
            return seal.name
        if not codes:
            raise Problem(403, "Forbidden", f"client {client_id!r} has not been granted any department's seals", code="no_seal_granted")
        names = list(session.scalars(select(Seal.name).where(Seal.credit_code.in_(codes), Seal.status == "active")))
    if len(names) != 1:
        raise Problem(
            400, "Bad Request", "name the seal to use ('seal'): this client may use " + (", ".join(sorted(names)) or "no active seal")
        )
    return names[0]


# -- what signing needs, loaded once per process --------------------------------------------------


@dataclass(frozen=True)
class LoadedSeal:
    name: str
    department: str
    credit_code: str
    key_uri: str
    serial: str
    certificate: x509.Certificate
    certificate_der: bytes
    issuer: x509.Certificate
    image_png: bytes
    fingerprint: str


_loaded: dict[tuple[int, str], LoadedSeal] = {}
_loaded_lock = threading.Lock()


def load(ctx: CAContext, name: str) -> LoadedSeal:
    """The seal for signing; refuses a retired seal or a certificate that is revoked or expired (409)."""
    with ctx.sessions() as session:
        seal = get(session, name)
        certificate_row = session.get(Certificate, seal.certificate_serial)
        status, not_after = certificate_row.status, certificate_row.not_after
    if seal.status != "active":
        raise Problem(409, "Conflict", f"the seal {name!r} is retired", code="seal_retired")
    if status != "valid":
        raise Problem(409, "Conflict", f"the certificate of the seal {name!r} is revoked; it can no longer seal", code="seal_revoked")
    if not_after <= utc_now():
        raise Problem(409, "Conflict", f"the certificate of the seal {name!r} expired on {not_after:%Y-%m-%d}", code="seal_expired")
    key = (id(ctx), name)
    found = _loaded.get(key)
    if found is not None and found.serial == seal.certificate_serial and found.image_png == seal.image_png:
        return found
    der = certificate_row.der
    with _loaded_lock:
        found = LoadedSeal(
            name=seal.name,
            department=seal.department,
            credit_code=seal.credit_code,
            key_uri=seal.key_uri,
            serial=seal.certificate_serial,
            certificate=x509.load_der_x509_certificate(der),
            certificate_der=der,
            issuer=ctx.authority(certificate_row.authority).certificate,
            image_png=seal.image_png,
            fingerprint=hashlib.sha256(der).hexdigest(),
        )
        _loaded[key] = found
    return found


def asn1_certificate(der: bytes) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(der)
