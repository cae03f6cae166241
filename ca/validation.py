"""Certificate path validation: the one place other packages ask "do we trust this certificate?".

:func:`validate` builds a path from a certificate to a trust anchor with pyHanko's
certvalidator (RFC 5280 section 6: signatures, validity, basic and name
constraints, path length, policies, key usage) and checks revocation. It never
raises for bad input: a malformed certificate comes back as status ``invalid``.

Trust anchors are our root (always) and every CA recognised as an anchor in the
trust store (:mod:`ca.trust`). A cross-certified CA is *not* an anchor: its
certificates chain through our cross-certificate to our root, so the path-length
and name constraints we wrote into it apply.

Statuses
========

=====================  ======  =========================================================
status                 ok      meaning
=====================  ======  =========================================================
``valid``              True    a path to an anchor validates and revocation was checked
                               (or skipped under a ``soft`` policy: see ``revocation.notes``)
``revoked``            False   a certificate on the path is revoked (when and why are given)
``untrusted``          False   no path leads to an anchor (an unknown or self-signed issuer)
``expired``            False   a certificate on the path, or the anchor, has run out
``invalid``            False   not a certificate, bad signature, constraint or usage violated,
                               not yet valid, or a disallowed algorithm
``revocation_unknown`` False   revocation status needed but not to be had (fail closed)
=====================  ======  =========================================================

Revocation policy
=================

====================================  ==========================================  ====================================
path                                  revocation information                      when none can be had
====================================  ==========================================  ====================================
our root -> our issuing CAs -> leaf   our current CRLs, read from the database;   fail closed: ``revocation_unknown``
                                      our own URLs are never fetched over HTTP    (a stale CRL: run ``hallmark ca refresh``)
recognised anchor, policy ``hard``    the CRL / OCSP locations in the             fail closed: ``revocation_unknown``,
                                      certificates, fetched (5 s a request)       also when a certificate declares none
recognised anchor, policy ``soft``    fetched likewise; a CRL or OCSP answer      accepted, ``ok`` True, with a note
                                      saying "revoked" is still final             for each status that could not be had
our root -> cross-certificate ->      the cross-certificate: our root CRL from    for the cross-certificate: fail closed;
external CA -> leaf                   the database; below it: fetched, under      below it: the cross-certified CA's
                                      the cross-certified CA's policy             policy, as for an anchor
any path, ``at=`` a past moment       nothing is fetched; our CRLs apply          ours: as above; external: ``hard``
                                      retroactively (Hallmark never suspends)     fails closed, ``soft`` notes it
====================================  ==========================================  ====================================

The trust store, our CA certificates and our CRLs come from :func:`ca.trust.snapshot`
(the one store signing reads too): parsed once per process and re-read only when a
cheap check (CRL numbers of our authorities, rows of the trust store) shows that they
changed, so a revocation or a new anchor takes effect on the next call in every process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator._state import ValProcState  # internal: see _validate_path
from pyhanko_certvalidator.errors import (
    CRLFetchError,
    DisallowedAlgorithmError,
    ExpiredError,
    InsufficientRevinfoError,
    InvalidCertificateError,
    NotYetValidError,
    OCSPFetchError,
    PathBuildingError,
    RevokedError,
    ValidationError,
)
from pyhanko_certvalidator.fetchers.aiohttp_fetchers import AIOHttpFetcherBackend
from pyhanko_certvalidator.fetchers.api import CRLFetcher, Fetchers, FetchLimits, OCSPFetcher
from pyhanko_certvalidator.path import ValidationPath
from pyhanko_certvalidator.policy_decl import (
    NO_REVOCATION,
    CertRevTrustPolicy,
    RevocationCheckingPolicy,
    RevocationCheckingRule,
)
from pyhanko_certvalidator.registry import CertificateRegistry, PathBuilder
from pyhanko_certvalidator.sig_validate import DEFAULT_VALIDATION_CONTEXT, DefaultSignatureValidator
from pyhanko_certvalidator.util import ConsList, get_declared_revinfo
from pyhanko_certvalidator.validate import intl_validate_path, validate_usage

from ca import identity as ca_identity
from ca import trust as ca_trust
from ca.context import CAContext
from core.identifiers import mask_resident_ids

log = logging.getLogger("hallmark.ca.validation")

STATUSES = ("valid", "revoked", "untrusted", "expired", "invalid", "revocation_unknown")
FETCH_TIMEOUT = 5  # seconds per CRL or OCSP request to an external CA
# Seconds one validation may take, its waits for external CAs included: FETCH_LIMITS allow 16 requests of
# FETCH_TIMEOUT each, which would hold a certificate login's worker for over a minute. Past it: revocation_unknown.
TOTAL_TIMEOUT = 15
# A hostile certificate (once signed by a recognised CA) decides which URLs we fetch: keep it bounded.
FETCH_LIMITS = FetchLimits(max_requests=16, max_cert_requests=4, max_aia_urls_per_object=3)

_REQUIRED = RevocationCheckingPolicy(RevocationCheckingRule.CRL_OR_OCSP_REQUIRED, RevocationCheckingRule.CRL_OR_OCSP_REQUIRED)
_IF_DECLARED_SOFT = RevocationCheckingPolicy(RevocationCheckingRule.CHECK_IF_DECLARED_SOFT, RevocationCheckingRule.CHECK_IF_DECLARED_SOFT)
_RULES = {"hallmark": _REQUIRED, "hard": _REQUIRED, "soft": _IF_DECLARED_SOFT}

# pyHanko's key-usage names, plus the RFC 5280 / cryptography spellings callers may know better.
_USAGE_ALIASES = {
    "digitalSignature": "digital_signature",
    "nonRepudiation": "non_repudiation",
    "contentCommitment": "non_repudiation",
    "content_commitment": "non_repudiation",
    "keyEncipherment": "key_encipherment",
    "dataEncipherment": "data_encipherment",
    "keyAgreement": "key_agreement",
    "keyCertSign": "key_cert_sign",
    "cRLSign": "crl_sign",
}
_EKU_ALIASES = {
    "serverAuth": "server_auth",
    "clientAuth": "client_auth",
    "codeSigning": "code_signing",
    "emailProtection": "email_protection",
    "timeStamping": "time_stamping",
    "OCSPSigning": "ocsp_signing",
}
_PREFIX = re.compile(r"^The path could not be validated because (the )?", re.IGNORECASE)


# -- results --------------------------------------------------------------------------------


@dataclass
class Revocation:
    """How revocation was checked along the path."""

    policy: str = "none"  # "hallmark" (our records) | "hard" | "soft" | "none" (nothing checked)
    source: str = ""
    notes: list[str] = field(default_factory=list)
    revoked_at: datetime | None = None
    revocation_reason: str | None = None


@dataclass
class ValidationResult:
    ok: bool
    status: str  # one of STATUSES
    reason: str  # for people; resident IDs masked
    chain: list[str] = field(default_factory=list)  # subjects, leaf first, anchor last (resident IDs masked)
    anchor: str | None = None  # subject of the anchor the path ends at
    anchor_fingerprint: str | None = None  # SHA-256 of the anchor certificate
    trusted_via: str | None = None  # "hallmark" | "anchor" | "cross-certificate"
    revocation: Revocation = field(default_factory=Revocation)
    certificates: list[x509.Certificate] = field(default_factory=list, repr=False)  # the path, leaf first


# -- fetching external revocation information only ------------------------------------------


def _ours(certificate, own_issuers: frozenset) -> bool:
    return isinstance(certificate, asn1_x509.Certificate) and certificate.issuer.hashable in own_issuers


class _External:
    """Fetches revocation information of external CAs only; ours is read from the database, never over HTTP.

    Failures are also written down: pyHanko's "no revocation information" does not say why.
    """

    error: type = Exception
    refusal = ""

    def __init__(self, inner, own_issuers: frozenset, failures: list):
        self._inner, self._own, self._failures = inner, own_issuers, failures

    async def _fetch(self, cert, *args, **kwargs):
        if _ours(cert, self._own):
            raise self.error(self.refusal)
        try:
            return await self._inner.fetch(cert, *args, **kwargs)
        except self.error as exc:
            self._failures.append(str(exc))
            raise


class _ExternalCRLs(_External, CRLFetcher):
    error, refusal = CRLFetchError, "Hallmark's own CRLs are read from its records, not fetched"

    async def fetch(self, cert, *, use_deltas=True):
        return await self._fetch(cert, use_deltas=use_deltas)

    def fetched_crls(self):
        return self._inner.fetched_crls()

    def fetched_crls_for_cert(self, cert):
        return self._inner.fetched_crls_for_cert(cert)


class _ExternalOCSP(_External, OCSPFetcher):
    error, refusal = OCSPFetchError, "Hallmark's own OCSP answers are read from its records, not fetched"

    async def fetch(self, cert, authority):
        return await self._fetch(cert, authority)

    def fetched_responses(self):
        return self._inner.fetched_responses()

    def fetched_responses_for_cert(self, cert):
        return self._inner.fetched_responses_for_cert(cert)


class RememberingSignatureValidator(DefaultSignatureValidator):
    """Remembers signatures that verified, so our CA certificates, CRLs and OCSP responses are not re-verified on every call.

    A verification is a pure function of (signature, data, key, algorithm), so a
    verified tuple stays verified; only successes are kept, keyed by a SHA-256 of
    all four, the most recent ``size`` of them.
    """

    def __init__(self, size: int = 4096):
        self.SIZE = size
        self._verified: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    def validate_signature(self, signature, signed_data, public_key_info, signature_algorithm, context=DEFAULT_VALIDATION_CONTEXT):
        if context is not DEFAULT_VALIDATION_CONTEXT:
            return super().validate_signature(signature, signed_data, public_key_info, signature_algorithm, context)
        digest = hashlib.sha256()
        for part in (signature, public_key_info.dump(), signature_algorithm.dump(), signed_data):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
        key = digest.digest()
        with self._lock:
            if key in self._verified:
                self._verified.move_to_end(key)
                return
        super().validate_signature(signature, signed_data, public_key_info, signature_algorithm, context)
        with self._lock:
            self._verified[key] = None
            if len(self._verified) > self.SIZE:
                self._verified.popitem(last=False)


_signatures = RememberingSignatureValidator()


# -- input -----------------------------------------------------------------------------------


def _to_der(item) -> bytes:
    if isinstance(item, x509.Certificate):
        return item.public_bytes(serialization.Encoding.DER)
    if isinstance(item, str):
        item = item.encode("ascii", "replace")
    if not isinstance(item, (bytes, bytearray, memoryview)):
        raise ValueError(f"expected a certificate or bytes, not {type(item).__name__}")
    data = bytes(item)
    if data[:1] != b"\x30" and data.strip().startswith(b"-----BEGIN"):  # never strip DER: its last octet may be 0x20
        return x509.load_pem_x509_certificate(data.strip()).public_bytes(serialization.Encoding.DER)
    return x509.load_der_x509_certificate(data).public_bytes(serialization.Encoding.DER)


def _parse(item) -> tuple[x509.Certificate, asn1_x509.Certificate]:
    der = _to_der(item)
    parsed = asn1_x509.Certificate.load(der)
    # Touch what path building reads, so a malformed encoding fails here, not half-way.
    _ = (parsed.subject.hashable, parsed.issuer.hashable, parsed.public_key.dump(), parsed.critical_extensions, parsed.sha256)
    return x509.load_der_x509_certificate(der), parsed


def _invalid(reason: str) -> ValidationResult:
    return ValidationResult(False, "invalid", mask_resident_ids(reason))


# -- validation ------------------------------------------------------------------------------


@dataclass
class _Job:
    trust: ca_trust.TrustStore
    revinfo: ca_trust.RevocationData
    leaf: asn1_x509.Certificate
    leaf_crypto: x509.Certificate
    extra: list
    usage: set | None
    extended_usage: set | None
    at: datetime | None
    fetchers: Fetchers | None = None
    backend: AIOHttpFetcherBackend | None = None
    fetch_failures: list = field(default_factory=list)

    def external_fetchers(self) -> Fetchers | None:
        """One set of fetchers per call, so every path shares what was fetched; none for a past moment."""
        if self.at is not None:
            return None
        if self.fetchers is None:
            self.backend = AIOHttpFetcherBackend(per_request_timeout=FETCH_TIMEOUT, limits=FETCH_LIMITS)
            inner = self.backend.get_fetchers()
            own = self.trust.own_issuers
            self.fetchers = Fetchers(
                ocsp_fetcher=_ExternalOCSP(inner.ocsp_fetcher, own, self.fetch_failures),
                crl_fetcher=_ExternalCRLs(inner.crl_fetcher, own, self.fetch_failures),
                cert_fetcher=inner.cert_fetcher,
            )
        return self.fetchers


@dataclass
class _Plan:
    anchor: ca_trust.Anchor
    via: str  # "hallmark" | "anchor" | "cross-certificate"
    policy: str  # "hallmark" | "hard" | "soft"
    cross: ca_trust.Cross | None
    certificates: list  # asn1crypto, leaf first, anchor last
    external: list  # asn1crypto certificates whose revocation falls under an external policy

    @property
    def who(self) -> str:
        if self.via == "anchor":
            return f"recognised anchor {self.anchor.subject}"
        if self.via == "cross-certificate":
            return f"cross-certified CA {self.cross.subject}"
        return "Hallmark"


def _plan(trust: ca_trust.TrustStore, path: ValidationPath) -> _Plan:
    anchor_cert = path.trust_anchor.authority.certificate
    anchor = trust.anchors[anchor_cert.sha256]
    below = [path[i] for i in range(1, path.pkix_len + 1)]  # anchor's child first, leaf last
    certificates = [*reversed(below), anchor_cert]
    if anchor.how == "anchor":
        return _Plan(anchor, "anchor", anchor.policy, None, certificates, below)
    for index, certificate in enumerate(below):
        cross = trust.cross.get(certificate.sha256)
        if cross is not None:
            return _Plan(anchor, "cross-certificate", cross.policy, cross, certificates, below[index + 1 :])
    return _Plan(anchor, "hallmark", "hallmark", None, certificates, [])


def _context(job: _Job, rules: RevocationCheckingPolicy, fetchers: Fetchers | None) -> ValidationContext:
    registry = CertificateRegistry.build([*job.trust.intermediates, *job.extra])  # no fetcher: no AIA chasing
    return ValidationContext(
        trust_manager=job.trust.trust_manager,
        certificate_registry=registry,
        crls=list(job.revinfo.crls),
        revinfo_policy=CertRevTrustPolicy(rules, retroactive_revinfo=job.at is not None),
        moment=job.at,
        allow_fetching=fetchers is not None,
        fetchers=fetchers,
        signature_validator=_signatures,
    )


async def _validate_path(context: ValidationContext, path: ValidationPath) -> None:
    """pyHanko's RFC 5280 validation of one path.

    An anchor that is not self-signed (a recognised intermediate) signs the CRLs for
    the certificates below it, and pyHanko 0.33 cannot place such a CRL issuer: it
    looks for the anchor's issuer in the path and finds none. Putting the anchor-only
    path at the bottom of the validation stack lets pyHanko find the anchor as an
    already-validated CRL issuer, exactly as it does for a self-signed root.
    """
    stack = ConsList.sing(path)
    anchor = path.trust_anchor.authority.certificate
    if anchor.self_signed == "no":
        stack = ConsList.sing(ValidationPath(path.trust_anchor, interm=[], leaf=None)).cons(path)
    await intl_validate_path(context, path, proc_state=ValProcState(cert_path_stack=stack))


def _subject(certificate: asn1_x509.Certificate) -> str:
    return ca_identity.display_subject(certificate.dump())


def _message(exc: Exception) -> str:
    text = _PREFIX.sub("", str(getattr(exc, "failure_msg", None) or exc)).strip()
    return mask_resident_ids(text.rstrip(".") or type(exc).__name__)


def _result(job: _Job, plan: _Plan, status: str, reason: str, revocation: Revocation) -> ValidationResult:
    certificates = plan.certificates
    return ValidationResult(
        ok=status == "valid",
        status=status,
        reason=mask_resident_ids(reason),
        chain=[_subject(c) for c in certificates],
        anchor=plan.anchor.subject,
        anchor_fingerprint=plan.anchor.fingerprint,
        trusted_via=plan.via,
        revocation=revocation,
        certificates=[job.leaf_crypto] + [x509.load_der_x509_certificate(c.dump()) for c in certificates[1:]],
    )


def _revocation_source(job: _Job, plan: _Plan) -> Revocation:
    if plan.policy == "hallmark":
        return Revocation("hallmark", "Hallmark's CRLs, from its own records")
    if job.at is not None:
        return Revocation(plan.policy, f"Hallmark's CRLs only: nothing is fetched when validating at a past moment ({plan.who})")
    return Revocation(plan.policy, f"CRL/OCSP fetched from the issuing CAs under the {plan.policy} policy of the {plan.who}")


def _why_unknown(job: _Job, plan: _Plan) -> str:
    reasons = list(dict.fromkeys(job.fetch_failures))  # in order, once each
    reasons += [f"{_subject(c)} names no CRL or OCSP location" for c in plan.external if not any(get_declared_revinfo(c))]
    return f" ({'; '.join(reasons)})" if reasons else ""


def _stale_hint(job: _Job) -> str:
    now = datetime.now(UTC)
    stale = [name for name, next_update in job.revinfo.next_update.items() if next_update < now]
    if stale:
        return f" (the CRL of {', '.join(stale)} is past its nextUpdate: run 'hallmark ca refresh' or the scheduler)"
    return ""


def _expired(job: _Job, plan: _Plan) -> str | None:
    moment = job.at or datetime.now(UTC)
    last = len(plan.certificates) - 1
    for index, certificate in enumerate(plan.certificates):
        if certificate.not_valid_after < moment:
            role = "certificate" if index == 0 else "trust anchor" if index == last else "CA certificate"
            return f"the {role} {_subject(certificate)} expired {certificate.not_valid_after:%Y-%m-%d %H:%M:%S}Z"
    return None


async def _check_path(job: _Job, path: ValidationPath, plan: _Plan) -> ValidationResult:
    revocation = _revocation_source(job, plan)
    expired = _expired(job, plan)
    if expired is not None:
        # Said first: pyHanko checks revocation of the CAs above before it reaches an expired leaf.
        return _result(job, plan, "expired", expired, revocation)
    fetchers = job.external_fetchers() if plan.policy != "hallmark" else None
    context = _context(job, _RULES[plan.policy], fetchers)
    try:
        await _validate_path(context, path)
    except RevokedError as exc:
        revocation.revoked_at = exc.revocation_dt
        revocation.revocation_reason = exc.reason.native if exc.reason is not None else None
        return _result(job, plan, "revoked", f"revoked: {_message(exc)}", revocation)
    except InsufficientRevinfoError as exc:
        if plan.policy != "soft":
            hint = (
                _stale_hint(job)
                if plan.policy == "hallmark"
                else f"{_why_unknown(job, plan)}; the {plan.who} is under the hard policy, which fails closed"
            )
            return _result(job, plan, "revocation_unknown", f"revocation status unknown: {_message(exc)}{hint}", revocation)
        # Soft: the status could not be established (stale or unverifiable answer); check the rest without it.
        revocation.notes.append(
            f"revocation status could not be established ({_message(exc)}); accepted under the soft policy of the {plan.who}"
        )
        context = _context(job, NO_REVOCATION, None)
        try:
            await _validate_path(context, path)
        except ValidationError as again:
            return _failure(job, plan, again, revocation)
    except ValidationError as exc:
        return _failure(job, plan, exc, revocation)
    try:
        if job.usage or job.extended_usage:
            validate_usage(job.leaf, set(job.usage or ()), set(job.extended_usage or ()), False)
    except InvalidCertificateError as exc:
        return _result(job, plan, "invalid", _message(exc), revocation)
    if plan.policy == "soft":
        for failure in context.soft_fail_exceptions:
            revocation.notes.append(f"{_message(failure)}; accepted under the soft policy of the {plan.who}")
        for certificate in plan.external:
            if not any(get_declared_revinfo(certificate)):
                revocation.notes.append(
                    f"{_subject(certificate)} names no CRL or OCSP location, so its revocation status is unknown; "
                    f"accepted under the soft policy of the {plan.who}"
                )
    route = {
        "hallmark": "to the Hallmark root",
        "anchor": f"to the {plan.who}",
        "cross-certificate": f"through the {plan.who} to the Hallmark root",
    }
    reason = f"valid: the path {route[plan.via]} checks out"
    if revocation.notes:
        reason += f" ({len(revocation.notes)} note{'s' if len(revocation.notes) > 1 else ''} on revocation)"
    return _result(job, plan, "valid", reason, revocation)


def _failure(job: _Job, plan: _Plan, exc: Exception, revocation: Revocation) -> ValidationResult:
    if isinstance(exc, RevokedError):
        revocation.revoked_at = exc.revocation_dt
        revocation.revocation_reason = exc.reason.native if exc.reason is not None else None
        return _result(job, plan, "revoked", f"revoked: {_message(exc)}", revocation)
    if isinstance(exc, ExpiredError):
        return _result(job, plan, "expired", _message(exc), revocation)
    if isinstance(exc, NotYetValidError):
        return _result(job, plan, "invalid", _message(exc), revocation)
    if isinstance(exc, DisallowedAlgorithmError):
        return _result(job, plan, "invalid", f"disallowed algorithm: {_message(exc)}", revocation)
    if isinstance(exc, InsufficientRevinfoError):
        return _result(job, plan, "revocation_unknown", f"revocation status unknown: {_message(exc)}", revocation)
    return _result(job, plan, "invalid", _message(exc), revocation)


_RANK = {"revoked": 0, "expired": 1, "revocation_unknown": 2, "invalid": 3}


def _pick(failures: list[ValidationResult]) -> ValidationResult:
    """The most telling of several failed paths; a bad signature only when nothing else went wrong."""
    return min(failures, key=lambda r: (_RANK.get(r.status, 9), "signature" in r.reason))


def _untrusted(job: _Job) -> ValidationResult:
    subject = ca_identity.display_name(job.leaf_crypto.subject)
    if job.leaf.self_signed in ("yes", "maybe"):
        reason = f"untrusted: {subject} is self-signed and is not a recognised trust anchor"
    else:
        issuer = ca_identity.display_name(job.leaf_crypto.issuer)
        reason = (
            f"untrusted: no path from {subject} to a trust anchor; its issuer {issuer} is neither a Hallmark CA "
            "nor recognised (trust it with 'hallmark ca trust add' or cross-certify it)"
        )
    return ValidationResult(False, "untrusted", mask_resident_ids(reason), chain=[subject], certificates=[job.leaf_crypto])


def _anchor_itself(job: _Job, anchor: ca_trust.Anchor) -> ValidationResult:
    moment = job.at or datetime.now(UTC)
    certificate = job.leaf_crypto
    status, reason = "valid", f"valid: {anchor.subject} is itself a trust anchor"
    if certificate.not_valid_after_utc < moment:
        status, reason = "expired", f"the trust anchor {anchor.subject} expired {certificate.not_valid_after_utc:%Y-%m-%d %H:%M:%S}Z"
    elif certificate.not_valid_before_utc > moment:
        status, reason = (
            "invalid",
            f"the trust anchor {anchor.subject} is not valid until {certificate.not_valid_before_utc:%Y-%m-%d %H:%M:%S}Z",
        )
    return ValidationResult(
        status == "valid",
        status,
        reason,
        chain=[anchor.subject],
        anchor=anchor.subject,
        anchor_fingerprint=anchor.fingerprint,
        trusted_via="hallmark" if anchor.how == "hallmark" else "anchor",
        revocation=Revocation("none", "a trust anchor is not checked for revocation"),
        certificates=[certificate],
    )


async def _paths(store: ca_trust.TrustStore, leaf: asn1_x509.Certificate, extra) -> list[ValidationPath]:
    """Every path from ``leaf`` to an anchor of the store (through our CAs, cross-certificates and ``extra``); [] for none."""
    registry = CertificateRegistry.build([*store.intermediates, *extra])
    for root in store.trust_manager.iter_certs():
        registry.register(root)
    try:
        return await PathBuilder(store.trust_manager, registry).async_build_paths(leaf)
    except PathBuildingError:
        return []


async def revocation_policy(store: ca_trust.TrustStore, certificate: asn1_x509.Certificate, intermediates=()) -> str | None:
    """The revocation policy ``certificate`` falls under: ``hallmark`` (ours), or the ``hard`` or ``soft`` policy
    of the recognised CA its path leads through; None when no path leads to an anchor.

    For callers that check revocation with rules of their own (signature validation
    reports); when several paths lead to anchors under different policies, the strictest.
    """
    anchor = store.anchors.get(certificate.sha256)
    if anchor is not None:
        return anchor.policy
    found = {_plan(store, path).policy for path in await _paths(store, certificate, intermediates)}
    return next((policy for policy in ("hallmark", "hard", "soft") if policy in found), None)


def revocation_rules(policy: str) -> RevocationCheckingPolicy:
    """pyHanko's revocation rules for a policy name (``hallmark``, ``hard``, ``soft``)."""
    return _RULES[policy]


