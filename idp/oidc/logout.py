"""Single logout: when an SSO session ends, every hall it signed in to hears about it.

Two channels, as OpenID Connect defines them:

- **Back-channel** (OIDC Back-Channel Logout 1.0): the IdP POSTs a signed logout
  token carrying ``sid`` and ``sub`` to the client's registered URI, server to
  server. Each notice is a message of core's outbox (kind :data:`KIND`, deduplicated
  per session and client), queued in the same transaction that ends the session,
  tried right after commit, and retried by the outbox with growing delays until it
  is delivered or given up; every outcome is audited. The message holds the
  session and the subject, not a token: a logout token lives two minutes, so each
  attempt signs a fresh one (a new ``jti``). A hall may get a notice twice (the
  outbox delivers at least once); ending a ``sid`` twice is harmless.
- **Front-channel** (OIDC Front-Channel Logout 1.0): the logged-out page embeds
  an iframe per client at its registered URI with ``iss`` and ``sid``; the
  browser carries the hall's own cookies there.

The notices are queued wherever a session ends (RP-initiated logout, "sign out"
on the account page, a password change ending all sessions), so no path forgets.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import audit, events, outbox
from core import db as core_db
from core import http as core_http
from core.db import utc_now
from idp.context import IdPContext
from idp.i18n import N_, Refusal
from idp.models import Client, LogoutDelivery, SessionClient, SSOSession
from idp.oidc import clients, keys

log = logging.getLogger("hallmark.idp.logout")

BACK = "back"
FRONT = "front"
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
KIND = "idp.logout.back"  # core outbox kind of back-channel notices
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
LOGOUT_TOKEN_TYPE = "logout+jwt"
LOGOUT_TOKEN_LIFETIME = 120  # seconds; a logout token is used at once or never
# 10 s, 20 s, 40 s, ... up to an hour between attempts; given up after the twelfth (about 3.5 hours in all).
RETRY = outbox.Retry(first=timedelta(seconds=10), cap=timedelta(hours=1), attempts=12)
SEND_TIMEOUT = 5.0  # seconds per POST; a hall that is slower is retried later
ERROR_CHARS = 300


# -- the RP-initiated logout request -----------------------------------------------------------

PARAM_LIMITS = {"id_token_hint": 8000, "post_logout_redirect_uri": 400, "state": 500, "client_id": 64, "ui_locales": 50, "logout_hint": 200}
HINT_ALGORITHMS = ["ES256", "RS256"]


class LogoutRefusal(Refusal):
    status = 400


@dataclass(frozen=True)
class LogoutRequest:
    """A checked logout request: who asked, and where the browser may go afterwards."""

    client: clients.RegisteredClient | None
    hint: dict | None  # claims of a genuine id_token_hint (expired or not)
    post_logout_redirect_uri: str | None
    state: str | None

    @property
    def redirect_to(self) -> str | None:
        if not self.post_logout_redirect_uri:
            return None
        return with_query(self.post_logout_redirect_uri, state=self.state) if self.state else self.post_logout_redirect_uri

    def carried_params(self) -> dict[str, str]:
        """What the confirmation form must send back so the answer leads to the same place."""
        carried = {
            "client_id": self.client.client_id if self.client else None,
            "post_logout_redirect_uri": self.post_logout_redirect_uri,
            "state": self.state,
        }
        return {k: v for k, v in carried.items() if v}


def parse_request(ctx: IdPContext, db: Session, params) -> LogoutRequest:
    """Check the parameters of OIDC RP-Initiated Logout 1.0; refuse anything that could redirect somewhere unregistered."""
    values: dict[str, str] = {}
    for name, limit in PARAM_LIMITS.items():
        given = params.getlist(name)
        if len(given) > 1:
            raise LogoutRefusal(N_("The logout request repeats the parameter %(name)s."), code="repeated_parameter", name=name)
        if given and len(given[0]) > limit:
            raise LogoutRefusal(N_("The logout request's parameter %(name)s is too long."), code="parameter_too_long", name=name)
        if given and given[0]:
            values[name] = given[0]
    hint = _verified_hint(ctx, values["id_token_hint"]) if "id_token_hint" in values else None
    client_id = values.get("client_id")
    if hint is not None:
        audience = hint.get("aud")
        hinted = audience[0] if isinstance(audience, list) and len(audience) == 1 else audience
        if client_id and client_id != hinted:
            raise LogoutRefusal(N_("The logout request names a different application than its ID token."), code="client_mismatch")
        client_id = hinted if isinstance(hinted, str) else None
    client = clients.get(ctx, client_id, db) if client_id else None
    if client_id and client is None:
        raise LogoutRefusal(N_("The application that sent you here is not registered with this service."), code="unknown_client")
    target = values.get("post_logout_redirect_uri")
    if target is not None:
        if client is None:
            raise LogoutRefusal(
                N_("The logout request asks to return to an address but does not say which application it comes from."),
                code="redirect_without_client",
            )
        if target not in client.post_logout_redirect_uris:
            raise LogoutRefusal(
                N_("The address to return to after logout is not registered for this application."), code="unregistered_redirect"
            )
    return LogoutRequest(client, hint, target, values.get("state"))


def _verified_hint(ctx: IdPContext, token: str) -> dict:
    """Claims of an ID token this provider signed; expiry does not matter for a logout hint."""
    from joserfc import jwt
    from joserfc.errors import JoseError

    refusal = LogoutRefusal(N_("The logout request carries an ID token that was not issued by this service."), code="bad_id_token_hint")
    if token.count(".") != 2:
        raise refusal
    try:
        decoded = jwt.decode(token, keys.keyset(ctx), algorithms=HINT_ALGORITHMS)
    except (JoseError, ValueError, TypeError):
        raise refusal from None
    claims = decoded.claims
    if str(decoded.header.get("typ", "JWT")).upper() != "JWT" or claims.get("iss") != ctx.issuer or not claims.get("sub"):
        raise refusal  # access and logout tokens are not ID tokens
    return claims


def hint_matches(request: LogoutRequest, session: SSOSession) -> bool:
    """Whether the hall proved it speaks for this browser's session (its ID token names the session)."""
    hint = request.hint
    return hint is not None and hint.get("sid") == session.sid and hint.get("sub") == session.account_id


