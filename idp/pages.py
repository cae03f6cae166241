"""The identity provider's pages: register, sign in, step up, the account page, real-name verification.

Views are thin: the rules are in ``idp.people.accounts``, ``idp.people.realname``,
``idp.people.sessions`` and ``idp.levels``. The layout, CSRF protection (every POST
here needs the form's token), security headers and error pages come from
:mod:`core.web`. What lives here is what only the IdP's pages have:

* the SSO cookie (``idp.people.sessions.COOKIE``): HttpOnly, SameSite=Lax, Secure on
  https, a browser-session cookie (public terminals in service centres).
* ``next``: only a path on this site, never an absolute or ``//`` URL.
* errors as pages in the person's language, never a stack trace; a resident ID
  is never shown in full (the ``mask_id`` filter).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from urllib.parse import urlencode

from flask import Blueprint, current_app, redirect, render_template, request
from flask_babel import format_datetime, gettext
from sqlalchemy import select

from ca import context as ca_context
from core import audit, component, web
from core import db as core_db
from core.bearer import resource_uri
from core.identifiers import mask_credit_code, mask_resident_id
from core.problems import Problem
from core.web import errors as web_errors
from idp import context as idp_context
from idp import i18n, levels, resident_pages
from idp.certlogin import login as certlogin
from idp.context import IdPContext
from idp.i18n import N_, Refusal
from idp.models import Account, IdentityProofing, Matter
from idp.oidc import consent, logout
from idp.oidc.tokens import REALNAME_SCOPE
from idp.people import accounts, directory, enterprises, phone, privacy, realname, sessions

bp = Blueprint("idp_pages", __name__, template_folder="templates", static_folder="static", static_url_path="/idp-static")
web.pages(bp, csrf=True)
DEVELOPERS_PATH = "/developers"


@bp.record_once
def _on_register(setup):
    """The IdP's catalogue, its ways in on the landing page, and Secure cookies when the issuer is https."""
    i18n.init_app(setup.app)
    try:
        ctx = idp_context.current(setup.app)
    except LookupError:  # an app built without the composition root (tests of single pieces)
        ctx = None
    if ctx is not None and ctx.issuer.startswith("https://"):
        setup.app.config["SESSION_COOKIE_SECURE"] = True
    web.landing_link(setup.app, "people", "/login", N_("Sign in"), N_("With a password or a USB key, once for every hall."), 10)
    web.landing_link(setup.app, "people", "/register", N_("Register"), N_("Create an account with your mobile number."), 20)
    web.landing_link(setup.app, "people", "/account", N_("My account"), N_("Real-name verification, devices, enterprises."), 30)
    web.landing_link(
        setup.app, "developers", DEVELOPERS_PATH, N_("Connect a hall"), N_("OpenID Connect for relying parties: levels, logout."), 10
    )


DEFAULT_NEXT = "/account"

LEVEL_NAMES = {0: N_("Not signed in"), 1: N_("Basic"), 2: N_("Real-name"), 3: N_("Digital certificate")}
NOTICES = {
    "password-changed": N_("Your password was changed. Every other device was signed out."),
    "verified": N_("Real-name verification succeeded."),
    "session-ended": N_("That device was signed out."),
    "signed-out": N_("You are signed out of this browser."),
    "welcome": N_("Your account is ready."),
    "agent-authorised": N_("The agent is authorised."),
    "agent-revoked": N_("The authorisation was revoked. The agent can no longer act for the enterprise."),
    "phone-changed": N_("Your mobile number is confirmed."),
    "password-reset": N_("Your password was reset and every device was signed out. Sign in with the new password."),
    "closure-cancelled": N_("The closure of your account was cancelled. It stays open."),
}
# Which form field a refusal is about, by the prefix of its code (for aria-invalid).
FIELD_OF = (
    ("password_unchanged", "new_password"),
    ("wrong_current_password", "current_password"),
    ("password", "password"),
    ("bad_mobile", "identifier"),
    ("bad_username", "identifier"),
    ("identifier", "identifier"),
    ("mobile_taken", "identifier"),
    ("username_taken", "identifier"),
    ("display_name", "display_name"),
    ("name", "name"),
    ("resident_id", "resident_id"),
    ("code_", "code"),
    ("privacy", "privacy"),
)


