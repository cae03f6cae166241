"""A resident's privacy pages: the notice, accepting it, halls used (with revoke), data export, closure, login history.

Thin views over :mod:`idp.people.privacy`; the layout, CSRF, the SSO cookie and
``next`` handling are those of :mod:`idp.pages`.
"""

from __future__ import annotations

import json

from flask import Blueprint, Response, redirect, request
from flask_babel import format_datetime, gettext

from core import db as core_db
from core import web
from idp import pages
from idp.i18n import N_, Refusal
from idp.models import Client
from idp.oidc import consent
from idp.people import privacy

bp = Blueprint("idp_privacy_pages", __name__, template_folder="templates")
web.pages(bp, csrf=True)

ACCEPT_PATH = privacy.ACCEPT_PATH
PLACES = {"local": N_("This computer / intranet"), "intranet": N_("This computer / intranet"), "unknown": N_("Unknown")}
NOTICES = {
    "hall-revoked": N_("The hall's access was withdrawn. It must ask you again next time."),
}


@bp.errorhandler(Refusal)
def _refused(exc: Refusal):
    return pages.refused(exc)


accept_url = privacy.accept_url


def _when(value) -> str:
    return format_datetime(value, "yyyy-MM-dd HH:mm") if value is not None else "-"


@bp.get("/privacy")
def notice():
    """The privacy notice in force (public)."""
    return pages.render("idp/privacy.html")


@bp.route(ACCEPT_PATH, methods=["GET", "POST"])
def accept():
    """The notice changed since this resident accepted it: they accept the new one before going on."""
    next_url = pages.safe_next(request.values.get("next"))
    ctx = pages._ctx()
    with core_db.transaction(ctx.sessions) as db:
        live = pages._live(db)
        if live is None:
            return pages._to_login(accept_url(next_url))
        account_id = live[1].id
        if request.method == "POST":
            if request.form.get("accept") != privacy.current_version(ctx):
                error = privacy.PrivacyRefusal(N_("Tick the box to accept the privacy notice, or sign out."), code="privacy_not_accepted")
                return pages.render("idp/privacy_accept.html", 400, error=error, next=next_url)
            privacy.accept(db, ctx, account_id, request.form["accept"], ip=pages._ip())
            return redirect(next_url, 303)
        if not privacy.needs_acceptance(db, ctx, account_id):
            return redirect(next_url, 303)
    return pages.render("idp/privacy_accept.html", next=next_url)


# --------------------------------------------------------------------------- halls used, revoke


@bp.get("/account/halls")
def halls():
    ctx = pages._ctx()
    with core_db.read_only(ctx.sessions) as db:
        live = pages._live(db)
        if live is None:
            return pages._to_login("/account/halls")
        found = privacy.halls(db, live[1].id)
    rows = [
        {
            **h,
            "first": _when(h["first"]),
            "last": _when(h["last"]),
            "received": [gettext(consent.SCOPE_DESCRIPTIONS.get(s, s)) for s in h["scopes"]],
            "handle": h["client_id"],
        }
        for h in found
    ]
    return pages.render("idp/halls.html", halls=rows, notice=NOTICES.get(request.args.get("notice", "")))


@bp.post("/account/halls/<client_id>/revoke")
def revoke_hall(client_id):
    ctx = pages._ctx()
    with core_db.transaction(ctx.sessions) as db:
        live = pages._live(db)
        if live is None:
            return pages._to_login("/account/halls")
        if db.get(Client, client_id[:64]) is None:
            raise privacy.PrivacyRefusal(N_("That hall is not known."), code="unknown_hall", status=404)
        privacy.revoke_hall(db, live[1].id, client_id[:64])
    return redirect("/account/halls?notice=hall-revoked", 303)


# --------------------------------------------------------------------------- export


@bp.get("/account/export")
def export():
    """The account's data as a JSON file: no secret, the resident ID masked."""
    ctx = pages._ctx()
    with core_db.read_only(ctx.sessions) as db:
        live = pages._live(db)
        if live is None:
            return pages._to_login("/account/export")
        data = privacy.export(db, live[1].id)
    body = json.dumps(data, ensure_ascii=False, indent=2)
    response = Response(body, mimetype="application/json")
    response.headers["Content-Disposition"] = 'attachment; filename="hallmark-account.json"'
    response.headers["Cache-Control"] = "no-store"
    return response


# --------------------------------------------------------------------------- login history


@bp.get("/account/history")
def history():
    """Logins of this account: time (China Standard Time), device in plain words, level, place as far as known."""
    ctx = pages._ctx()
    with core_db.read_only(ctx.sessions) as db:
        live = pages._live(db)
        if live is None:
            return pages._to_login("/account/history")
        rows = [
            {
                "when": format_datetime(s.created_at, "yyyy-MM-dd HH:mm:ss xxx"),
                "device": pages._device(s.user_agent),
                "level": pages.LEVEL_NAMES.get(s.acr, pages.LEVEL_NAMES[1]),
                "acr": s.acr,
                "ip": s.ip or "-",
                "place": PLACES[privacy.place_of(s.ip)],
                "current": s.sid == live[0].sid,
                "ended": s.ended_at is not None,
            }
            for s in privacy.history(db, live[1].id)
        ]
    return pages.render("idp/history.html", logins=rows)


# --------------------------------------------------------------------------- closure


@bp.route("/account/close", methods=["GET", "POST"])
def close():
    ctx = pages._ctx()
    with core_db.read_only(ctx.sessions) as db:
        live = pages._live(db)
        if live is None:
            return pages._to_login("/account/close")
        account_id = live[1].id
        pending = privacy.closure_of(db, account_id)
        due = _when(pending.closure_due_at) if pending else None
    values = {"due": due, "days": ctx.settings.closure_cooling_off_days}
    if request.method == "GET":
        return pages.render("idp/close.html", **values)
    try:
        when = privacy.request_closure(ctx, account_id, request.form.get("current_password", "")[:200], ip=pages._ip())
    except Refusal as exc:
        return pages.render("idp/close.html", exc.status, error=exc, **values)
    del when  # the page shows the pending closure and its day
    return redirect("/account/close", 303)


@bp.post("/account/close/cancel")
def cancel_close():
    ctx = pages._ctx()
    with core_db.transaction(ctx.sessions) as db:
        live = pages._live(db)
        if live is None:
            return pages._to_login("/account/close")
        privacy.cancel_closure(db, live[1].id, actor=f"account:{live[1].id}")
    return redirect("/account?notice=closure-cancelled", 303)
