"""The authorization endpoint (OpenID Connect Core §3.1.2): who may get a code, and when.

The order of checks matters:

1. ``client_id`` and ``redirect_uri`` first. Until both are known and match
   exactly, every problem is an error *page* (:class:`PageError`): redirecting an
   error to an unverified URI would make us an open redirector.
2. Everything else is answered at the redirect URI (:class:`RedirectError`) with
   ``error``, ``state`` and ``iss`` (RFC 9207).
3. The level the request needs (``idp.levels.required``: client minimum,
   ``acr_values``, an essential ``acr`` claim, the matter's level) against what the
   SSO session achieved; only what is missing is asked for (login, step-up).
4. ``prompt``, ``max_age``, consent; then the code (hashed, 60 s, single use).
   A request with RFC 9396 ``authorization_details`` (``idp.oidc.authorization_details``)
   always asks the person, first-party client or not, whatever they agreed to before:
   its code is made by the consent page's answer itself (:func:`decide` with
   ``consented``), so what was agreed is exactly what the code carries.

Interaction with the login, step-up and consent pages is by redirect with
``next`` = this authorization URL. To avoid loops, that URL carries a signed
marker of when the interaction began (:data:`MARKER`); a login at or after that
time satisfies ``prompt=login`` and ``max_age``, a consent at or after it
satisfies ``prompt=consent``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from urllib.parse import urlencode

from authlib.common.urls import add_params_to_uri
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import bindparam, exists, select
from sqlalchemy.orm import Session

from core import jsonlimits
from core.db import utc_now
from idp import levels
from idp.context import IdPContext
from idp.i18n import N_
from idp.models import Account, Consent, Matter, SessionActing, SessionClient, SSOSession
from idp.oidc import authorization_details, clients, resources, tokens
from idp.oidc.clients import RegisteredClient
from idp.people import enterprises, sessions

AUTHORIZE_PATH = "/oauth/authorize"
LOGIN_PATH = "/login"
STEP_UP_PATH = "/login/step-up"
CONSENT_PATH = "/consent"
MARKER = "hm_ix"
MARKER_MAX_AGE = 30 * 60
# Level 3 is reached by a USB-key certificate login (idp.certlogin.login).
HIGHEST_AVAILABLE = 3
PROMPTS = frozenset({"none", "login", "consent", "select_account"})
MAX_PARAMETERS = 40
LIMITS = {
    "client_id": 64,
    "redirect_uri": 400,
    "response_type": 40,
    "response_mode": 20,
    "scope": 500,
    "state": 1024,
    "nonce": 200,
    "code_challenge": 128,
    "code_challenge_method": 10,
    "prompt": 60,
    "max_age": 10,
    "acr_values": 500,
    "claims": 4000,
    "matter": 64,
    "login_hint": 200,
    "id_token_hint": 4096,
    "ui_locales": 100,
    "claims_locales": 100,
    "display": 10,
    "lang": 10,
    resources.PARAMETER: 400,
    authorization_details.PARAMETER: authorization_details.MAX_PARAMETER_CHARS,
    MARKER: 200,
}
DEFAULT_LIMIT = 500
_PKCE_VALUE = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")


class PageError(Exception):
    """Shown to the person as a page: the client or its redirect URI cannot be trusted.

    ``message`` is an English msgid (translated where it is shown), ``params`` its values.
    """

    def __init__(self, error: str, message: str, **params):
        self.error = error
        self.message = message
        self.params = params
        super().__init__(message % params if params else message)


class RedirectError(Exception):
    """An OAuth error sent back to the (trusted) redirect URI."""

    def __init__(
        self, error: str, description: str, request: AuthorizationRequest | None = None, *, redirect_uri: str = "", state: str | None = None
    ):
        self.error = error
        self.description = description
        self.redirect_uri = request.redirect_uri if request else redirect_uri
        self.state = request.state if request else state
        super().__init__(f"{error}: {description}")


@dataclass
class AuthorizationRequest:
    client: RegisteredClient
    redirect_uri: str
    state: str | None
    scopes: list[str]
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    prompt: frozenset[str]
    max_age: int | None
    claims: str | None
    matter: Matter | None
    requirement: levels.Requirement
    params: dict[str, str] = field(repr=False)  # every parameter as received, for the next= URL
    marker_time: int | None = None  # when the interaction began, from a valid marker
    resources: tuple[str, ...] = ()  # RFC 8707 resources asked for (the only repeatable parameter)
    authorization_details: tuple[dict, ...] = ()  # RFC 9396 details asked for, each as its type checked it

    @property
    def scope(self) -> str:
        return " ".join(self.scopes)


# -- parsing ------------------------------------------------------------------------------


def _single(params, name: str) -> str | None:
    values = params.getlist(name)
    if not values:
        return None
    if len(values) > 1:
        raise ValueError(f"The '{name}' parameter is repeated.")
    value = values[0]
    if len(value) > LIMITS.get(name, DEFAULT_LIMIT):
        raise ValueError(f"The '{name}' parameter is too long.")
    return value


def parse(ctx: IdPContext, db: Session, params) -> AuthorizationRequest:
    """Validate an authorization request (``params`` is a werkzeug ``MultiDict``)."""
    # 1. Client and redirect URI: until they are trusted, errors are pages.
    try:
        client_id = _single(params, "client_id")
        redirect_uri = _single(params, "redirect_uri")
    except ValueError as exc:
        raise PageError("invalid_request", N_("The request is malformed: %(reason)s"), reason=str(exc)) from None
    if not client_id:
        raise PageError("invalid_request", N_("The request does not name a client (client_id is missing)."))
    client = clients.get(ctx, client_id, db)
    if client is None:
        raise PageError("invalid_client", N_("The application that sent you here is not registered with this service."))
    if not redirect_uri:
        raise PageError("invalid_request", N_("The request does not say where to return (redirect_uri is missing)."))
    if not client.check_redirect_uri(redirect_uri):
        raise PageError("invalid_request", N_("The return address in the request is not registered for this application."))

    # 2. From here on errors go back to the client.
    try:
        state = _single(params, "state")
    except ValueError as exc:
        raise RedirectError("invalid_request", str(exc), redirect_uri=redirect_uri) from None

    def fail(error: str, description: str):
        return RedirectError(error, description, redirect_uri=redirect_uri, state=state)

    if len(params) > MAX_PARAMETERS:
        raise fail("invalid_request", "Too many parameters.")
    try:
        asked = resources.parse(params.getlist(resources.PARAMETER))
    except resources.InvalidTarget as exc:
        raise fail("invalid_target", exc.description) from None
    values: dict[str, str] = {}
    for name in params:
        if name == resources.PARAMETER:
            continue
        try:
            values[name] = _single(params, name)
        except ValueError as exc:
            raise fail("invalid_request", str(exc)) from None
    if "request" in values:
        raise fail("request_not_supported", "Request objects are not supported.")
    if "request_uri" in values:
        raise fail("request_uri_not_supported", "Request URIs are not supported.")
    response_type = values.get("response_type")
    if not response_type:
        raise fail("invalid_request", "Missing 'response_type'.")
    if response_type != "code":
        raise fail("unsupported_response_type", "Only response_type=code is supported.")
    if not client.check_response_type("code"):
        raise fail("unauthorized_client", "The client may not use the authorization code flow.")
    if values.get("response_mode") not in (None, "query"):
        raise fail("invalid_request", "Only response_mode=query is supported.")

    scopes = list(dict.fromkeys((values.get("scope") or "").split()))
    if not scopes:
        raise fail("invalid_scope", "Missing 'scope'.")
    if not client.allows_scopes(scopes):
        raise fail("invalid_scope", "The client may not ask for this scope.")
    try:
        resources.check(ctx, client, asked)
    except resources.InvalidTarget as exc:
        raise fail("invalid_target", exc.description) from None
    try:
        details = authorization_details.parse(ctx, values.get(authorization_details.PARAMETER))
    except authorization_details.InvalidDetails as exc:
        raise fail(exc.error, exc.description) from None
    if len(authorization_details.with_scopes(ctx, " ".join(scopes), details)) > LIMITS["scope"]:
        raise fail("invalid_scope", "The scope with the scopes of the authorization details is too long.")

    challenge, method = values.get("code_challenge"), values.get("code_challenge_method")
    if method is not None and challenge is None:
        raise fail("invalid_request", "Missing 'code_challenge'.")
    if challenge is not None:
        if method != "S256":
            raise fail("invalid_request", "Only code_challenge_method=S256 is supported.")
        if not _PKCE_VALUE.match(challenge):
            raise fail("invalid_request", "Invalid 'code_challenge'.")
    elif client.is_public:
        raise fail("invalid_request", "Public clients must use PKCE with code_challenge_method=S256.")

    prompt = frozenset((values.get("prompt") or "").split())
    if not prompt <= PROMPTS:
        raise fail("invalid_request", "Unsupported 'prompt' value.")
    if "none" in prompt and len(prompt) > 1:
        raise fail("invalid_request", "prompt=none cannot be combined with other values.")

    max_age = values.get("max_age")
    if max_age is not None:
        if not max_age.isascii() or not max_age.isdigit():
            raise fail("invalid_request", "Invalid 'max_age'.")
        max_age = int(max_age)

    claims = values.get("claims")
    if claims is not None:
        try:
            parsed = jsonlimits.loads(claims)
        except ValueError:  # not JSON, or nested too deeply (jsonlimits.TooDeep)
            parsed = None
        if not isinstance(parsed, dict) or any(
            k not in ("id_token", "userinfo") or not isinstance(v, dict | None) for k, v in parsed.items()
        ):
            raise fail("invalid_request", "Invalid 'claims' parameter.")

    matter = None
    if values.get("matter") is not None:
        matter = levels.matter(db, values["matter"])
        if matter is None:
            raise fail("invalid_request", "Unknown matter.")

    try:
        requirement = levels.required(
            client_min=client.min_acr,
            acr_values=values.get("acr_values"),
            claims=claims,
            matter_level=matter.level if matter else None,
            matter_code=matter.code if matter else None,
            highest_available=HIGHEST_AVAILABLE,
        )
    except levels.UnmetRequirement:
        raise fail("unmet_authentication_requirements", "The authentication level asked for cannot be reached here.") from None

    return AuthorizationRequest(
        client=client,
        redirect_uri=redirect_uri,
        state=state,
        scopes=scopes,
        nonce=values.get("nonce"),
        code_challenge=challenge,
        code_challenge_method=method if challenge else None,
        prompt=prompt,
        max_age=max_age,
        claims=claims,
        matter=matter,
        requirement=requirement,
        params={k: v for k, v in values.items() if k != MARKER},
        marker_time=read_marker(ctx, values.get(MARKER), client.client_id),
        resources=asked,
        authorization_details=details,
    )


# -- the interaction marker --------------------------------------------------------------


def _marker_serializer(ctx: IdPContext) -> URLSafeTimedSerializer:
    serializer = ctx.cache.get("idp.authorization.marker")
    if serializer is None:  # built once per process: it holds only the key
        serializer = ctx.cache["idp.authorization.marker"] = URLSafeTimedSerializer(
            ctx.secret_key, salt="hallmark.idp.authorize.interaction"
        )
    return serializer


def make_marker(ctx: IdPContext, client_id: str, at: int) -> str:
    return _marker_serializer(ctx).dumps([client_id, at])


def read_marker(ctx: IdPContext, value: str | None, client_id: str) -> int | None:
    if not value:
        return None
    try:
        marked_client, at = _marker_serializer(ctx).loads(value, max_age=MARKER_MAX_AGE)
    except (BadSignature, ValueError, TypeError):
        return None
    return at if marked_client == client_id and isinstance(at, int) else None


def authorize_url(ctx: IdPContext, request: AuthorizationRequest, *, now: int) -> str:
    """This request's URL (path and query) with the interaction marker; kept if it has one."""
    at = request.marker_time if request.marker_time is not None else now
    query = [*request.params.items(), *((resources.PARAMETER, uri) for uri in request.resources)]
    query.append((MARKER, make_marker(ctx, request.client.client_id, at)))
    return AUTHORIZE_PATH + "?" + urlencode(query)


