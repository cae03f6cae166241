"""RFC 3161 time-stamping authority (with the RFC 5816 ESSCertIDv2 update).

:func:`respond` turns a DER ``TimeStampReq`` into a DER ``TimeStampResp`` and
never raises: every problem with the request, or with our own side, becomes a
``rejection`` carrying a PKIFailureInfo bit and a readable statusString.

Decisions a reader should know:

* Serial numbers are 159 random bits (20 octets in DER, always positive). RFC 3161
  asks only that they be unique per TSA; at this size a collision is not a
  practical event, and nothing has to be written or coordinated per timestamp,
  so every node stays stateless and fast. No timestamp is stored or audited:
  the volume would swamp the trail. Counts go to the log instead.
* ``genTime`` carries milliseconds; ``accuracy`` is one second, an honest claim
  for an NTP-disciplined host clock (we have no better time source to vouch for).
* Any request extension is refused with ``unacceptedExtension``, critical or not:
  RFC 3161 2.4.1 requires that for extensions the TSA does not recognise, and we
  recognise none.
* SHA-256, SHA-384 and SHA-512 imprints are accepted. SHA-1 is refused (its
  collisions are practical); SM3 and everything else are refused as ``badAlg``.
* The TSA certificate and the issuing CA certificate are sent only when the
  request sets ``certReq``, as RFC 3161 2.4.1 describes.
* What does not change between timestamps (key, certificates, ESS attribute,
  signer identifier) is prepared once per process and context, and re-read from
  the database every few minutes so a renewed or revoked TSA certificate is
  picked up without a restart.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from asn1crypto import cms, core, tsp
from asn1crypto import x509 as asn1_x509
from asn1crypto.parser import emit
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from ca import hierarchy, profiles
from ca.context import CAContext
from core import ratelimit

log = logging.getLogger("hallmark.ca.tsa")

# Hallmark's UUID OID arc (X.667), branch 2 = time-stamping policies.
TSA_POLICY = profiles.policy_arc() + ".2.1"  # beside the certificate policies (.1.x)
TSA_PROFILE = "timestamping"
TSA_AUTHORITY = "services"
MAX_REQUEST_BYTES = 8 * 1024
ACCURACY_SECONDS = 1
RELOAD_SECONDS = 300  # how long a loaded TSA certificate is trusted before the database is asked again
LOG_EVERY_SECONDS = 300
SERIAL_BITS = 159

# Accepted imprint hashes: OID -> (name, digest length in octets).
HASHES = {
    "2.16.840.1.101.3.4.2.1": ("sha256", 32),
    "2.16.840.1.101.3.4.2.2": ("sha384", 48),
    "2.16.840.1.101.3.4.2.3": ("sha512", 64),
}
_REFUSED_HASHES = {
    "1.3.14.3.2.26": "SHA-1 is not accepted: its collision resistance is broken; use SHA-256, SHA-384 or SHA-512",
    "1.2.840.113549.2.5": "MD5 is not accepted; use SHA-256, SHA-384 or SHA-512",
    "1.2.156.10197.1.401": "SM3 is not supported by this TSA; use SHA-256, SHA-384 or SHA-512",
}
_NULL_OR_ABSENT = (b"", b"\x05\x00")


class TimeStampResp(core.Sequence):
    """RFC 3161 2.4.2 TimeStampResp. asn1crypto 1.5.1's ``tsp.TimeStampResp`` makes the token
    mandatory (wbond/asn1crypto#286), so it can neither build nor read a rejection."""

    _fields = [("status", tsp.PKIStatusInfo), ("time_stamp_token", cms.ContentInfo, {"optional": True})]


class Rejection(Exception):
    """A reason not to grant, as a PKIFailureInfo bit name and a statusString."""

    def __init__(self, failure: str, text: str):
        super().__init__(text)
        self.failure = failure
        self.text = text


@dataclass(frozen=True)
class Request:
    imprint_der: bytes  # copied into TSTInfo as received, so it matches byte for byte
    nonce: int | None
    cert_req: bool


@dataclass(frozen=True)
class _Signing:
    """The TSA's side of every timestamp, prepared once: nothing here changes per request."""

    key: object
    key_uri: str
    hash_name: str
    digest_algorithm_der: bytes
    signature_algorithm_der: bytes
    sid_der: bytes
    fixed_attributes_der: tuple[bytes, ...]  # content-type and ESS signing-certificate-v2
    tsa_name_der: bytes
    certificates_der: bytes  # [0] IMPLICIT SET OF: the TSA certificate and its issuing CA
    not_before: datetime
    not_after: datetime
    loaded_at: float


# -- request ----------------------------------------------------------------------------------


def parse_request(der: bytes) -> Request:
    """Check a TimeStampReq against what we grant; raise :class:`Rejection` saying why not."""
    if len(der) > MAX_REQUEST_BYTES:
        raise Rejection("bad_data_format", f"the request is larger than {MAX_REQUEST_BYTES} bytes")
    if not der:
        raise Rejection("bad_data_format", "the request body is empty; send a DER TimeStampReq")
    try:
        req = tsp.TimeStampReq.load(der, strict=True)
        version = req["version"].native
        imprint = req["message_imprint"]
        algorithm = imprint["hash_algorithm"]
        oid = algorithm["algorithm"].dotted
        parameters = algorithm["parameters"].dump()
        hashed = imprint["hashed_message"].native
        policy = req["req_policy"].dotted if req["req_policy"].native is not None else None
        nonce = req["nonce"].native
        cert_req = bool(req["cert_req"].native)
        extensions = req["extensions"]
        has_extensions = extensions.native is not None
        imprint_der = imprint.dump()
    except Exception:
        raise Rejection("bad_data_format", "the request is not a DER-encoded RFC 3161 TimeStampReq") from None
    if version != "v1":
        raise Rejection("bad_data_format", f"unsupported TimeStampReq version {version!r}; only v1 exists")
    if has_extensions:
        raise Rejection("unaccepted_extensions", "this TSA recognises no request extensions; send the request without them")
    if oid in _REFUSED_HASHES:
        raise Rejection("bad_alg", _REFUSED_HASHES[oid])
    if oid not in HASHES:
        raise Rejection("bad_alg", f"hash algorithm {oid} is not supported; use SHA-256, SHA-384 or SHA-512")
    if parameters not in _NULL_OR_ABSENT:
        raise Rejection("bad_data_format", "hash algorithm parameters must be absent or NULL")
    name, length = HASHES[oid]
    if not isinstance(hashed, bytes) or len(hashed) != length:
        raise Rejection("bad_data_format", f"a {name.upper()} imprint is {length} bytes, not {len(hashed or b'')}")
    if policy is not None and policy != TSA_POLICY:
        raise Rejection("unaccepted_policy", f"this TSA issues timestamps under policy {TSA_POLICY} only, not {policy}")
    return Request(imprint_der, nonce, cert_req)


# -- the TSA's certificate and key ------------------------------------------------------------

_states: dict[int, tuple[weakref.ref, _Signing]] = {}
_states_lock = threading.Lock()


def _load(ctx: CAContext) -> _Signing:
    with ctx.sessions() as session:
        row = hierarchy.service_certificate(session, TSA_PROFILE, TSA_AUTHORITY)
        if row is None:
            raise Rejection("system_failure", "the time-stamping authority has no valid certificate; run 'hallmark ca init'")
        der, key_uri, authority = row.der, row.key_uri, row.authority
    issuer = ctx.authority(authority)
    try:
        key = ctx.signer(key_uri)
    except Exception:
        log.exception("TSA signing key %s is not usable", key_uri)
        raise Rejection("system_failure", "the time-stamping authority's signing key is unavailable") from None

    certificate = asn1_x509.Certificate.load(der)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        hash_name = "sha384" if key.curve.key_size >= 384 else "sha256"
        signature_algorithm = cms.SignedDigestAlgorithm({"algorithm": f"{hash_name}_ecdsa"})
    elif isinstance(key, rsa.RSAPrivateKey):
        hash_name = "sha256"
        signature_algorithm = cms.SignedDigestAlgorithm({"algorithm": "sha256_rsa", "parameters": core.Null()})
    else:
        raise Rejection("system_failure", "the time-stamping authority's key is of an unsupported type")
    ess = tsp.SigningCertificateV2(
        {
            "certs": [
                {
                    "hash_algorithm": {"algorithm": "sha256"},  # the DEFAULT, so DER omits it
                    "cert_hash": hashlib.sha256(der).digest(),
                    "issuer_serial": {
                        "issuer": [asn1_x509.GeneralName({"directory_name": certificate.issuer})],
                        "serial_number": certificate.serial_number,
                    },
                }
            ]
        }
    )
    validity = certificate["tbs_certificate"]["validity"]
    return _Signing(
        key=key,
        key_uri=key_uri,
        hash_name=hash_name,
        digest_algorithm_der=cms.DigestAlgorithm({"algorithm": hash_name}).dump(),
        signature_algorithm_der=signature_algorithm.dump(),
        sid_der=cms.SignerIdentifier(
            {"issuer_and_serial_number": {"issuer": certificate.issuer, "serial_number": certificate.serial_number}}
        ).dump(),
        fixed_attributes_der=(
            cms.CMSAttribute({"type": "content_type", "values": ["tst_info"]}).dump(),
            cms.CMSAttribute({"type": "signing_certificate_v2", "values": [ess]}).dump(),
        ),
        tsa_name_der=asn1_x509.GeneralName({"directory_name": certificate.subject}).dump(),
        certificates_der=_implicit(0, _set_of([der, issuer.der])),
        not_before=validity["not_before"].native,
        not_after=validity["not_after"].native,
        loaded_at=time.monotonic(),
    )


def _signing(ctx: CAContext) -> _Signing:
    key = id(ctx)
    entry = _states.get(key)
    state = entry[1] if entry is not None and entry[0]() is ctx else None
    if state is not None and time.monotonic() - state.loaded_at < RELOAD_SECONDS:
        return state
    with _states_lock:
        entry = _states.get(key)
        if entry is not None and entry[0]() is ctx and time.monotonic() - entry[1].loaded_at < RELOAD_SECONDS:
            return entry[1]
        try:
            fresh = _load(ctx)
        except Rejection:
            _states.pop(key, None)
            raise
        except Exception:
            if state is None:
                log.exception("cannot load the TSA certificate")
                raise Rejection("system_failure", "the time-stamping authority cannot load its certificate") from None
            log.warning("cannot re-read the TSA certificate; using the one loaded before", exc_info=True)
            fresh = replace(state, loaded_at=time.monotonic())
        if key not in _states:
            weakref.finalize(ctx, _states.pop, key, None)
        _states[key] = (weakref.ref(ctx), fresh)
        return fresh


def forget(ctx: CAContext) -> None:
    """Drop the prepared TSA state, so the next request reads the certificate again."""
    with _states_lock:
        _states.pop(id(ctx), None)


# -- the token --------------------------------------------------------------------------------


def _sign(signing: _Signing, data: bytes) -> bytes:
    key = signing.key
    algorithm = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384()}[signing.hash_name]
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(algorithm))
    return key.sign(data, padding.PKCS1v15(), algorithm)


