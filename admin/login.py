"""The console as a first-party OpenID Connect client of this identity provider, and its own short sessions.

Staff log in through the identity provider's authorization-code flow with PKCE
(S256), like any hall: the console sends the browser to the authorization
endpoint asking for ``acr_values`` level 2 (its registered minimum) or, before a
critical action, level 3 with ``max_age=0`` (a fresh USB-key login); it takes the
code back at ``/admin/callback``, exchanges it server to server at the token
endpoint, and checks the ID token against the published keys (issuer, audience,
expiry, nonce, level and, for a re-authentication, that it is new and the same
person). It never looks inside the identity provider's own session.

A console session is a row of ``admin_sessions`` named by the SHA-256 of a random
token in the console's own cookie. It ends after ``admin_idle_minutes`` without
use and ``admin_session_hours`` at most; a login or re-authentication replaces
the token (no fixation). The client is public (``token_endpoint_auth_method``
``none``): it keeps no secret, PKCE binds each code to the session that asked
for it, and the redirect URI is matched exactly.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlencode

import requests
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from admin import roles
from admin.context import CLIENT_ID, AdminContext
from admin.models import StaffSession
from core import audit, http
from core import db as core_db
from core.db import utc_now
from core.web.i18n import N_, Refusal

log = logging.getLogger("hallmark.admin.login")

LOGIN_LEVEL = 2  # every console login: real-name at least (the client's registered minimum)
CRITICAL_LEVEL = 3  # critical actions: a USB-key certificate login, fresh
ACR_PREFIX = "urn:hallmark:loa:"
LOGIN_SECONDS = 10 * 60  # a login not finished within this time must be started again
SEEN_EVERY = 30  # last_seen_at is written at most this often (seconds)
METADATA_SECONDS = 300
SIGNED_OUT_PATH = "/admin/signed-out"
BACKCHANNEL_PATH = "/admin/api/backchannel-logout"  # the IdP tells the console here that an SSO session ended
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
LOGOUT_TOKEN_TYPE = "logout+jwt"
SCOPE = "openid profile"


class LoginRefused(Refusal):
    status = 400


class NotAStaffMember(Refusal):
    status = 403


# -- the client's registration ---------------------------------------------------------------------


def ensure_client(ctx: AdminContext, db: Session, *, actor: str) -> bool:
    """Register the console at the identity provider (public, PKCE, level 2 minimum), or follow a changed public URL.

    True when it was (re)registered now. Safe to call from several workers at once.
    """
    from idp.models import Client
    from idp.oidc import clients

    wanted = [ctx.redirect_uri]
    backchannel = ctx.issuer + BACKCHANNEL_PATH
    row = db.get(Client, CLIENT_ID)
    if (
        row is not None
        and json.loads(row.redirect_uris or "[]") == wanted
        and row.min_acr >= LOGIN_LEVEL
        and row.backchannel_logout_uri == backchannel
    ):
        return False
    if row is not None:
        clients.remove(ctx.idp, db, CLIENT_ID, actor=actor)  # the public URL moved: the old redirect URI must not work
        db.flush()
    clients.add(
        ctx.idp,
        db,
        name="员工管理控制台 Staff console",
        client_type=clients.PUBLIC,
        client_id=CLIENT_ID,
        redirect_uris=wanted,
        grant_types=["authorization_code"],
        scopes=SCOPE.split(),
        min_acr=LOGIN_LEVEL,
        first_party=True,
        post_logout_redirect_uris=[ctx.issuer + SIGNED_OUT_PATH],
        backchannel_logout_uri=backchannel,
        actor=actor,
    )
    return True


def follow_public_url(ctx: AdminContext) -> None:
    """At start-up: make sure the registration names this instance's public URL (another worker may be doing the same)."""
    try:
        with core_db.transaction(ctx.sessions) as db:
            if ensure_client(ctx, db, actor="system:admin"):
                log.info("staff console registered at the identity provider for %s", ctx.redirect_uri)
    except IntegrityError:
        pass  # another worker registered it at the same moment
    except SQLAlchemyError as exc:  # a database not yet upgraded: the app still starts, `hallmark init` registers it
        log.warning("the staff console could not check its registration at the identity provider: %s", exc)


