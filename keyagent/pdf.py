"""Signing PDFs with the USB key: fully local (``hallmark-key sign-pdf``) or with the server (``sign-remote``).

Both use pyHanko's PKCS#11 signer on the token, with the signing certificate
read from the token and handed to pyHanko (finding it by label is less reliable
across middleware). SoftHSM2 and several USB keys have no ``CKM_ECDSA_SHA256``,
so EC keys sign with raw ``CKM_ECDSA`` over a SHA-256 computed here.

Remote signing follows the server's API (``signing/remote.py``): the server
prepares the PDF and answers ``to_sign`` (DER signed attributes); the key signs
those bytes with SHA-256 (exactly what the local agent's ``POST /v1/sign`` with
``purpose: document`` does); the server finishes with its timestamp and
revocation data and answers the signed PDF and who signed it.

This module talks to the server only over HTTP and imports only pyHanko,
python-pkcs11 and ``cryptography``.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from asn1crypto import x509 as asn1_x509
from pkcs11 import Attribute, ObjectClass
from pyhanko.config.pkcs11 import TokenCriteria
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import fields, signers
from pyhanko.sign.pkcs11 import PKCS11Signer, open_pkcs11_session
from pyhanko.sign.timestamps import HTTPTimeStamper

LEVELS = ("B-B", "B-T")  # locally; B-LT/B-LTA need revocation data, which the server adds (sign-remote)


class SigningFailed(Exception):
    """Why the PDF could not be signed, in words for the user."""


@dataclass
class TokenIdentity:
    """A signing certificate on the token, the ID of its key, and CA certificates stored beside it."""

    certificate: asn1_x509.Certificate
    key_id: bytes
    label: str
    chain: list[asn1_x509.Certificate] = field(default_factory=list)

    @property
    def is_ec(self) -> bool:
        return self.certificate.public_key.algorithm == "ec"


def open_token(module_path: str, token_label: str | None, pin: str):
    """A logged-in PKCS#11 session on the token (the only one present when no label is given)."""
    criteria = TokenCriteria(label=token_label) if token_label else None
    try:
        return open_pkcs11_session(module_path, token_criteria=criteria, user_pin=pin)
    except Exception as exc:
        raise SigningFailed(f"cannot open the USB key: {type(exc).__name__} {exc}".strip()) from None


def _signs_documents(certificate: asn1_x509.Certificate) -> bool:
    usage = certificate.key_usage_value
    if certificate.ca:
        return False
    return usage is None or bool({"non_repudiation", "digital_signature"} & set(usage.native))


def find_identity(session, key_id: bytes | None = None) -> TokenIdentity:
    """The certificate to sign with: one whose private key is on the token, preferring nonRepudiation."""
    private_ids = {obj[Attribute.ID] for obj in session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY})}
    candidates, authorities = [], []
    for obj in session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE}):
        certificate = asn1_x509.Certificate.load(obj[Attribute.VALUE])
        if certificate.ca:
            authorities.append(certificate)
            continue
        identifier = obj[Attribute.ID]
        if identifier in private_ids and _signs_documents(certificate) and (key_id is None or identifier == key_id):
            candidates.append(TokenIdentity(certificate, identifier, str(obj[Attribute.LABEL])))
    if not candidates:
        raise SigningFailed("the USB key holds no certificate for signing documents with a private key beside it")

    def preference(identity: TokenIdentity):
        usage = set(identity.certificate.key_usage_value.native if identity.certificate.key_usage_value else [])
        return ("non_repudiation" not in usage, -identity.certificate.not_valid_after.timestamp())

    chosen = sorted(candidates, key=preference)[0]
    chosen.chain = _chain(chosen.certificate, authorities)
    return chosen


