"""The token side of the authorization server, on Authlib.

Authlib's ``AuthorizationServer`` runs the token, introspection and revocation
endpoints; this module gives it our grants and rules:

* ``authorization_code`` with PKCE (S256 only; required of public clients) and the
  OpenID ID token; a replayed code is refused and its token family revoked.
* ``refresh_token``: rotated on every use; a replayed (already rotated) token
  revokes its family.
* ``client_credentials``: scopes limited to the client's own; no database write.
* ``urn:ietf:params:oauth:grant-type:device_code`` (RFC 8628) for kiosks and TVs, with
  its device authorization endpoint: ``idp.oidc.device``.
* RFC 8707 resource indicators on all three (``idp.oidc.resources``): the ``aud`` of the
  access token, ``invalid_target`` for a resource the client may not ask for.
* RFC 9396 authorization details on ``authorization_code`` and ``refresh_token``
  (``idp.oidc.authorization_details``): what the person granted goes into the access
  token, its audience and the token response; a token request may ask for a subset.
* client authentication: ``client_secret_basic``, ``client_secret_post``,
  ``private_key_jwt`` (RFC 7523, ``jti`` single use) and ``none`` for public clients.
* RFC 7662 introspection (confidential clients) and RFC 7009 revocation.

The authorization endpoint is ``idp.oidc.authorization``: Authlib has no levels,
step-up or ``max_age``, and it must show an error page, not redirect, until the
client and its redirect URI are trusted.
"""

from __future__ import annotations

import base64
import contextlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import unquote

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.integrations.flask_oauth2.requests import FlaskOAuth2Payload
from authlib.oauth2.rfc6749 import AuthorizationCodeMixin, OAuth2Request, TokenMixin, grants
from authlib.oauth2.rfc6749.authenticate_client import authenticate_client_secret_basic
from authlib.oauth2.rfc6749.errors import InvalidClientError, InvalidGrantError, InvalidScopeError
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7636.challenge import compare_s256_code_challenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from flask import g
from flask import request as flask_request
from joserfc import jwt
from joserfc.errors import JoseError
from sqlalchemy import bindparam, exists, select
from sqlalchemy.orm import Session

from core.db import utc_now
from idp.context import IdPContext
from idp.models import Account, ActingGrant, AuthorizationCode, RefreshToken, SSOSession
from idp.oidc import authorization_details, clients, keys, resources, tokens
from idp.oidc.clients import RegisteredClient
from idp.people import enterprises

TOKEN_PATH = "/oauth/token"
INTROSPECTION_PATH = "/oauth/introspect"
REVOCATION_PATH = "/oauth/revoke"
CONFIDENTIAL_METHODS = ["client_secret_basic", "client_secret_post", clients.PRIVATE_KEY_JWT]
ALL_METHODS = [*CONFIDENTIAL_METHODS, clients.NONE]
# Scopes that describe a person; a client's own token (client_credentials) never carries them.
USER_SCOPES = frozenset({"openid", "profile", tokens.REALNAME_SCOPE, "offline_access"})
ASSERTION_MAX_LIFETIME = 3600


# -- the request and its database session -------------------------------------------------


class _Request(OAuth2Request):
    """Authlib's Flask request, named by our public URL (the app may sit behind a TLS proxy).

    ``OAuth2Request.__init__`` is not called: all it adds is a per-request check
    that the URL is https (an ``ipaddress`` parse, ~25 us on the token path), and
    our URL is the configured issuer, not something a request can change.
    """

    def __init__(self, ctx: IdPContext):  # deliberately does not call super().__init__: see above
        self.method = flask_request.method
        self.uri = ctx.issuer + flask_request.path
        self.headers = flask_request.headers
        self._body = None
        self.payload = FlaskOAuth2Payload(flask_request)
        self.client = None
        self.auth_method = None
        self.user = None
        self.authorization_code = None
        self.refresh_token = None
        self.credential = None
        self._scope = None
        self._request = flask_request

    @property
    def args(self):
        return self._request.args

    @property
    def form(self):
        return self._request.form


