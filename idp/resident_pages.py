"""What every resident page shares: branding from the settings, the elder-friendly mode (长辈版), and the
step-up page's hall, matter and way back.

* Branding (``idp.brand_*``, ``hotline``, ``icp_filing``) and the elder mode reach every IdP
  template as ``brand`` and ``elder`` (``idp/base.html`` uses them).
* ``/elder?on=1&next=/path`` remembers the mode in a cookie for a year and goes back.
* :func:`step_up_hall`: when step-up interrupts an authorization request, the hall (client
  name), the matter, and a "back to the hall" URL that sends ``access_denied`` with the
  request's ``state`` to the hall's registered redirect URI.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit

from flask import Blueprint, redirect, request
from flask_babel import format_datetime
from werkzeug.datastructures import MultiDict

from core import db as core_db
from core import web
from idp import context as idp_context
from idp.oidc import authorization
from idp.people import directory, privacy_notices

bp = Blueprint("idp_resident_pages", __name__)
web.pages(bp)

ELDER_COOKIE = "hallmark_elder"
ELDER_MAX_AGE = 365 * 24 * 3600
BACK_PATH = "/login/step-up/back"


def elder_on() -> bool:
    return request.cookies.get(ELDER_COOKIE) == "1"


def _here() -> str:
    path = request.full_path.rstrip("?") if request.query_string else request.path
    return path if directory.is_local_path(path) else "/"


@bp.app_context_processor
def _values():
    try:
        settings = idp_context.current().settings
    except LookupError:
        return {}
    return {
        # the notice in force, for the pages that show it or ask for it (registration, acceptance, /privacy)
        "privacy_version": settings.privacy_version,
        "privacy_text": privacy_notices.text(settings.privacy_version, web.current_language()),
        "elder": elder_on(),
        "elder_toggle": "/elder?"
        + urlencode({"on": "0" if elder_on() else "1", "next": _here() if request.method == "GET" else "/account"}),
        "brand": {
            "name": settings.brand_name,
            "logo": settings.brand_logo,
            "colour": settings.brand_colour,
            "hotline": settings.hotline,
            "icp": settings.icp_filing,
        },
    }


@bp.get("/elder")
def elder():
    """Switch the elder-friendly mode on or off for this browser, and go back to the page."""
    target = request.args.get("next") or "/"
    if not directory.is_local_path(target):
        target = "/"
    response = redirect(target, 303)
    if request.args.get("on") == "1":
        secure = idp_context.current().issuer.startswith("https://")
        response.set_cookie(ELDER_COOKIE, "1", max_age=ELDER_MAX_AGE, httponly=True, samesite="Lax", secure=secure, path="/")
    else:
        response.delete_cookie(ELDER_COOKIE, path="/")
    return response


# --------------------------------------------------------------------------- step-up: which hall, which matter, and back


def _authorize_params(next_url: str) -> MultiDict | None:
    parts = urlsplit(next_url or "")
    if parts.scheme or parts.netloc or parts.path != authorization.AUTHORIZE_PATH or len(next_url) > directory.MAX_NEXT:
        return None
    return MultiDict(parse_qsl(parts.query, keep_blank_values=True))


def step_up_hall(next_url: str) -> dict:
    """``{"hall": name, "matter": (code, name, department) or None, "back": url}`` when ``next`` is an authorization request."""
    params = _authorize_params(next_url)
    if params is None:
        return {}
    ctx = idp_context.current()
    with core_db.read_only(ctx.sessions) as db:
        try:
            request_ = authorization.parse(ctx, db, params)
        except (authorization.PageError, authorization.RedirectError):
            return {}
        matter = request_.matter
        return {
            "hall": request_.client.name,
            "matter": {"code": matter.code, "name": matter.name, "department": matter.department} if matter else None,
            "back": BACK_PATH + "?" + urlencode({"next": next_url}),
        }


@bp.get(BACK_PATH)
def back_to_hall():
    """ "Back to the hall": the hall's own authorization request answered with ``access_denied`` (and its ``state``)."""
    params = _authorize_params(request.args.get("next", ""))
    if params is None:
        return redirect("/account", 303)
    ctx = idp_context.current()
    with core_db.read_only(ctx.sessions) as db:
        try:
            request_ = authorization.parse(ctx, db, params)
        except authorization.PageError:
            return redirect("/account", 303)
        except authorization.RedirectError as exc:
            return redirect(authorization.error_location(ctx, exc), 303)
    error = authorization.RedirectError("access_denied", "The user went back to the hall without the higher level.", request_)
    return redirect(authorization.error_location(ctx, error), 303)


# --------------------------------------------------------------------------- readable certificates and times


@bp.app_template_filter("dn_holder")
def dn_holder(dn: str) -> str:
    """A distinguished name as a person reads it: its common name, with the organisation when there is one."""
    parts = dict(_rdns(dn or ""))
    name = parts.get("CN") or parts.get("O") or (dn or "")
    org = parts.get("O")
    return f"{name} ({org})" if org and org != name else name


def _rdns(dn: str):
    for part in re.split(r",(?=\s*[A-Za-z0-9.]+=)", dn):
        key, _, value = part.strip().partition("=")
        if value:
            yield key.strip().upper(), value.strip()


@bp.app_template_filter("cst_day")
def cst_day(value) -> str:
    """A day in China Standard Time (the hall's time zone), whatever zone the value was stored in."""
    return format_datetime(value, "yyyy-MM-dd") if value is not None else ""
