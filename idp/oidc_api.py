"""OpenID Connect provider endpoints: discovery, JWKS, authorize, token, introspection,
revocation, userinfo and the consent page. Thin: the rules are in
``idp.authorization`` (authorize), ``idp.grants`` (token side, on Authlib),
``idp.tokens``, ``idp.keys``, ``idp.clients`` and ``idp.consent``.
"""

from __future__ import annotations

import io
import json as stdlib_json
import secrets
from urllib.parse import parse_qsl, urlencode, urlsplit

from flask import Blueprint, Response, current_app, json, redirect, render_template, request
from jinja2 import TemplateNotFound
from werkzeug.datastructures import MultiDict

from core import db as core_db
from idp import accounts, authorization, clients, consent, grants, keys, levels, resources, sessions, tokens
from idp import context as idp_context
from idp.context import IdPContext
from idp.i18n import N_
from idp.models import Account

bp = Blueprint("idp_oidc", __name__, template_folder="templates")

USERINFO_PATH = "/oauth/userinfo"
LOGOUT_PATH = "/oauth/logout"  # served by idp.logout_api
JWKS_PATH = "/jwks.json"
RESOURCE_METADATA_PATH = "/.well-known/oauth-protected-resource"  # RFC 9728, followed by an API's root
USERINFO_SCOPES = ("openid", "profile", tokens.REALNAME_SCOPE)
BASE_TEMPLATE = "idp/base.html"
PAGE_TEMPLATE = "idp/consent.html"  # the consent page and the authorization error page
TOKEN_LIMITS = {
    "client_assertion": 8192,
    "token": tokens.MAX_TOKEN_CHARS,
    "scope": 500,
    "redirect_uri": 400,
    "client_id": 64,
    resources.PARAMETER: 400,
}
REPEATABLE = frozenset({resources.PARAMETER})  # RFC 8707: one resource parameter per resource
TOKEN_DEFAULT_LIMIT = 300
TOKEN_MAX_PARAMETERS = 20
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
PAGE_HEADERS = {**NO_STORE, "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


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

# Until the shared catalogue carries these, Chinese pages use this table.
_ZH = {
    "Sign-in request refused": "无法处理此登录请求",
    "Go back to the site you came from and try again. If this keeps happening, contact that site.": "请返回您原来所在的网站重试。如果问题仍然存在，请联系该网站。",
    "Error code: %(code)s": "错误代码：%(code)s",
    "The request is malformed: %(reason)s": "请求格式不正确：%(reason)s",
    "The request does not name a client (client_id is missing).": "请求中没有指明应用（缺少 client_id）。",
    "The application that sent you here is not registered with this service.": "将您引导到这里的应用未在本服务登记。",
    "The request does not say where to return (redirect_uri is missing).": "请求中没有指明返回地址（缺少 redirect_uri）。",
    "The return address in the request is not registered for this application.": "请求中的返回地址未为该应用登记。",
    "The form has expired or was not sent from this page. Please start again from the site you came from.": "表单已过期或不是从本页面提交的。请从原来的网站重新开始。",
    "Allow %(client)s to use your account?": "是否允许“%(client)s”使用您的账号？",
    "%(client)s would like to:": "“%(client)s”希望：",
    "You are logged in as %(user)s.": "您当前登录的账号：%(user)s。",
    "Allow": "同意",
    "Deny": "拒绝",
    "Confirm that you are logged in, and your account identifier": "确认您已登录，并获取您的账号标识",
    "Your name and user name": "获取您的姓名和用户名",
    "Whether your real name is verified, and your masked resident ID number": "获取您是否已实名认证，以及脱敏后的身份证号码",
    "Keep access while you are away": "在您离开期间保持访问",
    "Authorization": "授权",
}


def _locale() -> str:
    from idp import i18n

    if "babel" in current_app.extensions:
        return i18n.current()
    return i18n.select_locale()


def _gettext(message: str, **params) -> str:
    text = message
    if "babel" in current_app.extensions:
        from flask_babel import gettext

        text = gettext(message)
    if text == message and _locale() == "zh":
        text = _ZH.get(message, message)
    return text % params if params else text


# Used until the shared layout (idp/base.html) exists: enough to be readable on a phone.
STANDALONE_LAYOUT = """<!doctype html>
<html lang="{{ page_lang }}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{% block title %}{% endblock %}</title>
<style nonce="{{ csp_nonce }}">body{font-family:system-ui,"PingFang SC","Microsoft YaHei",sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem;line-height:1.6}
button{font-size:1rem;padding:.6rem 1.4rem;margin:.3rem .5rem .3rem 0}button.primary{background:#c8102e;color:#fff;border:0}
.code{color:#666;font-size:.9rem}</style></head>
<body><main>{% block content %}{% endblock %}</main></body></html>"""


def _layout():
    """The shared layout's name when it exists, else the standalone layout (checked once per process)."""
    cache = current_app.extensions.setdefault("hallmark.idp.oidc", {})
    if "layout" not in cache:
        try:
            current_app.jinja_env.get_template(BASE_TEMPLATE)
            cache["layout"] = BASE_TEMPLATE
        except TemplateNotFound:
            cache["layout"] = current_app.jinja_env.from_string(STANDALONE_LAYOUT)
    return cache["layout"]


def _lang_links() -> dict[str, str]:
    """Links to this page in each language (what the shared layout's language switch needs)."""
    from idp import i18n

    if request.method == "GET":
        here, keep = request.path, {k: v for k, v in request.args.items() if k != "lang"}
    else:
        here, keep = request.path, ({"next": request.form["next"]} if request.form.get("next") else {})
    return {lang: here + "?" + urlencode({**keep, "lang": lang}) for lang in i18n.SUPPORTED}


def _page(status: int, **context) -> Response:
    from idp import i18n

    lang = _locale()
    nonce = secrets.token_urlsafe(16)
    html = render_template(
        PAGE_TEMPLATE,
        layout=_layout(),
        _=_gettext,
        gettext=_gettext,
        lang=lang,
        html_lang=i18n.HTML_LANG.get(lang, "zh-CN"),
        page_lang=i18n.HTML_LANG.get(lang, "zh-CN"),
        lang_links=_lang_links(),
        csp_nonce=nonce,
        **context,
    )
    response = Response(html, status=status, mimetype="text/html")
    response.headers.update(PAGE_HEADERS)
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; style-src 'nonce-{nonce}'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'"  # no form-action: the consent form's answer redirects on to the hall
    )
    return response