# -- queueing ------------------------------------------------------------------------------


def dedupe_key(sid: str, client_id: str) -> str:
    """The outbox key of the back-channel notice of one session to one client: one notice each."""
    return f"{KIND}:{sid}:{client_id}"


def queue(db: Session, sid: str) -> list[int]:
    """Queue a notice per channel for every client the session signed in to; returns the back-channel outbox ids.

    Called inside the transaction that ends the session, so the session's end and
    the promise to tell the halls commit together. Back-channel notices go to the
    outbox; front-channel ones are rows the logged-out page renders.
    """
    now = utc_now()
    back_ids: list[int] = []
    session_row = db.get(SSOSession, sid)
    client_ids = list(db.scalars(select(SessionClient.client_id).where(SessionClient.sid == sid)))
    for client_id in client_ids:
        row = db.get(Client, client_id)
        if row is None:
            continue
        if row.backchannel_logout_uri and session_row is not None:
            note = {"sid": sid, "sub": session_row.account_id, "client_id": client_id}
            message = outbox.enqueue(
                db,
                kind=KIND,
                target=row.backchannel_logout_uri,
                body=json.dumps(note).encode(),
                content_type="application/json",  # the note a token is made from at each attempt, not the token
                dedupe_key=dedupe_key(sid, client_id),
            )
            if message.state == outbox.PENDING:
                back_ids.append(message.id)
        if row.frontchannel_logout_uri:
            existing = db.scalar(
                select(LogoutDelivery).where(
                    LogoutDelivery.sid == sid, LogoutDelivery.client_id == client_id, LogoutDelivery.channel == FRONT
                )
            )
            if existing is None:
                db.add(
                    LogoutDelivery(
                        sid=sid, client_id=client_id, channel=FRONT, status=PENDING, attempts=0, last_error="", next_attempt_at=now
                    )
                )
                db.flush()
    return back_ids