def _ctx() -> IdPContext:
    return idp_context.current()


def _secure() -> bool:
    return _ctx().issuer.startswith("https://")


def _ip() -> str:
    return request.remote_addr or ""


# --------------------------------------------------------------------------- filters


@bp.app_template_filter("mask_id")
def _mask_id(value: str) -> str:
    """Mask whatever looks like a resident ID; stored values are masked already, this keeps it so."""
    return mask_resident_id(value) if value and "*" not in value else (value or "")


@bp.app_template_filter("mask_name")
def _mask_name(value: str) -> str:
    """``**伟``: only the last character of a legal name is shown."""
    return "*" * (len(value) - 1) + value[-1:] if value else ""


# --------------------------------------------------------------------------- rendering and errors


def _field_of(code: str) -> str | None:
    for prefix, name in FIELD_OF:
        if code.startswith(prefix):
            return name
    return None


def render(template: str, status: int = 200, *, error: Refusal | None = None, **values):
    values.setdefault("next", None)
    if request.method == "GET" and request.url_rule is not None:
        lang_links = web.language_links()
    else:  # after a POST, the language switch leads to the form again (or the account page), never to the POST's address
        here = request.path if request.path in ("/login", "/register") else DEFAULT_NEXT
        lang_links = web.language_links(here, {"next": values["next"]} if values.get("next") else {})
    body = render_template(
        template,
        error=error.translated() if error else None,
        error_field=_field_of(error.code) if error else None,
        lang_links=lang_links,
        **values,
    )
    return body, status, error.headers() if error else {}


def refused(exc: Refusal, back: str = DEFAULT_NEXT):
    """A refusal as the error page, with a way back to ``back`` (a CSRF refusal: back to the form)."""
    return web_errors.page(
        exc.status, exc.translated(), back=request.path if isinstance(exc, web.CSRFRefused) else back, headers=exc.headers()
    )


@bp.errorhandler(Refusal)
def _refused(exc: Refusal):
    return refused(exc)


def safe_next(value: str | None) -> str:
    """``next`` as a path on this site; anything that could leave it is refused."""
    if not value:
        return DEFAULT_NEXT
    if not directory.is_local_path(value):
        raise Refusal(N_("The address to return to after signing in is not on this site, so it was not followed."), code="bad_next")
    return value


# --------------------------------------------------------------------------- sessions


def _live(db):
    """(session row, account) for this browser's SSO cookie, or None."""
    row = sessions.from_cookie(db, _ctx().secret_key, request.cookies.get(sessions.COOKIE))
    if row is None:
        return None
    account = db.get(Account, row.account_id)
    if account is None or account.status != "active":
        return None
    return row, account


def _handle(sid: str) -> str:
    """A public name for a session: the sid itself is a secret and never goes into a page."""
    return hashlib.sha256(sid.encode()).hexdigest()[:20]


def _sign_in(db, account: Account):
    """Start (or, for the same account, re-authenticate) this browser's session; returns its sid."""
    live = _live(db)
    if live is not None:
        row, current = live
        if current.id == account.id:  # same person again: a fresh password proof on the same session
            sessions.add_factor(db, row, levels.PASSWORD)
            return row.sid
        sessions.end(db, row.sid, actor=f"account:{current.id}")
    row = sessions.start(db, account, {levels.PASSWORD}, ip=_ip(), user_agent=request.headers.get("User-Agent", ""))
    return row.sid


def _with_session_cookie(response, sid: str):
    """The session's cookie as it stands now: a login, re-authentication or step-up has just renewed it."""
    ctx = _ctx()
    with core_db.read_only(ctx.sessions) as db:
        value = sessions.cookie_for(db, ctx.secret_key, sid)
    return _set_session_cookie(response, value)


