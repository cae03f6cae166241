"""``/device``, RFC 8628's verification page: a resident enters the code a kiosk or TV shows
(signed in, or signing in first), sees which hall or kiosk asks for what, and approves or denies.

Thin: the rules are in ``idp.oidc.device``; rendering and the SSO cookie come from
``idp.pages``. Every POST needs the page's CSRF token (``core.web``).
"""

from __future__ import annotations

from urllib.parse import urlencode

from flask import Blueprint, redirect, request
from flask_babel import gettext

from core import db as core_db
from core import web
from idp import context as idp_context
from idp import pages
from idp.i18n import N_, Refusal
from idp.models import Account
from idp.oidc import consent, device
from idp.people import accounts, sessions

bp = Blueprint("idp_device_pages", __name__, template_folder="templates")
web.pages(bp, csrf=True)

DEVICE_TEMPLATE = "idp/device.html"


def _ctx():
    return idp_context.current()


def _ip() -> str:
    return request.remote_addr or ""


# --------------------------------------------------------------------------- /device (RFC 8628)


def _device_here(user_code: str | None) -> str:
    return device.VERIFICATION_PATH + ("?" + urlencode({"user_code": user_code}) if user_code else "")


def _device_page(status: int = 200, *, error: Refusal | None = None, **values):
    values.setdefault("user_code", "")
    return pages.render(DEVICE_TEMPLATE, status, error=error, **values)


def _confirm_values(ctx, db, pending: device.Pending, row) -> dict:
    level = device.session_level(db, row)
    account = db.get(Account, row.account_id)
    here = _device_here(pending.user_code)
    return {
        "view": "confirm",
        "user_code": pending.user_code,
        "client_name": pending.client.name,
        "scopes": [gettext(text) for _, text in consent.described_scopes(list(pending.scopes))],
        "user": (account.display_name or accounts.label(account)) if account else "",
        "level_name": pages.LEVEL_NAMES[level],
        "step_up": (
            "/login/step-up?" + urlencode({"next": here, "level": pending.client.min_acr}) if level < pending.client.min_acr else None
        ),
        "form_token": consent.form_token(ctx, row.sid, here),
    }


@bp.route(device.VERIFICATION_PATH, methods=["GET", "POST"])
def device_page():
    """Enter a kiosk's code, then see who asks for what (GET with ``user_code``: the QR link a kiosk shows)."""
    ctx = _ctx()
    typed = request.values.get("user_code", "")[:40]
    with core_db.transaction(ctx.sessions) as db:
        row = sessions.from_cookie(db, ctx.secret_key, request.cookies.get(sessions.COOKIE))
        if row is None:
            return redirect("/login?" + urlencode({"next": _device_here(typed or None)}), 303)
        if not typed:
            return _device_page(view="enter")
        try:
            pending = device.find_pending(ctx, db, typed, sid=row.sid, ip=_ip())
        except Refusal as exc:
            refusal = exc
        else:
            return _device_page(**_confirm_values(ctx, db, pending, row))
    # outside the transaction, so a wrong code is counted even though the page says no
    return _device_page(refusal.status, error=refusal, view="enter", user_code=typed)


@bp.post(device.VERIFICATION_PATH + "/decide")
def device_decide():
    ctx = _ctx()
    typed = request.form.get("user_code", "")[:40]
    approve = request.form.get("decision") == "approve"
    code = device.normalised(typed)
    here = _device_here(device.shown(code) if code else typed)
    with core_db.transaction(ctx.sessions) as db:
        row = sessions.from_cookie(db, ctx.secret_key, request.cookies.get(sessions.COOKIE))
        if row is None:
            return redirect("/login?" + urlencode({"next": here}), 303)
        if not consent.check_form_token(ctx, request.form.get("form_token"), row.sid, here):
            raise Refusal(
                N_("The form has expired or was not sent from this page. Enter the code again."), code="bad_form_token", status=400
            )
        try:
            pending = device.decide(ctx, db, typed, row, approve=approve, ip=_ip())
        except Refusal as exc:
            refusal = exc
        else:
            return _device_page(view="approved" if approve else "denied", client_name=pending.client.name)
    return _device_page(refusal.status, error=refusal, view="enter", user_code=typed)