# -- the logout token ----------------------------------------------------------------------


def logout_token(ctx: IdPContext, client: clients.RegisteredClient, *, sid: str, sub: str, now: int | None = None) -> str:
    """A back-channel logout token for one client: signed like its ID tokens, never carrying a nonce."""
    now = now or int(time.time())
    claims = {
        "iss": ctx.issuer,
        "aud": client.client_id,
        "iat": now,
        "exp": now + LOGOUT_TOKEN_LIFETIME,
        "jti": secrets.token_urlsafe(16),
        "sub": sub,
        "sid": sid,
        "events": {BACKCHANNEL_EVENT: {}},
    }
    alg = client.id_token_signed_response_alg if client.id_token_signed_response_alg in keys.ALGORITHMS else keys.DEFAULT_ALG
    return keys.sign(ctx, claims, typ=LOGOUT_TOKEN_TYPE, alg=alg)


# -- delivery (the outbox's sender of KIND) --------------------------------------------------


def _send(uri: str, token: str) -> None:
    """POST the logout token; returns when the hall accepted it, raises outbox.Failed (or Permanent) saying why not."""
    import requests

    try:
        response = _http().post(
            uri,
            data={"logout_token": token},
            timeout=SEND_TIMEOUT,
            allow_redirects=False,  # the spec forbids following redirects here
            headers={"Cache-Control": "no-store"},
        )
    except requests.RequestException as exc:
        raise outbox.Failed(f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]) from None
    if response.status_code in (200, 204):
        return
    reason = f"HTTP {response.status_code}: {response.text[:200]}"[:ERROR_CHARS]
    # A 4xx other than 408/429 will not improve by retrying: the hall refused the token.
    if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
        raise outbox.Permanent(reason)
    raise outbox.Failed(reason)


_local = threading.local()


def _http():
    """One connection-pooling HTTP session per thread (core.http: no proxy from the environment).

    A connection that could not be opened is tried again at once; a hall's 5xx is not: the
    outbox reschedules the notice (RETRY), and each attempt is counted."""
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = core_http.session(timeout=SEND_TIMEOUT, retry_statuses=())
    return session


def sender(ctx: IdPContext):
    """The outbox sender of back-channel notices: a fresh logout token to the client's registered URI."""

    def send(message: outbox.Message) -> None:
        note = json.loads(message.body)
        with core_db.read_only(ctx.sessions) as db:
            client = clients.get(ctx, note["client_id"], db)
        if client is None or not client.backchannel_logout_uri:
            raise outbox.Permanent("the client or its back-channel URI no longer exists")
        token = logout_token(ctx, client, sid=note["sid"], sub=note["sub"])
        _send(client.backchannel_logout_uri, token)

    return send


def settled(db: Session, message: outbox.Message, outcome: outbox.Outcome) -> None:
    """Audit how a notice ended, in the transaction that marks it."""
    note = json.loads(message.body)
    details = {"client": note["client_id"], "attempt": outcome.attempts}
    if outcome.delivered:
        audit.record(db, actor="system:idp", action="idp.logout.delivered", target=note["sid"][:12], details=details)
        return
    audit.record(
        db, actor="system:idp", action="idp.logout.failed", target=note["sid"][:12], details={**details, "error": outcome.error[:120]}
    )


def session_ended(*, session: Session, sid: str, **_) -> dict:
    """Handler of ``core.events.SESSION_ENDED``: queue the halls' notices in the ending transaction."""
    return {"halls_to_notify": len(queue(session, sid))}


def install(ctx: IdPContext) -> None:
    """Queue notices when a session ends (on the hook list of ``ctx.sessions``); the outbox sends
    them as soon as the transaction commits (``soon``), and retries what fails."""
    if ctx.cache.get("logout.installed"):
        return
    ctx.cache["logout.installed"] = True
    events.of(ctx.sessions).subscribe(events.SESSION_ENDED, session_ended)
    outbox.register(ctx.sessions, KIND, sender(ctx), retry=RETRY, soon=True, settled=settled)