def _set_session_cookie(response, value: str | None):
    if value is not None:
        response.set_cookie(sessions.COOKIE, value, httponly=True, samesite="Lax", secure=_secure(), path="/")
    return response


def _to_login(next_url: str):
    return redirect("/login?" + urlencode({"next": next_url}))


# --------------------------------------------------------------------------- register and login


@bp.route("/register", methods=["GET", "POST"])
def register():
    next_url = safe_next(request.values.get("next"))
    if request.method == "GET":
        return render("idp/register.html", next=next_url, form={})
    form = {k: request.form.get(k, "")[:200] for k in ("identifier", "display_name")}
    password, repeat = request.form.get("password", ""), request.form.get("password2", "")
    try:
        accounts.registration_allowed(_ctx(), _ip())  # every attempt counts, per client address
        if password != repeat:
            raise accounts.AccountRefusal(N_("The two passwords are not the same."), code="password_mismatch")
        # A mobile number is registered only with the code texted to it (spent here, before the account is made).
        confirmed = phone.confirm_registration(_ctx(), form, password, request.form.get("code", ""), ip=_ip())
        with core_db.transaction(_ctx().sessions) as db:
            account = accounts.register(db, identifier=form["identifier"], password=password, display_name=form["display_name"], ip=_ip())
            if confirmed:
                phone.mark_confirmed(db, account)
            if request.form.get("privacy") != privacy.current_version(_ctx()):  # after the policy's answers; nothing is kept
                raise accounts.AccountRefusal(N_("To register, read and accept the privacy notice."), code="privacy_not_accepted")
            privacy.accept(db, _ctx(), account.id, request.form["privacy"], ip=_ip())
            sid = _sign_in(db, account)
    except Refusal as exc:
        return render("idp/register.html", exc.status, error=exc, next=next_url, form=form)
    target = next_url if next_url != DEFAULT_NEXT else DEFAULT_NEXT + "?notice=welcome"
    return _with_session_cookie(redirect(target, 303), sid)


@bp.route("/login", methods=["GET", "POST"])
def login():
    next_url = safe_next(request.values.get("next"))
    ctx = _ctx()
    if request.method == "GET":
        with core_db.transaction(ctx.sessions) as db:
            live = _live(db)
            signed_in = accounts.label(live[1]) if live else None
        return render(
            "idp/login.html",
            next=next_url,
            identifier="",
            signed_in=signed_in,
            notice=NOTICES.get(request.args.get("notice", "")),
            **_cert_login_values("login"),
        )
    identifier = request.form.get("identifier", "")[:200]
    try:
        account = accounts.authenticate(ctx, identifier, request.form.get("password", ""), ip=_ip(), proof=request.form.get("altcha", ""))
    except Refusal as exc:
        return render(
            "idp/login.html", exc.status, error=exc, next=next_url, identifier=identifier, signed_in=None, **_cert_login_values("login")
        )
    with core_db.transaction(ctx.sessions) as db:
        sid = _sign_in(db, account)  # only its id is used: no need to read the account again
        # The cookie from the secret this transaction leaves: no second transaction to read it back.
        cookie = sessions.cookie_for(db, ctx.secret_key, sid)
        next_url = _after_login(db, account.id, next_url)
    return _set_session_cookie(redirect(next_url, 303), cookie)


def _after_login(db, account_id: str, next_url: str) -> str:
    """A login cancels a pending closure, and asks first for a privacy notice newer than the one accepted."""
    after = privacy.at_login(db, _ctx(), account_id)
    if after.closure_cancelled and next_url == DEFAULT_NEXT:
        next_url = DEFAULT_NEXT + "?notice=closure-cancelled"
    return privacy.accept_url(next_url) if after.must_accept else next_url


