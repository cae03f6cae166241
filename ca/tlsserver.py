"""A TLS server certificate from our own CA for the proxy in front of Hallmark, kept current.

:func:`ensure` keeps three files in one folder, for a TLS terminator such as the nginx
of ``docker/compose.yaml``:

``server.key``
    the server's key (EC P-256, PKCS#8 PEM, owner-only). Made here, in software, not in
    the HSM: the proxy reads it from this file. It never leaves the folder.
``fullchain.pem``
    the certificate (profile ``server-tls``) followed by the CA that issued it: what a
    TLS server sends.
``root.pem``
    our root CA, for clients to trust (``curl --cacert root.pem``).

A new key and certificate are made when there is no certificate, when it does not
match the key, was not issued by our current issuing CA, names other hosts than
asked, is revoked, or has fewer than ``renew_days`` left; otherwise nothing is
written. Issuance goes through :func:`ca.issuance.issue`, so the certificate is
recorded, audited and has its OCSP response like any other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ca import issuance, profiles, queries
from ca.context import CAContext
from core.problems import Problem

PROFILE = "server-tls"
KEY_FILE = "server.key"
CHAIN_FILE = "fullchain.pem"
ROOT_FILE = "root.pem"


@dataclass(frozen=True)
class Outcome:
    issued: bool  # False: the certificate in the folder was kept
    reason: str  # why a new one was issued, or why the old one is still good
    serial: str
    not_after: datetime
    sans: tuple[str, ...]


def split_names(values) -> tuple[str, ...]:
    """Host names and addresses from values that may each hold several, comma or space separated."""
    return tuple(name for value in values for name in str(value).replace(",", " ").split())


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _san_set(general_names) -> set[str]:
    return {str(name.value) for name in general_names}


def _why_renew(
    ctx: CAContext, folder: Path, wanted: set[str], renew_days: int, now: datetime
) -> tuple[str | None, x509.Certificate | None]:
    """Why the folder needs a new certificate (None: it does not), and the certificate it holds."""
    try:
        chain = x509.load_pem_x509_certificates((folder / CHAIN_FILE).read_bytes())
        key = serialization.load_pem_private_key((folder / KEY_FILE).read_bytes(), password=None)
    except FileNotFoundError:
        return "no certificate yet", None
    except (OSError, ValueError) as exc:
        return f"the files cannot be read ({exc})", None
    leaf = chain[0]
    issuer = ctx.authority(profiles.get(PROFILE).issuer)
    if leaf.public_key() != key.public_key():
        return "the certificate does not match the key", leaf
    if chain[1:] != [issuer.certificate]:
        return "the chain is not our current issuing CA", leaf
    try:
        leaf.verify_directly_issued_by(issuer.certificate)
    except (InvalidSignature, ValueError, TypeError):
        return "the certificate was not issued by our current issuing CA", leaf
    try:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "the certificate names no hosts", leaf
    if _san_set(names) != wanted:
        return f"it names {', '.join(sorted(_san_set(names)))}, not {', '.join(sorted(wanted))}", leaf
    try:
        row = queries.get(ctx, format(leaf.serial_number, "x"))
    except Problem:
        return "the certificate is not in our database", leaf
    status = queries.status_of(row, now)
    if status != "valid":
        return f"the certificate is {status}", leaf
    if leaf.not_valid_after_utc - now < timedelta(days=renew_days):
        return f"it expires on {leaf.not_valid_after_utc:%Y-%m-%d}, within {renew_days} days", leaf
    return None, leaf


def _write(path: Path, data: bytes, mode: int) -> None:
    """``data`` into ``path`` with ``mode``, replacing it at once (a reader sees the old file or the new one)."""
    temporary = path.with_name(f".{path.name}.new")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def ensure(ctx: CAContext, folder: Path, sans, *, name: str, renew_days: int = 30, actor: str) -> Outcome:
    """Keep a current ``server-tls`` key and certificate for ``sans`` in ``folder`` (see the module's text)."""
    names = split_names(sans)
    if not names:
        raise issuance.bad("a server-tls certificate needs at least one DNS name or IP address (san)")
    wanted = _san_set(issuance.parse_sans(names))
    folder.mkdir(mode=0o750, parents=True, exist_ok=True)
    now = datetime.now(UTC)
    reason, current = _why_renew(ctx, folder, wanted, renew_days, now)
    root = ctx.authority("root").certificate
    if reason is None:
        root_file = folder / ROOT_FILE
        if not root_file.exists() or root_file.read_bytes() != _pem(root):
            _write(root_file, _pem(root), 0o644)
        return Outcome(False, "current", format(current.serial_number, "x"), current.not_valid_after_utc, names)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))  # the CA writes its own subject
        .sign(key, hashes.SHA256())
    )
    row, certificate = issuance.issue(
        ctx, PROFILE, csr.public_bytes(serialization.Encoding.PEM), issuance.Identity(name=name, sans=names), actor=actor
    )
    issuer = ctx.authority(row.authority).certificate
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    _write(folder / KEY_FILE, key_pem, 0o600)
    _write(folder / CHAIN_FILE, _pem(certificate) + _pem(issuer), 0o644)
    _write(folder / ROOT_FILE, _pem(root), 0o644)
    return Outcome(True, reason, row.serial, certificate.not_valid_after_utc, names)
