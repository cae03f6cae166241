"""OAuth 2.0 Device Authorization Grant (RFC 8628): counter kiosks and TVs, on Authlib.

A kiosk registered for the grant (``hallmark idp client add --grant
urn:ietf:params:oauth:grant-type:device_code``) asks ``POST /oauth/device_authorization``
for a device code and a user code (8 letters from an alphabet without vowels or
look-alikes, shown as ``XXXX-XXXX``), shows the user code and ``/device``, and polls
the token endpoint. The resident enters the code at ``/device`` (signed in, or
signing in first), sees which hall or kiosk asks for what, and approves or denies.

* Authlib's ``DeviceAuthorizationEndpoint`` and ``DeviceCodeGrant`` do the protocol;
  here are our storage, client rules and tokens. Client authentication is the token
  endpoint's (secret, ``private_key_jwt``, or none for a public client).
* Both codes are stored only as hashes (the user code keyed with the instance's
  secret: it is short). Codes live :data:`EXPIRES_IN` seconds; the device code is
  exchanged once (a second exchange is ``invalid_grant`` and revokes what the first
  one got).
* Polls: ``authorization_pending`` while nobody decided, ``slow_down`` (and 5 more
  seconds of interval from then on) when polled faster than the interval,
  ``access_denied`` after a denial, ``expired_token`` after expiry.
* The tokens carry the approving session's level, amr, auth_time and ``sid``, never
  more: single logout of that session ends them too. A client whose minimum level is
  above the session's sends the resident to step up first.
* Guessing user codes is limited per session and per address (``core.ratelimit``,
  shared by every worker); approvals and denials are audited.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import timedelta

from authlib.oauth2.rfc6749.errors import (
    AccessDeniedError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    UnauthorizedClientError,
)
from authlib.oauth2.rfc8628 import DeviceAuthorizationEndpoint as AuthlibDeviceAuthorizationEndpoint
from authlib.oauth2.rfc8628 import DeviceCodeGrant as AuthlibDeviceCodeGrant
from authlib.oauth2.rfc8628 import DeviceCredentialMixin
from authlib.oauth2.rfc8628.errors import AuthorizationPendingError, ExpiredTokenError, SlowDownError
from flask import g
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core import audit, ratelimit
from core.db import utc_now
from idp import levels
from idp.context import IdPContext
from idp.i18n import N_, Refusal
from idp.models import Account, DeviceAuthorization, SSOSession
from idp.oidc import clients, grants, tokens
from idp.oidc.clients import DEVICE_CODE, RegisteredClient
from idp.people import sessions

DEVICE_AUTHORIZATION_PATH = "/oauth/device_authorization"  # also named in idp.oidc.api (discovery)
VERIFICATION_PATH = "/device"
EXPIRES_IN = 600
INTERVAL = 5
SLOW_DOWN_STEP = 5  # RFC 8628 §3.5: the interval grows by 5 seconds at every slow_down
ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"  # RFC 8628 §6.1: no vowels (no words), no 0/O or 1/I to confuse
USER_CODE_LENGTH = 8
# Wrong user codes: 5 per session at once, then one a minute; 20 per address at once, then one every 30 seconds.
# 20^8 codes, a few hundred live at a time: a guesser at these rates waits years for a hit.
GUESSES_PER_SESSION = (5, 1 / 60)
GUESSES_PER_ADDRESS = (20, 1 / 30)
PURGE_AFTER = timedelta(days=1)  # rows kept that long after expiry (for the audit's sake), then dropped


class DeviceRefusal(Refusal):
    pass


# -- user codes ---------------------------------------------------------------------------


def new_user_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(USER_CODE_LENGTH))


def shown(code: str) -> str:
    """``BCDFGHJK`` as people see and type it: ``BCDF-GHJK``."""
    return f"{code[:4]}-{code[4:]}"


def normalised(text: str | None) -> str | None:
    """The 8 letters of a user code as typed (any case, spaces, dashes, full-width), or None when it cannot be one."""
    if not isinstance(text, str) or len(text) > 40:
        return None
    letters = "".join(c for c in unicodedata.normalize("NFKC", text).upper() if c not in " -_.\u00a0\t")
    if len(letters) != USER_CODE_LENGTH or any(c not in ALPHABET for c in letters):
        return None
    return letters


def _user_code_hash(ctx: IdPContext, code: str) -> str:
    # Keyed: 20^8 codes could be hashed through in minutes from a copy of the table.
    return hmac.new(ctx.secret_key, b"hallmark-device-user-code\x00" + code.encode(), hashlib.sha256).hexdigest()


# -- the device authorization endpoint (RFC 8628 §3.1-3.2) ------------------------------------


def requested_scope(client: RegisteredClient, scope: str | None) -> str:
    """The scope of a device authorization: what was asked for (all of it the client's), or the client's person scopes."""
    if scope is None:
        own = [s for s in client.scopes if s in grants.USER_SCOPES] or list(client.scopes)
        return " ".join(own)
    wanted = scope.split()
    if not wanted or not client.allows_scopes(wanted):
        raise InvalidScopeError("The client may not ask for this scope.")
    return " ".join(dict.fromkeys(wanted))


class DeviceAuthorizationEndpoint(AuthlibDeviceAuthorizationEndpoint):
    CLIENT_AUTH_METHODS = grants.ALL_METHODS
    EXPIRES_IN = EXPIRES_IN
    INTERVAL = INTERVAL

    def authenticate_client(self, request):
        # Once per request: the parent asks again, and a private_key_jwt assertion is good for one use.
        if request.client is None:
            client: RegisteredClient = super().authenticate_client(request)
            if not client.check_grant_type(DEVICE_CODE):
                raise UnauthorizedClientError("The client is not registered for the device authorization grant.")
            g.idp_device_scope = requested_scope(client, request.payload.scope)
        return request.client

    def create_endpoint_response(self, request):
        self.authenticate_client(request)
        return super().create_endpoint_response(request)

    def generate_user_code(self):
        return shown(new_user_code())

    def get_verification_uri(self):
        return self.server.ctx.url(VERIFICATION_PATH)

    def save_device_credential(self, client_id, scope, data):
        ctx: IdPContext = self.server.ctx
        scope = g.idp_device_scope  # as checked against the client (requested_scope), not as sent
        session = grants.db()
        now = utc_now()
        for attempt in range(5):
            code = normalised(data["user_code"])
            try:
                with session.begin_nested():
                    session.add(
                        DeviceAuthorization(
                            device_code_hash=tokens.digest(data["device_code"]),
                            user_code_hash=_user_code_hash(ctx, code),
                            client_id=client_id,
                            scope=scope,
                            status="pending",
                            interval=INTERVAL,
                            created_at=now,
                            expires_at=now + timedelta(seconds=EXPIRES_IN),
                        )
                    )
                break
            except IntegrityError:  # the same user code is live for another device: draw again
                if attempt == 4:
                    raise
                data["user_code"] = self.generate_user_code()
                data["verification_uri_complete"] = f"{data['verification_uri']}?user_code={data['user_code']}"
        if secrets.randbelow(50) == 0:  # now and then, forget long-expired authorizations
            session.execute(delete(DeviceAuthorization).where(DeviceAuthorization.expires_at < now - PURGE_AFTER))


# -- the grant at the token endpoint (RFC 8628 §3.4-3.5) -------------------------------------


@dataclass
class _Credential(DeviceCredentialMixin):
    row: DeviceAuthorization

    def get_client_id(self):
        return self.row.client_id

    def get_scope(self):
        return self.row.scope

    def get_user_code(self):
        return None  # stored as a hash only; the row itself says what was decided

    def is_expired(self):
        return self.row.expires_at <= utc_now()


class DeviceCodeGrant(AuthlibDeviceCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = grants.ALL_METHODS

    def validate_token_request(self):
        device_code = self.request.payload.data.get("device_code")
        if not device_code:
            raise InvalidRequestError("Missing 'device_code'.")
        client: RegisteredClient = self.authenticate_token_endpoint_client()
        if not client.check_grant_type(self.GRANT_TYPE):
            raise UnauthorizedClientError("The client is not registered for the device authorization grant.")
        credential = self.query_device_credential(device_code)
        if credential is None or credential.get_client_id() != client.client_id:
            raise InvalidGrantError("The device code is not known.")
        self.request.client = client
        self.request.credential = credential
        self.request.user = self.validate_device_credential(credential)

    def query_device_credential(self, device_code):
        if not isinstance(device_code, str) or not device_code or len(device_code) > 128:
            return None
        row = grants.db().get(DeviceAuthorization, tokens.digest(device_code))
        return _Credential(row) if row is not None else None

    def validate_device_credential(self, credential: _Credential):
        row = credential.row
        session = grants.db()
        if row.status == "used":
            # A second exchange: refused, and what the first one got is revoked (it may have been stolen).
            if row.family_id:
                tokens.revoke_family(session, row.family_id, reason="device code replayed", actor=f"client:{row.client_id}")
            raise InvalidGrantError("The device code has already been used.")
        if credential.is_expired():
            raise ExpiredTokenError()
        if row.status == "denied":
            raise AccessDeniedError("The person denied the request.")
        if row.status == "approved":
            account = session.get(Account, row.account_id)
            if account is None or account.status != "active":
                raise InvalidGrantError("The account is not active.")
            return account
        slow = self.should_slow_down(credential)
        row.last_polled_at = utc_now()
        if slow:
            row.interval += SLOW_DOWN_STEP
            raise SlowDownError()
        raise AuthorizationPendingError()

    def should_slow_down(self, credential: _Credential) -> bool:
        last = credential.row.last_polled_at
        return last is not None and (utc_now() - last).total_seconds() < credential.row.interval

    def query_user_grant(self, user_code):  # validate_device_credential reads the row instead
        raise NotImplementedError

    def create_token_response(self):
        client: RegisteredClient = self.request.client
        row: DeviceAuthorization = self.request.credential.row
        session = grants.db()
        family = tokens.new_family_id()
        won = session.execute(
            update(DeviceAuthorization)
            .where(DeviceAuthorization.device_code_hash == row.device_code_hash, DeviceAuthorization.status == "approved")
            .values(status="used", used_at=utc_now(), family_id=family)
            .execution_options(synchronize_session=False)
        ).rowcount
        if won != 1:  # exchanged by a concurrent request a moment ago
            raise InvalidGrantError("The device code has already been used.")
        sso = tokens.session_alive(session, row.sid) if row.sid else None
        if row.sid and sso is None:
            raise InvalidGrantError("The login session that approved the request has ended.")
        auth = tokens.Authentication(row.account_id, row.sid, row.acr, tuple((row.amr or "").split()), row.auth_time)
        access, claims = tokens.access_token(grants._ctx(), client, row.scope, auth=auth, family_id=family)
        refresh = None
        if client.check_grant_type("refresh_token"):
            refresh, _ = tokens.new_refresh_token(
                session, client, auth, scope=row.scope, family_id=family, session_expires_at=sso.expires_at if sso else None
            )
        id_token = None
        if "openid" in row.scope.split():
            id_token = tokens.id_token(grants._ctx(), client, auth, nonce=None, access_token_value=access, alg=tokens.id_token_alg(client))
        return 200, tokens.token_response(access, claims, refresh=refresh, id_token_value=id_token), self.TOKEN_RESPONSE_HEADER


def register(server) -> None:
    """Give the authorization server (``idp.oidc.grants.HallmarkServer``) the endpoint and the grant."""
    server.register_grant(DeviceCodeGrant)
    server.register_endpoint(DeviceAuthorizationEndpoint)


# -- the person's side: /device ----------------------------------------------------------------


@dataclass(frozen=True)
class Pending:
    """A device authorization waiting for a person, as the page shows it."""

    user_code: str  # as shown, XXXX-XXXX
    client: RegisteredClient
    scopes: tuple[str, ...]
    expires_at: object


def _guess_limits(ctx: IdPContext) -> tuple[ratelimit.SharedBucket, ratelimit.SharedBucket]:
    return (
        ratelimit.shared(ctx.cache, ctx.sessions, "idp.device.guess.session", GUESSES_PER_SESSION),
        ratelimit.shared(ctx.cache, ctx.sessions, "idp.device.guess.address", GUESSES_PER_ADDRESS),
    )


def _too_many(wait: float) -> DeviceRefusal:
    seconds = ratelimit.retry_after(wait)
    return DeviceRefusal(
        N_("Too many wrong codes. Try again in %(seconds)s seconds."), code="rate_limited", status=429, retry_after=seconds, seconds=seconds
    )


def check_guesses(ctx: IdPContext, sid: str, ip: str) -> None:
    """Refuse (429) a code lookup from a session or address that has guessed wrong too often."""
    per_session, per_address = _guess_limits(ctx)
    wait = max(per_session.wait_time(sid), per_address.wait_time(ip or "-"))
    if wait > 0:
        raise _too_many(wait)


def _row_for(ctx: IdPContext, db: Session, code: str) -> DeviceAuthorization | None:
    return db.scalar(select(DeviceAuthorization).where(DeviceAuthorization.user_code_hash == _user_code_hash(ctx, code)))


def find_pending(ctx: IdPContext, db: Session, text: str | None, *, sid: str, ip: str) -> Pending:
    """The authorization a typed user code names, still waiting; a clear refusal otherwise.

    A code that names nothing counts as a guess for the session and the address (:func:`check_guesses`).
    """
    check_guesses(ctx, sid, ip)
    code = normalised(text)
    row = _row_for(ctx, db, code) if code else None
    if row is None:
        per_session, per_address = _guess_limits(ctx)
        per_session.take(sid, db=db)
        per_address.take(ip or "-", db=db)
        raise DeviceRefusal(
            N_("This code is not known. Check the code shown on the screen (8 letters, like BCDF-GHJK) and try again."),
            code="user_code_unknown",
            status=404,
        )
    if row.status != "pending":
        raise DeviceRefusal(N_("This code has already been used. Ask the screen for a new one."), code="user_code_used", status=410)
    if row.expires_at <= utc_now():
        raise DeviceRefusal(N_("This code has expired. Ask the screen for a new one."), code="user_code_expired", status=410)
    client = clients.get(ctx, row.client_id, db)
    if client is None:
        raise DeviceRefusal(N_("The device that showed this code is no longer registered."), code="client_removed", status=410)
    return Pending(shown(code), client, tuple(row.scope.split()), row.expires_at)


def session_level(db: Session, session: SSOSession) -> int:
    """The level a session has reached, derived as the authorization endpoint derives it (proofing + methods)."""
    return levels.achieved(proofed=sessions.view(db, session).proofed, amr=set(session.amr.split()))


def decide(ctx: IdPContext, db: Session, text: str, session: SSOSession, *, approve: bool, ip: str) -> Pending:
    """Approve or deny a waiting authorization for the person of ``session`` (audited either way).

    An approval records the session's level, methods and time: the tokens get exactly those.
    """
    pending = find_pending(ctx, db, text, sid=session.sid, ip=ip)
    level = session_level(db, session)
    if approve and level < pending.client.min_acr:
        raise DeviceRefusal(N_("This device needs a higher sign-in level."), code="level_too_low", status=403)
    now = utc_now()
    values = {"status": "approved" if approve else "denied", "decided_at": now, "account_id": session.account_id}
    if approve:
        values.update(sid=session.sid, acr=level, amr=session.amr, auth_time=session.auth_time)
    won = db.execute(
        update(DeviceAuthorization)
        .where(DeviceAuthorization.user_code_hash == _user_code_hash(ctx, normalised(text)), DeviceAuthorization.status == "pending")
        .values(**values)
        .execution_options(synchronize_session=False)
    ).rowcount
    if won != 1:  # decided a moment ago (another tab, another person)
        raise DeviceRefusal(N_("This code has already been used. Ask the screen for a new one."), code="user_code_used", status=410)
    if approve:
        sessions.joined(db, session, pending.client.client_id)  # single logout reaches the kiosk too
    audit.record(
        db,
        actor=f"account:{session.account_id}",
        action="idp.device.approved" if approve else "idp.device.denied",
        target=pending.client.client_id,
        details={"scope": " ".join(pending.scopes), "acr": level if approve else None, "session": session.sid[:12], "ip": ip},
    )
    return pending
