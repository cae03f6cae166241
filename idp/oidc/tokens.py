"""Tokens: JWT access tokens (RFC 9068), ID tokens, rotating refresh tokens, revocation.

* Access and ID tokens are JWTs signed in the HSM (``idp.oidc.keys``), 10 minutes each.
  An access token's ``aud`` is the resources it is for (RFC 8707, ``idp.oidc.resources``);
  each JSON API accepts only tokens naming it, userinfo only those naming the issuer.
  A client_credentials token costs no database write: it is revoked by listing its
  ``jti`` (``TokenRevocation``), and checked by whoever introspects it.
* Tokens that come from one authorization code form a *family* (the ``fam``
  claim of the access token, ``family_id`` of the refresh tokens). Replaying a used
  code or an already rotated refresh token revokes the whole family.
* Refresh tokens are opaque, stored as SHA-256 hashes, rotated on every use,
  12 hours from their last rotation and never beyond the SSO session.
* Codes are stored as hashes too, live 60 seconds and are used once.

Nothing here logs a token, code or secret.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from joserfc import jwt
from joserfc.errors import JoseError
from sqlalchemy import Connection, bindparam, delete, exists, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core import audit, bearer, events
from core.db import utc_now
from idp import levels
from idp.context import IdPContext
from idp.models import (
    Account,
    AuthorizationCode,
    Client,
    IdentityProofing,
    RefreshToken,
    SSOSession,
    TokenRevocation,
)
from idp.oidc import keys
from idp.oidc.clients import RegisteredClient

ACCESS_TOKEN_LIFETIME = timedelta(minutes=10)
ID_TOKEN_LIFETIME = timedelta(minutes=10)
REFRESH_TOKEN_LIFETIME = timedelta(hours=12)
CODE_LIFETIME = timedelta(seconds=60)
LEEWAY = 30  # seconds of clock skew accepted when checking exp/iat
VERIFY_ALGORITHMS = tuple(keys.ALGORITHMS)
MAX_TOKEN_CHARS = 8192
ACCESS_TOKEN_TYPE = "at+jwt"
REALNAME_SCOPE = "hallmark:realname"
ORG_CLAIMS = ("org_id", "org_name", "org_role")  # the enterprise a token's user acts for (idp.people.enterprises)
assert max(ACCESS_TOKEN_LIFETIME, ID_TOKEN_LIFETIME) <= keys.LONGEST_SIGNED_TOKEN
_ACCESS_TOKEN_SECONDS = int(ACCESS_TOKEN_LIFETIME.total_seconds())


def digest(value: str) -> str:
    """How codes and refresh tokens are stored: never the value itself."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def new_secret_value() -> str:
    return secrets.token_urlsafe(32)


def new_family_id() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class Authentication:
    """How the user authenticated, carried from the session into the code and the tokens."""

    account_id: str
    sid: str | None
    acr: int
    amr: tuple[str, ...]
    auth_time: datetime
    org: dict | None = None  # org_id, org_name, org_role while acting for an enterprise (idp.people.enterprises)


# -- signed tokens -----------------------------------------------------------------------


def access_token(
    ctx: IdPContext,
    client: RegisteredClient,
    scope: str,
    *,
    auth: Authentication | None = None,
    family_id: str | None = None,
    audience: list[str] | None = None,
    authorization_details: tuple[dict, ...] = (),
    now: int | None = None,
) -> tuple[str, dict]:
    """An RFC 9068 access token and its claims. Without ``auth`` it is the client's own (client_credentials).

    ``audience`` is the resources it is for (``idp.oidc.resources.audience``); without it, the issuer (userinfo).
    ``authorization_details`` (RFC 9396 §9.1) are the details the person granted, as checked by their types.
    """
    now = now or int(time.time())
    audience = audience or [ctx.issuer]
    claims = {
        "iss": ctx.issuer,
        "sub": auth.account_id if auth else client.client_id,
        "aud": audience[0] if len(audience) == 1 else list(audience),
        "exp": now + _ACCESS_TOKEN_SECONDS,
        "iat": now,
        "jti": secrets.token_urlsafe(16),
        "client_id": client.client_id,
        "scope": scope,
    }
    if auth is not None:
        claims["acr"] = levels.acr_for(auth.acr)
        claims["amr"] = list(auth.amr)
        claims["auth_time"] = int(auth.auth_time.timestamp())
        if auth.sid:
            claims["sid"] = auth.sid
        if family_id:
            claims["fam"] = family_id
        if auth.org:
            claims.update(auth.org)
        if authorization_details:
            claims["authorization_details"] = list(authorization_details)
    return keys.sign(ctx, claims, typ=ACCESS_TOKEN_TYPE), claims