def _chain(leaf: asn1_x509.Certificate, authorities: list[asn1_x509.Certificate]) -> list[asn1_x509.Certificate]:
    """The leaf's issuers among the CA certificates on the token, nearest first, up to a self-signed one."""
    chain, current = [], leaf
    while current.subject != current.issuer:
        issuer = next((a for a in authorities if a.subject == current.issuer and a not in chain), None)
        if issuer is None:
            break
        chain.append(issuer)
        current = issuer
    return chain


def pkcs11_signer(session, identity: TokenIdentity) -> PKCS11Signer:
    return PKCS11Signer(
        session,
        key_id=identity.key_id,
        signing_cert=identity.certificate,
        other_certs_to_pull=None,
        ca_chain=identity.chain,
        use_raw_mechanism=identity.is_ec,
    )


def sign_pdf(data: bytes, signer: PKCS11Signer, *, level: str = "B-B", tsa_url: str | None = None, reason: str | None = None) -> bytes:
    """Sign ``data`` on the token (PAdES B-B, or B-T with ``tsa_url``, e.g. the server's ``/pki/tsa``), invisibly."""
    if level not in LEVELS:
        raise SigningFailed(f"locally only {' and '.join(LEVELS)} can be made; use sign-remote for B-LT/B-LTA")
    if level == "B-T" and not tsa_url:
        raise SigningFailed("B-T needs a time-stamping authority (--tsa URL)")
    try:
        writer = IncrementalPdfFileWriter(io.BytesIO(data), strict=False)
        if writer.prev.encrypted:
            raise SigningFailed("the PDF is encrypted; sign an unencrypted copy")
    except PdfError as exc:
        raise SigningFailed(f"not a readable PDF: {exc}") from None
    existing = {s.field_name for s in PdfFileReader(io.BytesIO(data), strict=False).embedded_signatures}
    name, counter = "Signature", 1
    while name in existing:
        counter += 1
        name = f"Signature-{counter}"
    meta = signers.PdfSignatureMetadata(
        field_name=name,
        md_algorithm="sha256",
        subfilter=fields.SigSeedSubFilter.PADES,
        reason=reason,
    )
    timestamper = HTTPTimeStamper(tsa_url) if level == "B-T" else None
    output = signers.PdfSigner(meta, signer, timestamper=timestamper).sign_pdf(writer)
    return output.getvalue()


def sign_bytes(signer: PKCS11Signer, data: bytes) -> bytes:
    """What the key signs for remote signing: ``data`` with SHA-256 (ECDSA or PKCS#1 v1.5), DER-encoded."""
    return asyncio.run(signer.async_sign_raw(data, "sha256"))


def _post(url: str, body: dict, token: str) -> dict:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}", "Accept": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            problem = json.loads(exc.read())
            detail = problem.get("detail") or problem.get("title")
        except ValueError:
            detail = exc.reason
        raise SigningFailed(f"the server refused ({exc.code}): {detail}") from None
    except urllib.error.URLError as exc:
        raise SigningFailed(f"cannot reach {url}: {exc.reason}") from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_remote(
    server: str,
    access_token: str,
    data: bytes,
    signer: PKCS11Signer,
    identity: TokenIdentity,
    *,
    level: str = "B-LT",
    expected_identifier: str | None = None,
    reason: str | None = None,
) -> dict:
    """Prepare on the server, sign ``to_sign`` on the token, finish on the server; the server's answer with ``pdf`` decoded."""
    base = server.rstrip("/")
    body = {
        "pdf": _b64(data),
        "certificate": _b64(identity.certificate.dump()),
        "chain": [_b64(c.dump()) for c in identity.chain],
        "level": level,
    }
    if expected_identifier:
        body["expected_identifier"] = expected_identifier
    if reason:
        body["reason"] = reason
    prepared = _post(base + "/api/sign/remote", body, access_token)
    signature = sign_bytes(signer, _unb64url(prepared["to_sign"]))
    finished = _post(base + prepared["finish"], {"signature": _b64(signature)}, access_token)
    finished["pdf"] = base64.b64decode(finished["pdf"])
    return finished
