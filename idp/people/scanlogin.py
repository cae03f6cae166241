"""Scan-to-login (扫码登录): the desktop login page shows a QR code; a phone already signed in scans it and confirms.

1. The desktop page asks for a code (:func:`start`). It gets a QR code of
   ``/s/<code>`` and, in an HttpOnly cookie, a *browser secret*. Both are stored
   only as hashes; the code lives :data:`LIFETIME`.
2. The phone opens ``/s/<code>`` (signing in first if it must). The first session
   that opens it owns it (:func:`open_on_phone`); any other session is refused. The
   phone shows what asks: a browser and system, a coarse address, the time.
3. The resident confirms or refuses (:func:`decide`); a second answer is refused.
4. The desktop page polls (:func:`poll`) with its cookie. Only the poll that carries
   the browser secret starts the desktop session, once: someone who photographed the
   QR code polls without it and gets nothing.

The desktop session is the phone's account at the phone's level but never above
level 2: its methods are the phone's without ``hwk`` (a USB key proven on another
device proves nothing here) plus ``mca`` (RFC 8176, multiple-channel
authentication), and its level is capped at the phone session's. Confirmations,
refusals and the start of the desktop session are audited.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from core import audit, ratelimit
from core.db import utc_now
from idp import levels
from idp.context import IdPContext
from idp.i18n import N_, Refusal
from idp.models import Account, ScanLogin, SSOSession
from idp.people import sessions

PHONE_PATH = "/s/"  # short: the QR code stays small
COOKIE = "hallmark_scan"
COOKIE_PATH = "/login/scan"
LIFETIME = timedelta(minutes=2)
MULTIPLE_CHANNELS = "mca"  # RFC 8176
HIGHEST_LEVEL = 2  # a scanned login never reaches level 3 (USB key)
STARTS_PER_ADDRESS = (30, 1 / 10)  # QR codes drawn: 30 at once per address, then one every 10 seconds
PURGE_AFTER = timedelta(days=1)


class ScanRefusal(Refusal):
    pass


@dataclass(frozen=True)
class Started:
    code: str  # goes into the QR code
    browser_secret: str  # goes into the desktop's cookie
    expires_at: datetime


@dataclass(frozen=True)
class Polled:
    status: str  # pending | scanned | refused | expired | unknown | done
    sid: str | None = None  # the new desktop session (done)
    next_url: str | None = None


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def phone_url(ctx: IdPContext, code: str) -> str:
    return ctx.url(PHONE_PATH + code)


def qr_svg(url: str) -> str:
    """The QR code of ``url`` as an SVG document (drawn here, no third party), as a ``data:`` URI for an ``<img>``."""
    import qrcode
    import qrcode.image.svg

    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=4, box_size=10)
    code.add_data(url)
    code.make(fit=True)
    svg = code.make_image(image_factory=qrcode.image.svg.SvgPathFillImage).to_string(encoding="unicode")
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


def start(ctx: IdPContext, db: Session, *, next_url: str, ip: str, user_agent: str) -> Started:
    """A new QR code for a desktop login page (limited per address)."""
    wait = ratelimit.shared(ctx.cache, ctx.sessions, "idp.scanlogin.start", STARTS_PER_ADDRESS).attempt(ip or "-", db=db)
    if wait > 0:
        seconds = ratelimit.retry_after(wait)
        raise ScanRefusal(
            N_("Too many QR codes from your network. Try again in %(seconds)s seconds."),
            code="rate_limited",
            status=429,
            retry_after=seconds,
            seconds=seconds,
        )
    now = utc_now()
    started = Started(secrets.token_urlsafe(18), secrets.token_urlsafe(32), now + LIFETIME)
    db.add(
        ScanLogin(
            code_hash=_digest(started.code),
            browser_hash=_digest(started.browser_secret),
            status="pending",
            next_url=next_url[:400],
            created_at=now,
            expires_at=started.expires_at,
            desktop_ip=(ip or "")[:45],
            desktop_user_agent=(user_agent or "")[:200],
        )
    )
    if secrets.randbelow(50) == 0:
        db.execute(delete(ScanLogin).where(ScanLogin.expires_at < now - PURGE_AFTER))
    return started


# -- the phone -------------------------------------------------------------------------------


def _unusable(row: ScanLogin | None) -> ScanRefusal | None:
    if row is None:
        return ScanRefusal(N_("This QR code is not known. Scan the code on the sign-in page again."), code="scan_unknown", status=404)
    if row.status in ("confirmed", "refused", "used"):
        return _answered()
    if row.expires_at <= utc_now():
        return ScanRefusal(
            N_("This QR code has expired. Reload the sign-in page on the computer for a new one."), code="scan_expired", status=410
        )
    return None


def _answered() -> ScanRefusal:
    return ScanRefusal(
        N_("This QR code has already been answered. Reload the sign-in page on the computer for a new one."), code="scan_used", status=410
    )


def _refused(db: Session, row: ScanLogin | None, session: SSOSession, exc: ScanRefusal) -> ScanRefusal:
    audit.record(
        db,
        actor=f"account:{session.account_id}",
        action="idp.scanlogin.refused",
        target=row.code_hash[:12] if row is not None else "-",
        details={"reason": exc.code, "session": session.sid[:12]},
    )
    return exc


def open_on_phone(db: Session, code: str, session: SSOSession) -> ScanLogin:
    """The waiting scan login ``code`` names, now owned by ``session``; refused when another session owns it."""
    row = db.get(ScanLogin, _digest(code)) if isinstance(code, str) and 0 < len(code) <= 64 else None
    problem = _unusable(row)
    if problem is not None:
        raise _refused(db, row, session, problem)
    if row.phone_sid is None:
        won = db.execute(
            update(ScanLogin)
            .where(ScanLogin.code_hash == row.code_hash, ScanLogin.phone_sid.is_(None), ScanLogin.status == "pending")
            .values(phone_sid=session.sid, status="scanned")
            .execution_options(synchronize_session=False)
        ).rowcount
        db.refresh(row)
        if won != 1 and row.phone_sid != session.sid:
            raise _refused(db, row, session, _other_phone())
    elif row.phone_sid != session.sid:
        raise _refused(db, row, session, _other_phone())
    return row


def _other_phone() -> ScanRefusal:
    return ScanRefusal(
        N_("This QR code was opened on another phone or account. Only that one can answer it."), code="scan_other_session", status=403
    )


def phone_level(db: Session, session: SSOSession) -> int:
    """The phone session's level, derived as the authorization endpoint derives it."""
    return levels.achieved(proofed=sessions.view(db, session).proofed, amr=set(session.amr.split()))


