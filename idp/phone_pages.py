"""Pages with text codes, and the login guard's challenges.

Thin: the rules are in ``idp.people.phone`` and ``idp.people.loginguard``; rendering,
the SSO cookie and ``next`` come from ``idp.pages``. Every POST needs the page's CSRF
token (``core.web``).

* ``/login/challenge`` (JSON for the login page's script, ``idp/static/loginguard.js``):
  the proof-of-work challenge the next sign-in of a name needs, or none.
* ``/login/sms``: sign in with a code texted to the confirmed number (level 1, ``amr`` ``sms``).
* ``/register/code``: the registration form's "send code" button.
* ``/login/second-factor``: a code to the confirmed number after the password (step-up).
* ``/account/phone``: a new number, confirmed by a code sent to it; the old number is told.
"""

from __future__ import annotations

from flask import Blueprint, jsonify, redirect, request

from core import db as core_db
from core import web
from idp import context as idp_context
from idp import levels, pages
from idp.i18n import N_, Refusal
from idp.people import accounts, loginguard, phone, sessions

bp = Blueprint("idp_phone_pages", __name__, template_folder="templates")
web.pages(bp, csrf=True)

SENT = N_("If %(phone)s has an account, a code is on its way. It is valid for 5 minutes.")
SENT_TO = N_("A code was sent to %(phone)s. It is valid for 5 minutes.")


def _ctx():
    return idp_context.current()


def _ip() -> str:
    return request.remote_addr or ""


@bp.errorhandler(Refusal)
def _refused(exc: Refusal):
    return pages.refused(exc)


# --------------------------------------------------------------------------- the login guard


@bp.post("/login/challenge")
def login_challenge():
    """What the next sign-in of ``identifier`` from here needs: ``{"maxnumber": 0}`` or an ALTCHA challenge."""
    ctx = _ctx()
    maxnumber, delay = accounts.login_needs(ctx, request.form.get("identifier", "")[:200], _ip())
    body = loginguard.issue(ctx, maxnumber, delay) if maxnumber else {"maxnumber": 0}
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    return response


# --------------------------------------------------------------------------- SMS login


def _sign_in_by_sms(db, account) -> str:
    live = pages._live(db)
    if live is not None:
        row, current = live
        if current.id == account.id:
            sessions.add_factor(db, row, levels.SMS)
            return row.sid
        sessions.end(db, row.sid, actor=f"account:{current.id}")
    row = sessions.start(
        db, account, {levels.SMS}, ip=_ip(), user_agent=request.headers.get("User-Agent", ""), acr_cap=_ctx().settings.sms_login_level
    )
    return row.sid


@bp.route("/login/sms", methods=["GET", "POST"])
def sms_login():
    next_url = pages.safe_next(request.values.get("next"))
    ctx = _ctx()
    number = request.form.get("phone", "")[:40]
    values = {"next": next_url, "phone": number, "sent": False}
    if ctx.settings.sms_login_level < 1:
        raise phone.PhoneRefusal(N_("Signing in with a text code is not offered here."), code="sms_login_off", status=403)
    if request.method == "GET":
        return pages.render("idp/sms_login.html", **values)
    try:
        if request.form.get("action") == "send":
            masked = phone.send_if_known(ctx, phone=number, purpose="login", ip=_ip())
            return pages.render("idp/sms_login.html", **{**values, "sent": True, "notice": SENT, "masked": masked})
        account = phone.login(ctx, phone=number, code=request.form.get("code", "")[:20], ip=_ip())
    except Refusal as exc:
        return pages.render("idp/sms_login.html", exc.status, error=exc, **{**values, "sent": request.form.get("action") != "send"})
    with core_db.transaction(ctx.sessions) as db:
        sid = _sign_in_by_sms(db, account)
        cookie = sessions.cookie_for(db, ctx.secret_key, sid)
        next_url = pages._after_login(db, account.id, next_url)  # a pending closure ends; a newer privacy notice is asked first
    return pages._set_session_cookie(redirect(next_url, 303), cookie)


