"""Issuing end-entity certificates from PKCS#10 requests.

The CSR proves possession of the key and nothing else: the subject is built from
identity data the caller vouches for (a resident ID or credit code, validated),
and every extension comes from the profile.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID
from sqlalchemy.orm import Session

from ca import identity as ca_identity
from ca import profiles
from ca.context import CAContext, LoadedAuthority
from ca.models import Certificate
from ca.profiles import Profile, ProfileError
from core import audit, events
from core.identifiers import InvalidIdentifier, lookup_hash, mask_credit_code, mask_resident_id, validate_credit_code, validate_resident_id
from core.problems import Problem

MAX_CSR_BYTES = 16 * 1024
MAX_NAME_CHARS = 64  # RFC 5280 ub-common-name / ub-organization-name
MAX_SANS = 50

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DNS = re.compile(r"^(?=.{1,253}$)(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def bad(detail: str, status: int = 400) -> Problem:
    return Problem(status, "Bad Request" if status == 400 else "Unprocessable Content", detail)


@dataclass(frozen=True)
class Identity:
    """Who the certificate is for, as vouched for by the caller."""

    name: str
    subject_id: str | None = None
    sans: tuple[str, ...] = field(default_factory=tuple)


# -- parsing and checking the request ---------------------------------------------------------


def load_csr(data: bytes | str) -> x509.CertificateSigningRequest:
    """A CSR from PEM, DER or base64 DER; a 400 problem saying why otherwise."""
    if isinstance(data, str):
        data = data.encode("ascii", "replace")
    if len(data) > MAX_CSR_BYTES:
        raise bad(f"the CSR is larger than {MAX_CSR_BYTES} bytes", 413)
    # Strip only text forms: a DER signature may end in a byte that looks like whitespace.
    stripped = data if data[:1] == b"\x30" else data.strip()
    try:
        if stripped.startswith(b"-----BEGIN"):
            csr = x509.load_pem_x509_csr(stripped)
        elif stripped[:1] == b"\x30":
            csr = x509.load_der_x509_csr(stripped)
        else:
            csr = x509.load_der_x509_csr(base64.b64decode(stripped, validate=True))
    except (ValueError, binascii.Error):
        raise bad("the CSR is not a PKCS#10 request in PEM, DER or base64") from None
    if not csr.is_signature_valid:
        raise bad("the CSR's signature does not verify: it does not prove possession of the key")
    return csr


def key_type(public_key) -> str:
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"rsa-{public_key.key_size}"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return {"secp256r1": "ec-p256", "secp384r1": "ec-p384"}.get(public_key.curve.name, f"ec-{public_key.curve.name}")
    return type(public_key).__name__


def check_name(name: str, what: str = "name") -> str:
    name = (name or "").strip()
    if not name:
        raise bad(f"a {what} is required")
    if len(name) > MAX_NAME_CHARS:
        raise bad(f"the {what} is longer than {MAX_NAME_CHARS} characters")
    if _CONTROL.search(name):
        raise bad(f"the {what} contains control characters")
    return name


def parse_sans(values) -> list[x509.GeneralName]:
    if len(values) > MAX_SANS:
        raise bad(f"at most {MAX_SANS} subject alternative names")
    names: list[x509.GeneralName] = []
    for value in values:
        value = str(value).strip().lower()
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(value)))
            continue
        except ValueError:
            pass
        if not _DNS.match(value):
            raise bad(f"{value!r} is neither a DNS name nor an IP address")
        names.append(x509.DNSName(value))
    return names


# -- building -------------------------------------------------------------------------------


def random_serial(session: Session) -> int:
    """20 random octets with the top bit clear (positive, at most 20 octets in DER), unused so far."""
    while True:
        serial = int.from_bytes(secrets.token_bytes(20), "big") & ((1 << 159) - 1)
        if serial and session.get(Certificate, format(serial, "x")) is None:
            return serial


def signature_hash(issuer_key) -> hashes.HashAlgorithm:
    if isinstance(issuer_key, ec.EllipticCurvePrivateKey) and issuer_key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def subject_for(profile: Profile, identity: Identity) -> tuple[x509.Name, list[x509.Extension], str | None]:
    """(subject DN, identifier extensions, normalised identifier) for a profile's subject kind."""
    name = check_name(identity.name)
    country = x509.NameAttribute(NameOID.COUNTRY_NAME, "CN")
    id_value = None
    try:
        if profile.subject_id == "resident_id":
            id_value = validate_resident_id(identity.subject_id or "").value
        elif profile.subject_id == "credit_code":
            id_value = validate_credit_code(identity.subject_id or "").value
    except InvalidIdentifier as exc:
        raise bad(str(exc), 422) from None
    extensions = ca_identity.identifier_extensions(profile.subject_id, id_value) if id_value else []
    if profile.subject == "person":
        # ETSI EN 319 412-1 semantics identifier: IDC = national identity card number.
        attributes = [
            country,
            ca_identity.identifier_attribute("resident_id", id_value),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    elif profile.subject in ("enterprise", "department"):
        # NTR = national trade register (the unified social credit code).
        attributes = [
            country,
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
            ca_identity.identifier_attribute("credit_code", id_value),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    elif profile.subject == "server":
        dns = list(identity.sans)
        if not dns:
            raise bad("a server-tls certificate needs at least one DNS name or IP address (san)")
        # As the Baseline Requirements have a domain-validated subject (7.1.2.7.2): the country and
        # the first SAN as it is written in the SAN (an IP address in its canonical text), no
        # organisation; ``name`` is checked above but not written into the certificate.
        first = parse_sans(dns[:1])[0].value
        attributes = [country, x509.NameAttribute(NameOID.COMMON_NAME, str(first))]
    else:  # service
        attributes = [country, x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Hallmark"), x509.NameAttribute(NameOID.COMMON_NAME, name)]
    return x509.Name(attributes), extensions, id_value


def build(
    ctx: CAContext,
    profile: Profile,
    issuer: LoadedAuthority,
    public_key,
    subject: x509.Name,
    *,
    serial: int,
    sans: list[x509.GeneralName] = (),
    extra_extensions: list[x509.Extension] = (),
    now: datetime | None = None,
) -> x509.Certificate:
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    not_after = min(now + timedelta(days=profile.validity_days), issuer.certificate.not_valid_after_utc)
    issuer_ski = issuer.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(now - timedelta(minutes=5))  # tolerate clients whose clocks run slow
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(profile.key_usage_extension(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski), critical=False)
        .add_extension(
            x509.CertificatePolicies([x509.PolicyInformation(x509.ObjectIdentifier(p), None) for p in profile.policies]),
            critical=False,
        )
    )
    eku = profile.eku_extension()
    if eku is not None:
        builder = builder.add_extension(eku, critical=profile.eku_critical)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    if profile.aia:
        builder = builder.add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ctx.url("/pki/ocsp"))),
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(ctx.url(f"/pki/ca/{issuer.name}.crt"))
                    ),
                ]
            ),
            critical=False,
        )
    if profile.crl_dp:
        builder = builder.add_extension(
            x509.CRLDistributionPoints(
                [x509.DistributionPoint([x509.UniformResourceIdentifier(ctx.url(f"/pki/crl/{issuer.name}.crl"))], None, None, None)]
            ),
            critical=False,
        )
    if profile.ocsp_no_check:
        builder = builder.add_extension(x509.OCSPNoCheck(), critical=False)
    for extension in extra_extensions:
        builder = builder.add_extension(extension.value, critical=extension.critical)
    signer = ctx.signer(issuer.key_uri)
    return builder.sign(signer, signature_hash(signer))