# -- responses to the client -------------------------------------------------------------


_NOT_IN_ERROR_TEXT = re.compile(r"[^\x20-\x21\x23-\x5B\x5D-\x7E]")  # RFC 6749 §4.1.2.1


def error_location(ctx: IdPContext, error: RedirectError) -> str:
    params = [("error", error.error), ("error_description", _NOT_IN_ERROR_TEXT.sub("?", error.description)[:200])]
    if error.state is not None:
        params.append(("state", error.state))
    params.append(("iss", ctx.issuer))
    return add_params_to_uri(error.redirect_uri, params)


def code_location(ctx: IdPContext, request: AuthorizationRequest, code: str) -> str:
    params = [("code", code)]
    if request.state is not None:
        params.append(("state", request.state))
    params.append(("iss", ctx.issuer))
    return add_params_to_uri(request.redirect_uri, params)


# -- the decision ------------------------------------------------------------------------


# Everything a decision needs about the browser's session, in one query (built once):
# the session, its account's status, real-name proofing, for whom it acts, whether
# it could act for an enterprise at all, and whether it signed in to this client before.
_SESSION_STATE = (
    select(
        SSOSession,
        Account.status,
        sessions.PROOFED_COLUMN,
        SessionActing,
        enterprises.may_act_for_any(SSOSession.account_id, bindparam("now")).label("may_act"),
        exists().where(SessionClient.sid == SSOSession.sid, SessionClient.client_id == bindparam("client_id")).label("joined"),
    )
    .join(Account, Account.id == SSOSession.account_id)
    .outerjoin(SessionActing, SessionActing.sid == SSOSession.sid)
    .where(SSOSession.sid == bindparam("sid"))
)


