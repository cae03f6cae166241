"""Single logout: when an SSO session ends, every hall it signed in to hears about it.

Two channels, as OpenID Connect defines them:

- **Back-channel** (OIDC Back-Channel Logout 1.0): the IdP POSTs a signed logout
  token carrying ``sid`` and ``sub`` to the client's registered URI, server to
  server. Each notice is a row in ``idp_logout_deliveries``, queued in the same
  transaction that ends the session, sent right after commit, and retried with
  growing delays until it is delivered or given up; every outcome is audited.
- **Front-channel** (OIDC Front-Channel Logout 1.0): the logged-out page embeds
  an iframe per client at its registered URI with ``iss`` and ``sid``; the
  browser carries the hall's own cookies there.

The notices are queued wherever a session ends (RP-initiated logout, "sign out"
on the account page, a password change ending all sessions), so no path forgets.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core import audit, events
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
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
LOGOUT_TOKEN_TYPE = "logout+jwt"
LOGOUT_TOKEN_LIFETIME = 120  # seconds; a logout token is used at once or never
# Delay before the next attempt after the n-th failure; after the last, the notice is given up.
RETRY_DELAYS = (timedelta(seconds=10), timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2))
SEND_TIMEOUT = 5.0  # seconds per POST; a hall that is slower is retried later
LEASE = timedelta(seconds=30)  # a claimed notice is not picked up by another worker before this
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


def queue(db: Session, sid: str) -> list[int]:
    """Queue a notice per channel for every client the session signed in to; returns the back-channel ids.

    Called inside the transaction that ends the session, so the session's end and
    the promise to tell the halls commit together.
    """
    now = utc_now()
    back_ids: list[int] = []
    client_ids = list(db.scalars(select(SessionClient.client_id).where(SessionClient.sid == sid)))
    for client_id in client_ids:
        row = db.get(Client, client_id)
        if row is None:
            continue
        for channel, uri in ((BACK, row.backchannel_logout_uri), (FRONT, row.frontchannel_logout_uri)):
            if not uri:
                continue
            existing = db.scalar(
                select(LogoutDelivery).where(
                    LogoutDelivery.sid == sid, LogoutDelivery.client_id == client_id, LogoutDelivery.channel == channel
                )
            )
            if existing is None:
                existing = LogoutDelivery(
                    sid=sid, client_id=client_id, channel=channel, status=PENDING, attempts=0, last_error="", next_attempt_at=now
                )
                db.add(existing)
                db.flush()
            if channel == BACK and existing.status == PENDING:
                back_ids.append(existing.id)
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


# -- delivery ------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one delivery pass did."""

    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Claimed:
    id: int
    sid: str
    client_id: str
    attempts: int


def _claim(ctx: IdPContext, ids: list[int] | None, now: datetime, limit: int) -> list[_Claimed]:
    """Take due back-channel notices (pushing their next attempt past a lease so no other worker sends them too)."""
    claimed: list[_Claimed] = []
    with core_db.transaction(ctx.sessions) as db:
        query = select(LogoutDelivery.id).where(
            LogoutDelivery.channel == BACK, LogoutDelivery.status == PENDING, LogoutDelivery.next_attempt_at <= now
        )
        if ids is not None:
            query = query.where(LogoutDelivery.id.in_(ids))
        candidates = list(db.scalars(query.order_by(LogoutDelivery.next_attempt_at).limit(limit)))
        for delivery_id in candidates:
            taken = db.execute(
                update(LogoutDelivery)
                .where(LogoutDelivery.id == delivery_id, LogoutDelivery.status == PENDING, LogoutDelivery.next_attempt_at <= now)
                .values(next_attempt_at=now + LEASE)
            ).rowcount
            if taken:
                row = db.get(LogoutDelivery, delivery_id)
                claimed.append(_Claimed(row.id, row.sid, row.client_id, row.attempts))
    return claimed


def _send(uri: str, token: str) -> str | None:
    """POST the logout token; None when the hall accepted it, else a short reason."""
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
        return f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]
    if response.status_code in (200, 204):
        return None
    return f"HTTP {response.status_code}: {response.text[:200]}"[:ERROR_CHARS]


_local = threading.local()


def _http():
    """One connection-pooling HTTP session per thread (core.http: no proxy from the environment).

    A connection that could not be opened is tried again at once; a hall's 5xx is not: the
    delivery is rescheduled after RETRY_DELAYS, and each attempt is counted and audited."""
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = core_http.session(timeout=SEND_TIMEOUT, retry_statuses=())
    return session


def _permanent(reason: str) -> bool:
    """A 4xx other than 408/429 will not improve by retrying: the hall refused the token."""
    if not reason.startswith("HTTP 4"):
        return False
    return not reason.startswith(("HTTP 408", "HTTP 429"))


