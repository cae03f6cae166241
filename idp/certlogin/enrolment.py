"""Certificate enrolment for USB keys: a person (or an enterprise's legal representative)
gets an authentication certificate for a key their USB key generated.

The request arrives with the person's own access token (scope :data:`ENROL_SCOPE`,
normally obtained by ``hallmark-key`` as the public client :data:`KEY_CLIENT_ID`).
Before anything is issued:

* the token is a person's (authorization code flow), at level 2 (real-name) or
  above, from a password entered within :data:`MAX_AUTH_AGE` (a session left open
  in a browser is not enough to obtain a certificate that raises the account to
  level 3);
* the account is active and its identity proofed;
* ``person-auth``: the claimed resident ID is the proofed one (compared by keyed
  hash, never stored) and the claimed name is the proofed legal name;
* ``enterprise-auth``: the account is the enterprise's legal representative.

The certificate is then issued by ``ca.issuance`` (which stores and audits it);
refusals are audited too, and store nothing else.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy.orm import Session

from ca import issuance
from ca.context import CAContext
from core import audit
from core import db as core_db
from core.identifiers import InvalidIdentifier, lookup_hash, validate_credit_code, validate_resident_id
from core.problems import Problem
from idp import levels
from idp.context import IdPContext
from idp.models import Account, IdentityProofing
from idp.oidc import clients, tokens
from idp.people import realname

log = logging.getLogger("hallmark.idp.enrolment")

ENROL_SCOPE = "cert:enrol"
KEY_CLIENT_ID = "hallmark-key"
# RFC 8252 section 7.3: a native app listens on a loopback port of its choosing;
# the registered URI carries no port and any port matches (idp.oidc.clients).
KEY_CLIENT_REDIRECT = "http://127.0.0.1/callback"
PROFILES = ("person-auth", "enterprise-auth")
MIN_LEVEL = 2
MAX_AUTH_AGE = 15 * 60  # seconds since the password was entered


@dataclass(frozen=True)
class EnrolmentRequest:
    profile: str
    csr: str
    name: str
    resident_id: str | None = None
    credit_code: str | None = None


@dataclass(frozen=True)
class Enrolment:
    serial: str
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]  # issuing CA first, root last

    def as_json(self) -> dict:
        return {
            "serial": self.serial,
            "certificate": self.certificate.public_bytes(Encoding.PEM).decode(),
            "chain": [c.public_bytes(Encoding.PEM).decode() for c in self.chain],
        }


class EnrolmentRefused(Problem):
    """A refusal with a stable ``code``, audited before it is raised."""

    def __init__(self, status: int, detail: str, code: str, headers: dict | None = None):
        titles = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 422: "Unprocessable Content", 503: "Service Unavailable"}
        super().__init__(status, titles.get(status, "Refused"), detail, headers=headers, code=code)
        self.code = code


def parse_request(body: dict) -> EnrolmentRequest:
    """The JSON body as a request; a 400/422 problem saying what is wrong with it."""
    for key in ("profile", "csr", "name"):
        if not isinstance(body.get(key), str) or not body[key].strip():
            raise EnrolmentRefused(400, f"'{key}' is required and must be a non-empty string", "bad_request")
    unknown = set(body) - {"profile", "csr", "name", "resident_id", "credit_code"}
    if unknown:
        raise EnrolmentRefused(400, f"unknown field(s): {', '.join(sorted(unknown))}", "bad_request")
    profile = body["profile"]
    if profile not in PROFILES:
        raise EnrolmentRefused(
            422, f"USB-key enrolment issues {' or '.join(PROFILES)} certificates only, not {profile[:40]!r}", "wrong_profile"
        )
    wanted, other = ("resident_id", "credit_code") if profile == "person-auth" else ("credit_code", "resident_id")
    if not isinstance(body.get(wanted), str) or not body[wanted].strip():
        raise EnrolmentRefused(400, f"a {profile} certificate needs '{wanted}'", "bad_request")
    if body.get(other) is not None:
        raise EnrolmentRefused(400, f"a {profile} certificate takes '{wanted}', not '{other}'", "bad_request")
    return EnrolmentRequest(profile, body["csr"], body["name"], body.get("resident_id"), body.get("credit_code"))


def _audit_refusal(idp: IdPContext, account_id: str, claims: dict, profile: str | None, refusal: Problem) -> None:
    with core_db.transaction(idp.sessions) as db:
        audit.record(
            db,
            actor=f"account:{account_id}",
            action="idp.enrolment.refused",
            target=account_id,
            details={
                "reason": getattr(refusal, "code", None) or f"http {refusal.status}",
                "status": refusal.status,
                "profile": profile,
                "client_id": claims.get("client_id"),
            },
        )


def _check_authentication(claims: dict) -> str:
    """The account id the token speaks for, if it is fit to enrol a certificate."""
    acr = claims.get("acr")
    account_id = claims.get("sub")
    if not isinstance(acr, str) or not isinstance(account_id, str) or claims.get("client_id") == account_id:
        raise EnrolmentRefused(403, "the access token must be a person's, from a login (not a client's own token)", "not_a_person")
    level = levels.level_of(acr) or 0
    if level < MIN_LEVEL:
        raise EnrolmentRefused(
            401,
            f"enrolment needs a real-name login ({levels.acr_for(MIN_LEVEL)}); this token is at {acr}",
            "insufficient_level",
            headers={
                "WWW-Authenticate": f'Bearer error="insufficient_user_authentication", '
                f'error_description="real-name level required", acr_values="{levels.acr_for(MIN_LEVEL)}"'
            },
        )
    auth_time = claims.get("auth_time")
    if not isinstance(auth_time, int) or time.time() - auth_time > MAX_AUTH_AGE:
        raise EnrolmentRefused(
            401,
            f"enrolment needs a password entered within the last {MAX_AUTH_AGE // 60} minutes; log in again",
            "stale_authentication",
            headers={
                "WWW-Authenticate": f'Bearer error="insufficient_user_authentication", '
                f'error_description="authentication too old", max_age="{MAX_AUTH_AGE}"'
            },
        )
    return account_id


def _identity(idp: IdPContext, db: Session, account_id: str, req: EnrolmentRequest) -> issuance.Identity:
    """Who the certificate names, after checking the claim against the account's proofing."""
    account = db.get(Account, account_id)
    if account is None or account.status != "active":
        raise EnrolmentRefused(403, "the account is missing or disabled", "account_inactive")
    proofing = db.get(IdentityProofing, account_id)
    if proofing is None:
        raise EnrolmentRefused(403, "the account is not real-name verified", "not_proofed")
    if req.profile == "person-auth":
        try:
            rid = validate_resident_id(req.resident_id or "")
        except InvalidIdentifier as exc:
            raise EnrolmentRefused(422, f"the resident ID is not valid: {exc.reason}", "invalid_identifier") from None
        if lookup_hash(idp.lookup_key, "resident_id", rid.value) != proofing.resident_id_hash:
            raise EnrolmentRefused(403, "the resident ID is not the one this account was verified with", "identity_mismatch")
        if realname.normalise_name(req.name) != realname.normalise_name(proofing.legal_name):
            raise EnrolmentRefused(403, "the name is not the legal name this account was verified with", "name_mismatch")
        return issuance.Identity(name=proofing.legal_name, subject_id=rid.value)
    try:
        code = validate_credit_code(req.credit_code or "")
    except InvalidIdentifier as exc:
        raise EnrolmentRefused(422, f"the unified social credit code is not valid: {exc.reason}", "invalid_identifier") from None
    enterprises = _enterprises()
    if not enterprises.is_representative(db, account_id, code.value):
        raise EnrolmentRefused(403, "only the enterprise's legal representative may enrol its certificate", "not_representative")
    registered = enterprises.get(db, code.value).name
    if " ".join(req.name.split()) != registered:
        raise EnrolmentRefused(403, "the name is not the enterprise's registered name", "name_mismatch")
    return issuance.Identity(name=registered, subject_id=code.value)


