"""OpenID Connect provider endpoints: discovery, JWKS, authorize, token, introspection,
revocation, userinfo and the consent page. Thin: the rules are in
``idp.oidc.authorization`` (authorize), ``idp.oidc.grants`` (token side, on Authlib),
``idp.oidc.tokens``, ``idp.oidc.keys``, ``idp.oidc.clients`` and ``idp.oidc.consent``.
"""

from __future__ import annotations

import io
import json as stdlib_json
from urllib.parse import parse_qsl, urlsplit

from flask import Blueprint, Response, json, redirect, render_template, request
from flask_babel import gettext
from werkzeug.datastructures import MultiDict

from core import db as core_db
from core import web
from idp import context as idp_context
from idp import levels
from idp.context import IdPContext
from idp.i18n import N_
from idp.models import Account
from idp.oidc import authorization, authorization_details, clients, consent, grants, keys, resources, tokens
from idp.oidc import server as oidc_server
from idp.people import accounts, directory, sessions

bp = Blueprint("idp_oidc", __name__, template_folder="../templates")

USERINFO_PATH = "/oauth/userinfo"
LOGOUT_PATH = "/oauth/logout"  # served by idp.oidc.logout_api
JWKS_PATH = "/jwks.json"
DEVICE_AUTHORIZATION_PATH = "/oauth/device_authorization"  # served by idp.oidc.device_api
RESOURCE_METADATA_PATH = "/.well-known/oauth-protected-resource"  # RFC 9728, followed by an API's root
USERINFO_SCOPES = ("openid", "profile", tokens.REALNAME_SCOPE)
PAGE_TEMPLATE = "idp/consent.html"  # the consent page and the authorization error page
TOKEN_LIMITS = {
    "client_assertion": 8192,
    "token": tokens.MAX_TOKEN_CHARS,
    "scope": 500,
    "redirect_uri": 400,
    "client_id": 64,
    resources.PARAMETER: 400,
    authorization_details.PARAMETER: authorization_details.MAX_PARAMETER_CHARS,
}
REPEATABLE = frozenset({resources.PARAMETER})  # RFC 8707: one resource parameter per resource
TOKEN_DEFAULT_LIMIT = 300
TOKEN_MAX_PARAMETERS = 20
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
PAGE_HEADERS = {**NO_STORE, "Referrer-Policy": "no-referrer"}  # the query carries the authorization request


def _ctx() -> IdPContext:
    return idp_context.current()


# -- discovery and keys ---------------------------------------------------------------------


def provider_metadata(ctx: IdPContext) -> dict:
    url = ctx.url
    return {
        "issuer": ctx.issuer,
        "authorization_endpoint": url(authorization.AUTHORIZE_PATH),
        "token_endpoint": url(grants.TOKEN_PATH),
        "userinfo_endpoint": url(USERINFO_PATH),
        "jwks_uri": url(JWKS_PATH),
        "introspection_endpoint": url(grants.INTROSPECTION_PATH),
        "revocation_endpoint": url(grants.REVOCATION_PATH),
        "device_authorization_endpoint": url(DEVICE_AUTHORIZATION_PATH),  # RFC 8628 (idp.oidc.device)
        "scopes_supported": list(USERINFO_SCOPES),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": list(clients.GRANT_TYPES),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": list(keys.ALGORITHMS),
        "token_endpoint_auth_methods_supported": list(clients.AUTH_METHODS),
        "token_endpoint_auth_signing_alg_values_supported": list(clients.ASSERTION_ALGORITHMS),
        "introspection_endpoint_auth_methods_supported": list(grants.CONFIDENTIAL_METHODS),
        "introspection_endpoint_auth_signing_alg_values_supported": list(clients.ASSERTION_ALGORITHMS),
        "revocation_endpoint_auth_methods_supported": list(grants.ALL_METHODS),
        "revocation_endpoint_auth_signing_alg_values_supported": list(clients.ASSERTION_ALGORITHMS),
        "code_challenge_methods_supported": ["S256"],
        "acr_values_supported": list(levels.ACR_VALUES),
        "claims_supported": [
            "sub",
            "iss",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "acr",
            "amr",
            "sid",
            "azp",
            "at_hash",
            "name",
            "preferred_username",
            "locale",
            "real_name_verified",
            "resident_id_masked",
            "real_name_method",
        ],
        "claims_parameter_supported": True,
        "claim_types_supported": ["normal"],
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "prompt_values_supported": sorted(authorization.PROMPTS),
        "ui_locales_supported": ["zh-CN", "en"],
        "authorization_response_iss_parameter_supported": True,
        "end_session_endpoint": url(LOGOUT_PATH),
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
        "frontchannel_logout_supported": True,
        "frontchannel_logout_session_supported": True,
        # RFC 9728 §4: the resources (RFC 8707 ``resource`` values) this server issues tokens for: itself
        # (userinfo) and this instance's APIs; each describes itself at RESOURCE_METADATA_PATH + its path.
        "protected_resources": [ctx.issuer, *ctx.resources],
        # RFC 9396 §10: the authorization_details types this instance's APIs honour
        "authorization_details_types_supported": sorted(ctx.detail_types),
    }