_DB = "_idp_token_db"


def db() -> Session:
    """The request's database session, opened on first use (client_credentials never opens one)."""
    session = g.get(_DB)
    if session is None:
        server: HallmarkServer = g._idp_server
        session = server.ctx.sessions()
        session.begin()
        setattr(g, _DB, session)
    return session


@contextlib.contextmanager
def request_scope(server: HallmarkServer):
    """Commit what the request wrote (also on an OAuth error, e.g. a replay's revocation); roll back on a crash."""
    g._idp_server = server
    setattr(g, _DB, None)
    keys.warm(server.ctx)  # before any transaction of ours (see idp.oidc.keys._state)
    try:
        yield
    except BaseException:
        session = g.get(_DB)
        if session is not None:
            session.rollback()
            session.close()
            setattr(g, _DB, None)
        raise
    session = g.get(_DB)
    if session is not None:
        try:
            session.commit()
        finally:
            session.close()
            setattr(g, _DB, None)


def _ctx() -> IdPContext:
    return g._idp_server.ctx


def _asked_resources(request) -> tuple[str, ...]:
    """The token request's ``resource`` parameters (RFC 8707), checked for form."""
    return resources.parse(request.form.getlist(resources.PARAMETER))


def _asked_details(request, granted: tuple[dict, ...]) -> tuple[dict, ...]:
    """The token request's RFC 9396 details: what was granted, or the subset it names (``invalid_authorization_details``)."""
    return authorization_details.narrowed(_ctx(), request.form.get(authorization_details.PARAMETER), granted)


def _beside_details(asked: tuple[str, ...], details: tuple[dict, ...]) -> tuple[str, ...]:
    """The resources asked for other than the APIs of the granted details (those may always be named)."""
    of_details = authorization_details.audience(_ctx(), details)
    return tuple(uri for uri in asked if uri not in of_details)


def _active_account(account_id: str) -> Account | None:
    account = db().get(Account, account_id)
    return account if account is not None and account.status == "active" else None


# -- PKCE ---------------------------------------------------------------------------------


class S256Only(CodeChallenge):
    """RFC 7636 with S256 only ("plain" is refused when the code is requested)."""

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    CODE_CHALLENGE_METHODS = {"S256": compare_s256_code_challenge}


# -- authorization_code ------------------------------------------------------------------