# -- the identity provider, server to server ----------------------------------------------------------


def _backchannel(ctx: AdminContext, url: str) -> str:
    """An endpoint the metadata names at the public URL, reached at ``admin_idp_url`` instead when that is set."""
    if url.startswith(ctx.issuer + "/"):
        return ctx.idp_url + url[len(ctx.issuer) :]
    return url


def metadata(ctx: AdminContext) -> dict:
    cached = ctx.cache.get("metadata")
    if cached is not None and time.monotonic() - cached[0] < METADATA_SECONDS:
        return cached[1]
    with http.session(retry_statuses=()) as client:
        answer = client.get(ctx.idp_url + "/.well-known/openid-configuration")
    answer.raise_for_status()
    found = answer.json()
    ctx.cache["metadata"] = (time.monotonic(), found)
    return found


def _keys(ctx: AdminContext, *, fresh: bool = False) -> KeySet:
    cached = ctx.cache.get("jwks")
    if cached is not None and not fresh and time.monotonic() - cached[0] < METADATA_SECONDS:
        return cached[1]
    with http.session(retry_statuses=()) as client:
        answer = client.get(_backchannel(ctx, metadata(ctx)["jwks_uri"]))
    answer.raise_for_status()
    keys = KeySet.import_key_set(answer.json())
    ctx.cache["jwks"] = (time.monotonic(), keys)
    return keys


# -- sessions -----------------------------------------------------------------------------------------


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _new_row(ctx: AdminContext, now: datetime) -> tuple[str, StaffSession]:
    token = secrets.token_urlsafe(32)
    row = StaffSession(
        id=_digest(token),
        acr=0,
        amr="",
        login_fresh=False,
        created_at=now,
        last_seen_at=now,
        expires_at=now + timedelta(hours=ctx.settings.admin_session_hours),
    )
    return token, row


def find(ctx: AdminContext, db: Session, token: str | None, *, now: datetime | None = None) -> StaffSession | None:
    """The live session of this cookie (pending logins included), or None; each use moves the idle deadline on."""
    if not token or len(token) > 100:
        return None
    now = now or utc_now()
    row = db.get(StaffSession, _digest(token))
    if row is None or row.ended_at is not None or row.expires_at <= now:
        return None
    if now - row.last_seen_at > timedelta(minutes=ctx.settings.admin_idle_minutes):
        row.ended_at = now
        if row.account_id:
            audit.record(db, actor=f"account:{row.account_id}", action="admin.session.idle", target=row.id[:16])
        return None
    if (now - row.last_seen_at).total_seconds() >= SEEN_EVERY:
        row.last_seen_at = now
    return row


def owner(db: Session, token: str | None) -> str | None:
    """Whose session this cookie named, whether or not it is still live (to record a late form under their name)."""
    if not token or len(token) > 100:
        return None
    row = db.get(StaffSession, _digest(token))
    return row.account_id if row is not None else None


@dataclass(frozen=True)
class Start:
    token: str | None  # a new cookie value, when a session was made for this login
    location: str  # the authorization endpoint, with the request


def begin(ctx: AdminContext, db: Session, token: str | None, *, next_path: str, level: int = LOGIN_LEVEL, fresh: bool = False) -> Start:
    """Start a login (or, with ``fresh``, a re-authentication) of this browser's session at ``level``."""
    now = utc_now()
    row = find(ctx, db, token, now=now)
    new_token = None
    if row is None:
        new_token, row = _new_row(ctx, now)
        row.expires_at = now + timedelta(seconds=LOGIN_SECONDS)  # nobody yet: gone soon unless the login finishes
        db.add(row)
    verifier = secrets.token_urlsafe(48)
    row.login_state, row.login_nonce, row.login_verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(24), verifier
    row.login_next, row.login_level, row.login_fresh, row.login_started_at = next_path[:400], level, fresh, now
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    params = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": ctx.redirect_uri,
        "scope": SCOPE,
        "state": row.login_state,
        "nonce": row.login_nonce,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "acr_values": f"{ACR_PREFIX}{level}",
    }
    if fresh:
        params["max_age"] = "0"  # a login made for this very request, whatever the SSO session holds
    return Start(new_token, metadata(ctx)["authorization_endpoint"] + "?" + urlencode(params))