def resource_metadata(ctx: IdPContext, uri: str) -> dict | None:
    """RFC 9728 metadata of the provider itself (userinfo) or one of this instance's APIs; None for anything else."""
    scopes = USERINFO_SCOPES if uri == ctx.issuer else ctx.resources.get(uri)
    if scopes is None:
        return None
    return {
        "resource": uri,
        "authorization_servers": [ctx.issuer],
        "scopes_supported": sorted(scopes),
        "bearer_methods_supported": ["header"],
    }


def _json(body, status: int = 200, headers: dict | None = None) -> Response:
    response = Response(json.dumps(body, ensure_ascii=False), status=status, mimetype="application/json")
    if headers:
        response.headers.update(headers)
    return response


@bp.get("/.well-known/openid-configuration")
def discovery():
    return _json(provider_metadata(_ctx()), headers={"Cache-Control": "public, max-age=300"})


@bp.get(RESOURCE_METADATA_PATH, defaults={"root": ""})
@bp.get(RESOURCE_METADATA_PATH + "/<path:root>")
def protected_resource(root: str):
    body = resource_metadata(_ctx(), _ctx().url("/" + root) if root else _ctx().issuer)
    if body is None:
        return _json({"error": "not_found", "error_description": "No such protected resource."}, 404)
    return _json(body, headers={"Cache-Control": "public, max-age=300"})


@bp.get(JWKS_PATH)
def jwks():
    # Short enough that a key published by a rotation is seen before it signs (keys.PROPAGATION).
    return _json(keys.jwks_dict(_ctx()), headers={"Cache-Control": "public, max-age=30"})


# -- pages ----------------------------------------------------------------------------------


def _page(status: int, **context) -> Response:
    """The consent page or the authorization error page, in the shared layout (headers and CSP from core.web)."""
    if request.method == "GET":
        links = web.language_links()
    else:  # after the consent form's POST, the language switch leads back to the same question
        links = web.language_links(request.path, {"next": request.form["next"]} if request.form.get("next") else {})
    response = Response(render_template(PAGE_TEMPLATE, lang_links=links, **context), status=status, mimetype="text/html")
    response.headers.update(PAGE_HEADERS)
    return response


def _error_page(error: str, message: str, params: dict | None = None, status: int = 400) -> Response:
    return _page(status, view="error", error=error, message=gettext(message, **(params or {})))


def _redirect(location: str) -> Response:
    response = redirect(location, 302)
    response.headers.update(NO_STORE)
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


# -- authorize -----------------------------------------------------------------------------


@bp.route(authorization.AUTHORIZE_PATH, methods=["GET", "POST"])
def authorize():
    ctx = _ctx()
    params = request.args if request.method == "GET" else request.form
    with core_db.transaction(ctx.sessions) as db:
        try:
            location = authorization.authorize(
                ctx, db, params, sessions.sid_from_cookie(db, ctx.secret_key, request.cookies.get(sessions.COOKIE))
            )
        except authorization.PageError as exc:
            return _error_page(exc.error, exc.message, exc.params)
    return _redirect(location)


# -- consent ---------------------------------------------------------------------------------