@bp.route("/login/step-up", methods=["GET", "POST"])
def step_up():
    """Ask only for what the session lacks for ``level``: real-name proofing, or (level 3) a USB key."""
    next_url = safe_next(request.values.get("next"))
    level_text = request.values.get("level", "")
    if level_text not in ("1", "2", "3"):
        raise Refusal(N_("The level asked for must be 1, 2 or 3."), code="bad_level")
    level = int(level_text)
    here = "/login/step-up?" + urlencode({"next": next_url, "level": level})
    ctx = _ctx()
    with core_db.transaction(ctx.sessions) as db:
        live = _live(db)
        if live is None:
            return _to_login(here)
        row, account = live
        sid, account_id, amr = row.sid, account.id, enterprises.effective_amr(db, row)
        proofed = realname.proofing_of(db, account.id) is not None
        current = enterprises.acting(db, row.sid)
        acting_for = current[1] if current else None
    missing = levels.missing(level, has_session=True, proofed=proofed, amr=amr)
    if not missing:
        return redirect(next_url, 303)
    values = {
        "next": next_url,
        "level": level,
        "level_name": LEVEL_NAMES[level],
        "missing": missing,
        "form": {},
        "acting_for": acting_for,
        **resident_pages.step_up_hall(next_url),
        **(_cert_login_values("step-up") if missing.hardware_key and not missing.proofing else {}),
    }
    if missing.proofing and request.method == "POST":
        form = {k: request.form.get(k, "")[:100] for k in ("name", "resident_id")}
        try:
            realname.verify_online(ctx, account_id, form["name"], form["resident_id"], ip=_ip())
        except Refusal as exc:
            form["resident_id"] = ""  # never echoed back into the page
            return render("idp/step_up.html", exc.status, error=exc, **{**values, "form": form})
        return _with_session_cookie(redirect(here, 303), sid)  # the level changed: so did the cookie
    return render("idp/step_up.html", **values)


# --------------------------------------------------------------------------- the account page


def _device(user_agent: str) -> str:
    ua = user_agent or ""
    browser = next(
        (
            name
            for key, name in (
                ("MicroMessenger", N_("WeChat")),
                ("Edg/", "Edge"),
                ("Firefox/", "Firefox"),
                ("Chrome/", "Chrome"),
                ("Chromium/", "Chromium"),
                ("Safari/", "Safari"),
                ("python-requests", "python-requests"),
            )
            if key in ua
        ),
        None,
    )
    system = next(
        (
            name
            for key, name in (
                ("iPhone", "iPhone"),
                ("iPad", "iPad"),
                ("Android", "Android"),
                ("HarmonyOS", "HarmonyOS"),
                ("Windows", "Windows"),
                ("Mac OS X", "macOS"),
                ("Linux", "Linux"),
            )
            if key in ua
        ),
        None,
    )
    if browser and system:
        return gettext("%(browser)s on %(system)s", browser=gettext(browser), system=system)
    return gettext(browser) if browser else (system or gettext("Unknown device"))


def _account_page(db, row, account, *, status: int = 200, error: Refusal | None = None):
    proofing = db.get(IdentityProofing, account.id)
    level = levels.achieved(proofed=proofing is not None, amr=set(row.amr.split()))
    live = []
    for other in sessions.active_for(db, account.id):
        live.append(
            {
                "handle": _handle(other.sid),
                "current": other.sid == row.sid,
                "device": _device(other.user_agent),
                "ip": other.ip or "-",
                "last_seen": format_datetime(other.last_seen_at, "yyyy-MM-dd HH:mm"),
                "since": format_datetime(other.created_at, "yyyy-MM-dd HH:mm"),
            }
        )
    live.sort(key=lambda s: not s["current"])
    return render(
        "idp/account.html",
        status,
        error=error,
        account=account,
        label=accounts.label(account),
        mobile=accounts.mask_mobile(account.mobile) if account.mobile else None,
        level=level,
        level_name=LEVEL_NAMES[level],
        proofing=proofing,
        proofing_when=format_datetime(proofing.verified_at, "yyyy-MM-dd") if proofing else None,
        document_name=gettext(realname.DOCUMENTS[proofing.document]) if proofing and proofing.document in realname.DOCUMENTS else "",
        sessions=live,
        notice=NOTICES.get(request.args.get("notice", "")),
        certificates=certlogin.certificates_for(db, account.id),
        enterprise=enterprises.account_summary(db, account.id),
        acting=(lambda current: current[1] if current else None)(enterprises.acting(db, row.sid)),
        matter_codes=[m.code for m in db.scalars(select(Matter).order_by(Matter.code).limit(200))],
        closure=privacy.closure_of(db, account.id),
    )