@dataclass(frozen=True)
class Finished:
    token: str  # the session's new cookie value
    next_path: str
    account_id: str


def finish(ctx: AdminContext, token: str | None, args) -> Finished:
    """Take the identity provider's answer at the callback; raises :class:`LoginRefused` (audited where someone is known)."""
    now = utc_now()
    with core_db.transaction(ctx.sessions) as db:
        row = find(ctx, db, token, now=now)
        pending = None
        if row is not None and row.login_state:
            pending = {
                "state": row.login_state,
                "nonce": row.login_nonce,
                "verifier": row.login_verifier,
                "next": row.login_next or "/admin",
                "level": row.login_level or LOGIN_LEVEL,
                "fresh": bool(row.login_fresh),
                "started": row.login_started_at,
                "account_id": row.account_id,
                "id": row.id,
            }
            # Whatever the answer, this login attempt is used up.
            row.login_state = row.login_nonce = row.login_verifier = None
    if pending is None:
        raise LoginRefused(N_("This sign-in was not started here, or it has ended. Start again from the console."), code="no_login")
    state = args.get("state", "")
    if not isinstance(state, str) or not hmac.compare_digest(state.encode(), pending["state"].encode()):
        raise LoginRefused(N_("This sign-in answer does not belong to this browser's sign-in. Start again from the console."), code="state")
    if (now - pending["started"]).total_seconds() > LOGIN_SECONDS:
        raise LoginRefused(N_("The sign-in took too long. Start again from the console."), code="login_expired")
    if args.get("error"):
        code = str(args.get("error"))[:60]
        if code == "unmet_authentication_requirements":
            raise LoginRefused(N_("The identity provider could not reach the level this needs."), code=code)
        if code == "access_denied":
            raise LoginRefused(N_("The sign-in was cancelled."), code=code)
        raise LoginRefused(N_("The identity provider refused the sign-in (%(error)s)."), code="idp_error", error=code)
    claims, id_token = _exchange(ctx, str(args.get("code", ""))[:200], pending)
    account_id = claims["sub"]
    level = _level(claims.get("acr"))
    auth_time = datetime.fromtimestamp(int(claims.get("auth_time", 0)), tz=now.tzinfo)
    refusal = None
    if level < pending["level"]:
        refusal = LoginRefused(N_("The sign-in did not reach the level this needs."), code="level")
    elif pending["fresh"] and auth_time < pending["started"] - timedelta(seconds=5):
        refusal = LoginRefused(N_("The identity provider did not ask you to sign in again."), code="not_fresh")
    elif pending["account_id"] and pending["account_id"] != account_id:
        refusal = LoginRefused(N_("Someone else signed in. The console session has been ended."), code="other_person")
    with core_db.transaction(ctx.sessions) as db:
        old = db.get(StaffSession, pending["id"])
        person = roles.staff(db, account_id)
        if refusal is None and not person.grants:
            refusal = NotAStaffMember(N_("You hold no role in the staff console. Ask a system administrator for one."), code="no_role")
        if refusal is not None:
            if old is not None and refusal.code == "other_person":
                old.ended_at = now
            audit.record(db, actor=f"account:{account_id}", action="admin.login.refused", details={"reason": refusal.code, "acr": level})
        else:
            new_token, row = _new_row(ctx, now)
            if old is not None and pending["account_id"]:
                row.created_at, row.expires_at = old.created_at, old.expires_at  # a re-authentication does not lengthen the session
            if old is not None:
                db.delete(old)
                db.flush()
            row.account_id, row.acr, row.amr, row.auth_time = account_id, level, " ".join(claims.get("amr") or [])[:100], auth_time
            row.idp_sid, row.id_token = (claims.get("sid") or None), id_token
            db.add(row)
            audit.record(
                db,
                actor=f"account:{account_id}",
                action="admin.reauthenticated" if pending["fresh"] else "admin.login",
                target=row.id[:16],
                details={"acr": level, "amr": row.amr.split(), "roles": sorted(person.roles)},
            )
    if refusal is not None:
        raise refusal  # after the commit: the refusal stays in the audit trail
    return Finished(new_token, pending["next"], account_id)