def new_serial() -> int:
    return int.from_bytes(os.urandom(20), "big") >> (160 - SERIAL_BITS) or 1


# The CMS envelope around TSTInfo is framed from parts asn1crypto encoded (once, or
# per request for what varies) with asn1crypto's own DER emitter: building the
# same envelope from nested asn1crypto objects cost three quarters of each
# response. A test checks that asn1crypto, re-encoding a whole response, gets the same bytes.
_UNIVERSAL, _CONTEXT, _CONSTRUCTED = 0, 2, 1
_OID_SIGNING_TIME = core.ObjectIdentifier("1.2.840.113549.1.9.5").dump()
_OID_MESSAGE_DIGEST = core.ObjectIdentifier("1.2.840.113549.1.9.4").dump()
_OID_TST_INFO = core.ObjectIdentifier("1.2.840.113549.1.9.16.1.4").dump()
_OID_SIGNED_DATA = core.ObjectIdentifier("1.2.840.113549.1.7.2").dump()
_V1, _V3 = core.Integer(1).dump(), core.Integer(3).dump()
_GRANTED = tsp.PKIStatusInfo({"status": "granted"}).dump()


def _sequence(*parts: bytes) -> bytes:
    return emit(_UNIVERSAL, _CONSTRUCTED, 16, b"".join(parts))