def desktop_methods(phone_amr: str) -> set[str]:
    """What the desktop session is said to have proven: the phone's methods but a USB key, over two channels."""
    return (set(phone_amr.split()) - {levels.HARDWARE_KEY}) | {MULTIPLE_CHANNELS}


def decide(db: Session, code: str, session: SSOSession, *, confirm: bool, ip: str) -> ScanLogin:
    """The phone's answer; refused when it is not the owning session's, or a second answer."""
    row = open_on_phone(db, code, session)
    level = min(phone_level(db, session), HIGHEST_LEVEL)
    won = db.execute(
        update(ScanLogin)
        .where(ScanLogin.code_hash == row.code_hash, ScanLogin.status == "scanned", ScanLogin.phone_sid == session.sid)
        .values(
            status="confirmed" if confirm else "refused",
            decided_at=utc_now(),
            account_id=session.account_id,
            acr=level if confirm else None,
            amr=" ".join(sorted(desktop_methods(session.amr))) if confirm else None,
        )
        .execution_options(synchronize_session=False)
    ).rowcount
    if won != 1:
        raise _refused(db, row, session, _answered())
    audit.record(
        db,
        actor=f"account:{session.account_id}",
        action="idp.scanlogin.confirmed" if confirm else "idp.scanlogin.denied",
        target=row.code_hash[:12],
        details={"acr": level if confirm else None, "phone_session": session.sid[:12], "desktop_ip": row.desktop_ip, "phone_ip": ip},
    )
    db.refresh(row)
    return row


# -- the desktop ------------------------------------------------------------------------------


def poll(db: Session, browser_secret: str | None) -> Polled:
    """Where the desktop's scan login stands; once confirmed, the desktop session starts here (once)."""
    if not browser_secret or len(browser_secret) > 100:
        return Polled("unknown")
    row = db.scalar(select(ScanLogin).where(ScanLogin.browser_hash == _digest(browser_secret)))
    if row is None or row.status == "used":
        return Polled("unknown")
    if row.status == "refused":
        return Polled("refused")
    if row.expires_at <= utc_now():
        return Polled("expired")
    if row.status != "confirmed":
        return Polled(row.status)
    won = db.execute(
        update(ScanLogin)
        .where(ScanLogin.code_hash == row.code_hash, ScanLogin.status == "confirmed")
        .values(status="used", used_at=utc_now())
        .execution_options(synchronize_session=False)
    ).rowcount
    if won != 1:
        return Polled("unknown")
    phone = sessions.current(db, row.phone_sid)
    account = db.get(Account, row.account_id)
    if phone is None or account is None or account.status != "active" or phone.account_id != account.id:
        audit.record(
            db, actor="system", action="idp.scanlogin.refused", target=row.code_hash[:12], details={"reason": "phone_session_ended"}
        )
        return Polled("refused")
    desktop = sessions.start(
        db, account, set((row.amr or MULTIPLE_CHANNELS).split()), ip=row.desktop_ip, user_agent=row.desktop_user_agent, acr_cap=row.acr
    )
    db.execute(update(ScanLogin).where(ScanLogin.code_hash == row.code_hash).values(desktop_sid=desktop.sid))
    audit.record(
        db,
        actor=f"account:{account.id}",
        action="idp.scanlogin.completed",
        target=row.code_hash[:12],
        details={"acr": desktop.acr, "amr": desktop.amr, "desktop_session": desktop.sid[:12], "phone_session": row.phone_sid[:12]},
    )
    return Polled("done", desktop.sid, row.next_url)


def coarse_address(ip: str) -> str:
    """An address as the phone shows it: the network, not the machine (``203.0.113.*``), or a word for local ones."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ""
    if address.is_loopback:
        return "loopback"
    if address.is_private:
        return "private"
    if address.version == 4:
        return ".".join(str(address).split(".")[:3]) + ".*"
    return str(ipaddress.ip_network(f"{address}/48", strict=False).network_address) + "…"