@dataclass
class _Code(AuthorizationCodeMixin):
    row: AuthorizationCode

    # what S256Only reads
    @property
    def code_challenge(self):
        return self.row.code_challenge

    @property
    def code_challenge_method(self):
        return self.row.code_challenge_method

    def get_redirect_uri(self):
        return self.row.redirect_uri

    def get_scope(self):
        return self.row.scope


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ALL_METHODS

    def query_authorization_code(self, code, client: RegisteredClient):
        session = db()
        row = tokens.find_code(session, code)
        if row is None or row.client_id != client.client_id:
            return None
        if row.used_at is not None:
            # RFC 6749 §4.1.2: refuse, and revoke what the code was exchanged for.
            if row.family_id:
                tokens.revoke_family(session, row.family_id, reason="authorization code replayed", actor=f"client:{client.client_id}")
            return None
        if row.expires_at <= datetime.now(UTC):
            return None
        return _Code(row)

    def validate_token_request(self):
        super().validate_token_request()
        # Before the code is used: a refused resource leaves the code as it was.
        self.asked = _asked_resources(self.request)
        row: AuthorizationCode = self.request.authorization_code.row
        self.details = _asked_details(self.request, authorization_details.loaded(row.authorization_details))
        resources.check(_ctx(), self.request.client, _beside_details(self.asked, self.details), resources.loaded(row.resources))

    def create_token_response(self):
        client: RegisteredClient = self.request.client
        row: AuthorizationCode = self.request.authorization_code.row
        session = db()
        family = tokens.claim_code(session, row)
        if family is None:  # used by a concurrent request a moment ago
            session.refresh(row)
            if row.family_id:
                tokens.revoke_family(session, row.family_id, reason="authorization code replayed", actor=f"client:{client.client_id}")
            raise InvalidGrantError("The code has already been used.")
        # The account, the session and whether the code was issued for an enterprise: one query.
        found = session.execute(_CODE_STATE, {"account_id": row.account_id, "sid": row.sid or "", "code_hash": row.code_hash}).first()
        if found is None or found.status != "active":
            raise InvalidGrantError("The account is not active.")
        session_expires_at = None
        if row.sid:
            # As tokens.session_alive: not ended and not expired (idle time is the browser's business).
            session_expires_at = found.session_expires_at
            if session_expires_at is None or session_expires_at <= utc_now():
                raise InvalidGrantError("The login session has ended.")
        auth = tokens.code_authentication(row)
        if found.for_enterprise:
            auth = enterprises.auth_for_code(session, auth, row.code_hash, family)
            if auth is None:
                raise InvalidGrantError("The authorisation to act for the enterprise has ended.")
        audience = resources.audience(
            _ctx(), client, row.scope, self.asked, resources.loaded(row.resources), authorization_details.audience(_ctx(), self.details)
        )
        access, claims = tokens.access_token(
            _ctx(), client, row.scope, auth=auth, family_id=family, audience=audience, authorization_details=self.details
        )
        refresh = None
        if client.check_grant_type("refresh_token"):
            refresh, _ = tokens.new_refresh_token(
                session,
                client,
                auth,
                scope=row.scope,
                family_id=family,
                session_expires_at=session_expires_at,
                resources=row.resources,
                authorization_details=row.authorization_details,  # all that was granted, whatever this token asked for
            )
        id_token = None
        if "openid" in row.scope.split():
            extra = tokens.requested_claims(session, row.account_id, row.scope, row.claims)
            id_token = tokens.id_token(
                _ctx(), client, auth, nonce=row.nonce, access_token_value=access, extra=extra, alg=tokens.id_token_alg(client)
            )
        return 200, tokens.token_response(access, claims, refresh=refresh, id_token_value=id_token), self.TOKEN_RESPONSE_HEADER


_CODE_STATE = select(
    Account.status,
    select(SSOSession.expires_at)
    .where(SSOSession.sid == bindparam("sid"), SSOSession.ended_at.is_(None))
    .scalar_subquery()
    .label("session_expires_at"),
    exists().where(ActingGrant.code_hash == bindparam("code_hash")).label("for_enterprise"),
).where(Account.id == bindparam("account_id"))


# -- refresh_token ----------------------------------------------------------------------


@dataclass
class _Refresh(TokenMixin):
    row: RefreshToken

    def check_client(self, client):
        return self.row.client_id == client.client_id

    def get_scope(self):
        return self.row.scope

    def get_expires_in(self):
        return max(0, int(self.row.expires_at.timestamp() - time.time()))

    def is_expired(self):
        return self.row.expires_at <= datetime.now(UTC)

    def is_revoked(self):
        return tokens.refresh_inactive_reason(db(), self.row) is not None

    def get_user(self):
        return db().get(Account, self.row.account_id)

    def get_client(self):
        return clients.get(_ctx(), self.row.client_id, db())


class RefreshTokenGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ALL_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token):
        session = db()
        row = tokens.find_refresh_token(session, refresh_token)
        if row is None:
            return None
        client = self.request.client
        if row.rotated_at is not None and row.client_id == client.client_id:
            tokens.revoke_family(session, row.family_id, reason="rotated refresh token replayed", actor=f"client:{client.client_id}")
            return None
        if tokens.refresh_inactive_reason(session, row) is not None:
            return None
        return _Refresh(row)

    def authenticate_user(self, refresh_token: _Refresh):
        return _active_account(refresh_token.row.account_id)

    def validate_token_request(self):
        super().validate_token_request()
        # Before the refresh token is rotated: a refused resource leaves it usable.
        self.asked = _asked_resources(self.request)
        row: RefreshToken = self.request.refresh_token.row
        self.details = _asked_details(self.request, authorization_details.loaded(row.authorization_details))
        resources.check(_ctx(), self.request.client, _beside_details(self.asked, self.details), resources.loaded(row.resources))

    def create_token_response(self):
        client: RegisteredClient = self.request.client
        row: RefreshToken = self.request.refresh_token.row
        session = db()
        if not tokens.claim_refresh_token(session, row):  # a concurrent request rotated it first
            tokens.revoke_family(session, row.family_id, reason="rotated refresh token replayed", actor=f"client:{client.client_id}")
            raise InvalidGrantError("The refresh token has already been used.")
        if self.authenticate_user(self.request.refresh_token) is None:
            raise InvalidGrantError("The account is not active.")
        sso = tokens.session_alive(session, row.sid) if row.sid else None
        scope = self.request.payload.scope or row.scope
        auth = enterprises.auth_for_family(session, tokens.refresh_authentication(row), row.family_id)
        if auth is None:
            raise InvalidGrantError("The authorisation to act for the enterprise has ended.")
        audience = resources.audience(
            _ctx(), client, scope, self.asked, resources.loaded(row.resources), authorization_details.audience(_ctx(), self.details)
        )
        access, claims = tokens.access_token(
            _ctx(), client, scope, auth=auth, family_id=row.family_id, audience=audience, authorization_details=self.details
        )
        refresh, _ = tokens.new_refresh_token(
            session,
            client,
            auth,
            scope=row.scope,
            family_id=row.family_id,
            session_expires_at=sso.expires_at if sso is not None else None,
            resources=row.resources,
            authorization_details=row.authorization_details,  # a refresh never gives more, nor takes away for later
        )
        id_token = None
        if "openid" in scope.split():
            id_token = tokens.id_token(_ctx(), client, auth, nonce=None, access_token_value=access, alg=tokens.id_token_alg(client))
        return 200, tokens.token_response(access, claims, refresh=refresh, id_token_value=id_token), self.TOKEN_RESPONSE_HEADER

    def revoke_old_credential(self, refresh_token):  # done atomically in create_token_response
        pass


# -- client_credentials --------------------------------------------------------------------


def client_credentials_scope(client: RegisteredClient, requested: str | None) -> str | None:
    """The scope of a client's own token, or None when it may not have what it asked for."""
    if requested is not None:
        wanted = requested.split()
        if not wanted or not client.allows_scopes(wanted) or USER_SCOPES & set(wanted):
            return None
        return " ".join(dict.fromkeys(wanted))
    own = [s for s in client.scopes if s not in USER_SCOPES]
    return " ".join(own) if own else None


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = CONFIDENTIAL_METHODS

    def validate_requested_scope(self):
        if client_credentials_scope(self.request.client, self.request.payload.scope) is None:
            raise InvalidScopeError("The client may not ask for this scope.")
        self.asked = _asked_resources(self.request)
        resources.check(_ctx(), self.request.client, self.asked)

    def create_token_response(self):
        client: RegisteredClient = self.request.client
        scope = client_credentials_scope(client, self.request.payload.scope)
        access, claims = tokens.access_token(_ctx(), client, scope, audience=resources.audience(_ctx(), client, scope, self.asked))
        return 200, tokens.token_response(access, claims), self.TOKEN_RESPONSE_HEADER