def _level(acr) -> int:
    if isinstance(acr, str) and acr.startswith(ACR_PREFIX) and acr[len(ACR_PREFIX) :] in ("1", "2", "3"):
        return int(acr[len(ACR_PREFIX) :])
    return 0


def _exchange(ctx: AdminContext, code: str, pending: dict) -> tuple[dict, str]:
    """The code for tokens at the token endpoint; the ID token checked. Returns (claims, the ID token)."""
    if not code:
        raise LoginRefused(N_("The identity provider's answer holds no code."), code="no_code")
    try:
        meta = metadata(ctx)
        with http.session(retry_statuses=()) as client:
            answer = client.post(
                _backchannel(ctx, meta["token_endpoint"]),
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": ctx.redirect_uri,
                    "client_id": CLIENT_ID,
                    "code_verifier": pending["verifier"],
                },
                headers={"Accept": "application/json"},
            )
    except (requests.RequestException, KeyError, ValueError) as exc:
        log.warning("token endpoint unreachable: %s", exc)
        raise LoginRefused(
            N_("The identity provider cannot be reached. Try again in a moment."), code="idp_unreachable", status=503
        ) from None
    if answer.status_code != 200:
        error = (
            answer.json().get("error") if answer.headers.get("Content-Type", "").startswith("application/json") else None
        ) or answer.status_code
        raise LoginRefused(N_("The identity provider refused the sign-in (%(error)s)."), code="token_refused", error=str(error)[:60])
    id_token = answer.json().get("id_token")
    if not isinstance(id_token, str):
        raise LoginRefused(N_("The identity provider's answer holds no ID token."), code="no_id_token")
    return verify_id_token(ctx, id_token, pending["nonce"], meta), id_token


def verify_id_token(ctx: AdminContext, id_token: str, nonce: str, meta: dict) -> dict:
    algorithms = [a for a in meta.get("id_token_signing_alg_values_supported", ["ES256"]) if a != "none"]
    try:
        try:
            decoded = jwt.decode(id_token, _keys(ctx), algorithms=algorithms)
        except JoseError:  # perhaps a key published after we read the set (keys rotated): read it again
            decoded = jwt.decode(id_token, _keys(ctx, fresh=True), algorithms=algorithms)
        jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": meta["issuer"]},
            aud={"essential": True, "value": CLIENT_ID},
            sub={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
            nonce={"essential": True, "value": nonce},
            leeway=60,
        ).validate(decoded.claims)
    except (JoseError, ValueError, KeyError, requests.RequestException) as exc:
        log.warning("ID token refused: %s", exc)
        raise LoginRefused(N_("The identity provider's ID token could not be verified."), code="bad_id_token") from None
    return decoded.claims


def end(ctx: AdminContext, token: str | None) -> StaffSession | None:
    """Sign out of the console: the session ends here (the identity provider's own session is ended by its logout)."""
    with core_db.transaction(ctx.sessions) as db:
        row = find(ctx, db, token)
        if row is None:
            return None
        row.ended_at = utc_now()
        if row.account_id:
            audit.record(db, actor=f"account:{row.account_id}", action="admin.logout", target=row.id[:16])
        db.expunge(row)
        return row


