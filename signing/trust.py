"""What signing and validation need from the CA: trust anchors, our revocation data, our TSA.

* :class:`OwnTimeStamper` asks our RFC 3161 TSA in-process (``ca.tsa.responder.respond``):
  the same code answers ``/pki/tsa``, without an HTTP round trip per signature.
* :func:`material` is the trust store (our root, the recognised anchors, our
  issuing CAs and cross-certificates) and our current CRLs: :func:`ca.trust.snapshot`,
  the one store that certificate login and path validation read as well, so a
  certificate is trusted here exactly when it is trusted there; a revocation or a
  change of the trust store is seen by the next signature or validation in every process.
* :func:`signing_context` is the pyHanko validation context a B-LT/B-LTA
  signature is checked against before signing; the revocation data it holds
  (pre-signed OCSP responses of ours and our CRLs) is what goes into the DSS.
* :func:`validation_spec` is the pyHanko AdES validation policy for reports.
"""

from __future__ import annotations

from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import tsp
from pyhanko.sign.timestamps.api import TimeStamper
from pyhanko.sign.validation.policy_decl import (
    LocalKnowledge,
    RevinfoOnlineFetchingRule,
    RevocationInfoGatheringSpec,
    SignatureValidationSpec,
)
from pyhanko.sign.validation.settings import KeyUsageConstraints
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.context import CertValidationPolicySpec
from pyhanko_certvalidator.policy_decl import CertRevTrustPolicy
from pyhanko_certvalidator.revinfo.archival import CRLContainer
from sqlalchemy import select

from ca import trust as ca_trust
from ca import validation
from ca.context import CAContext
from ca.models import OCSPResponse
from ca.tsa import responder as tsa

# A seal certificate carries both bits; pyHanko requires at least one of these.
SIGNER_KEY_USAGE = frozenset({"non_repudiation", "digital_signature"})


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


def material(ctx: CAContext, session=None) -> ca_trust.Snapshot:
    """The trust store and our current CRLs: :func:`ca.trust.snapshot`, the store certificate login reads too."""
    return ca_trust.snapshot(ctx, session)


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
        trust_manager=found.store.trust_manager,
        other_certs=list(found.store.intermediates),
        crls=list(found.revocation.crls),
        ocsps=ocsp_responses(ctx, leaf_serials),
        allow_fetching=allow_fetching,
        revocation_mode="hard-fail",
    )


def validation_spec(
    ctx: CAContext,
    extra_knowledge: LocalKnowledge | None = None,
    found: ca_trust.Snapshot | None = None,
    *,
    revocation_policy: str = "hallmark",
) -> SignatureValidationSpec:
    """pyHanko's AdES validation policy: the trust store's anchors, revocation required, nothing fetched.

    Our current CRLs are local knowledge, so a signature whose file carries no
    revocation data (B-B, B-T) is still checked against our records now. The
    signer's certificate is checked under ``revocation_policy``: that of the CA it
    falls under (:func:`ca.validation.revocation_policy`), so a CA recognised under
    the ``soft`` policy is accepted without revocation data, as path validation
    accepts it; timestamps always need theirs.
    """
    found = found or material(ctx)
    extra = extra_knowledge or LocalKnowledge()

    def policy(rules: str) -> CertValidationPolicySpec:
        return CertValidationPolicySpec(
            trust_manager=found.store.trust_manager,
            revinfo_policy=CertRevTrustPolicy(validation.revocation_rules(rules)),
            signature_validator=signature_validator,
        )

    knowledge = LocalKnowledge(
        known_ocsps=list(extra.known_ocsps),
        known_crls=[CRLContainer(crl) for crl in found.revocation.crls] + list(extra.known_crls),
        known_certs=list(found.store.intermediates) + list(extra.known_certs),
        known_poes=list(found.store.known_poes) + list(extra.known_poes),
    )
    return SignatureValidationSpec(
        cert_validation_policy=policy(revocation_policy),
        ts_cert_validation_policy=policy("hard"),
        revinfo_gathering_policy=RevocationInfoGatheringSpec(online_fetching_rule=RevinfoOnlineFetchingRule.LOCAL_ONLY),
        local_knowledge=knowledge,
        key_usage_settings=KeyUsageConstraints(key_usage=set(SIGNER_KEY_USAGE), match_all_key_usages=False),
    )