def _set_of(parts: list[bytes]) -> bytes:
    return emit(_UNIVERSAL, _CONSTRUCTED, 17, b"".join(sorted(parts)))  # DER (X.690 11.6): SET OF sorted by encoding


def _implicit(tag: int, der: bytes) -> bytes:
    """``der`` (a constructed value) re-tagged [tag] IMPLICIT: same contents, context tag."""
    return emit(_CONTEXT, _CONSTRUCTED, tag, _contents(der))


def _explicit(tag: int, der: bytes) -> bytes:
    return emit(_CONTEXT, _CONSTRUCTED, tag, der)


def _contents(der: bytes) -> bytes:
    """The contents octets of a DER value with a one-octet tag (all we frame)."""
    length = der[1]
    return der[2 + (length & 0x7F if length & 0x80 else 0) :]


def token(signing: _Signing, request: Request, now: datetime) -> bytes:
    """The DER of a signed TimeStampToken (a CMS ContentInfo) for ``request`` at ``now`` (UTC)."""
    if not signing.not_before <= now <= signing.not_after:
        raise Rejection("system_failure", "the time-stamping authority's certificate is not valid now")
    gen_time = now.replace(microsecond=now.microsecond // 1000 * 1000)
    tst_der = tsp.TSTInfo(
        {
            "version": "v1",
            "policy": TSA_POLICY,
            "message_imprint": tsp.MessageImprint.load(request.imprint_der),
            "serial_number": new_serial(),
            "gen_time": gen_time,
            "accuracy": {"seconds": ACCURACY_SECONDS},
            # ordering is left out: its DEFAULT is FALSE, and DER omits defaults.
            "nonce": request.nonce,
            "tsa": asn1_x509.GeneralName.load(signing.tsa_name_der),
        }
    ).dump()
    signed_attributes = _set_of(
        [
            *signing.fixed_attributes_der,
            # RFC 5652 11.3: UTCTime for dates through 2049.
            _sequence(_OID_SIGNING_TIME, _set_of([core.UTCTime(gen_time.replace(microsecond=0)).dump()])),
            _sequence(_OID_MESSAGE_DIGEST, _set_of([core.OctetString(hashlib.new(signing.hash_name, tst_der).digest()).dump()])),
        ]
    )
    try:
        # The signature covers the attributes encoded as a SET (RFC 5652 5.4), not in their [0] form.
        signature = _sign(signing, signed_attributes)
    except Exception:
        log.exception("the HSM did not sign a timestamp with %s", signing.key_uri)
        raise Rejection("system_failure", "the time-stamping authority could not sign: its HSM is unavailable") from None
    signer_info = _sequence(
        _V1,  # sid is issuerAndSerialNumber
        signing.sid_der,
        signing.digest_algorithm_der,
        _implicit(0, signed_attributes),
        signing.signature_algorithm_der,
        core.OctetString(signature).dump(),
    )
    signed_data = _sequence(
        _V3,  # RFC 5652 5.1: eContentType is not id-data
        _set_of([signing.digest_algorithm_der]),
        _sequence(_OID_TST_INFO, _explicit(0, core.OctetString(tst_der).dump())),
        signing.certificates_der if request.cert_req else b"",
        _set_of([signer_info]),
    )
    return _sequence(_OID_SIGNED_DATA, _explicit(0, signed_data))


# -- responses --------------------------------------------------------------------------------


def limit_wait(ctx: CAContext, client: str) -> float:
    """Count one time-stamp request of ``client`` (the ca section's ``tsa`` limit, shared by every worker and node).

    0 when it may be answered; past the limit, the seconds to wait (and nothing counted).
    Every time-stamp is an HSM signature: a client cannot have the token sign without end.
    """
    return ratelimit.shared(ctx.cache, ctx.sessions, "ca.tsa", ctx.settings.limit("tsa")).attempt(client)


def rejection(failure: str, text: str) -> bytes:
    return TimeStampResp({"status": {"status": "rejection", "status_string": [text], "fail_info": tsp.PKIFailureInfo({failure})}}).dump()


_FALLBACK = rejection("system_failure", "the time-stamping authority hit an unexpected error; it has been logged")


class _Counts:
    """Timestamps granted and refused by this process, logged now and then instead of audited."""

    def __init__(self):
        self.granted = 0
        self.rejected = 0
        self._lock = threading.Lock()
        self._logged_at = time.monotonic()

    def add(self, granted: bool) -> None:
        with self._lock:
            if granted:
                self.granted += 1
            else:
                self.rejected += 1
            now = time.monotonic()
            if now - self._logged_at < LOG_EVERY_SECONDS:
                return
            self._logged_at = now
            granted_total, rejected_total = self.granted, self.rejected
        log.info("time-stamping: %d granted, %d rejected by this process so far", granted_total, rejected_total)


counts = _Counts()


def respond(ctx: CAContext, request_der: bytes) -> bytes:
    """The DER TimeStampResp for a DER TimeStampReq. Never raises."""
    try:
        try:
            request = parse_request(request_der)
            signing = _signing(ctx)
            answer = _sequence(_GRANTED, token(signing, request, datetime.now(UTC)))
        except Rejection as refused:
            counts.add(False)
            return rejection(refused.failure, refused.text)
        counts.add(True)
        return answer
    except Exception:
        log.exception("time-stamping failed unexpectedly")
        counts.add(False)
        return _FALLBACK
