"""What signing and validation need from the CA: trust anchors, our revocation data, our TSA.

* :class:`OwnTimeStamper` asks our RFC 3161 TSA in-process (``ca.tsa.respond``):
  the same code answers ``/pki/tsa``, without an HTTP round trip per signature.
* :func:`material` is the parsed trust store (our root, the recognised anchors,
  our issuing CAs and cross-certificates) and our current CRLs, parsed once per
  process and re-read only when the CRL numbers or the trust store change, so a
  revocation is seen by the next signature or validation in every process.
* :func:`signing_context` is the pyHanko validation context a B-LT/B-LTA
  signature is checked against before signing; the revocation data it holds
  (pre-signed OCSP responses of ours and our CRLs) is what goes into the DSS.
* :func:`validation_spec` is the pyHanko AdES validation policy for reports.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime

from asn1crypto import crl as asn1_crl
from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import tsp
from asn1crypto import x509 as asn1_x509
from pyhanko.sign.timestamps.api import TimeStamper
from pyhanko.sign.validation.policy_decl import (
    LocalKnowledge,
    RevinfoOnlineFetchingRule,
    RevocationInfoGatheringSpec,
    SignatureValidationSpec,
)
from pyhanko.sign.validation.settings import KeyUsageConstraints
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.authority import CertTrustAnchor
from pyhanko_certvalidator.context import CertValidationPolicySpec
from pyhanko_certvalidator.ltv.poe import KnownPOE, POEType, digest_for_poe
from pyhanko_certvalidator.policy_decl import CertRevTrustPolicy, RevocationCheckingPolicy, RevocationCheckingRule
from pyhanko_certvalidator.registry import SimpleTrustManager
from pyhanko_certvalidator.revinfo.archival import CRLContainer
from sqlalchemy import select

from ca import tsa, validation
from ca.context import CAContext
from ca.models import CRL, Authority, Certificate, OCSPResponse, RecognisedCA

# A seal certificate carries both bits; pyHanko requires at least one of these.
SIGNER_KEY_USAGE = frozenset({"non_repudiation", "digital_signature"})
_HARD = RevocationCheckingPolicy(RevocationCheckingRule.CRL_OR_OCSP_REQUIRED, RevocationCheckingRule.CRL_OR_OCSP_REQUIRED)


class TimeStampUnavailable(Exception):
    """Our TSA refused or failed: the signature cannot get its timestamp."""


class OwnTimeStamper(TimeStamper):
    """pyHanko's timestamp client, answered by our TSA in this process."""

    def __init__(self, ctx: CAContext):
        super().__init__(include_nonce=True)
        self._ctx = ctx

    async def async_request_tsa_response(self, req: tsp.TimeStampReq) -> tsp.TimeStampResp:
        answer = tsa.respond(self._ctx, req.dump())
        try:
            response = tsp.TimeStampResp.load(answer)
            granted = response["status"]["status"].native in ("granted", "granted_with_mods")
        except Exception:
            granted = False
        if not granted:
            raise TimeStampUnavailable("the time-stamping authority did not grant a timestamp")
        return response


# Signing validates many more signatures per process than the CA does (every seal's chain and revocation data).
signature_validator = validation.RememberingSignatureValidator(size=8192)


@dataclass(frozen=True)
class Material:
    """The trust store and our revocation data, parsed; shared read-only by every thread."""

    key: tuple
    roots: tuple  # asn1crypto certificates: our root and every recognised anchor
    intermediates: tuple  # our issuing CAs and the cross-certificates in force
    crls: tuple  # asn1crypto CertificateList: the current CRL of each of our authorities
    trust_manager: SimpleTrustManager
    known_poes: tuple  # KnownPOE: we held these CA certificates since they were issued or recognised
    own_names: frozenset  # asn1crypto Name.hashable of our authorities
    root: asn1_x509.Certificate


def _parsed(der: bytes) -> asn1_x509.Certificate:
    certificate = asn1_x509.Certificate.load(der)
    certificate.native  # noqa: B018 - parse completely before threads share it (asn1crypto parses lazily)
    return certificate


class _Cache:
    def __init__(self):
        self.lock = threading.Lock()
        self.material: Material | None = None


_caches: dict[int, _Cache] = {}
_caches_lock = threading.Lock()


def _cache(ctx: CAContext) -> _Cache:
    cache = _caches.get(id(ctx))
    if cache is None:
        with _caches_lock:
            cache = _caches.setdefault(id(ctx), _Cache())
            weakref.finalize(ctx, _caches.pop, id(ctx), None)
    return cache


def material(ctx: CAContext, session=None) -> Material:
    """The current trust material; two small queries decide whether the cached one still holds."""
    if session is None:
        with ctx.sessions() as own:
            return material(ctx, own)
    cache = _cache(ctx)
    numbers = tuple(sorted(tuple(row) for row in session.execute(select(Authority.name, Authority.crl_number))))
    recognised = tuple(sorted(tuple(row) for row in session.execute(select(RecognisedCA.fingerprint, RecognisedCA.how))))
    key = (numbers, recognised)
    current = cache.material
    if current is not None and current.key == key:
        return current
    with cache.lock:
        if cache.material is not None and cache.material.key == key:
            return cache.material
        cache.material = _build(ctx, session, key, [name for name, _ in numbers])
        return cache.material


