"""Shared parts of the certificate-login and enterprise tests.

The USB key is played by a SoftHSM2 token of its own ("usbkey-certlogin") in the
test session's SoftHSM2 configuration, driven through ``hsm.PKCS11KeyManager``: keys
are generated inside it, CSRs and challenge signatures are made by it, and the
private keys never leave it. Certificates come from the real test CA
(``ca.issuance``), or, for expired ones, are built by ``issuance.build`` with a past
``now`` and stored like any other.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from core import db as core_db
from core.db import utc_now
from core.identifiers import generate_credit_code, generate_resident_id, lookup_hash, organisation_code_check_char
from hsm import KeyAlgorithm, PKCS11KeyManager, softhsm
from idp.models import IdentityProofing
from idp.people import accounts
from tests.conftest import USB_TOKEN_LABEL as USB_LABEL  # made before the module is loaded
from tests.conftest import USB_TOKEN_PIN as USB_PIN

PASSWORD = "Camphor-tree 2026"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
DATA_CSRF = re.compile(r'data-csrf="([^"]+)"')


def new_resident_id() -> str:
    birth = date(1955, 1, 1) + timedelta(days=secrets.randbelow(16000))
    return generate_resident_id("440106", birth, secrets.randbelow(1000))


def new_credit_code() -> str:
    body = "".join(secrets.choice("0123456789ABCDEFGHJKLMNPQRTUWXY") for _ in range(8))
    prefix = "91350100" + body + organisation_code_check_char(body)
    return generate_credit_code(prefix)


@pytest.fixture(scope="session")
def usb_key(softhsm_conf):
    """The USB key: its own token in the session's SoftHSM2 configuration (made by conftest at start)."""
    manager = PKCS11KeyManager(softhsm.default_module(), USB_LABEL, USB_PIN)
    yield UsbKey(manager)
    manager.close()


class UsbKey:
    def __init__(self, manager: PKCS11KeyManager):
        self.manager = manager

    def new_key(self, algorithm: str = "ec-p256"):
        """A key pair generated inside the token; returns its signer (the private key stays there)."""
        info = self.manager.create_key(f"login-{uuid.uuid4().hex[:12]}", KeyAlgorithm.parse(algorithm))
        return self.manager.signer(info.uri)

    @staticmethod
    def csr(signer) -> bytes:
        builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "usb key")]))
        return builder.sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    @staticmethod
    def sign(signer, text: str) -> tuple[str, str]:
        """(base64url signature, algorithm name) over the exact UTF-8 bytes, as the agent answers."""
        data = text.encode("utf-8")
        if isinstance(signer, rsa.RSAPrivateKey):
            return b64url(signer.sign(data, padding.PKCS1v15(), hashes.SHA256())), "sha256WithRSAEncryption"
        return b64url(signer.sign(data, ec.ECDSA(hashes.SHA256()))), "ecdsa-with-SHA256"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64der(certificate: x509.Certificate) -> str:
    return base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode()


def issue(ca_ctx, profile: str, signer, subject_id: str, name: str = "张三") -> tuple[str, x509.Certificate]:
    """A certificate from the test CA for the token's key; returns (serial, certificate)."""
    from ca import issuance

    row, certificate = issuance.issue(
        ca_ctx, profile, UsbKey.csr(signer), issuance.Identity(name=name, subject_id=subject_id), actor="test"
    )
    return row.serial, certificate


def issue_in_the_past(ca_ctx, profile_name: str, signer, subject_id: str, *, days_ago: int, name: str = "张三") -> x509.Certificate:
    """A certificate issued ``days_ago`` days back by the real CA, so it has run out by now."""
    from ca import issuance, profiles

    profile = profiles.get(profile_name)
    subject, extensions, id_value = issuance.subject_for(profile, issuance.Identity(name=name, subject_id=subject_id))
    issued_at = datetime.now(UTC) - timedelta(days=days_ago)
    with ca_ctx.sessions() as session, session.begin():
        issuer = ca_ctx.authority(profile.issuer, session)
        certificate = issuance.build(
            ca_ctx,
            profile,
            issuer,
            signer.public_key(),
            subject,
            serial=issuance.random_serial(session),
            extra_extensions=extensions,
            now=issued_at,
        )
        # Backdate within the profile: a 730-day profile issued 800 days ago ended 70 days ago.
        issuance.store(
            ca_ctx,
            session,
            certificate,
            authority=issuer.name,
            profile=profile.name,
            id_kind=profile.subject_id,
            id_value=id_value,
            actor="test",
        )
    return certificate


@dataclass
class Person:
    account_id: str
    username: str
    resident_id: str


def add_person(factory, lookup_key: bytes, *, proofed: bool = True, name: str = "张三") -> Person:
    username = "p" + uuid.uuid4().hex[:10]
    resident_id = new_resident_id()
    with core_db.transaction(factory) as db:
        account = accounts.register(db, identifier=username, password=PASSWORD, display_name=name)
        if proofed:
            db.add(
                IdentityProofing(
                    account_id=account.id,
                    resident_id_hash=lookup_hash(lookup_key, "resident_id", resident_id),
                    resident_id_masked=resident_id[:3] + "*" * 11 + resident_id[-4:],
                    legal_name=name,
                    method="counter",
                    source="test",
                    location="test centre",
                    document="resident-card",
                    verified_at=utc_now(),
                )
            )
        return Person(account.id, username, resident_id)


def query_of(location: str) -> dict:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def signed_fields(challenge: str, signer, cert: x509.Certificate, certs=(), **override) -> dict:
    signature, algorithm = UsbKey.sign(signer, challenge)
    fields = {
        "challenge": challenge,
        "signature": signature,
        "algorithm": algorithm,
        "certificate": b64der(cert),
        "chain": json.dumps([b64der(c) for c in certs]),
    }
    fields.update(override)
    return fields
