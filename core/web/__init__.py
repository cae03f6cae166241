"""The one home of what every web package shares.

* :func:`init_app`: languages (Flask-Babel, Chinese first), error pages and
  problem+json chosen by content negotiation (:mod:`core.web.errors`), security
  headers and the Content-Security-Policy (:mod:`core.web.security`), the base
  layout ``web/base.html`` and the landing page at ``/``.
* :func:`pages`: a blueprint that serves pages says so (and whether its POSTs
  need a CSRF token); :func:`add_translations` adds a package's catalogue;
  :func:`landing_link` puts a way in on the landing page; :func:`json_api`
  names a path prefix whose errors are always problem+json.
* :func:`trust_proxies`: ``X-Forwarded-For``/``-Proto`` believed from the
  ``trusted_proxies`` only (:mod:`core.web.proxies`); :func:`peer_address` is
  the connection's own peer (the proxy) where a check is about the proxy.

Templates extend ``web/base.html`` and get ``lang``, ``html_lang``,
``lang_links``, ``csp_nonce``, ``csrf_token()`` and ``csrf_field`` from here; a
view may pass its own values of these to override them.
"""

from __future__ import annotations

from flask import Blueprint, Flask

from core.web import errors, i18n, landing, proxies, security
from core.web.i18n import N_, Refusal, add_translations, language_links
from core.web.security import CSRF_FIELD, CSRFRefused, allow, csrf_token, csrf_value, nonce, secure_cookies
from core.web.state import LandingLink, PagePolicy, state

__all__ = [
    "CSRF_FIELD",
    "N_",
    "CSRFRefused",
    "Refusal",
    "add_translations",
    "allow",
    "csrf_token",
    "csrf_value",
    "current_language",
    "init_app",
    "json_api",
    "landing_link",
    "language_links",
    "nonce",
    "pages",
    "peer_address",
    "secure_cookies",
    "trust_proxies",
    "unavailable_when",
]

current_language = i18n.current
trust_proxies = proxies.install
peer_address = proxies.peer_address
unavailable_when = errors.unavailable_when


def init_app(app: Flask, *, public_url: str | None = None) -> None:
    """Install the web layer; safe to call more than once (``public_url``, when given, decides ``Secure`` cookies)."""
    if public_url is not None:
        app.config["SESSION_COOKIE_SECURE"] = public_url.startswith("https://")
    web = state(app)
    if web.installed:
        return
    web.installed = True
    i18n.init_app(app)
    errors.install(app)
    app.after_request(security.add_headers)

    @app.context_processor
    def _page_values():
        return {"csp_nonce": security.nonce(), "csrf_token": security.csrf_token, "csrf_field": security.CSRF_FIELD}

    web.pages[landing.bp.name] = PagePolicy()
    app.register_blueprint(landing.bp)


def pages(bp: Blueprint, *, csrf: bool = False, form_action: str | None = None) -> None:
    """Declare that ``bp`` serves pages: the web layer is installed with it, its errors default to pages."""
    policy = PagePolicy(csrf=csrf, form_action=form_action)
    if csrf:
        security.protect(bp)

    def _registered(setup):
        init_app(setup.app)
        state(setup.app).pages[bp.name] = policy

    bp.record_once(_registered)


def json_api(app: Flask, prefix: str) -> None:
    """Errors of every path under ``prefix`` are problem+json, whatever the Accept header says."""
    state(app).json_prefixes.add(prefix)


def landing_link(app: Flask, section: str, href: str, title: str, text: str, order: int = 100) -> None:
    """A way in on the landing page; ``title`` and ``text`` are msgids (translated when the page is shown)."""
    links = state(app).links
    link = LandingLink(section=section, href=href, title=title, text=text, order=order)
    if link not in links:
        links.append(link)
