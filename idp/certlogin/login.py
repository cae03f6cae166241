"""Certificate (USB-key) login: level 3, ``amr`` ``hwk``.

How it goes, the way Chinese USB-key logins work:

1. The login (or step-up) page asks for a challenge. It is random, lives two
   minutes, is stored only as a hash and is bound to this browser: a keyed hash of
   the browser's CSRF cookie (every page of ours sets one, before any login) and of
   its SSO session id when it has one. The text to sign is exactly
   ``hallmark-login/1 <origin> <nonce> <expires-unix>``, origin being the IdP's
   public origin, so a signature made for another site is worth nothing here.
2. The page hands the text to the local agent (``hallmark-key serve``), which
   signs it with the key on the USB key and returns the signature with the
   certificate and its chain.
3. The page posts them back. :func:`complete` consumes the challenge atomically
   (single use, unexpired, this browser), checks the signature over the exact
   bytes, the certificate's key usage (digitalSignature) and extended key usage
   (clientAuth, when the certificate restricts it), then the path to a recognised
   CA with revocation (:func:`ca.validation.validate`: our CAs, recognised anchors,
   cross-certified CAs), and finally the identity (read by :func:`ca.identity.identity_of`):
   the certificate's resident ID (serialNumber ``IDCCN-...`` or the 1.2.156.10260.4.1.1 extension) must be the
   one the account was real-name verified with, compared by keyed hash. A first
   certificate login binds the certificate to the account that is verified with
   that ID. An enterprise certificate (organizationIdentifier ``NTRCN-...`` or the
   1.2.156.10260.4.4 extension) proves the enterprise's key for a person who is
   already signed in and is its representative or authorised agent
   (:mod:`idp.people.enterprises`).

Second path: a TLS client certificate that a trusted reverse proxy verified and
forwarded in a header (as nginx's ``$ssl_client_escaped_cert``). It is accepted
only when the request's peer address is one of ``trusted_proxies``; the same checks
apply except the challenge, since the TLS handshake proved the key.

Every success and refusal goes to the audit trail; a refusal binds nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import unquote, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.x509.oid import ExtendedKeyUsageOID
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ca import identity as ca_identity
from ca import validation
from ca.context import CAContext
from ca.identity import CertificateIdentity
from ca.models import Certificate as IssuedCertificate
from core import audit, jsonlimits, ratelimit
from core import db as core_db
from core.db import utc_now
from idp import levels
from idp.context import IdPContext
from idp.i18n import N_, Refusal
from idp.models import Account, CertificateBinding, IdentityProofing, LoginChallenge, SSOSession
from idp.people import accounts, sessions

log = logging.getLogger("hallmark.idp.certlogin")

CHALLENGE_PREFIX = "hallmark-login/1"
CHALLENGE_LIFETIME = timedelta(minutes=2)
PURPOSES = ("login", "step-up", "enterprise")
ALGORITHMS = {"ecdsa-with-SHA256": ec.EllipticCurvePublicKey, "sha256WithRSAEncryption": rsa.RSAPublicKey}
# What a USB key may send: a leaf and a short chain, each of ordinary size.
MAX_CERTIFICATE_BYTES = 8 * 1024
MAX_CHAIN = 4
MAX_TOTAL_BYTES = 24 * 1024
MAX_SIGNATURE_BYTES = 1024  # RSA-4096 needs 512
MAX_CHALLENGE_CHARS = 300
EXPIRING_SOON = timedelta(days=30)
# Profiles of our own CA that may log in; others (signature, seal, TLS) may not.
LOGIN_PROFILES = {"person": "person-auth", "enterprise": "enterprise-auth"}
DEFAULT_AGENT_PORT = 17443
DEFAULT_CLIENT_CERT_HEADER = "X-SSL-Client-Cert"

_B64 = re.compile(r"^[A-Za-z0-9+/_\-]*={0,2}$")
_NONCE = re.compile(r"^[A-Za-z0-9_\-]{32}$")


class CertLoginRefusal(Refusal):
    """A certificate login refused; ``code`` names the check that failed (also in the audit trail)."""

    status = 400


# --------------------------------------------------------------------------- settings of a deployment


@dataclass(frozen=True)
class Options:
    """The deployment's certificate-login settings (from ``core.settings``)."""

    origin: str  # the IdP's public origin as browsers see it
    agent_port: int = DEFAULT_AGENT_PORT
    client_cert_header: str = DEFAULT_CLIENT_CERT_HEADER
    trusted_proxies: tuple = ()  # ip_network objects; empty: the proxy path is off

    @property
    def agent_url(self) -> str:
        return f"http://127.0.0.1:{self.agent_port}"


