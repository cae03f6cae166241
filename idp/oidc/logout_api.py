"""RP-initiated logout (``end_session_endpoint``) and the logged-out page.

Thin: the rules (which redirect is allowed, who is told) live in ``idp.oidc.logout``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, redirect, request

from core import db as core_db
from core import web
from idp import context as idp_context
from idp import pages
from idp.context import IdPContext
from idp.i18n import N_, Refusal
from idp.models import Account
from idp.oidc import consent, logout
from idp.people import sessions

bp = Blueprint("idp_logout", __name__, template_folder="../templates")

LOGOUT_PATH = "/oauth/logout"
FORM_BINDING = "logout"  # what the confirmation form's token is bound to, besides the session
FRAME_WAIT_MS = 2500  # how long the page waits for front-channel iframes before moving on


def _ctx() -> IdPContext:
    return idp_context.current()


web.pages(bp)  # headers, CSP and error pages from core.web


@bp.after_request
def _no_referrer(response):
    response.headers["Referrer-Policy"] = "no-referrer"  # the query may carry an id_token_hint
    return response


@bp.errorhandler(Refusal)
def _refused(exc: Refusal):
    return pages.refused(exc, back="/account")


def _clear_cookie(response):
    response.delete_cookie(sessions.COOKIE, path="/", secure=request.is_secure, httponly=True, samesite="Lax")
    return response


@bp.route(LOGOUT_PATH, methods=["GET", "POST"])
def end_session():
    ctx = _ctx()
    params = request.args if request.method == "GET" else request.form
    confirming = request.method == "POST" and "form_token" in request.form
    with core_db.transaction(ctx.sessions) as db:
        wanted = logout.parse_request(ctx, db, params)
        row = sessions.from_cookie(db, ctx.secret_key, request.cookies.get(sessions.COOKIE))
        if row is None:
            # Nothing to end here (already logged out, or another browser): just go where the hall asked.
            return _clear_cookie(redirect(_done_url(ctx, None, wanted), 303))
        if confirming:
            if request.form.get("decision") != "logout":
                return redirect(wanted.redirect_to or "/account", 303)
            if not consent.check_form_token(ctx, request.form.get("form_token"), row.sid, FORM_BINDING):
                raise Refusal(
                    N_("This form has expired or was not sent from this site, so nothing was done. Reload the page and try again."),
                    code="csrf",
                )
        elif not logout.hint_matches(wanted, row):
            # Without proof that the hall speaks for this very session, the person decides.
            account = db.get(Account, row.account_id)
            return pages.render(
                "idp/logout.html",
                view="confirm",
                client_name=wanted.client.name if wanted.client else None,
                user=account.display_name or account.username or "" if account else "",
                form_token=consent.form_token(ctx, row.sid, FORM_BINDING),
                params=wanted.carried_params(),
            )
        sessions.end(db, row.sid, actor=f"account:{row.account_id}")
        ended_sid = row.sid
    return _clear_cookie(redirect(_done_url(ctx, ended_sid, wanted), 303))


def _done_url(ctx: IdPContext, sid: str | None, wanted: logout.LogoutRequest) -> str:
    return logout.done_url(ctx, sid, redirect_to=wanted.redirect_to, client_name=wanted.client.name if wanted.client else None)


@bp.get(logout.DONE_PATH)
def done():
    ctx = _ctx()
    ticket = logout.read_done_ticket(ctx, request.args.get("ticket", ""))
    if ticket is None:
        # An old or hand-made link: say what is true without acting on it.
        return pages.render("idp/logout.html", view="done", frames=[], notices=[], redirect_to=None, client_name=None, wait_ms=0)
    sid, redirect_to = ticket.get("sid") or None, ticket.get("to") or None
    frames, notices = [], []
    if sid:
        with core_db.transaction(ctx.sessions) as db:
            frames = logout.front_channel_frames(ctx, db, sid)
            notices = logout.notices_for(ctx, db, sid)
    # The page's one script moves on once the halls' front-channel iframes have loaded.
    web.allow(scripts=True, frames=tuple(sorted({_origin(frame.url) for frame in frames})))
    return pages.render(
        "idp/logout.html",
        view="done",
        frames=frames,
        notices=notices,
        redirect_to=redirect_to,
        client_name=ticket.get("client") or None,
        wait_ms=FRAME_WAIT_MS if frames else 0,
    )


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