# -- front-channel -------------------------------------------------------------------------


@dataclass(frozen=True)
class FrontChannelFrame:
    client_name: str
    url: str


def front_channel_frames(ctx: IdPContext, db: Session, sid: str) -> list[FrontChannelFrame]:
    """The iframes the logged-out page must show for this session; marks them delivered (to the browser)."""
    frames = []
    rows = db.scalars(
        select(LogoutDelivery).where(LogoutDelivery.sid == sid, LogoutDelivery.channel == FRONT, LogoutDelivery.status == PENDING)
    )
    for row in rows:
        client = clients.get(ctx, row.client_id, db)
        row.attempts += 1
        if client is None or not client.frontchannel_logout_uri:
            row.status, row.last_error = FAILED, "the client or its front-channel URI no longer exists"
            continue
        row.status, row.delivered_at = DELIVERED, utc_now()
        frames.append(FrontChannelFrame(client.name, with_query(client.frontchannel_logout_uri, iss=ctx.issuer, sid=sid)))
    return frames


def with_query(uri: str, **params: str) -> str:
    """``uri`` with ``params`` added to whatever query it already has."""
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True) + [(k, v) for k, v in params.items() if v is not None]
    return urlunsplit(parts._replace(query=urlencode(query)))


# -- the logged-out page's ticket ------------------------------------------------------------

DONE_PATH = "/logout/done"
TICKET_MAX_AGE = 600  # seconds the logged-out page can be reloaded


def _tickets(ctx: IdPContext):
    from itsdangerous import URLSafeTimedSerializer

    return URLSafeTimedSerializer(ctx.secret_key, salt="hallmark.idp.logout.done")


def done_url(ctx: IdPContext, sid: str | None, *, redirect_to: str | None = None, client_name: str | None = None) -> str:
    """Where the browser goes after its session ended: the page that runs front-channel logout and says what happened."""
    ticket = _tickets(ctx).dumps({"sid": sid or "", "to": redirect_to or "", "client": client_name or ""})
    return f"{DONE_PATH}?ticket={ticket}"


def read_done_ticket(ctx: IdPContext, raw: str) -> dict | None:
    from itsdangerous import BadSignature

    if not 0 < len(raw) < 2000:
        return None
    try:
        ticket = _tickets(ctx).loads(raw, max_age=TICKET_MAX_AGE)
    except BadSignature:
        return None
    return ticket if isinstance(ticket, dict) else None


# -- what halls were told, for the logged-out page --------------------------------------------


@dataclass(frozen=True)
class HallNotice:
    client_name: str
    channel: str
    status: str


_BACK_STATUS = {outbox.PENDING: PENDING, outbox.DELIVERED: DELIVERED, outbox.DEAD: FAILED}


def notices_for(ctx: IdPContext, db: Session, sid: str) -> list[HallNotice]:
    """Each hall's notices of this session: back-channel from the outbox, front-channel from their rows."""
    from core.models import OutboxMessage

    client_ids = list(db.scalars(select(SessionClient.client_id).where(SessionClient.sid == sid).order_by(SessionClient.client_id)))
    keys = {dedupe_key(sid, client_id): client_id for client_id in client_ids}
    back = (
        {
            keys[row.dedupe_key]: row.state
            for row in db.execute(select(OutboxMessage.dedupe_key, OutboxMessage.state).where(OutboxMessage.dedupe_key.in_(keys)))
        }
        if keys
        else {}
    )
    front = {row.client_id: row.status for row in db.scalars(select(LogoutDelivery).where(LogoutDelivery.sid == sid))}
    result = []
    for client_id in client_ids:
        client = clients.get(ctx, client_id, db)
        name = client.name if client else client_id
        if client_id in back:
            result.append(HallNotice(name, BACK, _BACK_STATUS[back[client_id]]))
        if client_id in front:
            result.append(HallNotice(name, FRONT, front[client_id]))
    return result
