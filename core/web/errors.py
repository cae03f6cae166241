"""Errors in the form the client reads: an HTML page for browsers, RFC 9457 problem+json for API clients.

The choice (:func:`wants_html`):

* a path under a JSON API prefix (``/api/`` and what packages add) always gets problem+json;
* otherwise a client that prefers ``text/html`` to JSON gets a page, one that
  prefers JSON (``application/json`` or ``application/problem+json``) gets a
  problem document;
* when the Accept header does not choose (none, or ``*/*``), a page blueprint's
  paths get a page and everything else a problem document.

The page is in the person's language (Simplified Chinese first), says what
happened in plain words and links back to the landing page. Nothing is ever
answered with a traceback: an unexpected exception is logged and becomes a 500.

A part the service depends on that is down for a while is a 503 with ``Retry-After``,
not a 500: the database (it cannot be reached, the connection dropped, the pool is
exhausted: SQLAlchemy's ``OperationalError``, ``InterfaceError``, ``TimeoutError``,
and :class:`core.db.DatabaseUnavailable`), and whatever the composition root names
with :func:`unavailable_when` (the HSM token). The service needs no restart after:
pooled connections are checked before use (``pool_pre_ping``), the HSM's sessions
rebuilt.
"""

from __future__ import annotations

import logging

from flask import Flask, current_app, render_template, request
from sqlalchemy import exc as sql_errors
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from core.db import DatabaseUnavailable
from core.problems import MEDIA_TYPE, Problem
from core.web.i18n import N_, Refusal
from core.web.state import state

log = logging.getLogger("hallmark.errors")

# status -> (page heading, what the page says); msgids of core/web's catalogue.
MESSAGES = {
    400: (N_("Bad request"), N_("The request could not be understood.")),
    401: (N_("Not signed in"), N_("Sign in first, then try again.")),
    403: (N_("Not allowed"), N_("You may not do this.")),
    404: (N_("Page not found"), N_("This page does not exist. Check the address, or start again from the home page.")),
    405: (N_("Not possible here"), N_("This page cannot be used that way.")),
    409: (N_("Conflict"), N_("This clashes with something that already exists.")),
    413: (N_("Too large"), N_("What was sent is too large.")),
    415: (N_("Unsupported content"), N_("This kind of content is not accepted here.")),
    429: (N_("Too many requests"), N_("Too many requests in a short time. Wait a moment and try again.")),
    500: (N_("Something went wrong"), N_("Something went wrong on our side. It has been logged; please try again later.")),
    503: (N_("Service unavailable"), N_("The service is not available at the moment. Please try again later.")),
}
GENERIC = (N_("Something is not right"), N_("The request could not be handled."))
# The English titles of problem documents (RFC 9110 reason phrases).
TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
RETRY_AFTER = "5"  # seconds a client is asked to wait when a part the service needs is down
DATABASE_DOWN = (sql_errors.OperationalError, sql_errors.InterfaceError, sql_errors.TimeoutError, DatabaseUnavailable)
HTML = "text/html"
JSON_TYPES = ("application/json", MEDIA_TYPE)


def json_path() -> bool:
    return any(request.path.startswith(prefix) for prefix in state(current_app).json_prefixes)


def wants_html() -> bool:
    """Whether this request's error is best answered with a page (see the module's docstring)."""
    if json_path():
        return False
    accept = request.accept_mimetypes
    html = accept[HTML]
    json = max(accept[kind] for kind in JSON_TYPES)
    if html != json:
        return html > json
    return request.blueprint in state(current_app).pages


def page(status: int, message: str | None = None, *, back: str | None = None, headers: dict | None = None):
    """The error page for ``status``; ``message`` is already translated (default: what the status means)."""
    from flask_babel import gettext

    heading, default = MESSAGES.get(status, GENERIC)
    body = render_template(
        "web/error.html",
        status=status,
        heading=gettext(heading),
        message=message or gettext(default),
        back=back if back and back != "/" else None,
    )
    return body, status, {"Content-Type": "text/html; charset=utf-8", **(headers or {})}


def respond(status: int, *, detail: str | None = None, message: str | None = None, back: str | None = None, headers=None, **extensions):
    """An error in the client's form: ``detail`` (English) goes into the problem document, ``message`` onto the page."""
    if not json_path():  # the answer depends on the Accept header: caches must keep the forms apart
        headers = {**(headers or {}), "Vary": "Accept"}
    if wants_html() and "babel" in current_app.extensions:
        if back is None and request.method == "POST" and request.blueprint in state(current_app).pages:
            back = request.path  # a form that was refused: back to it
        try:
            return page(status, message, back=back, headers=headers)
        except Exception:  # a broken page must not hide the error: fall back to the problem document
            log.exception("error page for %s could not be rendered", status)
    return Problem(status, TITLES.get(status, "Error"), detail, headers=headers, **extensions).response()


def _problem(exc: Problem):
    if wants_html():
        return respond(exc.status, headers=exc.headers)
    return exc.response()


def _refusal(exc: Refusal):
    message = exc.translated() if "babel" in current_app.extensions else exc.english()
    return respond(exc.status, detail=exc.english(), message=message, headers=exc.headers() or None, code=exc.code)


def _http(exc: HTTPException):
    # Keep what the exception says in headers (Allow of a 405, Retry-After, WWW-Authenticate), not its body's type.
    headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"} if exc.response is None else {}
    return respond(exc.code or 500, detail=exc.description, headers=headers)


def _reason(exc: Exception) -> str:
    """The first line of what went wrong, for the log (a database URL in it never carries the password)."""
    inner = getattr(exc, "orig", None) or exc
    return f"{type(inner).__name__}: {str(inner).strip().splitlines()[0] if str(inner).strip() else ''}"[:300]


def _database_down(exc: Exception):
    log.warning("database unavailable, answered 503: %s", _reason(exc))
    return respond(503, detail="the database is not available at the moment; try again shortly", headers={"Retry-After": RETRY_AFTER})


def unavailable_when(app: Flask, *exceptions: type[BaseException], detail: str) -> None:
    """Answer ``exceptions`` (a part the service needs is down for now) with 503 and ``Retry-After``; ``detail`` in English."""

    def _down(exc: Exception):
        log.warning("%s, answered 503: %s", detail, _reason(exc))
        return respond(503, detail=detail, headers={"Retry-After": RETRY_AFTER})

    for exception in exceptions:
        app.register_error_handler(exception, _down)


def _unexpected(exc: Exception):
    log.exception("unhandled error")
    return respond(500, detail="the server hit an unexpected error; it has been logged")


def refuse_oversized_bodies():
    """Refuse a body over ``MAX_CONTENT_LENGTH`` before anything reads it (Flask checks only when a view reads the body)."""
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    if limit is not None and request.content_length is not None and request.content_length > limit:
        raise RequestEntityTooLarge(f"request bodies are limited to {limit} bytes")


def install(app: Flask) -> None:
    web = state(app)
    if web.errors_installed:
        return
    web.errors_installed = True
    app.register_error_handler(Problem, _problem)
    app.register_error_handler(Refusal, _refusal)
    app.register_error_handler(HTTPException, _http)
    for exception in DATABASE_DOWN:
        app.register_error_handler(exception, _database_down)
    app.register_error_handler(Exception, _unexpected)
    app.before_request(refuse_oversized_bodies)