def id_token(
    ctx: IdPContext,
    client: RegisteredClient,
    auth: Authentication,
    *,
    nonce: str | None,
    access_token_value: str | None,
    extra: dict | None = None,
    alg: str = keys.DEFAULT_ALG,
) -> str:
    now = int(time.time())
    claims = {
        "iss": ctx.issuer,
        "sub": auth.account_id,
        "aud": client.client_id,
        "azp": client.client_id,
        "exp": now + int(ID_TOKEN_LIFETIME.total_seconds()),
        "iat": now,
        "auth_time": int(auth.auth_time.timestamp()),
        "acr": levels.acr_for(auth.acr),
        "amr": list(auth.amr),
    }
    if auth.sid:
        claims["sid"] = auth.sid
    if auth.org:
        claims.update(auth.org)
    if nonce:
        claims["nonce"] = nonce
    if access_token_value:
        claims["at_hash"] = keys.half_hash(access_token_value, alg)
    if extra:
        claims.update({k: v for k, v in extra.items() if k not in claims})
    return keys.sign(ctx, claims, typ="JWT", alg=alg)


def id_token_alg(client: RegisteredClient) -> str:
    """ES256 unless the client registered RS256 (``--id-token-alg``)."""
    alg = client.id_token_signed_response_alg
    return alg if alg in keys.ALGORITHMS else keys.DEFAULT_ALG


class InvalidToken(Exception):
    """Not one of our valid access tokens; the message is safe to show."""


