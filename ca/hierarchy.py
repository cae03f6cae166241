"""``hallmark ca init``: the root, two issuing CAs, their OCSP responders and the TSA.

root (P-384, 20 years)
├── people    issuing CA for residents and enterprises (P-384, 10 years)
│   └── OCSP responder for people
└── services  issuing CA for servers, seals and services (P-384, 10 years)
    ├── OCSP responder for services
    └── time-stamping authority

Every key is generated inside the HSM. Running it again creates only what is
missing, and renews an OCSP responder certificate that has under 30 days left.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID
from sqlalchemy import select

from ca import issuance, profiles
from ca.context import CAContext
from ca.models import Authority, Certificate
from core import audit, events
from core.db import utc_now
from hsm import KeyAlgorithm

ORGANISATION = "Hallmark"
ROOT_YEARS = 20
ISSUING_YEARS = 10
RESPONDER_RENEW_BEFORE = timedelta(days=30)


@dataclass(frozen=True)
class AuthoritySpec:
    name: str
    common_name: str
    parent: str | None


AUTHORITIES = (
    AuthoritySpec("root", "Hallmark Root CA", None),
    AuthoritySpec("people", "Hallmark People and Enterprises CA", "root"),
    AuthoritySpec("services", "Hallmark Servers and Services CA", "root"),
)
ISSUING = [spec.name for spec in AUTHORITIES if spec.parent]


@dataclass
class InitReport:
    steps: list[tuple[str, bool]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(changed for _, changed in self.steps)


def _ca_name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_label(kind: str, name: str) -> str:
    return f"hallmark-{kind}-{name}"


def _find_or_create_key(ctx: CAContext, label: str, algorithm: KeyAlgorithm):
    existing = next((k for k in ctx.keys.keys() if k.label == label), None)  # noqa: SIM118 - a key manager, not a dict
    return existing or ctx.keys.create_key(label, algorithm)


def _ca_certificate(ctx: CAContext, spec: AuthoritySpec, public_key, now: datetime) -> x509.Certificate:
    subject = _ca_name(spec.common_name)
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    serial = int.from_bytes(secrets.token_bytes(20), "big") & ((1 << 159) - 1)
    if spec.parent is None:
        issuer_name, signer_uri, not_after = subject, None, now + timedelta(days=365 * ROOT_YEARS + 5)
    else:
        parent = ctx.authority(spec.parent)
        issuer_name, signer_uri = parent.certificate.subject, parent.key_uri
        not_after = min(now + timedelta(days=365 * ISSUING_YEARS + 2), parent.certificate.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None if spec.parent is None else 0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(ski, critical=False)
    )
    if spec.parent is not None:
        parent = ctx.authority(spec.parent)
        parent_ski = parent.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = (
            builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(parent_ski), critical=False)
            .add_extension(x509.CertificatePolicies([x509.PolicyInformation(x509.ObjectIdentifier("2.5.29.32.0"), None)]), critical=False)
            .add_extension(
                x509.AuthorityInformationAccess(
                    [
                        x509.AccessDescription(
                            AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(ctx.url(f"/pki/ca/{spec.parent}.crt"))
                        )
                    ]
                ),
                critical=False,
            )
            .add_extension(
                x509.CRLDistributionPoints(
                    [x509.DistributionPoint([x509.UniformResourceIdentifier(ctx.url(f"/pki/crl/{spec.parent}.crl"))], None, None, None)]
                ),
                critical=False,
            )
        )
    signer = ctx.signer(signer_uri) if signer_uri else ctx.signer(_key_uri_for(ctx, spec))
    return builder.sign(signer, issuance.signature_hash(signer))


def _key_uri_for(ctx: CAContext, spec: AuthoritySpec) -> str:
    return _find_or_create_key(ctx, _key_label("ca", spec.name), KeyAlgorithm.EC_P384).uri


def init_hierarchy(ctx: CAContext, actor: str = "system:ca-init") -> InitReport:
    report = InitReport()
    now = utc_now()
    for spec in AUTHORITIES:
        with ctx.sessions() as session, session.begin():
            if session.get(Authority, spec.name) is not None:
                report.steps.append((f"certificate authority {spec.name!r}", False))
                continue
            key_uri = _key_uri_for(ctx, spec)
            certificate = _ca_certificate(ctx, spec, ctx.keys.public_key(key_uri), now)
            session.add(
                Authority(
                    name=spec.name,
                    role="root" if spec.parent is None else "issuing",
                    parent=spec.parent,
                    key_uri=key_uri,
                    certificate=certificate.public_bytes(serialization.Encoding.DER),
                    subject=certificate.subject.rfc4514_string(),
                    not_after=certificate.not_valid_after_utc,
                    crl_number=0,
                    created_at=now,
                )
            )
            audit.record(
                session,
                actor=actor,
                action="ca.authority.created",
                target=spec.name,
                details={"subject": certificate.subject.rfc4514_string(), "key": key_uri},
            )
            report.steps.append((f"certificate authority {spec.name!r}", True))
        with ctx.sessions() as session, session.begin():
            events.of(session).emit(events.AUTHORITY_CREATED, required=True, ctx=ctx, session=session, authority=spec.name)

    for name in ISSUING:
        report.steps.append(
            (
                f"OCSP responder for {name!r}",
                _ensure_service_certificate(ctx, "ocsp-signing", name, f"Hallmark OCSP Responder ({name})", actor),
            )
        )
    report.steps.append(
        ("time-stamping authority", _ensure_service_certificate(ctx, "timestamping", "services", "Hallmark Time-Stamping Authority", actor))
    )
    return report


def service_certificate(session, profile: str, authority: str) -> Certificate | None:
    """The newest valid certificate of one of our own services (its key is in our HSM)."""
    return session.scalars(
        select(Certificate)
        .where(
            Certificate.profile == profile,
            Certificate.authority == authority,
            Certificate.status == "valid",
            Certificate.key_uri.is_not(None),
        )
        .order_by(Certificate.not_after.desc())
        .limit(1)
    ).first()


def _ensure_service_certificate(ctx: CAContext, profile_name: str, authority: str, common_name: str, actor: str) -> bool:
    profile = profiles.get(profile_name)
    with ctx.sessions() as session, session.begin():
        current = service_certificate(session, profile_name, authority)
        if current is not None and current.not_after - datetime.now(UTC) > RESPONDER_RENEW_BEFORE:
            return False
        label = _key_label(profile_name, authority)
        key = _find_or_create_key(ctx, label, KeyAlgorithm.EC_P256)
        subject, _, _ = issuance.subject_for(profile, issuance.Identity(name=common_name))
        issuer = ctx.authority(authority, session)
        certificate = issuance.build(ctx, profile, issuer, key.public_key, subject, serial=issuance.random_serial(session))
        issuance.store(
            ctx, session, certificate, authority=authority, profile=profile_name, id_kind=None, id_value=None, actor=actor, key_uri=key.uri
        )
        return True