async def _run(job: _Job) -> ValidationResult:
    anchor = job.trust.anchors.get(job.leaf.sha256)
    if anchor is not None:
        return _anchor_itself(job, anchor)
    paths = await _paths(job.trust, job.leaf, job.extra)
    if not paths:
        return _untrusted(job)
    failures = []
    try:
        for path in paths:
            result = await _check_path(job, path, _plan(job.trust, path))
            if result.ok:
                return result
            failures.append(result)
    finally:
        if job.backend is not None:
            await job.backend.close()
    return _pick(failures) if failures else _untrusted(job)


def _normalise_usage(values, aliases) -> set | None:
    if not values:
        return None
    return {aliases.get(v, v) for v in values}


def _prepare(ctx: CAContext, certificate, intermediates, usage, extended_usage, at) -> _Job | ValidationResult:
    try:
        leaf_crypto, leaf = _parse(certificate)
    except (ValueError, TypeError) as exc:
        return _invalid(f"not an X.509 certificate in DER or PEM ({exc})" if str(exc) else "not an X.509 certificate in DER or PEM")
    extra = []
    for number, item in enumerate(intermediates or (), start=1):
        try:
            extra.append(_parse(item)[1])
        except (ValueError, TypeError):
            return _invalid(f"intermediate certificate #{number} is not an X.509 certificate in DER or PEM")
    if at is not None and at.tzinfo is None:
        at = at.replace(tzinfo=UTC)  # a naive moment is taken as UTC
    found = ca_trust.snapshot(ctx)
    return _Job(
        found.store,
        found.revocation,
        leaf,
        leaf_crypto,
        extra,
        _normalise_usage(usage, _USAGE_ALIASES),
        _normalise_usage(extended_usage, _EKU_ALIASES),
        at,
    )