def verify_access_token(ctx: IdPContext, token: str) -> dict:
    """The claims of a well-signed access token of ours (signature, typ, iss, exp). Not revocation: see :func:`inactive_reason`."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
        raise InvalidToken("not an access token of this provider")
    try:
        decoded = jwt.decode(token, keys.keyset(ctx), algorithms=VERIFY_ALGORITHMS)
    except (JoseError, ValueError, TypeError):
        raise InvalidToken("the token's signature or format is not valid") from None
    if str(decoded.header.get("typ", "")).lower() not in (ACCESS_TOKEN_TYPE, "application/at+jwt"):
        raise InvalidToken("the token is not an access token")
    claims = decoded.claims
    options = {
        "iss": {"essential": True, "value": ctx.issuer},
        "sub": {"essential": True},
        "jti": {"essential": True},
        "exp": {"essential": True},
    }
    try:
        jwt.JWTClaimsRegistry(now=int(time.time()), leeway=LEEWAY, **options).validate(claims)
    except JoseError:
        raise InvalidToken("the token has expired or its claims are not valid") from None
    return claims


# What inactive_reason reads, in one statement: whether any of the token's revocation keys is on the list,
# whether its session is still open, and whether its client is still registered (from the database, not the
# per-process client cache, so a client removed through another process stops its tokens at once).
_LIVENESS = select(
    exists().where(TokenRevocation.key.in_([bindparam("jti_key"), bindparam("family_key"), bindparam("sid_key")])).label("revoked"),
    exists().where(SSOSession.sid == bindparam("sid"), SSOSession.ended_at.is_(None)).label("session_open"),
    exists().where(Client.client_id == bindparam("client_id")).label("client_known"),
)


def inactive_reason(ctx: IdPContext, db: Session | Connection, claims: dict) -> str | None:
    """Why a well-signed access token no longer counts, or None when it is active (``db``: a session or a connection)."""
    if int(claims.get("exp", 0)) + LEEWAY < time.time():
        return "expired"
    jti_key = f"jti:{claims['jti']}"
    sid, client_id = claims.get("sid"), claims.get("client_id")
    if isinstance(db, Session):
        db.flush()  # Core bypasses autoflush: a revocation added in this session must count (a no-op in a clean session)
    connection = db.connection() if isinstance(db, Session) else db
    found = connection.execute(
        _LIVENESS,
        {
            "jti_key": jti_key,
            "family_key": f"family:{claims['fam']}" if claims.get("fam") else jti_key,
            "sid_key": f"sid:{sid}" if sid else jti_key,
            "sid": str(sid or ""),
            "client_id": client_id if isinstance(client_id, str) else "",
        },
    ).one()
    if found.revoked:
        return "revoked"
    if sid and not found.session_open:
        return "session ended"
    if not found.client_known:
        return "client removed"
    if claims.get("org_id"):
        from idp.people import enterprises

        with contextlib.nullcontext(db) if isinstance(db, Session) else Session(bind=db) as session:
            if not enterprises.token_in_force(session, claims):
                return "no longer acting for the enterprise"
    return None


# -- revocation --------------------------------------------------------------------------


def _revocation(db: Session, key: str, expires_at: datetime, now: datetime) -> None:
    if db.get(TokenRevocation, key) is None:
        db.add(TokenRevocation(key=key, expires_at=expires_at, revoked_at=now))
        db.flush()


def revoke_family_key(db: Session, family_id: str, now: datetime) -> None:
    _revocation(db, f"family:{family_id}", now + ACCESS_TOKEN_LIFETIME + timedelta(seconds=LEEWAY), now)


def subscribe(hooks: events.Hooks) -> None:
    """A removed client's access tokens stop working at once, in the removal's transaction."""
    hooks.subscribe(events.CLIENT_REMOVED, _on_client_removed)


def _on_client_removed(*, session: Session, client_id: str, families: set[str], now: datetime) -> None:
    for family in families:
        revoke_family_key(session, family, now)


def revoke_family(db: Session, family_id: str, *, reason: str, actor: str) -> None:
    """Revoke every token that came from one authorization code: refresh tokens and access tokens."""
    now = utc_now()
    revoke_family_key(db, family_id, now)
    count = db.execute(
        update(RefreshToken).where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None)).values(revoked_at=now)
    ).rowcount
    audit.record(
        db, actor=actor, action="idp.token.family_revoked", target=family_id[:12], details={"reason": reason, "refresh_tokens": count}
    )


def revoke_access_token(db: Session, claims: dict) -> None:
    now = utc_now()
    expires = datetime.fromtimestamp(int(claims["exp"]) + LEEWAY, UTC)
    if expires > now:
        _revocation(db, f"jti:{claims['jti']}", expires, now)


def purge_expired_revocations(db: Session) -> int:
    return db.execute(delete(TokenRevocation).where(TokenRevocation.expires_at < utc_now())).rowcount


def consume_assertion_jti(db: Session, client_id: str, jti: str, expires: datetime) -> bool:
    """Record a private_key_jwt assertion's ``jti``; False when it was used before."""
    key = "assertion:" + hashlib.sha256(f"{client_id}\x00{jti}".encode()).hexdigest()[:64]
    if db.get(TokenRevocation, key) is not None:
        return False
    try:
        with db.begin_nested():
            db.add(TokenRevocation(key=key, expires_at=expires, revoked_at=utc_now()))
    except IntegrityError:  # the same assertion, at the same moment, in another request
        return False
    if secrets.randbelow(100) == 0:  # now and then, forget what has expired
        purge_expired_revocations(db)
    return True


# -- authorization codes -----------------------------------------------------------------


def store_code(
    db: Session,
    client: RegisteredClient,
    auth: Authentication,
    *,
    redirect_uri: str,
    scope: str,
    nonce: str | None,
    code_challenge: str | None,
    code_challenge_method: str | None,
    claims: str | None,
    resources: str | None = None,
    authorization_details: str | None = None,
) -> str:
    """A new authorization code; ``resources`` and ``authorization_details`` as stored (``resources.stored``,
    ``authorization_details.stored``)."""
    code = new_secret_value()
    now = utc_now()
    # A plain INSERT (nothing here needs the row as an object): cheaper than the ORM's flush.
    db.execute(
        _INSERT_CODE,
        {
            "code_hash": digest(code),
            "client_id": client.client_id,
            "account_id": auth.account_id,
            "sid": auth.sid or "",
            "redirect_uri": redirect_uri,
            "scope": scope,
            "nonce": nonce,
            "code_challenge": code_challenge,
            "code_challenge_method": code_challenge_method,
            "acr": auth.acr,
            "amr": " ".join(auth.amr),
            "auth_time": auth.auth_time,
            "claims": claims,
            "resources": resources,
            "authorization_details": authorization_details,
            "expires_at": now + CODE_LIFETIME,
        },
    )
    return code