def _account_page_refused(exc: Refusal):
    """The account page again, saying why a form on it was refused (or sign-in, when the session ended meanwhile)."""
    with core_db.transaction(_ctx().sessions) as db:
        live = _live(db)
        if live is None:
            return _to_login("/account")
        return _account_page(db, *live, status=exc.status, error=exc)


@bp.get("/account")
def account_page():
    with core_db.transaction(_ctx().sessions) as db:
        live = _live(db)
        if live is None:
            return _to_login("/account")
        return _account_page(db, *live)


@bp.post("/account/password")
def change_password():
    ctx = _ctx()
    current, new, repeat = (request.form.get(k, "") for k in ("current_password", "new_password", "new_password2"))
    try:
        with core_db.transaction(ctx.sessions) as db:
            live = _live(db)
            if live is None:
                return _to_login("/account")
            sid, account_id = live[0].sid, live[1].id
        if new != repeat:
            raise accounts.AccountRefusal(N_("The two new passwords are not the same."), code="password_mismatch")
        # Wrong current passwords are counted per account and limited (outside any transaction: argon2 is slow).
        accounts.change_own_password(ctx, account_id, current, new, keep_sid=sid, ip=_ip())
    except Refusal as exc:
        return _account_page_refused(exc)
    return redirect("/account?notice=password-changed#password", 303)


@bp.post("/account/sessions/end")
def end_session():
    handle = request.form.get("session", "")
    with core_db.transaction(_ctx().sessions) as db:
        live = _live(db)
        if live is None:
            return _to_login("/account")
        row, account = live
        target = next((s for s in sessions.active_for(db, account.id) if _handle(s.sid) == handle), None)
        if target is None:
            raise Refusal(N_("That session has already ended."), code="session_gone", status=404)
        sessions.end(db, target.sid, actor=f"account:{account.id}")
        ended_current = target.sid == row.sid
    if ended_current:
        response = redirect("/login?notice=signed-out", 303)
        response.delete_cookie(sessions.COOKIE, path="/", secure=_secure(), httponly=True, samesite="Lax")
        return response
    return redirect("/account?notice=session-ended#sessions", 303)


@bp.post("/account/sign-out")
def sign_out():
    """Sign out of this browser: the session ends, and with it every hall it signed in to (single logout)."""
    ended = None
    with core_db.transaction(_ctx().sessions) as db:
        live = _live(db)
        if live is not None and sessions.end(db, live[0].sid, actor=f"account:{live[1].id}") is not None:
            ended = live[0].sid
    # The logged-out page runs front-channel logout for the halls this browser used.
    response = redirect(logout.done_url(_ctx(), ended), 303)
    response.delete_cookie(sessions.COOKIE, path="/", secure=_secure(), httponly=True, samesite="Lax")
    return response


@bp.route("/account/verify", methods=["GET", "POST"])
def verify():
    ctx = _ctx()
    with core_db.transaction(ctx.sessions) as db:
        live = _live(db)
        if live is None:
            return _to_login("/account/verify")
        sid, account_id = live[0].sid, live[1].id
        if realname.proofing_of(db, account_id) is not None:
            return redirect("/account", 303)
    if request.method == "GET":
        return render("idp/verify.html", form={})
    form = {k: request.form.get(k, "")[:100] for k in ("name", "resident_id")}
    try:
        realname.verify_online(ctx, account_id, form["name"], form["resident_id"], ip=_ip())
    except Refusal as exc:
        form["resident_id"] = ""
        return render("idp/verify.html", exc.status, error=exc, form=form)
    return _with_session_cookie(redirect("/account?notice=verified", 303), sid)  # the level changed: so did the cookie