def logout_location(ctx: AdminContext, id_token: str | None) -> str:
    """Where to send the browser after the console's sign-out: the identity provider's end-session endpoint."""
    try:
        endpoint = metadata(ctx).get("end_session_endpoint")
    except (requests.RequestException, ValueError):
        endpoint = None
    if not endpoint:
        return SIGNED_OUT_PATH
    params = {"client_id": CLIENT_ID, "post_logout_redirect_uri": ctx.issuer + SIGNED_OUT_PATH}
    if id_token:
        params["id_token_hint"] = id_token
    return endpoint + "?" + urlencode(params)


def backchannel_logout(ctx: AdminContext, token: str) -> int:
    """OIDC Back-Channel Logout 1.0 (2.6): the IdP says an SSO session ended; end the console sessions it started.

    Returns how many ended. Raises :class:`LoginRefused` for a token that is not a valid logout token for the
    console. Ending twice is harmless, so a replayed token does nothing more.
    """
    if not isinstance(token, str) or not token or len(token) > 8000:
        raise LoginRefused(N_("This is not a logout token."), code="bad_logout_token")
    try:
        meta = metadata(ctx)
        algorithms = [a for a in meta.get("id_token_signing_alg_values_supported", ["ES256"]) if a != "none"]
        try:
            decoded = jwt.decode(token, _keys(ctx), algorithms=algorithms)
        except JoseError:
            decoded = jwt.decode(token, _keys(ctx, fresh=True), algorithms=algorithms)
        jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": meta["issuer"]},
            aud={"essential": True, "value": CLIENT_ID},
            iat={"essential": True},
            exp={"essential": True},
            jti={"essential": True},
            leeway=60,
        ).validate(decoded.claims)
    except (JoseError, ValueError, KeyError, requests.RequestException) as exc:
        log.warning("logout token refused: %s", exc)
        raise LoginRefused(N_("This is not a logout token."), code="bad_logout_token") from None
    claims = decoded.claims
    events = claims.get("events")
    sid, sub = claims.get("sid"), claims.get("sub")
    if (
        str(decoded.header.get("typ", "")).lower() != LOGOUT_TOKEN_TYPE
        or not isinstance(events, dict)
        or BACKCHANNEL_EVENT not in events
        or "nonce" in claims
        or (not (isinstance(sid, str) and sid) and not (isinstance(sub, str) and sub))
    ):
        raise LoginRefused(N_("This is not a logout token."), code="bad_logout_token")
    now = utc_now()
    with core_db.transaction(ctx.sessions) as db:
        which = StaffSession.idp_sid == sid if isinstance(sid, str) and sid else StaffSession.account_id == sub
        rows = list(db.scalars(select(StaffSession).where(which, StaffSession.ended_at.is_(None), StaffSession.account_id.is_not(None))))
        for row in rows:
            row.ended_at = now
            audit.record(db, actor=f"account:{row.account_id}", action="admin.session.ended_by_idp", target=row.id[:16])
        return len(rows)


def purge(ctx: AdminContext, *, older_than: timedelta = timedelta(hours=1)) -> int:
    """Delete sessions that expired, or ended, more than ``older_than`` ago (their logins and logouts stay in the audit trail)."""
    cutoff = utc_now() - older_than
    with core_db.transaction(ctx.sessions) as db:
        return db.execute(delete(StaffSession).where(or_(StaffSession.expires_at < cutoff, StaffSession.ended_at < cutoff))).rowcount


def fresh_enough(ctx: AdminContext, row: StaffSession, *, now: datetime | None = None) -> bool:
    """Whether the session may do a critical action now: a level-3 login within ``admin_reauth_minutes``."""
    now = now or utc_now()
    return (
        row.acr >= CRITICAL_LEVEL
        and row.auth_time is not None
        and now - row.auth_time <= timedelta(minutes=ctx.settings.admin_reauth_minutes)
    )