_INSERT_CODE = insert(AuthorizationCode.__table__)


def find_code(db: Session, code: str) -> AuthorizationCode | None:
    if not isinstance(code, str) or not code or len(code) > 128:
        return None
    return db.scalars(_FIND_CODE, {"hash": digest(code)}).first()


_FIND_CODE = select(AuthorizationCode).where(AuthorizationCode.code_hash == bindparam("hash"))  # built once


def claim_code(db: Session, row: AuthorizationCode) -> str | None:
    """Mark the code used, atomically; its new token family id, or None if someone used it first."""
    family = new_family_id()
    won = db.execute(_CLAIM_CODE, {"hash": row.code_hash, "now": utc_now(), "family": family}).rowcount
    return family if won == 1 else None


_CODES = AuthorizationCode.__table__
# A plain UPDATE on the table, built once (``row`` is not synchronised: callers refresh it when they need to).
_CLAIM_CODE = (
    update(_CODES)
    .where(_CODES.c.code_hash == bindparam("hash"), _CODES.c.used_at.is_(None))
    .values(used_at=bindparam("now"), family_id=bindparam("family"))
)


def code_authentication(row: AuthorizationCode) -> Authentication:
    return Authentication(row.account_id, row.sid or None, row.acr, tuple(row.amr.split()), row.auth_time)


# -- refresh tokens ----------------------------------------------------------------------


def session_alive(db: Session, sid: str | None) -> SSOSession | None:
    """The session behind user tokens, if it has not ended or expired (idle time is the browser's business)."""
    if not sid:
        return None
    row = db.get(SSOSession, sid)
    if row is None or row.ended_at is not None or row.expires_at <= utc_now():
        return None
    return row


def new_refresh_token(
    db: Session,
    client: RegisteredClient,
    auth: Authentication,
    *,
    scope: str,
    family_id: str,
    session_expires_at: datetime | None,
    resources: str | None = None,
    authorization_details: str | None = None,
) -> tuple[str, datetime]:
    """A new refresh token; it never outlives the SSO session (``session_expires_at``, None without one).

    ``resources`` are the RFC 8707 resources granted (space-separated), None when none were asked for;
    ``authorization_details`` the RFC 9396 details granted (JSON text), None when none were.
    """
    value = new_secret_value()
    now = utc_now()
    expires = now + REFRESH_TOKEN_LIFETIME
    if session_expires_at is not None:
        expires = min(expires, session_expires_at)
    db.execute(
        _INSERT_REFRESH,
        {
            "token_hash": digest(value),
            "family_id": family_id,
            "client_id": client.client_id,
            "account_id": auth.account_id,
            "sid": auth.sid,
            "scope": scope,
            "resources": resources,
            "authorization_details": authorization_details,
            "acr": auth.acr,
            "amr": " ".join(auth.amr),
            "auth_time": auth.auth_time,
            "issued_at": now,
            "expires_at": expires,
            "rotated_at": None,
            "revoked_at": None,
        },
    )
    return value, expires


_INSERT_REFRESH = insert(RefreshToken.__table__)


def find_refresh_token(db: Session, value: str) -> RefreshToken | None:
    if not isinstance(value, str) or not value or len(value) > 128:
        return None
    return db.get(RefreshToken, digest(value))


def claim_refresh_token(db: Session, row: RefreshToken) -> bool:
    """Mark a refresh token rotated, atomically; False if it already was (a replay)."""
    won = db.execute(
        update(RefreshToken)
        .where(RefreshToken.token_hash == row.token_hash, RefreshToken.rotated_at.is_(None), RefreshToken.revoked_at.is_(None))
        .values(rotated_at=utc_now())
        .execution_options(synchronize_session=False)
    ).rowcount
    return won == 1


def refresh_authentication(row: RefreshToken) -> Authentication:
    return Authentication(row.account_id, row.sid, row.acr, tuple(row.amr.split()), row.auth_time)


def refresh_inactive_reason(db: Session, row: RefreshToken) -> str | None:
    if row.revoked_at is not None:
        return "revoked"
    if row.rotated_at is not None:
        return "rotated"
    if row.expires_at <= utc_now():
        return "expired"
    if db.get(TokenRevocation, f"family:{row.family_id}") is not None:
        return "revoked"
    if row.sid and session_alive(db, row.sid) is None:
        return "session ended"
    return None


