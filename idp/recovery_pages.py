"""``/recover`` (忘记密码): a code to the confirmed number, the real name for real-name accounts, a new password.

Thin: the rules are in ``idp.people.recovery``. The page answers a number without an
account exactly as one with (see there); every POST needs the page's CSRF token.
"""

from __future__ import annotations

from flask import Blueprint, redirect, request

from core import web
from idp import context as idp_context
from idp import pages
from idp.i18n import N_, Refusal
from idp.people import recovery

bp = Blueprint("idp_recovery_pages", __name__, template_folder="templates")
web.pages(bp, csrf=True)

SENT = N_("If %(phone)s has an account, a code is on its way. It is valid for 5 minutes.")


def _ip() -> str:
    return request.remote_addr or ""


@bp.errorhandler(Refusal)
def _refused(exc: Refusal):
    return pages.refused(exc)


@bp.route("/recover", methods=["GET", "POST"])
def recover():
    ctx = idp_context.current()
    number = request.form.get("phone", "")[:40]
    values = {"phone": number, "sent": False, "name": request.form.get("name", "")[:64]}
    if request.method == "GET":
        return pages.render("idp/recover.html", **values)
    action = request.form.get("action")
    try:
        if action == "send":
            masked = recovery.start(ctx, number=number, ip=_ip())
            return pages.render("idp/recover.html", **{**values, "sent": True, "notice": SENT, "masked": masked})
        new, repeat = request.form.get("new_password", ""), request.form.get("new_password2", "")
        if new != repeat:
            raise recovery.RecoveryRefusal(N_("The two passwords are not the same."), code="password_mismatch")
        recovery.finish(
            ctx,
            number=number,
            code=request.form.get("code", "")[:20],
            new_password=new,
            name=request.form.get("name", "")[:64],
            resident_id=request.form.get("resident_id", "")[:40],
            ip=_ip(),
        )
    except Refusal as exc:
        return pages.render("idp/recover.html", exc.status, error=exc, **{**values, "sent": action != "send"})
    return redirect("/login?notice=password-reset", 303)