def _enterprises():
    from idp import enterprises  # only enterprise enrolments need it

    return enterprises


def chain_of(ca: CAContext, authority_name: str) -> tuple[x509.Certificate, ...]:
    """The issuing CA and its parents up to the root."""
    chain = []
    name: str | None = authority_name
    while name is not None and len(chain) < 8:
        loaded = ca.authority(name)
        chain.append(loaded.certificate)
        name = loaded.parent
    return tuple(chain)


def enrol(idp: IdPContext, ca: CAContext, claims: dict, body: dict) -> Enrolment:
    """Check everything, then issue. Raises a problem (audited) on any refusal."""
    account_id = claims.get("sub") if isinstance(claims.get("sub"), str) else "?"
    profile = body.get("profile") if isinstance(body.get("profile"), str) else None
    try:
        account_id = _check_authentication(claims)
        req = parse_request(body)
        with idp.sessions() as db:
            # A revoked token, or one whose session has logged out, enrols nothing (core.bearer checks only the signature).
            inactive = tokens.inactive_reason(idp, db, claims)
            if inactive is not None:
                raise EnrolmentRefused(401, f"the access token is no longer active ({inactive})", "invalid_token")
            identity = _identity(idp, db, account_id, req)
        row, certificate = issuance.issue(ca, req.profile, req.csr, identity, actor=f"account:{account_id}")
    except Problem as refusal:
        _audit_refusal(idp, account_id, claims, profile[:40] if profile else None, refusal)
        raise
    with core_db.transaction(idp.sessions) as db:
        audit.record(
            db,
            actor=f"account:{account_id}",
            action="idp.enrolment.issued",
            target=account_id,
            details={
                "serial": row.serial,
                "profile": row.profile,
                "subject_id": row.subject_id_masked,
                "client_id": claims.get("client_id"),
            },
        )
    log.info("enrolled %s certificate %s for account %s", row.profile, row.serial, account_id)
    return Enrolment(row.serial, certificate, chain_of(ca, row.authority))


# -- the hallmark-key client --------------------------------------------------------------------


def ensure_key_client(idp: IdPContext, db: Session, *, actor: str) -> bool:
    """Register the public client ``hallmark-key`` (PKCE, loopback redirect, real-name minimum); True if made now."""
    if clients.get(idp, KEY_CLIENT_ID, db) is not None:
        return False
    clients.add(
        idp,
        db,
        name="hallmark-key (USB key)",
        client_type=clients.PUBLIC,
        client_id=KEY_CLIENT_ID,
        redirect_uris=[KEY_CLIENT_REDIRECT],
        grant_types=["authorization_code"],
        scopes=["openid", ENROL_SCOPE],
        min_acr=MIN_LEVEL,
        first_party=True,
        actor=actor,
    )
    clients.forget(idp, KEY_CLIENT_ID)
    return True