# -- responses ---------------------------------------------------------------------------


def token_response(access: str, claims: dict, *, refresh: str | None = None, id_token_value: str | None = None) -> dict:
    body = {
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": claims["exp"] - claims["iat"],
        "scope": claims["scope"],
    }
    if "authorization_details" in claims:  # RFC 9396 §7: what the token carries
        body["authorization_details"] = claims["authorization_details"]
    if refresh:
        body["refresh_token"] = refresh
    if id_token_value:
        body["id_token"] = id_token_value
    return body


def introspection(claims: dict) -> dict:
    """RFC 7662 answer for an active access token."""
    body = {"active": True, "token_type": "Bearer"}
    names = ("scope", "client_id", "sub", "aud", "iss", "exp", "iat", "jti", "acr", "amr", "auth_time", "sid", *ORG_CLAIMS)
    for name in (*names, "authorization_details"):  # RFC 9396 §9.2
        if name in claims:
            body[name] = claims[name]
    return body


def refresh_introspection(ctx: IdPContext, row: RefreshToken) -> dict:
    return {
        "active": True,
        "token_type": "refresh_token",
        "scope": row.scope,
        "client_id": row.client_id,
        "sub": row.account_id,
        "iss": ctx.issuer,
        "exp": int(row.expires_at.timestamp()),
        "iat": int(row.issued_at.timestamp()),
        "acr": levels.acr_for(row.acr),
        "amr": row.amr.split(),
        "auth_time": int(row.auth_time.timestamp()),
        **({"sid": row.sid} if row.sid else {}),
        # RFC 9396 §9.2: what the refresh token may still give (idp.oidc.authorization_details.stored)
        **({"authorization_details": json.loads(row.authorization_details)} if row.authorization_details else {}),
    }


class InsufficientScope(Exception):
    """A valid token that does not carry what the endpoint needs."""


def userinfo_for(ctx: IdPContext, db: Session, token: str) -> dict:
    """The userinfo answer for a bearer access token, or InvalidToken / InsufficientScope."""
    claims = verify_access_token(ctx, token)
    reason = inactive_reason(ctx, db, claims)
    if reason is not None:
        raise InvalidToken(f"the access token is no longer valid ({reason})")
    if ctx.issuer not in bearer.audiences(claims):
        raise InvalidToken("the access token is not meant for userinfo: its audience does not include the issuer")
    if "openid" not in str(claims.get("scope", "")).split() or "acr" not in claims:
        raise InsufficientScope("the access token was not issued for a user with the openid scope")
    return userinfo(db, claims)


def requested_claims(db: Session, account_id: str, scope: str, claims_request: str | None, where: str = "id_token") -> dict:
    """Claims the OIDC ``claims`` parameter asks to have in the ID token, as far as the scopes allow them."""
    if not claims_request:
        return {}
    try:
        wanted = json.loads(claims_request).get(where) or {}
    except (ValueError, AttributeError):
        return {}
    if not isinstance(wanted, dict):
        return {}
    names = set(wanted) - {"sub", "acr", "amr", "auth_time", "iss", "aud", "exp", "iat", "nonce", "sid"}
    if not names:
        return {}
    available = userinfo(db, {"sub": account_id, "scope": scope})
    return {name: available[name] for name in names if name in available}


def userinfo(db: Session, claims: dict) -> dict:
    """What the userinfo endpoint says about the token's user, by the token's scopes."""
    account = db.get(Account, claims["sub"])
    if account is None:
        raise InvalidToken("the account no longer exists")
    scopes = set(str(claims.get("scope", "")).split())
    body: dict = {"sub": account.id}
    if "profile" in scopes:
        body["name"] = account.display_name or account.username or ""
        if account.username:
            body["preferred_username"] = account.username
        body["locale"] = account.locale
    for name in ("acr", "amr", "auth_time", *ORG_CLAIMS):
        if name in claims:
            body[name] = claims[name]
    if REALNAME_SCOPE in scopes:
        proofing = db.get(IdentityProofing, account.id)
        body["real_name_verified"] = proofing is not None
        if proofing is not None:
            body["resident_id_masked"] = proofing.resident_id_masked
            body["real_name_method"] = proofing.method
    return body