async def _guarded(job: _Job, timeout: float = TOTAL_TIMEOUT) -> ValidationResult:
    try:
        return await asyncio.wait_for(_run(job), timeout)
    except TimeoutError:
        log.warning("certificate validation stopped after %s s (external revocation data did not come)", timeout)
        return ValidationResult(
            False,
            "revocation_unknown",
            f"the revocation status could not be established within {timeout:g} seconds (an external CA's CRL or OCSP "
            "responder did not answer in time)",
        )
    except (ValueError, TypeError, KeyError, NotImplementedError) as exc:
        # asn1crypto parses lazily: a malformed extension deep in a certificate surfaces here.
        log.warning("certificate could not be processed during validation", exc_info=True)
        return _invalid(f"the certificate could not be processed: {type(exc).__name__}: {exc}")


def validate(
    ctx: CAContext,
    certificate: x509.Certificate | bytes,
    *,
    intermediates=(),
    usage: set[str] | None = None,
    extended_usage: set[str] | None = None,
    at: datetime | None = None,
    timeout: float = TOTAL_TIMEOUT,
) -> ValidationResult:
    """Validate ``certificate`` (object, DER or PEM) to any trust anchor, revocation included.

    ``intermediates`` are extra CA certificates the holder supplied. ``usage`` are
    key-usage names (``digital_signature``, ``non_repudiation``, ... or their RFC 5280
    spellings), ``extended_usage`` EKU names (``client_auth``, ``clientAuth``, ...) or
    dotted OIDs, all required. ``at`` validates at a past moment (see the policy table).
    ``timeout``: seconds the validation may wait in all (``revocation_unknown`` past it).
    """
    job = _prepare(ctx, certificate, intermediates, usage, extended_usage, at)
    if isinstance(job, ValidationResult):
        return job
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_guarded(job, timeout))
    # Called from inside an event loop (async code): run on a thread with a loop of its own.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, _guarded(job, timeout)).result()


async def async_validate(
    ctx: CAContext,
    certificate: x509.Certificate | bytes,
    *,
    intermediates=(),
    usage: set[str] | None = None,
    extended_usage: set[str] | None = None,
    at: datetime | None = None,
) -> ValidationResult:
    """:func:`validate` for async callers; the database work runs on a worker thread."""
    job = await asyncio.to_thread(_prepare, ctx, certificate, intermediates, usage, extended_usage, at)
    if isinstance(job, ValidationResult):
        return job
    return await _guarded(job)