def store(
    ctx: CAContext,
    session: Session,
    certificate: x509.Certificate,
    *,
    authority: str,
    profile: str,
    id_kind: str | None,
    id_value: str | None,
    actor: str,
    key_uri: str | None = None,
) -> Certificate:
    der = certificate.public_bytes(serialization.Encoding.DER)
    row = Certificate(
        serial=format(certificate.serial_number, "x"),
        authority=authority,
        profile=profile,
        subject=ca_identity.display_name(certificate.subject)[:400],
        subject_id_kind=id_kind,
        subject_id_hash=lookup_hash(ctx.lookup_key, id_kind, id_value) if id_value else None,
        subject_id_masked=(mask_resident_id if id_kind == "resident_id" else mask_credit_code)(id_value) if id_value else None,
        fingerprint=hashlib.sha256(der).hexdigest(),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        status="valid",
        der=der,
        key_uri=key_uri,
        issued_at=datetime.now(UTC),
        issued_by=actor,
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="ca.certificate.issued",
        target=row.serial,
        details={"profile": profile, "authority": authority, "subject": row.subject, "subject_id": row.subject_id_masked},
    )
    # Its OCSP response is pre-signed by a subscriber (ca.status.publication), in this transaction.
    events.of(session).emit(events.CERTIFICATE_ISSUED, required=True, ctx=ctx, session=session, certificate=row)
    return row


def issue(
    ctx: CAContext, profile_name: str, csr_data: bytes | str, identity: Identity, *, actor: str
) -> tuple[Certificate, x509.Certificate]:
    """Check, build, sign, store and audit one certificate, all in one transaction."""
    try:
        profile = profiles.get(profile_name)
    except ProfileError as exc:
        raise bad(str(exc), 422) from None
    if profile.issuer == "*" or profile.subject == "service":
        raise bad(f"profile {profile.name!r} is issued by 'hallmark ca init' only, not on request", 422)
    csr = load_csr(csr_data)
    public_key = csr.public_key()
    kind = key_type(public_key)
    if kind not in profile.key_types:
        raise bad(f"profile {profile.name!r} does not accept {kind} keys; it accepts {', '.join(profile.key_types)}", 422)
    sans = parse_sans(identity.sans) if identity.sans else []
    subject, id_extensions, id_value = subject_for(profile, identity)
    with ctx.sessions() as session, session.begin():
        issuer = ctx.authority(profile.issuer, session)
        certificate = build(
            ctx, profile, issuer, public_key, subject, serial=random_serial(session), sans=sans, extra_extensions=id_extensions
        )
        row = store(
            ctx,
            session,
            certificate,
            authority=issuer.name,
            profile=profile.name,
            id_kind=None if profile.subject_id == "none" else profile.subject_id,
            id_value=id_value,
            actor=actor,
        )
    return row, certificate