# --------------------------------------------------------------------------- certificate (USB-key) login


def _settings():
    return component.services().settings


def _ca():
    return ca_context.current()


def _cert_options() -> certlogin.Options:
    options = current_app.extensions.get("hallmark.idp.certlogin")
    if options is None:
        options = current_app.extensions["hallmark.idp.certlogin"] = certlogin.options_from(_settings())
    return options


def _cookie_sid() -> str | None:
    ctx = _ctx()
    with core_db.read_only(ctx.sessions) as db:
        return sessions.sid_from_cookie(db, ctx.secret_key, request.cookies.get(sessions.COOKIE))


def _browser(sid: str | None) -> str:
    """This browser, for binding a challenge: its CSRF cookie (set before any login) and its session."""
    return certlogin.browser_binding(_ctx(), web.csrf_value() or "", sid)


def _forwarded_certificate(options: certlogin.Options) -> bool:
    # The peer itself must be the proxy (core.web.proxies has put the client's address in remote_addr).
    return certlogin.from_trusted_proxy(options, web.peer_address()) and bool(request.headers.get(options.client_cert_header))


def _cert_login_values(purpose: str) -> dict:
    """What a page needs to offer USB-key login; also lets its script talk to the local agent."""
    options = _cert_options()
    web.allow(scripts=True, connect=(options.agent_url,))  # the page's one script talks to the local agent
    messages = {
        "working": gettext("Asking the USB key to sign. Enter its PIN if the USB-key program asks for it."),
        "no_agent": gettext(
            "The USB-key program (hallmark-key) does not answer on this computer. Start it, insert the USB key and try again."
        ),
        "agent_refused": gettext("The USB-key program did not sign: %(reason)s"),
        "failed": gettext("Signing in with the USB key did not work. Try again."),
        "done": gettext("Signed. Signing you in..."),
    }
    return {
        "cert_login": {"purpose": purpose, "agent": options.agent_url, "messages": messages, "forwarded": _forwarded_certificate(options)}
    }


def _cert_refused(exc: Refusal, back: str):
    """For the page's script a problem document (in the person's language), for a plain form post a page."""
    return web_errors.respond(exc.status, detail=exc.translated(), message=exc.translated(), back=back, code=exc.code)


@bp.post("/login/cert/challenge")
def cert_challenge():
    """A one-time challenge for the local agent to sign (JSON for the page's script)."""
    purpose = request.form.get("purpose", "login")
    ctx, options, sid = _ctx(), _cert_options(), _cookie_sid()
    try:
        with core_db.transaction(ctx.sessions) as db:
            if purpose != "login" and _live(db) is None:
                raise certlogin.CertLoginRefusal(N_("Your session has ended. Sign in again."), code="no_session", status=401)
            challenge = certlogin.issue_challenge(db, ctx, options, browser=_browser(sid), purpose=purpose, ip=_ip())
    except Refusal as exc:
        # Always a problem document: only the page's script asks for a challenge.
        return Problem(
            exc.status, web_errors.TITLES.get(exc.status, "Refused"), exc.translated(), headers=exc.headers(), code=exc.code
        ).response()
    return {
        "challenge": challenge.text,
        "expires": challenge.expires,
        "agent": options.agent_url,
        "description": gettext("Sign in to %(site)s", site=options.origin),
    }


def _after_cert_login(outcome: certlogin.Outcome, next_url: str):
    if outcome.action == "login":  # a USB-key login, like a password one, cancels a closure and asks for a newer notice
        with core_db.transaction(_ctx().sessions) as db:
            next_url = _after_login(db, outcome.account_id, next_url)
    response = redirect(next_url, 303) if web_errors.wants_html() else {"redirect": next_url}
    if not isinstance(response, dict):
        return _with_session_cookie(response, outcome.sid)
    from flask import jsonify

    return _with_session_cookie(jsonify(response), outcome.sid)