def deliver(ctx: IdPContext, ids: list[int] | None = None, *, now: datetime | None = None, limit: int = 100) -> Outcome:
    """Send due back-channel notices (all due ones, or only ``ids``) and record each result."""
    now = now or utc_now()
    outcome = Outcome()
    for claimed in _claim(ctx, ids, now, limit):
        with core_db.transaction(ctx.sessions) as db:
            session_row = db.get(SSOSession, claimed.sid)
            client = clients.get(ctx, claimed.client_id, db)
        if client is None or not client.backchannel_logout_uri or session_row is None:
            reason = "the client or its back-channel URI no longer exists"
        else:
            token = logout_token(ctx, client, sid=claimed.sid, sub=session_row.account_id)
            reason = _send(client.backchannel_logout_uri, token)
        _record(ctx, claimed, reason, now, outcome)
    return outcome


def _record(ctx: IdPContext, claimed: _Claimed, reason: str | None, now: datetime, outcome: Outcome) -> None:
    attempts = claimed.attempts + 1
    with core_db.transaction(ctx.sessions) as db:
        row = db.get(LogoutDelivery, claimed.id)
        row.attempts = attempts
        details = {"client": claimed.client_id, "attempt": attempts}
        if reason is None:
            row.status, row.delivered_at, row.last_error = DELIVERED, utc_now(), ""
            outcome.delivered += 1
            audit.record(db, actor="system:idp", action="idp.logout.delivered", target=claimed.sid[:12], details=details)
            return
        row.last_error = reason
        outcome.errors.append(f"{claimed.client_id}: {reason}")
        if _permanent(reason) or attempts > len(RETRY_DELAYS):
            row.status = FAILED
            outcome.failed += 1
            audit.record(
                db, actor="system:idp", action="idp.logout.failed", target=claimed.sid[:12], details={**details, "error": reason[:120]}
            )
            log.warning("back-channel logout to %s given up after %d attempt(s): %s", claimed.client_id, attempts, reason)
        else:
            row.next_attempt_at = now + RETRY_DELAYS[attempts - 1]
            outcome.retrying += 1
            log.info("back-channel logout to %s failed (attempt %d), retrying: %s", claimed.client_id, attempts, reason)


_executor_lock = threading.Lock()
_executor: tuple[int, ThreadPoolExecutor] | None = None


def deliver_soon(ctx: IdPContext, ids: list[int]) -> None:
    """Send just-queued notices on a background thread, so the person's logout page does not wait on halls.

    Whatever this misses (a crash, a hall that is down) the retry loop picks up.
    """
    global _executor
    if not ids:
        return
    with _executor_lock:
        if _executor is None or _executor[0] != os.getpid():  # a forked worker needs its own threads
            _executor = (os.getpid(), ThreadPoolExecutor(max_workers=4, thread_name_prefix="hallmark-logout"))
        executor = _executor[1]

    def run():
        try:
            deliver(ctx, ids)
        except Exception:
            log.exception("sending back-channel logout notices failed; the retry loop will try again")

    executor.submit(run)


PENDING_NOTICES = "hallmark.idp.logout_notices"  # db.info key: back-channel notices to send after commit


def session_ended(*, session: Session, sid: str, **_) -> dict:
    """Handler of ``core.events.SESSION_ENDED``: queue the halls' notices in the ending transaction."""
    notices = queue(session, sid)
    session.info.setdefault(PENDING_NOTICES, []).extend(notices)
    return {"halls_to_notify": len(notices)}


def install(ctx: IdPContext) -> None:
    """Queue notices when a session ends (on the hook list of ``ctx.sessions``), and send
    them as soon as the transaction commits (forget them if it rolls back)."""
    from sqlalchemy import event

    def after_commit(db: Session) -> None:
        ids = db.info.pop(PENDING_NOTICES, None)
        if ids:
            deliver_soon(ctx, ids)

    def after_rollback(db: Session) -> None:
        db.info.pop(PENDING_NOTICES, None)

    if ctx.cache.get("logout.installed"):
        return
    ctx.cache["logout.installed"] = True
    events.of(ctx.sessions).subscribe(events.SESSION_ENDED, session_ended)
    event.listen(ctx.sessions, "after_commit", after_commit)
    event.listen(ctx.sessions, "after_soft_rollback", lambda db, previous: after_rollback(db))


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


def notices_for(ctx: IdPContext, db: Session, sid: str) -> list[HallNotice]:
    rows = db.scalars(select(LogoutDelivery).where(LogoutDelivery.sid == sid).order_by(LogoutDelivery.id))
    result = []
    for row in rows:
        client = clients.get(ctx, row.client_id, db)
        result.append(HallNotice(client.name if client else row.client_id, row.channel, row.status))
    return result