def _authorize_params(next_url: str | None) -> MultiDict | None:
    """The authorization request a consent form answers (``next`` must be our authorize URL)."""
    if not next_url or len(next_url) > directory.MAX_NEXT:
        return None
    parts = urlsplit(next_url)
    if parts.scheme or parts.netloc or parts.path != authorization.AUTHORIZE_PATH:
        return None
    return MultiDict(parse_qsl(parts.query, keep_blank_values=True))


@bp.route(authorization.CONSENT_PATH, methods=["GET", "POST"])
def consent_page():
    ctx = _ctx()
    next_url = request.values.get("next")
    params = _authorize_params(next_url)
    if params is None:
        return _error_page("invalid_request", N_("The request is malformed: %(reason)s"), {"reason": "next"})
    with core_db.transaction(ctx.sessions) as db:
        try:
            authz = authorization.parse(ctx, db, params)
        except authorization.PageError as exc:
            return _error_page(exc.error, exc.message, exc.params)
        except authorization.RedirectError as exc:
            return _redirect(authorization.error_location(ctx, exc))
        row = sessions.from_cookie(db, ctx.secret_key, request.cookies.get(sessions.COOKIE))
        if row is None:
            return _redirect(next_url)  # the authorization endpoint sends the person to log in first
        if request.method == "GET":
            account = db.get(Account, row.account_id)
            return _page(
                200,
                view="consent",
                client_name=authz.client.name,
                scopes=[(scope, gettext(text)) for scope, text in consent.described_scopes(authz.scopes)],
                details=authorization_details.described(ctx, authz.authorization_details),
                user=(account.display_name or accounts.label(account)) if account else "",
                next_url=next_url,
                form_token=consent.form_token(ctx, row.sid, next_url),
            )
        if not consent.check_form_token(ctx, request.form.get("form_token"), row.sid, next_url):
            return _error_page(
                "invalid_request",
                N_("The form has expired or was not sent from this page. Please start again from the site you came from."),
            )
        if request.form.get("decision") != "allow":
            return _redirect(authorization.error_location(ctx, authorization.RedirectError("access_denied", "The user refused.", authz)))
        consent.grant(db, row.account_id, authz.client.client_id, authz.scopes)
        if authz.authorization_details:  # agreed to this very request: its code is made now (authorization.decide)
            consent.grant_details(db, row.account_id, authz.client.client_id, authz.authorization_details)
            return _redirect(authorization.consented(ctx, db, authz, row.sid))
    return _redirect(next_url)


# -- token, introspection, revocation ----------------------------------------------------------


def _oauth_error(error: str, description: str, status: int = 400) -> Response:
    return _json({"error": error, "error_description": description}, status, NO_STORE)


def _form_problem() -> Response | None:
    """Refuse what a token-type endpoint must not accept: query parameters, repeats, oversized values, two ways of authenticating."""
    if request.args:
        return _oauth_error("invalid_request", "Parameters belong in the request body, not the URL.")
    form = request.form
    if len(form) > TOKEN_MAX_PARAMETERS:
        return _oauth_error("invalid_request", "Too many parameters.")
    for name, values in form.lists():
        if len(values) > 1 and name not in REPEATABLE:
            return _oauth_error(
                "invalid_request", f"The '{name[:40]}' parameter is repeated." if name.isascii() else "A parameter is repeated."
            )
        if max(map(len, values)) > TOKEN_LIMITS.get(name, TOKEN_DEFAULT_LIMIT):
            return _oauth_error(
                "invalid_request", f"The '{name[:40]}' parameter is too long." if name.isascii() else "A parameter is too long."
            )
    ways = ("authorization" in request.headers) + ("client_secret" in form) + ("client_assertion" in form)
    if ways > 1:
        return _oauth_error("invalid_request", "Use only one way of client authentication.")
    return None


@bp.post(grants.TOKEN_PATH)
def token():
    # The commonest request, a plain client_credentials one, is answered before Flask (TokenFastPath).
    problem = _form_problem()
    if problem is not None:
        return problem
    return oidc_server.server_for(_ctx()).token_response()