def _build(ctx: CAContext, session, key: tuple, names: list[str]) -> Material:
    roots, intermediates, poes, own = [], [], [], set()
    root = None
    for name in names:
        loaded = ctx.authority(name, session)
        certificate = _parsed(loaded.der)
        own.add(certificate.subject.hashable)
        (roots if loaded.role == "root" else intermediates).append(certificate)
        if loaded.role == "root":
            root = certificate
        poes.append(KnownPOE(POEType.PROVIDED, digest_for_poe(loaded.der), loaded.certificate.not_valid_before_utc))
    for row in session.scalars(select(RecognisedCA)):
        certificate = _parsed(row.der)
        if row.how == "anchor":
            roots.append(certificate)
        poes.append(KnownPOE(POEType.PROVIDED, digest_for_poe(row.der), row.added_at))
    if root is not None:
        query = select(Certificate.der).where(
            Certificate.authority == "root", Certificate.profile == "cross-certificate", Certificate.status == "valid"
        )
        for der in session.scalars(query):
            intermediates.append(_parsed(der))
            poes.append(KnownPOE(POEType.PROVIDED, digest_for_poe(der), datetime.now(UTC)))
    crls = []
    for name, number in key[0]:
        row = session.get(CRL, (name, number)) if number else None
        if row is not None:
            parsed = asn1_crl.CertificateList.load(row.der)
            parsed.native  # noqa: B018 - see _parsed
            crls.append(parsed)
    return Material(
        key=key,
        roots=tuple(roots),
        intermediates=tuple(intermediates),
        crls=tuple(crls),
        trust_manager=SimpleTrustManager.build(trust_roots=[CertTrustAnchor(c) for c in roots]),
        known_poes=tuple(poes),
        own_names=frozenset(own),
        root=root,
    )


def is_ours(certificate: asn1_x509.Certificate, found: Material) -> bool:
    return certificate.issuer.hashable in found.own_names


def ocsp_responses(ctx: CAContext, serials: list[str]) -> list[asn1_ocsp.OCSPResponse]:
    """Our pre-signed OCSP responses for certificates of ours (lower-case hex serials)."""
    with ctx.sessions() as session:
        ders = session.scalars(select(OCSPResponse.der).where(OCSPResponse.serial.in_(serials))).all()
    return [asn1_ocsp.OCSPResponse.load(der) for der in ders]


def tsa_serial(ctx: CAContext) -> str | None:
    from ca import hierarchy

    with ctx.sessions() as session:
        row = hierarchy.service_certificate(session, tsa.TSA_PROFILE, tsa.TSA_AUTHORITY)
        return row.serial if row is not None else None


def signing_context(ctx: CAContext, leaf_serials: list[str], *, allow_fetching: bool = False) -> ValidationContext:
    """The context the signer's certificate (and the TSA's) is validated in before signing.

    Holds exactly the revocation data to embed: our OCSP responses for the leaves
    named (the signer and the TSA) and the CRLs of our authorities (which cover
    the issuing CAs). ``allow_fetching`` lets pyHanko fetch for a certificate of
    a recognised external CA.
    """
    found = material(ctx)
    return ValidationContext(
        trust_roots=list(found.roots),
        other_certs=list(found.intermediates),
        crls=list(found.crls),
        ocsps=ocsp_responses(ctx, leaf_serials),
        allow_fetching=allow_fetching,
        revocation_mode="hard-fail",
    )


def validation_spec(
    ctx: CAContext, extra_knowledge: LocalKnowledge | None = None, found: Material | None = None
) -> SignatureValidationSpec:
    """pyHanko's AdES validation policy: our anchors, hard revocation checking, nothing fetched.

    Our current CRLs are local knowledge, so a signature whose file carries no
    revocation data (B-B, B-T) is still checked against our records now.
    """
    found = found or material(ctx)
    extra = extra_knowledge or LocalKnowledge()
    policy = CertValidationPolicySpec(
        trust_manager=found.trust_manager,
        revinfo_policy=CertRevTrustPolicy(_HARD),
        signature_validator=signature_validator,
    )
    knowledge = LocalKnowledge(
        known_ocsps=list(extra.known_ocsps),
        known_crls=[CRLContainer(crl) for crl in found.crls] + list(extra.known_crls),
        known_certs=list(found.intermediates) + list(extra.known_certs),
        known_poes=list(found.known_poes) + list(extra.known_poes),
    )
    return SignatureValidationSpec(
        cert_validation_policy=policy,
        revinfo_gathering_policy=RevocationInfoGatheringSpec(online_fetching_rule=RevinfoOnlineFetchingRule.LOCAL_ONLY),
        local_knowledge=knowledge,
        key_usage_settings=KeyUsageConstraints(key_usage=set(SIGNER_KEY_USAGE), match_all_key_usages=False),
    )
