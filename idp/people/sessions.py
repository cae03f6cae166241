"""The single sign-on session: one per browser, shared by every hall it signs in to.

The browser holds only an opaque random ``sid`` in an HttpOnly cookie; everything
else is in the database, so any node can serve any request and logout is final.

The cookie is the ``sid`` with a MAC over the ``sid`` and the session's ``secret``, a
random value kept only in the database and drawn anew whenever the session's
account or level changes: at login, at re-authentication, at every step-up and
when real-name proofing raises its level. A cookie from before such a change no
longer opens the session (no session fixation), on every node at once. The ``sid``
itself stays for the life of the session: the halls know it from ID tokens and
logout tokens, and single logout must still reach them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, exists, insert, select
from sqlalchemy.orm import Session, make_transient_to_detached

from core import audit, events
from core.db import utc_now
from idp import levels
from idp.models import Account, IdentityProofing, SessionClient, SSOSession

COOKIE = "hallmark_sso"
IDLE_TIMEOUT = timedelta(hours=2)
ABSOLUTE_TIMEOUT = timedelta(hours=12)


@dataclass(frozen=True)
class SessionView:
    """What the rest of the IdP needs to know about a live session."""

    sid: str
    account_id: str
    amr: frozenset[str]
    acr: int
    auth_time: datetime
    proofed: bool


# Statements built once: SQLAlchemy then reuses their compiled form without rebuilding a cache key.
_PROOFED = select(IdentityProofing.account_id).where(IdentityProofing.account_id == bindparam("account_id"))
# Whether an account is real-name verified, as a column of a query that has the session's account.
PROOFED_COLUMN = exists().where(IdentityProofing.account_id == SSOSession.account_id).label("proofed")
_INSERT_SESSION = insert(SSOSession.__table__)
_SESSION_COLUMNS = tuple(column.key for column in SSOSession.__table__.columns)
_JOINED = select(SessionClient.client_id).where(SessionClient.sid == bindparam("sid"), SessionClient.client_id == bindparam("client_id"))
_ADD_CLIENT = insert(SessionClient.__table__)
_SECRET = select(SSOSession.secret).where(SSOSession.sid == bindparam("sid"))


def _proofed(db: Session, account_id: str) -> bool:
    # A column query, not db.get: it still sees what this transaction added (autoflush), at a third of the cost.
    return db.scalar(_PROOFED, {"account_id": account_id}) is not None


def view(db: Session, row: SSOSession, *, proofed: bool | None = None) -> SessionView:
    """``proofed`` when the caller already read it in this transaction (saves a query)."""
    if proofed is None:
        proofed = _proofed(db, row.account_id)
    return SessionView(row.sid, row.account_id, frozenset(row.amr.split()), row.acr, row.auth_time, proofed)


def _new_secret() -> str:
    return secrets.token_urlsafe(32)


def start(db: Session, account: Account, amr: set[str], *, ip: str = "", user_agent: str = "", acr_cap: int | None = None) -> SSOSession:
    """A new session after a successful primary login.

    ``acr_cap``: the highest level it may have, whatever its methods would reach (a
    scan-to-login session never has more than the phone that confirmed it).
    """
    now = utc_now()
    amr = levels.with_mfa(amr)
    acr = levels.achieved(proofed=_proofed(db, account.id), amr=amr)
    row = SSOSession(
        sid=secrets.token_urlsafe(32),
        secret=_new_secret(),
        account_id=account.id,
        auth_time=now,
        amr=" ".join(sorted(amr)),
        acr=min(acr, acr_cap) if acr_cap is not None else acr,
        created_at=now,
        last_seen_at=now,
        expires_at=now + ABSOLUTE_TIMEOUT,
        ended_at=None,
        ip=ip[:45],
        user_agent=user_agent[:200],
    )
    # A plain INSERT, then the row joins the session as if just loaded, so later
    # changes to it are still saved: cheaper than the ORM's flush of a new object.
    db.flush()  # what the session holds (a just-registered account) goes first: nothing to do when clean
    db.execute(_INSERT_SESSION, {column: getattr(row, column) for column in _SESSION_COLUMNS})
    make_transient_to_detached(row)
    db.add(row)
    audit.record(
        db, actor=f"account:{account.id}", action="idp.session.started", target=row.sid[:12], details={"amr": row.amr, "acr": row.acr}
    )
    return row


def cookie_value(key: bytes, sid: str, secret: str) -> str:
    """What the browser's cookie holds: the sid plus a MAC, under the IdP's key, of the sid and the session's secret.

    The sid itself is not a bearer credential: it travels in ID tokens, logout
    tokens and front-channel URLs (where any hall, log or browser history may see
    it), so knowing it must not be enough to ride the session. The secret never
    leaves the database; a new one (:func:`renew`) makes every earlier cookie void.
    """
    return f"{sid}.{_cookie_mac(key, sid, secret)}"


def cookie_for(db: Session, key: bytes, sid: str) -> str | None:
    """The cookie for a session as it stands now (after a login or step-up has renewed its secret), or None."""
    secret = db.scalar(_SECRET, {"sid": sid})
    return cookie_value(key, sid, secret) if secret else None


def from_cookie(db: Session, key: bytes, value: str | None) -> SSOSession | None:
    """The live session this cookie opens (marked seen), or None: forged, from before a renewal, ended or expired."""
    sid, mac = _parts(value)
    row = db.get(SSOSession, sid) if sid is not None else None
    if row is None or not row.secret or not hmac.compare_digest(mac, _cookie_mac(key, row.sid, row.secret)):
        return None
    return still_live(row)


def sid_from_cookie(db: Session, key: bytes, value: str | None) -> str | None:
    """The sid of the session this cookie was made for as it stands now, or None (no liveness check: see :func:`current`)."""
    sid, mac = _parts(value)
    if sid is None:
        return None
    secret = db.scalar(_SECRET, {"sid": sid})
    if not secret or not hmac.compare_digest(mac, _cookie_mac(key, sid, secret)):
        return None
    return sid


def _parts(value: str | None) -> tuple[str | None, str]:
    if not value or len(value) > 120:
        return None, ""
    sid, _, mac = value.rpartition(".")
    return (sid, mac) if sid and len(sid) <= 64 else (None, "")


def _cookie_mac(key: bytes, sid: str, secret: str) -> str:
    message = b"hallmark-sso-cookie\x00" + sid.encode() + b"\x00" + secret.encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def renew(row: SSOSession) -> None:
    """A new secret: the browser that made the change gets the new cookie, any earlier cookie stops working."""
    row.secret = _new_secret()


def current(db: Session, sid: str | None) -> SSOSession | None:
    """The live session named by the cookie, or None (ended, idle too long, or too old)."""
    if not sid or len(sid) > 64:
        return None
    return still_live(db.get(SSOSession, sid))


def still_live(row: SSOSession | None) -> SSOSession | None:
    """The row if the session has not ended, idled out or expired (and marks it seen); else None."""
    now = utc_now()
    if row is None or row.ended_at is not None or row.expires_at <= now or row.last_seen_at + IDLE_TIMEOUT <= now:
        return None
    if now - row.last_seen_at > timedelta(minutes=1):  # avoid a write on every request
        row.last_seen_at = now
    return row


def add_factor(db: Session, row: SSOSession, method: str) -> SSOSession:
    """Step-up: record a newly proven method and recompute the level; auth_time moves forward."""
    amr = levels.with_mfa(set(row.amr.split()) | {method})
    row.amr = " ".join(sorted(amr))
    row.acr = levels.achieved(proofed=_proofed(db, row.account_id), amr=amr)
    row.auth_time = utc_now()
    renew(row)  # a fresh proof (re-authentication or step-up): a new cookie
    audit.record(
        db,
        actor=f"account:{row.account_id}",
        action="idp.session.stepped_up",
        target=row.sid[:12],
        details={"method": method, "acr": row.acr},
    )
    return row


def refresh_level(db: Session, row: SSOSession) -> SSOSession:
    """Recompute after proofing changed (e.g. real-name verification just succeeded); a changed level renews the cookie."""
    acr = levels.achieved(proofed=_proofed(db, row.account_id), amr=set(row.amr.split()))
    if acr != row.acr:
        row.acr = acr
        renew(row)
    return row


def joined(db: Session, row: SSOSession, client_id: str, *, known: bool | None = None) -> None:
    """Remember that the session signed in to a client, so logout reaches it.

    ``known``: whether the caller already found it remembered in this transaction (saves a query).
    """
    if known is None:
        known = db.scalar(_JOINED, {"sid": row.sid, "client_id": client_id}) is not None
    if not known:
        db.execute(_ADD_CLIENT, {"sid": row.sid, "client_id": client_id, "first_at": utc_now()})


def clients_of(db: Session, sid: str) -> list[str]:
    return list(db.scalars(select(SessionClient.client_id).where(SessionClient.sid == sid)))


def end(db: Session, sid: str, *, actor: str) -> SSOSession | None:
    """End a session (logout, or "sign out" from the account page). Returns it, or None if not live.

    The end is announced on the session's hook list (``core.events.SESSION_ENDED``),
    in the same transaction: single logout (``idp.oidc.logout``, subscribed when the
    IdP's services are built) queues the halls' logout notices there and sends them
    once it commits. What the subscribers report is audited with the end.
    """
    row = db.get(SSOSession, sid)
    if row is None or row.ended_at is not None:
        return None
    row.ended_at = utc_now()
    details = {"account": row.account_id}
    for reported in events.of(db).emit(events.SESSION_ENDED, session=db, sid=sid, account_id=row.account_id):
        details.update(reported or {})
    audit.record(db, actor=actor, action="idp.session.ended", target=sid[:12], details=details)
    return row


def active_for(db: Session, account_id: str) -> list[SSOSession]:
    """An account's live sessions, newest first: the "where am I logged in" list."""
    now = utc_now()
    return list(
        db.scalars(
            select(SSOSession)
            .where(SSOSession.account_id == account_id, SSOSession.ended_at.is_(None), SSOSession.expires_at > now)
            .order_by(SSOSession.last_seen_at.desc())
        )
    )


def end_all_for(db: Session, account_id: str, *, actor: str, except_sid: str | None = None) -> int:
    """End every live session of an account but ``except_sid`` (password change, account disabled)."""
    live = list(db.scalars(select(SSOSession.sid).where(SSOSession.account_id == account_id, SSOSession.ended_at.is_(None))))
    ended = 0
    for sid in live:
        if sid != except_sid and end(db, sid, actor=actor) is not None:
            ended += 1
    audit.record(db, actor=actor, action="idp.session.ended_all", target=account_id, details={"count": ended})
    return ended
