"""Who is asking, on every console page and API: the console's own cookie, the session behind it, and the role check.

* The cookie (``hallmark_admin``) holds only a random token; it is ``HttpOnly``,
  ``SameSite=Strict``, limited to ``/admin`` and ``Secure`` whenever the public URL
  or the request is https (``core.web.secure_cookies``). It lives as long as the
  browser; the session behind it ends on the server (``admin.login``).
* :func:`requires` wraps a view: no session sends a page request to sign in (and
  answers 401 otherwise); a session without one of the roles gets a readable 403
  page, and the refusal is recorded in the audit trail. The check is on the server,
  for every request: a link the navigation hides is still refused when typed in.
  Under ``/admin/api/`` the same refusals are problem+json (401, 403).
"""

from __future__ import annotations

import functools
from urllib.parse import quote

from flask import g, redirect, render_template, request
from flask_babel import gettext

from admin import login, roles
from admin.context import current
from admin.critical import Signer
from core import audit, web
from core import db as core_db
from core.problems import Problem

COOKIE = "hallmark_admin"
PATH = "/admin"


def set_cookie(response, token: str):
    response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", secure=web.secure_cookies(), path=PATH)
    return response


def clear_cookie(response):
    response.delete_cookie(COOKIE, path=PATH, httponly=True, samesite="Strict", secure=web.secure_cookies())
    return response


def token() -> str | None:
    return request.cookies.get(COOKIE)


def load() -> None:
    """Put this request's console session and staff member on ``g`` (``g.staff`` None when not signed in)."""
    if "staff" in g:
        return
    ctx = current()
    g.staff = g.staff_session = None
    with core_db.transaction(ctx.sessions) as db:
        row = login.find(ctx, db, token())
        if row is None or row.account_id is None:
            return
        from idp.models import Account

        account = db.get(Account, row.account_id)
        if account is None or account.status != "active":
            return
        name = account.display_name or account.username or account.id[:8]
        g.staff = roles.staff(db, row.account_id, name)
        db.expunge(row)
        g.staff_session = row


def signer() -> Signer:
    return Signer(g.staff, g.staff_session.acr, g.staff_session.auth_time)


def here() -> str:
    """This request's path and query, to come back to after signing in."""
    query = request.query_string.decode("latin-1")
    return request.path + ("?" + query if query else "")


API_PREFIX = "/admin/api/"


def forbidden(needed: tuple[str, ...]):
    ctx = current()
    with core_db.transaction(ctx.sessions) as db:
        audit.record(
            db,
            actor=f"account:{g.staff.account_id}",
            action="admin.refused",
            target=request.path[:300],
            details={"method": request.method, "needs": list(needed), "holds": sorted(g.staff.roles)},
        )
    if request.path.startswith(API_PREFIX):
        raise Problem(403, "Forbidden", "this needs one of the roles " + ", ".join(needed), code="role_required", roles=list(needed))
    names = [gettext(roles.NAMES[role]) for role in needed if role in roles.NAMES]
    return render_template("admin/forbidden.html", needed=names), 403


def _record_late_form() -> None:
    """A form sent without a live session (it ended, or never was): refused, and recorded under whoever it was."""
    ctx = current()
    with core_db.transaction(ctx.sessions) as db:
        account_id = login.owner(db, token())
        audit.record(
            db,
            actor=f"account:{account_id}" if account_id else "anonymous",
            action="admin.refused",
            target=request.path[:300],
            details={"method": request.method, "reason": "no_session"},
        )


def requires(*needed: str):
    """The view needs a signed-in staff member holding one of ``needed`` (any role at all when none are named)."""

    def wrap(view):
        @functools.wraps(view)
        def checked(*args, **kwargs):
            load()
            if g.staff is None:
                if request.path.startswith(API_PREFIX):
                    raise Problem(401, "Unauthorized", "sign in to the staff console first (/admin/login)", code="not_signed_in")
                if request.method == "GET":
                    return redirect("/admin/login?next=" + quote(here(), safe=""), 303)
                _record_late_form()
                return render_template("admin/signed_out.html", expired=True), 401
            if not (g.staff.has(*needed) if needed else g.staff.roles):
                return forbidden(needed or roles.ROLES)
            return view(*args, **kwargs)

        return checked

    return wrap