@dataclass(frozen=True)
class _LiveSession:
    row: SSOSession
    view: sessions.SessionView
    acting_row: SessionActing | None
    may_act: bool
    joined: bool


def _live_session(db: Session, sid: str | None, client_id: str) -> _LiveSession | None:
    if not sid or len(sid) > 64:
        return None
    found = db.execute(_SESSION_STATE, {"sid": sid, "now": utc_now(), "client_id": client_id}).first()
    if found is None:
        return None
    row, status, proofed, acting_row, may_act, joined = found
    if sessions.still_live(row) is None or status != "active":
        return None
    return _LiveSession(row, sessions.view(db, row, proofed=bool(proofed)), acting_row, bool(may_act), bool(joined))


def consent_needed(db: Session, request: AuthorizationRequest, account_id: str) -> bool:
    if request.authorization_details:  # asked every time, answered by the consent page itself (decide's ``consented``)
        return True
    if request.client.first_party:
        return False
    consent = db.get(Consent, (account_id, request.client.client_id))
    wanted = set(request.scopes) - {"openid"}
    if consent is None:
        return True
    if not wanted <= set(consent.scope.split()):
        return True
    if "consent" in request.prompt:
        return request.marker_time is None or consent.granted_at.timestamp() < request.marker_time
    return False