# --------------------------------------------------------------------------- registration


@bp.post("/register/code")
def register_code():
    """The registration form's "send code": a code to the number typed, whether it is registered or not."""
    next_url = pages.safe_next(request.values.get("next"))
    ctx = _ctx()
    form = {k: request.form.get(k, "")[:200] for k in ("identifier", "display_name")}
    try:
        accounts.registration_allowed(ctx, _ip())
        number = phone.parse(form["identifier"])
        with core_db.transaction(ctx.sessions) as db:
            masked = phone.send(ctx, db, phone=number, purpose="register", ip=_ip())
    except Refusal as exc:
        return pages.render("idp/register.html", exc.status, error=exc, next=next_url, form=form, **_register_values())
    return pages.render("idp/register.html", next=next_url, form=form, code_sent=True, notice=SENT_TO, masked=masked, **_register_values())


def _register_values() -> dict:
    """What else the registration form shows (the privacy notice, when idp.pages offers it)."""
    values = getattr(pages, "_privacy_values", None)
    return values() if values is not None else {}


# --------------------------------------------------------------------------- second factor


@bp.route("/login/second-factor", methods=["GET", "POST"])
def second_factor():
    next_url = pages.safe_next(request.values.get("next"))
    ctx = _ctx()
    with core_db.transaction(ctx.sessions) as db:
        live = pages._live(db)
        if live is None:
            return pages._to_login(request.full_path)
        row, account = live
        sid, account_id = row.sid, account.id
        masked = accounts.mask_mobile(account.mobile) if account.mobile and account.phone_confirmed_at else None
    values = {"next": next_url, "masked": masked, "sent": False}
    if request.method == "GET":
        return pages.render("idp/second_factor.html", **values)
    try:
        if request.form.get("action") == "send":
            phone.send_second_factor(ctx, account_id, ip=_ip())
            return pages.render("idp/second_factor.html", **{**values, "sent": True, "notice": SENT_TO})
        phone.check_second_factor(ctx, account_id, code=request.form.get("code", "")[:20], ip=_ip())
    except Refusal as exc:
        return pages.render("idp/second_factor.html", exc.status, error=exc, **{**values, "sent": True})
    with core_db.transaction(ctx.sessions) as db:
        row = sessions.current(db, sid)
        if row is None:
            return pages._to_login(next_url)
        sessions.add_factor(db, row, levels.SMS)
    return pages._with_session_cookie(redirect(next_url, 303), sid)


# --------------------------------------------------------------------------- a new number


@bp.route("/account/phone", methods=["GET", "POST"])
def change_phone():
    ctx = _ctx()
    with core_db.transaction(ctx.sessions) as db:
        live = pages._live(db)
        if live is None:
            return pages._to_login("/account/phone")
        account = live[1]
        account_id = account.id
        current = accounts.mask_mobile(account.mobile) if account.mobile else None
        confirmed = account.phone_confirmed_at is not None
    number = request.form.get("phone", "")[:40]
    values = {"current": current, "confirmed": confirmed, "phone": number, "sent": False}
    if request.method == "GET":
        return pages.render("idp/phone_change.html", **values)
    try:
        if request.form.get("action") == "send":
            masked = phone.send_change_code(
                ctx, account_id, phone=number, current_password=request.form.get("current_password", ""), ip=_ip()
            )
            return pages.render("idp/phone_change.html", **{**values, "sent": True, "notice": SENT_TO, "masked": masked})
        phone.change(ctx, account_id, phone=number, code=request.form.get("code", "")[:20], ip=_ip())
    except Refusal as exc:
        sent = request.form.get("action") != "send"
        return pages.render("idp/phone_change.html", exc.status, error=exc, **{**values, "sent": sent})
    return redirect("/account?notice=phone-changed", 303)