def origin_of(public_url: str) -> str:
    parts = urlsplit(public_url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def parse_proxies(text: str | list | tuple) -> tuple:
    """``trusted_proxies`` as networks: addresses or CIDR blocks, comma or space separated."""
    items = text if isinstance(text, (list, tuple)) else re.split(r"[\s,]+", text or "")
    networks = []
    for item in items:
        item = str(item).strip()
        if item:
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(f"trusted_proxies: {item!r} is not an IP address or network") from None
    return tuple(networks)


def options_from(settings) -> Options:
    return Options(
        origin=origin_of(settings.public_url),
        agent_port=int(getattr(settings, "cert_agent_port", DEFAULT_AGENT_PORT)),
        client_cert_header=getattr(settings, "client_cert_header", DEFAULT_CLIENT_CERT_HEADER) or DEFAULT_CLIENT_CERT_HEADER,
        trusted_proxies=parse_proxies(getattr(settings, "trusted_proxies", "")),
    )


def from_trusted_proxy(options: Options, remote_addr: str | None) -> bool:
    if not options.trusted_proxies or not remote_addr:
        return False
    try:
        address = ipaddress.ip_address(remote_addr)
    except ValueError:
        return False
    return any(address in network for network in options.trusted_proxies)


# --------------------------------------------------------------------------- challenges


def browser_binding(ctx: IdPContext, browser_secret: str, sid: str | None) -> str:
    """A keyed hash naming one browser (its CSRF cookie value) and its session, if any."""
    message = b"hallmark.certlogin.browser\x00" + browser_secret.encode() + b"\x00" + (sid or "").encode()
    return hmac.new(ctx.secret_key, message, hashlib.sha256).hexdigest()


def _nonce_hash(nonce: str) -> str:
    return hashlib.sha256(nonce.encode()).hexdigest()


@dataclass(frozen=True)
class Challenge:
    text: str
    nonce: str
    expires: int  # unix seconds


def challenge_limiter(ctx: IdPContext):
    """Challenges per client address (each is a stored row): the ``cert_challenge`` limit of the idp section."""
    return accounts.limiter(ctx, "idp.certlogin.challenge", ctx.settings.limit("cert_challenge"))


def issue_challenge(db: Session, ctx: IdPContext, options: Options, *, browser: str, purpose: str, ip: str = "") -> Challenge:
    """A fresh challenge for this browser. Not audited: one is fetched for every click; limited per address."""
    if purpose not in PURPOSES:
        raise CertLoginRefusal(N_("The USB-key login was asked for an unknown purpose."), code="bad_purpose")
    wait = challenge_limiter(ctx).attempt(ip, db=db)  # in the caller's transaction, which holds SQLite's write lock
    if wait > 0:
        raise CertLoginRefusal(
            N_("Too many sign-in attempts from this address. Wait a minute and try again."),
            code="rate_limited",
            status=429,
            retry_after=ratelimit.retry_after(wait),
        )
    nonce = secrets.token_urlsafe(24)  # 32 characters
    now = utc_now()
    expires = now + CHALLENGE_LIFETIME
    db.add(LoginChallenge(nonce_hash=_nonce_hash(nonce), browser_hash=browser, purpose=purpose, created_at=now, expires_at=expires))
    if secrets.randbelow(50) == 0:  # now and then, forget challenges long gone
        db.execute(LoginChallenge.__table__.delete().where(LoginChallenge.expires_at < now - timedelta(hours=1)))
    stamp = int(expires.timestamp())
    return Challenge(f"{CHALLENGE_PREFIX} {options.origin} {nonce} {stamp}", nonce, stamp)


def _parse_challenge(options: Options, text: str) -> tuple[str, int]:
    parts = text.split(" ") if isinstance(text, str) and len(text) <= MAX_CHALLENGE_CHARS else []
    if len(parts) != 4 or parts[0] != CHALLENGE_PREFIX or not _NONCE.match(parts[2]) or not parts[3].isdigit():
        raise CertLoginRefusal(N_("The signed challenge is malformed. Reload the page and try again."), code="challenge_malformed")
    if parts[1] != options.origin:
        raise CertLoginRefusal(
            N_("The challenge was made for another site, so the signature is not accepted here."), code="challenge_origin"
        )
    return parts[2], int(parts[3])


def consume_challenge(db: Session, options: Options, text: str, *, browser: str) -> LoginChallenge:
    """Mark the challenge used, atomically; a refusal says why it cannot be (unknown, used, expired, another browser)."""
    nonce, stamp = _parse_challenge(options, text)
    digest = _nonce_hash(nonce)
    now = utc_now()
    won = db.execute(
        update(LoginChallenge)
        .where(
            LoginChallenge.nonce_hash == digest,
            LoginChallenge.used_at.is_(None),
            LoginChallenge.browser_hash == browser,
            LoginChallenge.expires_at > now,
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    row = db.get(LoginChallenge, digest)
    if row is not None:
        db.refresh(row)
    unknown = CertLoginRefusal(N_("This sign-in challenge is not known here. Reload the page and try again."), code="challenge_unknown")
    if row is None:
        raise unknown
    if won == 1:
        if int(row.expires_at.timestamp()) != stamp:  # the text was altered; the challenge is spent all the same
            raise unknown
        return row
    if row.used_at is not None:
        raise CertLoginRefusal(N_("This sign-in challenge has already been used. Each one works only once."), code="challenge_replayed")
    if row.browser_hash != browser:
        raise CertLoginRefusal(
            N_("This sign-in challenge was issued to another browser or session, so it is not accepted here."), code="challenge_foreign"
        )
    raise CertLoginRefusal(N_("This sign-in challenge has expired. Try again; it is valid for two minutes."), code="challenge_expired")


# --------------------------------------------------------------------------- what was sent


@dataclass
class Submission:
    """A signature and a certificate chain as received (agent path), or a certificate alone (proxy path)."""

    certificate: x509.Certificate
    chain: list[x509.Certificate]
    der: bytes
    signature: bytes = b""
    algorithm: str = ""
    challenge: str = ""

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.der).hexdigest()


def _malformed(what: str) -> CertLoginRefusal:
    return CertLoginRefusal(N_("What the USB key sent is malformed (%(what)s), so nothing was done."), code="malformed", what=what)


def _b64(value, what: str, limit: int) -> bytes:
    if not isinstance(value, str) or not value.strip():
        raise _malformed(what)
    if len(value) > limit * 4 // 3 + 8:
        raise _too_large(what)
    text = value.strip()
    if not _B64.match(text):
        raise _malformed(what)
    try:
        text = text.replace("-", "+").replace("_", "/")
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise _malformed(what) from None


def _too_large(what: str) -> CertLoginRefusal:
    return CertLoginRefusal(
        N_("What the USB key sent is too large (%(what)s), so nothing was done."), code="too_large", status=413, what=what
    )


def _certificate(der: bytes, what: str) -> x509.Certificate:
    if len(der) > MAX_CERTIFICATE_BYTES:
        raise _too_large(what)
    try:
        certificate = x509.load_der_x509_certificate(der)
        certificate.public_key()  # an unsupported key type fails here, not later
        certificate.extensions  # noqa: B018 (malformed or duplicate extensions fail here)
        return certificate
    except (ValueError, UnsupportedAlgorithm):
        raise _malformed(what) from None


def parse_submission(*, challenge, signature, algorithm, certificate, chain) -> Submission:
    """The agent path's fields, checked for shape and size before anything is computed."""
    if not isinstance(challenge, str) or not challenge:
        raise _malformed("challenge")
    if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
        raise _malformed("algorithm")
    signature_bytes = _b64(signature, "signature", MAX_SIGNATURE_BYTES)
    if len(signature_bytes) > MAX_SIGNATURE_BYTES:
        raise _too_large("signature")
    der = _b64(certificate, "certificate", MAX_CERTIFICATE_BYTES)
    if isinstance(chain, str):
        if len(chain) > MAX_TOTAL_BYTES * 2:
            raise _too_large("chain")
        try:
            chain = jsonlimits.loads(chain) if chain.strip() else []
        except ValueError:  # not JSON, or nested too deeply (jsonlimits.TooDeep)
            raise _malformed("chain") from None
    if chain is None:
        chain = []
    if not isinstance(chain, list) or not all(isinstance(item, str) for item in chain):
        raise _malformed("chain")
    if len(chain) > MAX_CHAIN:
        raise _too_large("chain")
    chain_der = [_b64(item, "chain", MAX_CERTIFICATE_BYTES) for item in chain]
    if len(der) + sum(len(d) for d in chain_der) > MAX_TOTAL_BYTES:
        raise _too_large("chain")
    leaf = _certificate(der, "certificate")
    return Submission(leaf, [_certificate(d, "chain") for d in chain_der], der, signature_bytes, algorithm, challenge)


def parse_forwarded(value: str) -> Submission:
    """The proxy path: a URL-encoded PEM (nginx ``$ssl_client_escaped_cert``), a PEM, or base64 DER."""
    if not isinstance(value, str) or not value.strip():
        raise _malformed("forwarded certificate")
    if len(value) > MAX_CERTIFICATE_BYTES * 3:
        raise _too_large("forwarded certificate")
    text = unquote(value.strip()) if "%" in value else value.strip()
    if text.startswith("-----BEGIN"):
        # Some proxies fold the PEM onto one line with spaces (Apache) or tabs.
        body = re.sub(r"-----(BEGIN|END) CERTIFICATE-----", "", text)
        der = _b64("".join(body.split()), "forwarded certificate", MAX_CERTIFICATE_BYTES)
    else:
        der = _b64("".join(text.split()), "forwarded certificate", MAX_CERTIFICATE_BYTES)
    return Submission(_certificate(der, "forwarded certificate"), [], der)


def verify_signature(submission: Submission) -> None:
    """The signature over the exact challenge bytes, by the certificate's key, with the announced algorithm."""
    key = submission.certificate.public_key()
    if not isinstance(key, ALGORITHMS[submission.algorithm]):
        raise CertLoginRefusal(N_("The signature's algorithm does not fit the certificate's key."), code="bad_signature")
    data = submission.challenge.encode("utf-8")
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(_der_ecdsa(submission.signature, key), data, ec.ECDSA(hashes.SHA256()))
        else:
            key.verify(submission.signature, data, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        raise CertLoginRefusal(
            N_(
                "The signature does not verify with the certificate's key: the USB key that signed is not the one this certificate belongs to."
            ),
            code="bad_signature",
        ) from None


def _der_ecdsa(signature: bytes, key: ec.EllipticCurvePublicKey) -> bytes:
    """ECDSA signatures come as DER or, straight from PKCS#11, as r||s; the library wants DER."""
    size = (key.curve.key_size + 7) // 8
    try:
        utils.decode_dss_signature(signature)
        return signature
    except ValueError:
        pass
    if len(signature) != 2 * size:
        raise ValueError("not an ECDSA signature")
    return utils.encode_dss_signature(int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big"))


# --------------------------------------------------------------------------- the certificate


# ca.identity's reasons -> (message, refusal code)
_IDENTITY_REFUSALS = {
    "identity_unreadable": (N_("The certificate's identifier extension cannot be read."), "identity_unreadable"),
    "identity_ambiguous": (N_("The certificate names both a person and an enterprise, so it is not accepted."), "identity_ambiguous"),
    "identity_conflicting": (N_("The certificate names two different identifiers, so it is not accepted."), "identity_ambiguous"),
    "identity_missing": (
        N_("The certificate carries no resident ID or unified social credit code, so it cannot identify an account."),
        "identity_missing",
    ),
    "identity_invalid": (N_("The identifier in the certificate is not a valid resident ID or credit code."), "identity_invalid"),
}


def identity_of(certificate: x509.Certificate) -> CertificateIdentity:
    """The person's resident ID or the enterprise's credit code the certificate names (:func:`ca.identity.identity_of`)."""
    try:
        return ca_identity.identity_of(certificate)
    except ca_identity.IdentityError as exc:
        message, code = _IDENTITY_REFUSALS[exc.code]
        raise CertLoginRefusal(message, code=code) from None


def check_usage(certificate: x509.Certificate) -> None:
    """Key usage digitalSignature, and clientAuth when the certificate lists extended key usages."""
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is None or not usage.digital_signature:
        raise CertLoginRefusal(
            N_(
                "This certificate may not be used to sign in: its key usage does not include digital signature (it may be a document-signing certificate)."
            ),
            code="wrong_key_usage",
        )
    try:
        purposes = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return
    if ExtendedKeyUsageOID.CLIENT_AUTH not in purposes and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in purposes:
        raise CertLoginRefusal(
            N_("This certificate may not be used to sign in: it is not meant for client authentication."), code="wrong_key_usage"
        )


_STATUS_REFUSALS = {
    "revoked": (N_("This certificate has been revoked, so it can no longer be used to sign in."), "revoked"),
    "expired": (N_("This certificate has expired (or a certificate above it has). Renew it to sign in with the USB key."), "expired"),
    "untrusted": (N_("This certificate was not issued by a certificate authority this service recognises."), "untrusted"),
    "revocation_unknown": (
        N_("Whether this certificate has been revoked cannot be checked just now. Please try again later."),
        "revocation_unknown",
    ),
    "invalid": (N_("This certificate is not valid: %(reason)s"), "invalid"),
}


def check_certificate(ca_ctx: CAContext, submission: Submission) -> validation.ValidationResult:
    """Usage, then the path to a recognised CA with revocation; for our own certificates, the profile too."""
    check_usage(submission.certificate)
    result = validation.validate(ca_ctx, submission.certificate, intermediates=submission.chain, usage={"digital_signature"})
    if not result.ok:
        message, code = _STATUS_REFUSALS.get(result.status, _STATUS_REFUSALS["invalid"])
        status = 503 if code == "revocation_unknown" else 400
        raise CertLoginRefusal(message, code=code, status=status, reason=result.reason[:200])
    return result


def _own_profile(ca_ctx: CAContext, fingerprint: str) -> str | None:
    with ca_ctx.sessions() as db:
        return db.scalar(select(IssuedCertificate.profile).where(IssuedCertificate.fingerprint == fingerprint))


def check_profile(ca_ctx: CAContext, submission: Submission, identity: CertificateIdentity) -> None:
    """A certificate of ours must come from the login profile of its kind (not a signing or seal profile)."""
    profile = _own_profile(ca_ctx, submission.fingerprint)
    if profile is not None and profile != LOGIN_PROFILES[identity.holder]:
        raise CertLoginRefusal(
            N_("This certificate was issued for another purpose (%(profile)s), not for signing in."), code="wrong_profile", profile=profile
        )


# --------------------------------------------------------------------------- binding and the outcome


@dataclass
class Outcome:
    sid: str
    account_id: str
    kind: str  # person | enterprise
    action: str  # login | step-up | enterprise
    bound: bool = False  # the certificate was bound to the account just now
    credit_code: str | None = None
    notes: list[str] = field(default_factory=list)


def _display_subject(name: x509.Name) -> str:
    return ca_identity.display_name(name)[:400]


def describe(submission: Submission) -> dict:
    """Facts about a certificate fit for the audit trail (resident IDs masked)."""
    certificate = submission.certificate
    return {
        "subject": _display_subject(certificate.subject),
        "issuer": _display_subject(certificate.issuer),
        "serial": format(certificate.serial_number, "x"),
        "fingerprint": submission.fingerprint,
    }


def _bind(
    db: Session, account_id: str, submission: Submission, identity: CertificateIdentity, key: bytes, *, via: str, status: str
) -> tuple[CertificateBinding, bool]:
    now = utc_now()
    existing = db.scalar(
        select(CertificateBinding).where(
            CertificateBinding.fingerprint == submission.fingerprint, CertificateBinding.account_id == account_id
        )
    )
    if existing is not None:
        existing.last_used_at, existing.last_status = now, status
        return existing, False
    certificate = submission.certificate
    row = CertificateBinding(
        fingerprint=submission.fingerprint,
        account_id=account_id,
        kind=identity.holder,
        subject_id_hash=identity.lookup(key),
        subject_id_masked=identity.masked(),
        subject=_display_subject(certificate.subject),
        serial=format(certificate.serial_number, "x"),
        issuer=_display_subject(certificate.issuer),
        not_after=certificate.not_valid_after_utc,
        der=submission.der,
        via=via,
        bound_at=now,
        last_used_at=now,
        last_status=status,
    )
    try:
        with db.begin_nested():
            db.add(row)
    except IntegrityError:  # the same certificate, at the same moment, in another request
        row = db.scalar(
            select(CertificateBinding).where(
                CertificateBinding.fingerprint == submission.fingerprint, CertificateBinding.account_id == account_id
            )
        )
        return row, False
    return row, True


def _live(db: Session, sid: str | None) -> tuple[SSOSession, Account] | None:
    row = sessions.current(db, sid)
    if row is None:
        return None
    account = db.get(Account, row.account_id)
    return (row, account) if account is not None and account.status == "active" else None


def _person(
    db: Session,
    ctx: IdPContext,
    submission: Submission,
    identity: CertificateIdentity,
    *,
    purpose: str,
    sid: str | None,
    via: str,
    status: str,
    ip: str,
    user_agent: str,
) -> Outcome:
    digest = identity.lookup(ctx.lookup_key)
    proofing = db.scalar(select(IdentityProofing).where(IdentityProofing.resident_id_hash == digest))
    live = _live(db, sid)
    if purpose != "login":
        if live is None:
            raise CertLoginRefusal(N_("Your session has ended. Sign in again."), code="no_session", status=401)
        if db.get(IdentityProofing, live[1].id) is None:
            raise CertLoginRefusal(
                N_("Confirm your real name first; then the USB key can raise your level."), code="not_proofed", status=403
            )
    if proofing is None or (purpose != "login" and proofing.account_id != live[1].id):
        if purpose != "login":
            raise CertLoginRefusal(
                N_("This certificate belongs to someone else: its ID number is not the one your account is verified with."),
                code="identifier_mismatch",
                status=403,
            )
        raise CertLoginRefusal(
            N_(
                "No account is real-name verified with the ID number in this certificate. Register, verify your real name, then sign in with the USB key."
            ),
            code="no_account",
            status=403,
        )
    account = db.get(Account, proofing.account_id)
    if account is None or account.status != "active":
        raise CertLoginRefusal(N_("The account of this certificate is disabled."), code="account_disabled", status=403)
    others = db.scalar(
        select(CertificateBinding.account_id).where(
            CertificateBinding.fingerprint == submission.fingerprint,
            CertificateBinding.account_id != account.id,
            CertificateBinding.kind == "person",
        )
    )
    if others is not None:
        raise CertLoginRefusal(N_("This certificate is bound to another account."), code="bound_elsewhere", status=409)
    binding, bound = _bind(db, account.id, submission, identity, ctx.lookup_key, via=via, status=status)
    actor = f"account:{account.id}"
    if bound:
        audit.record(
            db,
            actor=actor,
            action="idp.certificate.bound",
            target=account.id,
            details={**describe(submission), "subject_id": identity.masked(), "via": via, "not_after": binding.not_after.isoformat()},
        )
    if live is not None and live[1].id == account.id:
        row = sessions.add_factor(db, live[0], levels.HARDWARE_KEY)
        action = "step-up"
    else:
        if live is not None:  # another person's session in this browser (login page only): theirs ends
            sessions.end(db, live[0].sid, actor=f"account:{live[1].id}")
        row = sessions.start(db, account, {levels.HARDWARE_KEY}, ip=ip, user_agent=user_agent)
        action = "login"
    return Outcome(row.sid, account.id, "person", action, bound)


def _enterprise(
    db: Session, ctx: IdPContext, submission: Submission, identity: CertificateIdentity, *, sid: str | None, via: str, status: str
) -> Outcome:
    from idp.people import enterprises

    live = _live(db, sid)
    if live is None:
        raise CertLoginRefusal(
            N_(
                "An enterprise certificate is used after you sign in as yourself: sign in first (password or your own USB key), then use the enterprise USB key."
            ),
            code="enterprise_needs_person",
            status=401,
        )
    row, account = live
    acting = enterprises.prove_key(db, row, account.id, identity.value)  # raises EnterpriseRefusal
    binding, bound = _bind(db, account.id, submission, identity, ctx.lookup_key, via=via, status=status)
    if bound:
        audit.record(
            db,
            actor=f"account:{account.id}",
            action="idp.certificate.bound",
            target=account.id,
            details={
                **describe(submission),
                "subject_id": identity.masked(),
                "via": via,
                "kind": "enterprise",
                "not_after": binding.not_after.isoformat(),
            },
        )
    return Outcome(row.sid, account.id, "enterprise", "enterprise", bound, credit_code=acting.credit_code)


def _audit_refusal(ctx: IdPContext, exc: Refusal, *, via: str, ip: str, purpose: str, facts: dict | None, sid: str | None) -> None:
    actor = "anonymous"
    with core_db.transaction(ctx.sessions) as db:
        live = _live(db, sid)
        if live is not None:
            actor = f"account:{live[1].id}"
        audit.record(
            db,
            actor=actor,
            action="idp.certlogin.refused",
            target=(facts or {}).get("fingerprint", "")[:64],
            details={"reason": exc.code, "message": exc.english()[:300], "via": via, "purpose": purpose, "ip": ip, **(facts or {})},
        )


def complete(
    ctx: IdPContext,
    ca_ctx: CAContext,
    options: Options,
    fields: dict,
    *,
    browser: str,
    sid: str | None,
    ip: str = "",
    user_agent: str = "",
) -> Outcome:
    """The agent path: consume the challenge, then every check; the session is started or stepped up."""
    purpose, facts = "login", None
    try:
        submission = parse_submission(
            challenge=fields.get("challenge"),
            signature=fields.get("signature"),
            algorithm=fields.get("algorithm"),
            certificate=fields.get("certificate"),
            chain=fields.get("chain"),
        )
        facts = describe(submission)
        with core_db.transaction(ctx.sessions) as db:
            challenge = consume_challenge(db, options, submission.challenge, browser=browser)
            purpose = challenge.purpose
        verify_signature(submission)
        return _finish(ctx, ca_ctx, submission, purpose=purpose, sid=sid, via="agent", ip=ip, user_agent=user_agent)
    except Refusal as exc:
        _audit_refusal(ctx, exc, via="agent", ip=ip, purpose=purpose, facts=facts, sid=sid)
        raise


def complete_forwarded(
    ctx: IdPContext,
    ca_ctx: CAContext,
    options: Options,
    header_value: str | None,
    *,
    remote_addr: str | None,
    purpose: str,
    sid: str | None,
    user_agent: str = "",
) -> Outcome:
    """The proxy path: only from a configured proxy address; no challenge (the TLS handshake proved the key)."""
    ip, facts = remote_addr or "", None
    purpose = purpose if purpose in PURPOSES else "login"
    try:
        if not from_trusted_proxy(options, remote_addr):
            raise CertLoginRefusal(
                N_("Certificates forwarded by a proxy are not accepted from this address."), code="untrusted_proxy", status=403
            )
        if not header_value:
            raise CertLoginRefusal(N_("Your browser did not present a certificate."), code="no_client_certificate")
        submission = parse_forwarded(header_value)
        facts = describe(submission)
        return _finish(ctx, ca_ctx, submission, purpose=purpose, sid=sid, via="proxy", ip=ip, user_agent=user_agent)
    except Refusal as exc:
        _audit_refusal(ctx, exc, via="proxy", ip=ip, purpose=purpose, facts=facts, sid=sid)
        raise


def _finish(ctx, ca_ctx, submission: Submission, *, purpose: str, sid, via: str, ip: str, user_agent: str) -> Outcome:
    # Path validation opens its own database sessions: it runs before the transaction below.
    identity = identity_of(submission.certificate)
    result = check_certificate(ca_ctx, submission)
    check_profile(ca_ctx, submission, identity)
    with core_db.transaction(ctx.sessions) as db:
        if identity.holder == "person":
            if purpose == "enterprise":
                raise CertLoginRefusal(
                    N_("This is a personal certificate; here the enterprise's USB key is needed."), code="not_enterprise"
                )
            outcome = _person(
                db, ctx, submission, identity, purpose=purpose, sid=sid, via=via, status=result.status, ip=ip, user_agent=user_agent
            )
        else:
            outcome = _enterprise(db, ctx, submission, identity, sid=sid, via=via, status=result.status)
        audit.record(
            db,
            actor=f"account:{outcome.account_id}",
            action="idp.certlogin.succeeded",
            target=outcome.sid[:12],
            details={
                **describe(submission),
                "subject_id": identity.masked(),
                "kind": identity.holder,
                "action": outcome.action,
                "via": via,
                "ip": ip,
                "trusted_via": result.trusted_via or "",
                "bound": outcome.bound,
            },
        )
    return outcome


# --------------------------------------------------------------------------- the account page


@dataclass(frozen=True)
class CertificateView:
    subject: str
    issuer: str
    serial: str
    not_after: datetime
    status: str  # valid | expiring | expired | revoked | unknown
    bound: bool
    kind: str
    profile: str | None = None
    revoked_at: datetime | None = None


def certificates_for(db: Session, account_id: str, *, now: datetime | None = None) -> list[CertificateView]:
    """The account's certificates: those it signed in with, and those our CA issued to its ID; revocation looked up."""
    now = now or utc_now()
    bindings = list(
        db.scalars(
            select(CertificateBinding).where(CertificateBinding.account_id == account_id).order_by(CertificateBinding.bound_at.desc())
        )
    )
    proofing = db.get(IdentityProofing, account_id)
    # The CA's records live in the same database (one per deployment): read them in this transaction.
    rows = {}
    if proofing is not None:
        for row in db.scalars(select(IssuedCertificate).where(IssuedCertificate.subject_id_hash == proofing.resident_id_hash)):
            rows[row.fingerprint] = row
    missing = [b.fingerprint for b in bindings if b.fingerprint not in rows]
    if missing:
        for row in db.scalars(select(IssuedCertificate).where(IssuedCertificate.fingerprint.in_(missing))):
            rows[row.fingerprint] = row
    issued = {k: (v.status, v.revoked_at, v.profile, v.subject, v.serial, v.not_after) for k, v in rows.items()}

    def status_of(revoked: bool, not_after: datetime, last: str = "valid") -> str:
        if revoked or last == "revoked":
            return "revoked"
        if not_after <= now:
            return "expired"
        if last not in ("valid",):
            return "unknown"
        return "expiring" if not_after - now <= EXPIRING_SOON else "valid"

    views, seen = [], set()
    for binding in bindings:
        ours = issued.get(binding.fingerprint)
        if ours is not None:
            state, revoked_at, profile = ours[0], ours[1], ours[2]
            views.append(
                CertificateView(
                    binding.subject,
                    binding.issuer,
                    binding.serial,
                    binding.not_after,
                    status_of(state == "revoked", binding.not_after),
                    True,
                    binding.kind,
                    profile,
                    revoked_at,
                )
            )
        else:
            views.append(
                CertificateView(
                    binding.subject,
                    binding.issuer,
                    binding.serial,
                    binding.not_after,
                    status_of(False, binding.not_after, binding.last_status),
                    True,
                    binding.kind,
                )
            )
        seen.add(binding.fingerprint)
    for fingerprint, (state, revoked_at, profile, subject, serial, not_after) in issued.items():
        if fingerprint not in seen:
            views.append(
                CertificateView(
                    subject, "", serial, not_after, status_of(state == "revoked", not_after), False, "person", profile, revoked_at
                )
            )
    return views
