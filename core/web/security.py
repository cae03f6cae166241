"""Security headers, the Content-Security-Policy and CSRF protection of every page.

* Every HTML response (and every response of a page blueprint) gets a strict
  Content-Security-Policy: nothing but same-origin images and the styles (and,
  where a view asks with :func:`allow`, scripts) carrying this request's nonce;
  no framing; ``nosniff``; a same-origin referrer; ``no-store``. A view or
  blueprint that sets its own policy header keeps it.
* CSRF: a random value in a signed, HttpOnly cookie, and in every form a token
  derived from it (itsdangerous, keyed by the app's ``SECRET_KEY``). A POST to a
  page blueprint registered with ``csrf=True`` without a matching pair is refused
  with :class:`CSRFRefused` (a readable 400 page).
"""

from __future__ import annotations

import secrets

from flask import Blueprint, current_app, g, request
from itsdangerous import BadSignature, URLSafeSerializer, URLSafeTimedSerializer

from core.web.i18n import N_, Refusal
from core.web.state import PagePolicy, state

CSRF_COOKIE = "hallmark_csrf"
CSRF_FIELD = "csrf_token"
CSRF_MAX_AGE = 12 * 3600  # a form left open longer must be reloaded


def nonce() -> str:
    """This request's CSP nonce (for ``<style nonce>`` and ``<script nonce>``)."""
    if "csp_nonce" not in g:
        g.csp_nonce = secrets.token_urlsafe(16)
    return g.csp_nonce


def allow(*, scripts: bool = False, connect: tuple[str, ...] = (), frames: tuple[str, ...] = ()) -> None:
    """Loosen this response's policy: nonce-carrying scripts, ``connect-src`` and ``frame-src`` origins."""
    wanted = g.setdefault("csp_allow", {"scripts": False, "connect": set(), "frames": set()})
    wanted["scripts"] = wanted["scripts"] or scripts
    wanted["connect"].update(connect)
    wanted["frames"].update(frames)


def policy() -> str:
    token = nonce()
    wanted = g.get("csp_allow") or {"scripts": False, "connect": (), "frames": ()}
    parts = ["default-src 'none'", f"style-src 'nonce-{token}'"]
    if wanted["scripts"]:
        parts.append(f"script-src 'nonce-{token}'")
    if wanted["connect"]:
        parts.append("connect-src 'self' " + " ".join(sorted(wanted["connect"])))
    if wanted["frames"]:
        parts.append("frame-src " + " ".join(sorted(wanted["frames"])))
    parts.append("img-src 'self' data:")
    page = page_policy()
    if page is not None and page.form_action:
        parts.append(f"form-action {page.form_action}")
    parts += ["base-uri 'none'", "frame-ancestors 'none'"]
    return "; ".join(parts)


def page_policy() -> PagePolicy | None:
    """The policy of the page blueprint serving this request, or None outside page blueprints."""
    return state(current_app).pages.get(request.blueprint or "")


def secure_cookies() -> bool:
    """Whether cookies get ``Secure``: the public URL is https (``SESSION_COOKIE_SECURE``) or this request came over https."""
    return bool(current_app.config.get("SESSION_COOKIE_SECURE")) or request.is_secure


def add_headers(response):
    """The app-wide ``after_request``: headers for pages, and the CSRF cookie when one was made."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if response.mimetype == "text/html" or page_policy() is not None:
        if "Content-Security-Policy" not in response.headers:
            response.headers["Content-Security-Policy"] = policy()
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Cache-Control", "no-store")
    cookie = g.get("csrf_cookie")
    if cookie:
        response.set_cookie(CSRF_COOKIE, cookie, httponly=True, samesite="Lax", secure=secure_cookies(), path="/")
    return response


# --------------------------------------------------------------------------- CSRF


class CSRFRefused(Refusal):
    status = 400


def _serializers() -> tuple[URLSafeSerializer, URLSafeTimedSerializer]:
    """The CSRF cookie's and the form token's serializers, built once per app (they hold only the key)."""
    web = state(current_app)
    if web.csrf_serializers is None:
        key = current_app.secret_key
        if not key:
            raise RuntimeError("pages with forms need the app's SECRET_KEY")
        web.csrf_serializers = (
            URLSafeSerializer(key, salt="hallmark.web.csrf.cookie"),
            URLSafeTimedSerializer(key, salt="hallmark.web.csrf.form"),
        )
    return web.csrf_serializers


def csrf_value() -> str | None:
    """The random value in this browser's CSRF cookie (also what binds a USB-key login challenge to the browser)."""
    raw = request.cookies.get(CSRF_COOKIE)
    if not raw:
        return None
    try:
        value = _serializers()[0].loads(raw)
    except BadSignature:
        return None
    return value if isinstance(value, str) else None


def csrf_token() -> str:
    """The token for this page's forms (creating the cookie's value when there is none)."""
    if "csrf_token" not in g:
        cookie_serializer, form_serializer = _serializers()
        value = csrf_value()
        if value is None:
            value = secrets.token_urlsafe(24)
            g.csrf_cookie = cookie_serializer.dumps(value)
        g.csrf_token = form_serializer.dumps(value)
    return g.csrf_token


def check_csrf() -> None:
    """Refuse a POST whose form token does not match this browser's CSRF cookie."""
    _, form_serializer = _serializers()
    value = csrf_value()
    token = request.form.get(CSRF_FIELD, "")
    try:
        sent = form_serializer.loads(token, max_age=CSRF_MAX_AGE) if token and len(token) < 200 else None
    except BadSignature:  # includes SignatureExpired
        sent = None
    if value is None or sent is None or not secrets.compare_digest(str(sent), value):
        raise CSRFRefused(
            N_("This form has expired or was not sent from this site, so nothing was done. Reload the page and try again."),
            code="csrf",
        )


def _check_posts():
    if request.method == "POST":
        check_csrf()


def protect(bp: Blueprint) -> None:
    """Check the CSRF token of every POST the blueprint serves."""
    bp.before_request(_check_posts)