class TokenFastPath:
    """WSGI middleware for the request made thousands of times a second: a plainly
    valid ``client_credentials`` token request with a client secret.

    It answers that request without Flask's per-request work (request context,
    cookie session, URL matching, form parser: about two thirds of a token's cost
    on this path) and hands everything else, every error included, to the app
    unchanged, with the body it read put back; and when it fails (the database or
    the HSM down), the app answers the request as if this path had not been there. The rules are
    ``idp.oidc.grants.client_credentials_fast``, shared with the Authlib grant.
    """

    MAX_BODY = 4096

    def __init__(self, app, wsgi_app):
        self.app = app  # the Flask app, for the IdP context
        self.wsgi_app = wsgi_app  # the next WSGI callable

    def __call__(self, environ, start_response):
        if (
            environ.get("PATH_INFO") != grants.TOKEN_PATH
            or environ.get("REQUEST_METHOD") != "POST"
            or environ.get("QUERY_STRING")
            or not environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded")
        ):
            return self.wsgi_app(environ, start_response)
        length = environ.get("CONTENT_LENGTH") or ""
        if not length.isdigit() or not 0 < int(length) <= self.MAX_BODY:
            return self.wsgi_app(environ, start_response)
        body = environ["wsgi.input"].read(int(length))
        environ["wsgi.input"] = io.BytesIO(body)  # the app reads it again if we pass
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True, max_num_fields=TOKEN_MAX_PARAMETERS)
        except ValueError:
            return self.wsgi_app(environ, start_response)
        form = dict(pairs)
        if len(form) != len(pairs) or any(len(v) > TOKEN_LIMITS.get(k, TOKEN_DEFAULT_LIMIT) for k, v in pairs):
            return self.wsgi_app(environ, start_response)
        ctx = idp_context.current(self.app)
        try:
            answer = grants.client_credentials_fast(ctx, form, environ.get("HTTP_AUTHORIZATION"))
        except Exception:
            # Something it needs failed (the database, the HSM): the app answers the same request in its own form
            # (503 problem+json for a part that is down) and logs it, where this path gave a bare 500 and no log.
            environ["wsgi.input"] = io.BytesIO(body)
            return self.wsgi_app(environ, start_response)
        if answer is None:
            return self.wsgi_app(environ, start_response)
        data = _FAST_JSON(answer).encode()
        start_response("200 OK", [*_FAST_HEADERS, ("Content-Length", str(len(data)))])
        return [data]


@bp.record_once
def _install_fast_path(state) -> None:
    state.app.wsgi_app = TokenFastPath(state.app, state.app.wsgi_app)


_FAST_HEADERS = [("Content-Type", "application/json"), ("Cache-Control", "no-store"), ("Pragma", "no-cache")]
_FAST_JSON = stdlib_json.JSONEncoder(separators=(",", ":")).encode  # built once, not per token


@bp.post(grants.INTROSPECTION_PATH)
def introspect():
    problem = _form_problem()
    if problem is not None:
        return problem
    return oidc_server.server_for(_ctx()).endpoint_response("introspection")


@bp.post(grants.REVOCATION_PATH)
def revoke():
    problem = _form_problem()
    if problem is not None:
        return problem
    return oidc_server.server_for(_ctx()).endpoint_response("revocation")


# -- userinfo --------------------------------------------------------------------------------


def _bearer_error(status: int, error: str | None, description: str = "", scope: str = "") -> Response:
    parts = []
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append(f'error_description="{description}"')
    if scope:
        parts.append(f'scope="{scope}"')
    body = {"error": error, "error_description": description} if error else {}
    return _json(body, status, {**NO_STORE, "WWW-Authenticate": "Bearer" + (" " + ", ".join(parts) if parts else "")})


@bp.route(USERINFO_PATH, methods=["GET", "POST"])
def userinfo():
    ctx = _ctx()
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return _bearer_error(401, None)
    keys.warm(ctx)
    try:
        with ctx.sessions() as db:
            body = tokens.userinfo_for(ctx, db, value.strip())
    except tokens.InsufficientScope as exc:
        return _bearer_error(403, "insufficient_scope", str(exc), "openid")
    except tokens.InvalidToken as exc:
        return _bearer_error(401, "invalid_token", str(exc))
    return _json(body, headers=NO_STORE)