@bp.post("/login/cert")
def cert_login():
    """The signature, certificate and chain from the local agent: sign in, step up, or prove an enterprise's key."""
    next_url = safe_next(request.form.get("next"))
    sid = _cookie_sid()
    fields = {name: request.form.get(name) for name in ("challenge", "signature", "algorithm", "certificate", "chain")}
    try:
        outcome = certlogin.complete(
            _ctx(),
            _ca(),
            _cert_options(),
            fields,
            browser=_browser(sid),
            sid=sid,
            ip=_ip(),
            user_agent=request.headers.get("User-Agent", ""),
        )
    except Refusal as exc:
        return _cert_refused(exc, "/login?" + urlencode({"next": next_url}))
    return _after_cert_login(outcome, next_url)


@bp.post("/login/cert/tls")
def cert_login_forwarded():
    """The second path: the TLS client certificate a trusted reverse proxy verified and forwarded."""
    next_url = safe_next(request.form.get("next"))
    options, sid = _cert_options(), _cookie_sid()
    try:
        outcome = certlogin.complete_forwarded(
            _ctx(),
            _ca(),
            options,
            request.headers.get(options.client_cert_header),
            remote_addr=web.peer_address(),  # the proxy that forwarded the certificate, which must be trusted
            purpose=request.form.get("purpose", "login"),
            sid=sid,
            user_agent=request.headers.get("User-Agent", ""),
        )
    except Refusal as exc:
        return _cert_refused(exc, "/login?" + urlencode({"next": next_url}))
    return _after_cert_login(outcome, next_url)


# --------------------------------------------------------------------------- acting for an enterprise


@bp.route("/account/act-for", methods=["GET", "POST"])
def act_for():
    """Choose for whom this session acts: oneself, or an enterprise one represents or is an agent of."""
    next_url = safe_next(request.values.get("next"))
    matter_code = (request.values.get("matter") or "")[:64] or None
    here = "/account/act-for?" + urlencode({"next": next_url, **({"matter": matter_code} if matter_code else {})})
    ctx = _ctx()
    error = None
    with core_db.transaction(ctx.sessions) as db:
        live = _live(db)
        if live is None:
            return _to_login(here)
        row, account = live
        if request.method == "POST":
            choice = request.form.get("choice", "")[:40]
            code = None if choice == "self" else _code_of(choice, [c.credit_code for c in enterprises.choices_for(db, account.id)])
            try:
                if choice != "self" and code is None:
                    raise enterprises.EnterpriseRefusal(N_("You may not act for this enterprise."), code="may_not_act", status=403)
                with db.begin_nested():
                    enterprises.choose(db, row, code, matter_code=matter_code)
                return redirect(next_url, 303)
            except Refusal as exc:
                error = exc
                audit.record(
                    db,
                    actor=f"account:{account.id}",
                    action="idp.enterprise.acting_refused",
                    target=row.sid[:12],
                    details={"choice": choice[:40], "matter": matter_code, "reason": exc.code},
                )
        current = enterprises.acting(db, row.sid)
        choices = enterprises.choices_for(db, account.id)
        matter = levels.matter(db, matter_code) if matter_code else None
        return render(
            "idp/act_for.html",
            error.status if error else 200,
            error=error,
            next=next_url,
            here=here,
            label=accounts.label(account),
            choices=choices,
            matter=matter,
            matter_code=matter_code,
            current=(current[1].credit_code if current and current[1] else ("self" if current else None)),
            **(_cert_login_values("enterprise") if choices else {}),
        )


def _end_of_day(text: str):
    """``YYYY-MM-DD`` as the end of that day in China Standard Time (authorisations end at midnight there)."""
    from datetime import datetime
    from datetime import time as day_time
    from zoneinfo import ZoneInfo

    try:
        day = datetime.strptime((text or "").strip(), "%Y-%m-%d").date()
    except ValueError:
        raise enterprises.EnterpriseRefusal(N_("Give the end date as YYYY-MM-DD."), code="bad_expiry") from None
    return datetime.combine(day, day_time(23, 59, 59), ZoneInfo(i18n.TIMEZONE))


