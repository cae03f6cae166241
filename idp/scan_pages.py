"""Scan-to-login pages: the desktop login page's QR code and the phone's page behind it.

Thin: the rules are in ``idp.people.scanlogin``; rendering, the SSO cookie and
``next`` come from ``idp.pages``. Every POST needs the page's CSRF token
(``core.web``), the two the login page's script sends included.

* ``/login/scan/start`` and ``/login/scan/poll`` (JSON for the login page's script,
  ``idp/static/scanlogin.js``): a QR code drawn here, then waiting; only the poll
  that carries this browser's scan cookie gets the session, once the phone confirmed.
* ``/s/<code>``: the phone's page behind the QR code: what asks, confirm or refuse.
"""

from __future__ import annotations

from urllib.parse import urlencode

from flask import Blueprint, jsonify, redirect, request
from flask_babel import format_datetime, gettext

from core import db as core_db
from core import web
from core.problems import Problem
from core.web import errors as web_errors
from idp import context as idp_context
from idp import pages
from idp.i18n import N_, Refusal
from idp.oidc import consent
from idp.people import scanlogin, sessions

bp = Blueprint("idp_scan_pages", __name__, template_folder="templates")
web.pages(bp, csrf=True)

SCAN_TEMPLATE = "idp/scan_confirm.html"
SCAN_MESSAGES = {
    "pending": N_("Scan the code with the phone on which you are signed in."),
    "scanned": N_("Scanned. Confirm on your phone."),
    "refused": N_("The sign-in was refused on the phone."),
    "expired": N_("The QR code has expired."),
    "unknown": N_("The QR code has expired."),
    "done": N_("Confirmed. Signing you in..."),
}


def _ctx():
    return idp_context.current()


def _ip() -> str:
    return request.remote_addr or ""


# --------------------------------------------------------------------------- the desktop


def _problem(exc: Refusal):
    return Problem(
        exc.status, web_errors.TITLES.get(exc.status, "Refused"), exc.translated(), headers=exc.headers(), code=exc.code
    ).response()


@bp.post("/login/scan/start")
def scan_start():
    """A QR code for this login page (JSON for its script); the browser secret goes into an HttpOnly cookie."""
    ctx = _ctx()
    try:
        next_url = pages.safe_next(request.form.get("next"))
        with core_db.transaction(ctx.sessions) as db:
            started = scanlogin.start(ctx, db, next_url=next_url, ip=_ip(), user_agent=request.headers.get("User-Agent", ""))
    except Refusal as exc:
        return _problem(exc)
    url = scanlogin.phone_url(ctx, started.code)
    response = jsonify(
        qr=scanlogin.qr_svg(url),
        url=url,  # what the QR code holds (for tests and assistive tools; it is no secret from this page's viewer)
        expires_in=int(scanlogin.LIFETIME.total_seconds()),
        message=gettext(SCAN_MESSAGES["pending"]),
    )
    response.headers["Cache-Control"] = "no-store"
    response.set_cookie(
        scanlogin.COOKIE,
        started.browser_secret,
        max_age=int(scanlogin.LIFETIME.total_seconds()) + 10,
        httponly=True,
        samesite="Strict",
        secure=web.secure_cookies(),
        path=scanlogin.COOKIE_PATH,
    )
    return response


@bp.post("/login/scan/poll")
def scan_poll():
    """Where this browser's QR code stands; once the phone confirmed, this answer signs the browser in."""
    ctx = _ctx()
    with core_db.transaction(ctx.sessions) as db:
        previous = sessions.from_cookie(db, ctx.secret_key, request.cookies.get(sessions.COOKIE))
        polled = scanlogin.poll(db, request.cookies.get(scanlogin.COOKIE))
        next_url = polled.next_url
        if polled.status == "done":
            if previous is not None:
                sessions.end(db, previous.sid, actor=f"account:{previous.account_id}")  # one session per browser, as a login does
            # As after any login: a pending closure ends, and a newer privacy notice is asked first.
            next_url = pages._after_login(db, sessions.current(db, polled.sid).account_id, next_url)
    body = {"status": polled.status, "message": gettext(SCAN_MESSAGES[polled.status])}
    if polled.status != "done":
        response = jsonify(body)
        response.headers["Cache-Control"] = "no-store"
        return response
    response = jsonify({**body, "next": next_url})
    response.headers["Cache-Control"] = "no-store"
    response.delete_cookie(scanlogin.COOKIE, path=scanlogin.COOKIE_PATH)
    return pages._with_session_cookie(response, polled.sid)


@bp.app_template_global("scan_login_allowed")
def _scan_login_allowed() -> bool:
    """Called by the login page's QR block: its script may run (the CSP nonce)."""
    web.allow(scripts=True)
    return True


# --------------------------------------------------------------------------- the phone


def _where(ip: str) -> str:
    coarse = scanlogin.coarse_address(ip)
    if coarse == "loopback":
        return gettext("this computer itself")
    if coarse == "private":
        return gettext("a private (local) network")
    if not coarse:
        return gettext("an unknown network")
    return gettext("network %(network)s (region unknown)", network=coarse)


@bp.route(scanlogin.PHONE_PATH + "<code>", methods=["GET", "POST"])
def scan_phone(code: str):
    ctx = _ctx()
    here = scanlogin.PHONE_PATH + code[:64]
    with core_db.transaction(ctx.sessions) as db:
        row = sessions.from_cookie(db, ctx.secret_key, request.cookies.get(sessions.COOKIE))
        if row is None:
            return redirect("/login?" + urlencode({"next": here}), 303)
        try:
            if request.method == "GET":
                scan = scanlogin.open_on_phone(db, code, row)
            else:
                if not consent.check_form_token(ctx, request.form.get("form_token"), row.sid, here):
                    raise Refusal(N_("The form has expired or was not sent from this page. Scan the code again."), code="bad_form_token")
                confirm = request.form.get("decision") == "confirm"
                scan = scanlogin.decide(db, code, row, confirm=confirm, ip=_ip())
                return pages.render(SCAN_TEMPLATE, view="confirmed" if confirm else "denied")
        except Refusal as exc:
            refusal = exc
        else:
            level = min(scanlogin.phone_level(db, row), scanlogin.HIGHEST_LEVEL)
            return pages.render(
                SCAN_TEMPLATE,
                view="confirm",
                here=here,
                device=pages._device(scan.desktop_user_agent),
                where=_where(scan.desktop_ip),
                when=format_datetime(scan.created_at, "HH:mm"),
                level_name=pages.LEVEL_NAMES[level],
                form_token=consent.form_token(ctx, row.sid, here),
            )
    # after the transaction: the refusal is audited whatever the page says
    return pages.render(SCAN_TEMPLATE, refusal.status, error=refusal, view="refused")