def _error_page(error: str, message: str, params: dict | None = None, status: int = 400) -> Response:
    return _page(status, view="error", error=error, message=_gettext(message, **(params or {})))


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
                ctx, db, params, sessions.sid_from_cookie(ctx.secret_key, request.cookies.get(sessions.COOKIE))
            )
        except authorization.PageError as exc:
            return _error_page(exc.error, exc.message, exc.params)
    return _redirect(location)


# -- consent ---------------------------------------------------------------------------------


def _authorize_params(next_url: str | None) -> MultiDict | None:
    """The authorization request a consent form answers (``next`` must be our authorize URL)."""
    if not next_url or len(next_url) > 8000:
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
    sid = sessions.sid_from_cookie(ctx.secret_key, request.cookies.get(sessions.COOKIE))
    with core_db.transaction(ctx.sessions) as db:
        try:
            authz = authorization.parse(ctx, db, params)
        except authorization.PageError as exc:
            return _error_page(exc.error, exc.message, exc.params)
        except authorization.RedirectError as exc:
            return _redirect(authorization.error_location(ctx, exc))
        row = sessions.current(db, sid)
        if row is None:
            return _redirect(next_url)  # the authorization endpoint sends the person to log in first
        if request.method == "GET":
            account = db.get(Account, row.account_id)
            return _page(
                200,
                view="consent",
                client_name=authz.client.name,
                scopes=[(scope, _gettext(text)) for scope, text in consent.described_scopes(authz.scopes)],
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
    return grants.server_for(_ctx()).token_response()


class TokenFastPath:
    """WSGI middleware for the request made thousands of times a second: a plainly
    valid ``client_credentials`` token request with a client secret.

    It answers that request without Flask's per-request work (request context,
    cookie session, URL matching, form parser: about two thirds of a token's cost
    on this path) and hands everything else, every error included, to the app
    unchanged, with the body it read put back. The rules are
    ``idp.grants.client_credentials_fast``, shared with the Authlib grant.
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
        answer = grants.client_credentials_fast(ctx, form, environ.get("HTTP_AUTHORIZATION"))
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
    return grants.server_for(_ctx()).endpoint_response("introspection")


@bp.post(grants.REVOCATION_PATH)
def revoke():
    problem = _form_problem()
    if problem is not None:
        return problem
    return grants.server_for(_ctx()).endpoint_response("revocation")


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