def _represented(db, account_id: str, handle: str) -> str:
    code = _code_of(handle, [e.credit_code for e in enterprises.account_summary(db, account_id)["represented"]])
    if code is None:
        raise enterprises.EnterpriseRefusal(
            N_("Only the enterprise's legal representative may authorise agents."), code="not_representative", status=403
        )
    return code


@bp.post("/account/enterprises/<handle>/agents")
def authorise_agent(handle):
    ctx = _ctx()
    try:
        with core_db.transaction(ctx.sessions) as db:
            live = _live(db)
            if live is None:
                return _to_login("/account")
            account = live[1]
            matters = enterprises.ALL_MATTERS if request.form.get("all_matters") else request.form.get("matters", "")[:2000]
            enterprises.authorise_agent(
                db,
                credit_code=_represented(db, account.id, handle),
                representative_id=account.id,
                agent=request.form.get("agent", "")[:200],
                matters=matters,
                expires_at=_end_of_day(request.form.get("expires", "")),
            )
    except Refusal as exc:
        return _account_page_refused(exc)
    return redirect("/account?notice=agent-authorised#enterprises", 303)


@bp.post("/account/enterprises/<handle>/agents/<authorisation_id>/revoke")
def revoke_agent(handle, authorisation_id):
    ctx = _ctx()
    with core_db.transaction(ctx.sessions) as db:
        live = _live(db)
        if live is None:
            return _to_login("/account")
        code = _code_of(handle, [e.credit_code for e in enterprises.account_summary(db, live[1].id)["represented"]])
        if code is None:
            raise enterprises.EnterpriseRefusal(
                N_("Only the enterprise's legal representative may revoke its agents."), code="not_representative", status=403
            )
        enterprises.revoke_agent(db, credit_code=code, authorisation_id=authorisation_id[:40], by_account=live[1].id)
    return redirect("/account?notice=agent-revoked#enterprises", 303)


@bp.app_template_filter("mask_code")
def _mask_code(value: str) -> str:
    return mask_credit_code(value) if value and "*" not in value else (value or "")


@bp.app_template_filter("mask_subject")
def _mask_subject(subject: str) -> str:
    """A person's certificate subject with the name masked like everywhere else (``CN=**伟``); the ID is masked already."""
    if "IDCCN-" not in (subject or ""):
        return subject or ""
    return re.sub(r"(?<![A-Za-z])CN=([^,]+)", lambda m: "CN=" + _mask_name(m.group(1)), subject)


@bp.app_template_filter("org_handle")
def org_handle(credit_code: str) -> str:
    """A page's name for an enterprise: credit codes are masked in pages, so forms and links carry this instead."""
    return hmac.new(_ctx().secret_key, b"hallmark.idp.org\x00" + credit_code.encode(), hashlib.sha256).hexdigest()[:20]


def _code_of(handle: str, codes) -> str | None:
    return next((code for code in codes if hmac.compare_digest(org_handle(code), handle or "")), None)


# --------------------------------------------------------------------------- the relying parties' guide


@bp.get(DEVELOPERS_PATH)
def developers():
    """A short guide for the developers of halls and approval systems (OpenID Connect relying parties)."""
    ctx = _ctx()
    return render(
        "idp/developers.html",
        issuer=ctx.issuer,
        discovery=ctx.url("/.well-known/openid-configuration"),
        levels=[(levels.acr_for(n), LEVEL_NAMES[n]) for n in levels.LEVELS],
        scopes=[(scope, consent.SCOPE_DESCRIPTIONS[scope]) for scope in ("openid", "profile", REALNAME_SCOPE)],
        details=[
            (t.type, resource_uri(ctx.issuer, t.location), json.dumps(t.example, ensure_ascii=False, indent=1) if t.example else "")
            for t in sorted(ctx.detail_types.values(), key=lambda t: t.type)
        ],
    )