def client_credentials_fast(ctx: IdPContext, form, authorization: str | None) -> dict | None:
    """The token of a client_credentials request that is plainly fine, or None to let Authlib handle it.

    The benchmarked hot path (approval systems ask for a token per call): the same
    checks as ``ClientCredentialsGrant`` with a secret (the same functions), without
    Authlib's per-request machinery. Anything unusual, every error included, goes
    the Authlib way, so errors have one source.
    """
    if form.get("grant_type") != "client_credentials" or "client_assertion" in form:
        return None
    keys.warm(ctx)
    if authorization:
        kind, _, credentials = authorization.partition(" ")
        if kind.lower() != "basic" or "client_secret" in form:
            return None
        try:
            client_id, sep, secret = base64.b64decode(credentials, validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        if not sep:
            return None
        client_id, secret, method = unquote(client_id), unquote(secret), "client_secret_basic"
    else:
        client_id, secret, method = form.get("client_id"), form.get("client_secret"), "client_secret_post"
    if not client_id or not secret:
        return None
    client = clients.get(ctx, client_id)
    if client is None or not client.check_endpoint_auth_method(method, "token") or not client.check_client_secret(secret):
        return None
    if not client.check_grant_type("client_credentials"):
        return None
    scope = client_credentials_scope(client, form.get("scope"))
    if scope is None:
        return None
    try:
        asked = resources.parse([form["resource"]] if "resource" in form else [])
        audience = resources.audience(ctx, client, scope, asked)
    except resources.InvalidTarget:
        return None
    access, claims = tokens.access_token(ctx, client, scope, audience=audience)
    return tokens.token_response(access, claims)


# -- private_key_jwt -------------------------------------------------------------------------


class PrivateKeyJWT(JWTBearerClientAssertion):
    """RFC 7523 client authentication with a JWT signed by the client's registered key."""

    CLIENT_AUTH_METHOD = clients.PRIVATE_KEY_JWT

    def __init__(self, ctx: IdPContext):
        super().__init__(validate_jti=True, leeway=tokens.LEEWAY)
        self.ctx = ctx

    def get_audiences(self):
        return [self.ctx.issuer, self.ctx.url(TOKEN_PATH), self.ctx.url(INTROSPECTION_PATH), self.ctx.url(REVOCATION_PATH)]

    def resolve_client_public_key(self, client: RegisteredClient):
        return client.public_keys()

    def process_assertion_claims(self, assertion, resolve_key):
        try:
            token = jwt.decode(assertion, resolve_key, algorithms=clients.ASSERTION_ALGORITHMS)
        except (JoseError, ValueError):
            raise InvalidClientError(description="The client assertion is not valid.") from None
        self.verify_claims(token.claims)
        return token.claims

    def extract_assertion(self, assertion: str):
        try:
            return super().extract_assertion(assertion)
        except RecursionError:  # a payload nested too deeply for json.loads (Authlib catches only ValueError)
            raise InvalidClientError(description="Invalid JWT payload.") from None

    def validate_jti(self, claims, jti):
        exp = claims.get("exp")
        if not isinstance(jti, str) or not 8 <= len(jti) <= 200 or not isinstance(exp, int):
            return False
        if exp - time.time() > ASSERTION_MAX_LIFETIME:
            raise InvalidClientError(description="The client assertion lives too long (at most one hour).")
        return tokens.consume_assertion_jti(db(), claims["sub"], jti, datetime.fromtimestamp(exp + tokens.LEEWAY, UTC))


def _readable_basic(authorization: str | None) -> bool:
    """False for HTTP Basic credentials that are not base64 of UTF-8 text (Authlib's decoding raises on them)."""
    parts = (authorization or "").split(None, 1)
    if len(parts) != 2 or parts[0].lower() != "basic":
        return True  # not Basic: not this method's business
    try:
        base64.b64decode(parts[1]).decode("utf-8")  # as leniently as Authlib decodes them
    except ValueError:  # not ASCII, not base64 (binascii.Error) or not UTF-8 (UnicodeDecodeError)
        return False
    return True


def client_secret_basic(query_client, request):
    """Authlib's ``client_secret_basic``; credentials it cannot read fail like a wrong secret (401 ``invalid_client``)."""
    if not _readable_basic(request.headers.get("Authorization")):
        return None
    return authenticate_client_secret_basic(query_client, request)


# -- introspection and revocation -------------------------------------------------------------


@dataclass
class _Access(TokenMixin):
    claims: dict

    def check_client(self, client):
        return self.claims.get("client_id") == client.client_id

    def get_scope(self):
        return self.claims.get("scope", "")

    def get_expires_in(self):
        return max(0, int(self.claims["exp"] - time.time()))

    def is_expired(self):
        return self.claims["exp"] + tokens.LEEWAY < time.time()

    def is_revoked(self):
        return tokens.inactive_reason(_ctx(), db(), self.claims) is not None

    def get_user(self):
        return db().get(Account, self.claims["sub"])

    def get_client(self):
        return clients.get(_ctx(), self.claims.get("client_id"), db())


def _find_token(token: str, hint: str | None):
    """Our access token (a JWT with a valid signature) or refresh token, or None."""
    if not isinstance(token, str) or not token or len(token) > tokens.MAX_TOKEN_CHARS:
        return None
    if hint != "refresh_token" and token.count(".") == 2:
        try:
            return _Access(tokens.verify_access_token(_ctx(), token))
        except tokens.InvalidToken:
            return None
    if hint != "access_token" or token.count(".") != 2:
        row = tokens.find_refresh_token(db(), token)
        return _Refresh(row) if row is not None else None
    return None


class Introspection(IntrospectionEndpoint):
    """RFC 7662, for confidential clients: a token of its own, or any token with ``hallmark:introspect``."""

    CLIENT_AUTH_METHODS = CONFIDENTIAL_METHODS
    PERMISSION_SCOPE = "hallmark:introspect"

    def query_token(self, token_string, token_type_hint):
        return _find_token(token_string, token_type_hint)

    def check_permission(self, token, client: RegisteredClient, request):
        return token.check_client(client) or self.PERMISSION_SCOPE in client.scopes

    def introspect_token(self, token):
        if isinstance(token, _Access):
            return tokens.introspection(token.claims)
        return tokens.refresh_introspection(_ctx(), token.row)


class Revocation(RevocationEndpoint):
    """RFC 7009: a refresh token revokes its family; an access token is listed by its ``jti``."""

    CLIENT_AUTH_METHODS = ALL_METHODS

    def query_token(self, token_string, token_type_hint):
        return _find_token(token_string, token_type_hint)

    def revoke_token(self, token, request):
        session = db()
        client_id = request.client.client_id
        if isinstance(token, _Access):
            tokens.revoke_access_token(session, token.claims)  # only this token; its family lives on
        else:
            tokens.revoke_family(session, token.row.family_id, reason="revoked by the client", actor=f"client:{client_id}")
        tokens.purge_expired_revocations(session)


# -- the server --------------------------------------------------------------------------------


class HallmarkServer(AuthorizationServer):
    def __init__(self, ctx: IdPContext):
        super().__init__()
        self.ctx = ctx
        self._query_client = lambda client_id: clients.get(ctx, client_id, g.get(_DB))
        self._save_token = lambda token, request: None  # our grants store what they must themselves
        self.register_client_auth_method("client_secret_basic", client_secret_basic)
        self.register_client_auth_method(clients.PRIVATE_KEY_JWT, PrivateKeyJWT(ctx))
        self.register_grant(AuthorizationCodeGrant, [S256Only(required=True)])
        self.register_grant(RefreshTokenGrant)
        self.register_grant(ClientCredentialsGrant)
        self.register_endpoint(Introspection)
        self.register_endpoint(Revocation)

    def create_oauth2_request(self, request):
        return _Request(self.ctx)

    def send_signal(self, name, *args, **kwargs):
        pass  # no Flask signals: nothing listens, and they cost time on every token

    def token_response(self):
        with request_scope(self):
            return self.create_token_response()

    def endpoint_response(self, name: str):
        with request_scope(self):
            return self.create_endpoint_response(name)