def decide(
    ctx: IdPContext, db: Session, request: AuthorizationRequest, sid: str | None, *, now: float | None = None, consented: bool = False
) -> str:
    """Where the browser goes next: the client (with a code or an error), or a login, step-up or consent page.

    ``consented``: the person has just agreed to this very request on the consent page (its form bound to
    the session and this request), so consent is not asked again.
    """
    now = int(now if now is not None else time.time())
    interactive = "none" not in request.prompt
    live = _live_session(db, sid, request.client.client_id)
    view = live.view if live is not None else None

    fresh_login = bool(request.prompt & {"login", "select_account"})
    if view is not None and request.max_age is not None and now - view.auth_time.timestamp() > request.max_age:
        fresh_login = True
    if view is not None and request.marker_time is not None and view.auth_time.timestamp() >= request.marker_time:
        fresh_login = False  # logged in since this interaction began
    if view is None or fresh_login:
        if not interactive:
            raise RedirectError("login_required", "The user is not logged in.", request)
        return LOGIN_PATH + "?" + urlencode({"next": authorize_url(ctx, request, now=now)})

    # For whom the session acts (idp.people.enterprises): chosen once per session; an agent's matters are checked.
    acting = enterprises.for_authorization(
        db, live.row, request.matter.code if request.matter else None, acting_row=live.acting_row, may_act=live.may_act
    )
    if acting.ask == "not_covered" and not interactive:
        raise RedirectError("access_denied", "The agent's authorisation for the enterprise does not cover this matter.", request)
    if acting.ask is not None and interactive:
        query = {"next": authorize_url(ctx, request, now=now), **({"matter": request.matter.code} if request.matter else {})}
        return enterprises.CHOICE_PATH + "?" + urlencode(query)
    amr = set(view.amr) | acting.extra_amr  # the enterprise's key counts for the enterprise only

    level = request.requirement.level
    missing = levels.missing(level, has_session=True, proofed=view.proofed, amr=amr)
    achieved = levels.achieved(proofed=view.proofed, amr=amr)
    if missing or achieved < level:
        if not interactive:
            raise RedirectError("interaction_required", "The session must be stepped up to the required level.", request)
        return STEP_UP_PATH + "?" + urlencode({"next": authorize_url(ctx, request, now=now), "level": level})

    if not consented and consent_needed(db, request, view.account_id):
        if not interactive:
            raise RedirectError("consent_required", "The user has not agreed to share this with the client.", request)
        return CONSENT_PATH + "?" + urlencode({"next": authorize_url(ctx, request, now=now)})

    sessions.joined(db, live.row, request.client.client_id, known=live.joined)
    auth = tokens.Authentication(view.account_id, view.sid, achieved, tuple(sorted(amr)), view.auth_time)
    code = tokens.store_code(
        db,
        request.client,
        auth,
        redirect_uri=request.redirect_uri,
        scope=authorization_details.with_scopes(ctx, request.scope, request.authorization_details),
        nonce=request.nonce,
        code_challenge=request.code_challenge,
        code_challenge_method=request.code_challenge_method,
        claims=request.claims,
        resources=resources.stored(request.resources),
        authorization_details=authorization_details.stored(request.authorization_details),
    )
    enterprises.remember_code(db, code, view.account_id, acting)
    return code_location(ctx, request, code)


def consented(ctx: IdPContext, db: Session, request: AuthorizationRequest, sid: str | None) -> str:
    """Where the browser goes once the person agreed to ``request`` on the consent page (see :func:`decide`)."""
    try:
        return decide(ctx, db, request, sid, consented=True)
    except RedirectError as error:
        return error_location(ctx, error)


def authorize(ctx: IdPContext, db: Session, params, sid: str | None) -> str:
    """The whole endpoint: a Location to redirect to. Raises :class:`PageError` for the page cases."""
    try:
        request = parse(ctx, db, params)
        return decide(ctx, db, request, sid)
    except RedirectError as error:
        return error_location(ctx, error)
