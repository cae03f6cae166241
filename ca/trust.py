"""The trust store: external CAs we recognise (the provincial CA, other cities' CAs).

A recognised CA is either

* an **anchor** (``how="anchor"``): its certificate is trusted as it is, like our
  own root. It may be a self-signed root or an intermediate; for an intermediate,
  paths end at it and whatever issued it is never looked at.
* **cross-certified** (``how="cross-certified"``, see :mod:`ca.crosscert`): our root
  issued a cross-certificate to it, so its certificates chain to our root under the
  path-length and name constraints written into that cross-certificate. It is *not*
  an anchor of its own.

Each carries a revocation policy for the certificates below it, applied by
:mod:`ca.validation`: ``hard`` (fail closed when its CRL/OCSP cannot be had) or
``soft`` (accept, with a note).

:func:`snapshot` is the store as every relying party of ours reads it (certificate
login and path validation through :mod:`ca.validation`, signature validation and
signing through ``signing.trust``): built here and nowhere else, cached per process.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import threading
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime

from asn1crypto import crl as asn1_crl
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from pyhanko_certvalidator.authority import CertTrustAnchor, TrustQualifiers, derive_quals_from_cert
from pyhanko_certvalidator.ltv.poe import KnownPOE, POEType, digest_for_poe
from pyhanko_certvalidator.policy_decl import PKIXValidationParams
from pyhanko_certvalidator.registry import SimpleTrustManager
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ca import identity as ca_identity
from ca import revocation
from ca.context import CAContext
from ca.models import CRL, Authority, Certificate, RecognisedCA
from core import audit
from core.problems import Problem

MAX_CERTIFICATE_BYTES = 64 * 1024
MAX_NOTE_CHARS = 2000
POLICIES = ("hard", "soft")
_HEX = re.compile(r"^[0-9a-f]{16,64}$")


def _bad(detail: str) -> Problem:
    return Problem(400, "Bad Request", detail)


def _unprocessable(detail: str) -> Problem:
    return Problem(422, "Unprocessable Content", detail)


def _conflict(detail: str) -> Problem:
    return Problem(409, "Conflict", detail)


def fingerprint(certificate: x509.Certificate) -> str:
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def load_certificate(data: bytes | str) -> x509.Certificate:
    """One X.509 certificate from PEM, DER or base64 DER; a 400 problem saying why otherwise."""
    if isinstance(data, str):
        data = data.encode("ascii", "replace")
    if len(data) > MAX_CERTIFICATE_BYTES:
        raise _bad(f"the certificate is larger than {MAX_CERTIFICATE_BYTES // 1024} KiB")
    try:
        if data[:1] == b"\x30":
            # DER as it is: stripping "whitespace" would eat a final signature octet 0x20 or 0x0a.
            return x509.load_der_x509_certificate(data)
        stripped = data.strip()
        if stripped.startswith(b"-----BEGIN"):
            certificates = x509.load_pem_x509_certificates(stripped)
            if len(certificates) != 1:
                raise _bad(f"the file holds {len(certificates)} certificates; give one CA certificate per file")
            return certificates[0]
        return x509.load_der_x509_certificate(base64.b64decode(stripped, validate=True))
    except (ValueError, binascii.Error):
        raise _bad("that is not an X.509 certificate in PEM, DER or base64") from None


@dataclass(frozen=True)
class CAFacts:
    """What :func:`inspect_ca_certificate` found out about an external CA certificate."""

    certificate: x509.Certificate
    fingerprint: str
    self_signed: bool


def inspect_ca_certificate(data: bytes | str, *, now: datetime | None = None) -> CAFacts:
    """Load an external CA certificate and refuse what cannot serve as one (400/422 problems)."""
    certificate = load_certificate(data)
    subject = certificate.subject.rfc4514_string() or "(empty subject)"
    if certificate.version != x509.Version.v3:
        raise _unprocessable(f"{subject} is an X.509 v1 certificate; a CA certificate must be v3 with basicConstraints and keyUsage")
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise _unprocessable(f"{subject} has no basicConstraints extension, so it is not a CA certificate") from None
    except ValueError as exc:  # duplicate or malformed extensions
        raise _unprocessable(f"{subject} has malformed extensions: {exc}") from None
    if not constraints.ca:
        raise _unprocessable(f"{subject} is not a CA certificate (basicConstraints cA is false)")
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise _unprocessable(f"{subject} has no keyUsage extension; a CA certificate needs keyCertSign") from None
    if not usage.key_cert_sign:
        raise _unprocessable(f"{subject} may not sign certificates (keyUsage lacks keyCertSign)")
    try:
        public_key = certificate.public_key()
    except (UnsupportedAlgorithm, ValueError):
        # SM2 (GM/T 0003) keys land here: neither cryptography nor pyHanko can verify them.
        raise _unprocessable(
            f"{subject} uses a public-key algorithm this service cannot verify (RSA, ECDSA and EdDSA are supported)"
        ) from None
    if isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size < 2048:
        raise _unprocessable(f"{subject} has a {public_key.key_size}-bit RSA key; at least 2048 bits are required")
    if not isinstance(public_key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        raise _unprocessable(f"{subject} uses a {type(public_key).__name__} key; only RSA, ECDSA and EdDSA CA keys are supported")
    now = now or datetime.now(UTC)
    if certificate.not_valid_after_utc <= now:
        raise _unprocessable(f"{subject} expired on {certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    if certificate.not_valid_before_utc > now:
        raise _unprocessable(f"{subject} is not valid until {certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    self_signed = False
    if certificate.issuer == certificate.subject:
        try:
            certificate.verify_directly_issued_by(certificate)
            self_signed = True
        except InvalidSignature:
            raise _unprocessable(f"{subject} names itself as issuer but its signature does not verify with its own key") from None
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise _unprocessable(f"{subject} names itself as issuer but its self-signature cannot be checked") from None
    return CAFacts(certificate, fingerprint(certificate), self_signed)


def refuse_our_own(session, certificate: x509.Certificate) -> None:
    """409 when ``certificate`` is one of our CAs (same certificate, or same subject and key), or was issued by one.

    A certificate one of our CAs issued (a cross-certificate, say) is trusted through
    our root with its revocation checked; as an anchor of its own it would escape that.
    """
    der = certificate.public_bytes(serialization.Encoding.DER)
    spki = certificate.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    subject = certificate.subject.rfc4514_string()
    for name, own_der in session.execute(select(Authority.name, Authority.certificate)):
        own = x509.load_der_x509_certificate(own_der)
        own_spki = own.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if own_der == der or (own.subject == certificate.subject and own_spki == spki):
            raise _conflict(f"{subject} is Hallmark's own {name!r} CA; it is trusted already")
        if certificate.issuer == own.subject:
            try:
                certificate.verify_directly_issued_by(own)
            except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
                continue
            raise _conflict(f"{subject} was issued by Hallmark's own {name!r} CA; it is trusted through our root already")


def _describe_existing(row: RecognisedCA) -> str:
    how = "as a trust anchor" if row.how == "anchor" else "through a cross-certificate from our root"
    return f"{row.subject} is already recognised {how} (since {row.added_at:%Y-%m-%d}, by {row.added_by})"


def check_policy(revocation_policy: str) -> str:
    if revocation_policy not in POLICIES:
        raise _bad(f"revocation policy must be one of {', '.join(POLICIES)}, not {revocation_policy!r}")
    return revocation_policy


def check_note(note: str) -> str:
    note = (note or "").strip()
    if len(note) > MAX_NOTE_CHARS:
        raise _bad(f"the note is longer than {MAX_NOTE_CHARS} characters")
    return note


def add_anchor(ctx: CAContext, data: bytes, *, actor: str, revocation_policy: str = "hard", note: str = "") -> RecognisedCA:
    """Recognise an external CA certificate as a trust anchor (stored and audited in one transaction)."""
    check_policy(revocation_policy)
    note = check_note(note)
    facts = inspect_ca_certificate(data)
    certificate = facts.certificate
    subject = certificate.subject.rfc4514_string()
    with ctx.sessions() as session:
        try:
            with session.begin():
                refuse_our_own(session, certificate)
                existing = session.get(RecognisedCA, facts.fingerprint)
                if existing is not None:
                    raise _conflict(_describe_existing(existing))
                row = RecognisedCA(
                    fingerprint=facts.fingerprint,
                    subject=subject[:400],
                    der=certificate.public_bytes(serialization.Encoding.DER),
                    how="anchor",
                    revocation_policy=revocation_policy,
                    added_at=datetime.now(UTC),
                    added_by=actor[:200],
                    note=note,
                )
                session.add(row)
                session.flush()
                audit.record(
                    session,
                    actor=actor,
                    action="ca.trust.added",
                    target=facts.fingerprint,
                    details={
                        "subject": subject[:400],
                        "kind": "root" if facts.self_signed else "intermediate",
                        "issuer": certificate.issuer.rfc4514_string()[:400],
                        "revocation_policy": revocation_policy,
                        "not_after": certificate.not_valid_after_utc.isoformat(),
                    },
                )
        except IntegrityError:
            # Someone else added the same certificate between our check and our insert.
            raise _conflict(f"{subject} is already recognised") from None
    return row


def anchor_kind(row: RecognisedCA) -> str:
    """ "self-signed root" or "intermediate issued by ..." for a stored recognised CA."""
    certificate = x509.load_der_x509_certificate(row.der)
    if certificate.issuer == certificate.subject:
        return "self-signed root"
    return f"intermediate issued by {certificate.issuer.rfc4514_string()}"


def list_anchors(ctx: CAContext) -> list[RecognisedCA]:
    """Every recognised external CA, anchors and cross-certified, oldest first."""
    with ctx.sessions() as session:
        return list(session.scalars(select(RecognisedCA).order_by(RecognisedCA.added_at, RecognisedCA.fingerprint)))


def _normalise_fingerprint(text: str) -> str:
    cleaned = (text or "").strip().lower().replace(":", "").replace(" ", "")
    if not _HEX.match(cleaned):
        raise _bad(f"{text!r} is not a SHA-256 fingerprint (64 hex digits, or at least the first 16)")
    return cleaned


def find(session, text: str) -> RecognisedCA:
    """The recognised CA with this fingerprint or unambiguous fingerprint prefix (as ``trust list`` shows)."""
    wanted = _normalise_fingerprint(text)
    if len(wanted) == 64:
        row = session.get(RecognisedCA, wanted)
        rows = [row] if row is not None else []
    else:
        rows = list(session.scalars(select(RecognisedCA).where(RecognisedCA.fingerprint.startswith(wanted)).limit(2)))
    if not rows:
        raise Problem(404, "Not Found", f"no recognised CA has the fingerprint {wanted}")
    if len(rows) > 1:
        raise _bad(f"{wanted} matches more than one recognised CA; give more of the fingerprint")
    return rows[0]


def cross_certificates_for(session, external: x509.Certificate) -> list[Certificate]:
    """Our cross-certificates whose subject and key are those of ``external``."""
    spki = external.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    found = []
    for row in session.scalars(select(Certificate).where(Certificate.authority == "root", Certificate.profile == "cross-certificate")):
        issued = x509.load_der_x509_certificate(row.der)
        if (
            issued.subject == external.subject
            and issued.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == spki
        ):
            found.append(row)
    return found


def remove_anchor(ctx: CAContext, fingerprint: str, actor: str) -> RecognisedCA:
    """Stop recognising an external CA.

    For a cross-certified CA the cross-certificates still in force are revoked first
    (cessationOfOperation), because they would otherwise keep the CA trusted by every
    relying party that trusts our root, whatever our own store says.
    """
    with ctx.sessions() as session:
        row = find(session, fingerprint)
        revoke = []
        if row.how == "cross-certified":
            revoke = [c.serial for c in cross_certificates_for(session, x509.load_der_x509_certificate(row.der)) if c.status == "valid"]
    for serial in revoke:
        revocation.revoke(ctx, serial, "cessationOfOperation", actor=actor)
    with ctx.sessions() as session, session.begin():
        row = session.get(RecognisedCA, row.fingerprint, with_for_update=True)
        if row is None:
            raise Problem(404, "Not Found", f"no recognised CA has the fingerprint {fingerprint}")
        session.delete(row)
        audit.record(
            session,
            actor=actor,
            action="ca.trust.removed",
            target=row.fingerprint,
            details={"subject": row.subject, "how": row.how, "revoked_cross_certificates": revoke},
        )
    return row


# -- the trust store as relying parties read it ----------------------------------------------
#
# Certificate login, path validation (ca.validation), signature validation reports and remote
# signing (signing.trust) all read this one parsed store, so they cannot disagree about which
# CAs are trusted: our root, the recognised anchors, and below our root our issuing CAs and
# the cross-certificates of the CAs still recognised as cross-certified. It is parsed once per
# process and context and re-read when small queries show a change: an authority, a row of the
# recognised CAs (added, removed, its policy changed), the serials of our cross-certificates
# (only asked when a CA is cross-certified). Our current CRLs are kept beside it, re-read when a
# CRL number moves, so a revocation does not re-parse the store.


@dataclass(frozen=True)
class Anchor:
    """A trust anchor: our root or a CA recognised as an anchor."""

    fingerprint: str  # SHA-256 of its DER, hex
    subject: str  # for people, resident IDs masked
    how: str  # "hallmark" | "anchor"
    policy: str  # revocation policy below it: "hallmark" | "hard" | "soft"
    certificate: asn1_x509.Certificate = field(repr=False, compare=False)


@dataclass(frozen=True)
class Cross:
    """A cross-certificate of our root for a CA still recognised as cross-certified."""

    serial: str
    subject: str  # the cross-certified CA's, resident IDs masked
    policy: str  # that CA's revocation policy, for the certificates below it
    recognised: str  # fingerprint of the external CA's own certificate


@dataclass(frozen=True)
class TrustStore:
    """The parsed trust store; shared read-only by every thread of the process."""

    key: tuple
    trust_manager: SimpleTrustManager  # the anchors, each with its own constraints (see _anchor_qualifiers)
    anchors: dict  # SHA-256 digest of the anchor DER -> Anchor
    intermediates: tuple  # asn1crypto certificates: our issuing CAs and the cross-certificates above
    cross: dict  # SHA-256 digest -> Cross
    own_issuers: frozenset  # asn1crypto Name.hashable of every authority of ours
    known_poes: tuple  # KnownPOE: we have held these CA certificates since they were made or recognised

    def is_ours(self, certificate: asn1_x509.Certificate) -> bool:
        """Whether one of our authorities issued ``certificate``."""
        return certificate.issuer.hashable in self.own_issuers


@dataclass(frozen=True)
class RevocationData:
    """Our current CRLs, parsed."""

    key: tuple
    crls: tuple  # asn1crypto CertificateList, the current one of each authority
    next_update: dict  # authority name -> datetime


@dataclass(frozen=True)
class Snapshot:
    store: TrustStore
    revocation: RevocationData


class _Cache:
    def __init__(self):
        self.lock = threading.Lock()
        self.store: TrustStore | None = None
        self.revocation: RevocationData | None = None


_caches: dict[int, _Cache] = {}
_caches_lock = threading.Lock()


def _cache_for(ctx: CAContext) -> _Cache:
    cache = _caches.get(id(ctx))
    if cache is None:
        with _caches_lock:
            cache = _caches.get(id(ctx))
            if cache is None:
                cache = _caches[id(ctx)] = _Cache()
                # Forget the cache with its context, so a new context at the same id starts clean.
                weakref.finalize(ctx, _caches.pop, id(ctx), None)
    return cache


def _shared(item):
    """Parse an asn1crypto object completely before threads share it.

    asn1crypto parses lazily and fills a sequence's children in place, so a second
    thread could glimpse a half-parsed certificate (an extension "absent").
    """
    item.native  # noqa: B018 (the access itself forces the full parse)
    return item


def _anchor_qualifiers(certificate: asn1_x509.Certificate) -> TrustQualifiers:
    """The anchor's own validity, path length and name constraints apply (RFC 5937 style).

    Its certificatePolicies do not: pyHanko would turn them into an explicit-policy
    requirement, and a recognised CA is trusted for what it issues, not per policy.
    """
    derived = derive_quals_from_cert(certificate)
    params = None
    standard = derived.standard_parameters
    if standard is not None and (standard.initial_permitted_subtrees or standard.initial_excluded_subtrees):
        params = PKIXValidationParams(
            initial_permitted_subtrees=standard.initial_permitted_subtrees,
            initial_excluded_subtrees=standard.initial_excluded_subtrees,
        )
    return TrustQualifiers(
        standard_parameters=params,
        max_path_length=derived.max_path_length,
        valid_from=derived.valid_from,
        valid_until=derived.valid_until,
        trusted_service_type=derived.trusted_service_type,
    )


def _build_store(ctx: CAContext, session, key: tuple, authorities: list[str]) -> TrustStore:
    anchors, intermediates, own_issuers, poes = {}, [], set(), []
    root_name = None
    for name in authorities:
        loaded = ctx.authority(name, session)
        certificate = _shared(asn1_x509.Certificate.load(loaded.der))
        own_issuers.add(certificate.subject.hashable)
        poes.append(KnownPOE(POEType.PROVIDED, digest_for_poe(loaded.der), loaded.certificate.not_valid_before_utc))
        if loaded.role == "root":
            root_name = name
            subject = ca_identity.display_name(loaded.certificate.subject)
            anchors[certificate.sha256] = Anchor(certificate.sha256.hex(), subject, "hallmark", "hallmark", certificate)
        else:
            intermediates.append(certificate)
    cross_certified = {}
    for row in session.scalars(select(RecognisedCA)):
        certificate = _shared(asn1_x509.Certificate.load(row.der))
        poes.append(KnownPOE(POEType.PROVIDED, digest_for_poe(row.der), row.added_at))
        if row.how == "anchor":
            subject = ca_identity.display_subject(row.der)
            anchors[certificate.sha256] = Anchor(row.fingerprint, subject, "anchor", row.revocation_policy, certificate)
        else:
            cross_certified[(certificate.subject.hashable, certificate.public_key.dump())] = row
    cross = {}
    if cross_certified and root_name is not None:
        query = select(Certificate.serial, Certificate.der, Certificate.issued_at).where(
            Certificate.authority == root_name, Certificate.profile == "cross-certificate"
        )
        for serial, der, issued_at in session.execute(query):
            certificate = _shared(asn1_x509.Certificate.load(der))
            row = cross_certified.get((certificate.subject.hashable, certificate.public_key.dump()))
            if row is None:
                continue  # its CA was taken out of the trust store
            # Revoked or expired ones stay: the path check then says so, which says more than "untrusted".
            intermediates.append(certificate)
            cross[certificate.sha256] = Cross(serial, ca_identity.display_subject(row.der), row.revocation_policy, row.fingerprint)
            poes.append(KnownPOE(POEType.PROVIDED, digest_for_poe(der), issued_at))
    manager = SimpleTrustManager.build(
        trust_roots=[CertTrustAnchor(anchor.certificate, quals=_anchor_qualifiers(anchor.certificate)) for anchor in anchors.values()]
    )
    return TrustStore(key, manager, anchors, tuple(intermediates), cross, frozenset(own_issuers), tuple(poes))


def _build_revocation(session, key: tuple) -> RevocationData:
    crls, next_update = [], {}
    for name, number in key:
        row = session.get(CRL, (name, number)) if number else None
        if row is not None:
            crls.append(_shared(asn1_crl.CertificateList.load(row.der)))
            next_update[name] = row.next_update
    return RevocationData(key, tuple(crls), next_update)


def snapshot(ctx: CAContext, session=None) -> Snapshot:
    """The trust store and our CRLs as they stand; parsed again only when the database says they changed."""
    if session is None:
        with ctx.sessions() as own:
            return snapshot(ctx, own)
    cache = _cache_for(ctx)
    numbers = tuple(sorted(tuple(row) for row in session.execute(select(Authority.name, Authority.crl_number))))
    recognised = frozenset(
        tuple(row)
        for row in session.execute(
            select(RecognisedCA.fingerprint, RecognisedCA.how, RecognisedCA.revocation_policy, RecognisedCA.added_at)
        )
    )
    crossed = ()
    if any(how == "cross-certified" for _, how, _, _ in recognised):
        # A new cross-certificate for a CA recognised already (re-certified after a revocation) changes no row above.
        query = select(Certificate.serial).where(Certificate.authority == "root", Certificate.profile == "cross-certificate")
        crossed = tuple(sorted(session.scalars(query)))
    store_key = (tuple(name for name, _ in numbers), recognised, crossed)
    store, revocation = cache.store, cache.revocation
    if store is not None and store.key == store_key and revocation is not None and revocation.key == numbers:
        return Snapshot(store, revocation)
    with cache.lock:
        if cache.store is None or cache.store.key != store_key:
            cache.store = _build_store(ctx, session, store_key, [name for name, _ in numbers])
        if cache.revocation is None or cache.revocation.key != numbers:
            cache.revocation = _build_revocation(session, numbers)
        return Snapshot(cache.store, cache.revocation)


def trust_store(ctx: CAContext, session=None) -> TrustStore:
    """The current trust store alone (see :func:`snapshot`)."""
    return snapshot(ctx, session).store
