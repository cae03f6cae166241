"""The CA's health as the staff console shows it: each authority's current CRL, the OCSP responders' and TSA's certificates."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from ca import hierarchy
from ca.context import CAContext
from ca.models import Authority
from ca.status import crl

OK, WARNING, FAILED = "ok", "warning", "failed"
EXPIRY_WARNING = timedelta(days=30)


@dataclass(frozen=True)
class CRLHealth:
    authority: str
    number: int | None
    this_update: datetime | None
    next_update: datetime | None
    state: str  # ok | warning (none published yet) | failed (overdue)


@dataclass(frozen=True)
class ServiceHealth:
    service: str  # "ocsp" | "tsa"
    authority: str
    serial: str | None
    not_after: datetime | None
    state: str  # ok | warning (expires within 30 days) | failed (none, or expired)
    live: str | None = None  # the live self-check: ok | failed (None: not run)
    live_detail: str = ""


def _expiry_state(not_after: datetime | None, now: datetime) -> str:
    if not_after is None or not_after <= now:
        return FAILED
    return WARNING if not_after - now < EXPIRY_WARNING else OK


def ocsp_self_check(ctx: CAContext, authority: Authority, serial: str) -> tuple[str, str]:
    """Ask the OCSP responder, in this process, about a known valid certificate of ``authority`` (its responder's own)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509 import ocsp as x509_ocsp

    from ca.status import ocsp

    issuer = x509.load_der_x509_certificate(authority.certificate)
    request = (
        x509_ocsp.OCSPRequestBuilder().add_certificate_by_hash(*ocsp.issuer_hashes(issuer, "sha1"), int(serial, 16), hashes.SHA1()).build()
    )
    responder = ocsp.Responder(ctx)
    try:
        answer = responder.answer(request.public_bytes(serialization.Encoding.DER), "health-check")
    finally:
        responder.close()
    response = x509_ocsp.load_der_ocsp_response(answer.der)
    if response.response_status != x509_ocsp.OCSPResponseStatus.SUCCESSFUL:
        return FAILED, f"responder answered {response.response_status.name}"
    if response.serial_number != int(serial, 16) or response.certificate_status != x509_ocsp.OCSPCertStatus.GOOD:
        return FAILED, f"responder said {response.certificate_status.name} for a valid certificate"
    return OK, f"good, produced {response.produced_at_utc:%Y-%m-%d %H:%M:%S} UTC"


def tsa_self_check(ctx: CAContext) -> tuple[str, str]:
    """Ask the time-stamping authority, in this process, for a token over a fresh digest."""
    import hashlib
    import secrets

    from asn1crypto import algos, tsp

    from ca.tsa import responder

    nonce = secrets.randbits(63)
    request = tsp.TimeStampReq(
        {
            "version": 1,
            "message_imprint": {
                "hash_algorithm": algos.DigestAlgorithm({"algorithm": "sha256"}),
                "hashed_message": hashlib.sha256(secrets.token_bytes(16)).digest(),
            },
            "nonce": nonce,
            "cert_req": True,
        }
    )
    reply = tsp.TimeStampResp.load(responder.respond(ctx, request.dump()))
    status = reply["status"]["status"].native
    if status not in ("granted", "granted_with_mods"):
        return FAILED, f"TSA answered {status}"
    info = reply["time_stamp_token"]["content"]["encap_content_info"]["content"].parsed
    if info["nonce"].native != nonce:
        return FAILED, "the token does not carry the request's nonce"
    return OK, f"token at {info['gen_time'].native:%Y-%m-%d %H:%M:%S} UTC"


def _live(check, *args) -> tuple[str, str]:
    try:
        return check(*args)
    except Exception as exc:  # a health check reports what broke, it does not break the page
        return FAILED, f"{type(exc).__name__}: {str(exc)[:200]}"


def check(ctx: CAContext, now: datetime | None = None, *, live: bool = True) -> tuple[list[CRLHealth], list[ServiceHealth]]:
    now = now or datetime.now(UTC)
    crls: list[CRLHealth] = []
    services: list[ServiceHealth] = []
    found: list[tuple] = []
    with ctx.sessions() as session:
        for authority in session.scalars(select(Authority).order_by(Authority.name)):
            row = crl._current_row(session, authority.name)
            if row is None:
                crls.append(CRLHealth(authority.name, None, None, None, WARNING))
            else:
                crls.append(
                    CRLHealth(authority.name, row.number, row.this_update, row.next_update, FAILED if row.next_update < now else OK)
                )
            if authority.role == "issuing":
                responder = hierarchy.service_certificate(session, "ocsp-signing", authority.name)
                found.append(("ocsp", authority, responder))
        found.append(("tsa", None, hierarchy.service_certificate(session, "timestamping", "services")))
    # The live checks after the session is given back: the responders read the database themselves.
    for service, authority, certificate in found:
        state, detail = None, ""
        if live and certificate is not None:
            state, detail = _live(ocsp_self_check, ctx, authority, certificate.serial) if service == "ocsp" else _live(tsa_self_check, ctx)
        not_after = certificate and certificate.not_after
        services.append(
            ServiceHealth(
                service,
                authority.name if authority is not None else "services",
                certificate and certificate.serial,
                not_after,
                _expiry_state(not_after, now),
                state,
                detail,
            )
        )
    return crls, services
