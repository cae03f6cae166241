"""Relying parties: halls (authorization code) and approval systems (client credentials).

A client secret is shown once, when it is made, and stored only as a keyed hash
(HMAC-SHA256 under the instance's secret key), compared in constant time.

Client lookups are on the hot path of the token endpoint, so each process keeps
what it read for :data:`CACHE_SECONDS`; a change made in this process takes
effect here at once, one made elsewhere (another worker, the CLI) within that time.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from core import audit, events
from core.db import utc_now
from core.problems import Problem
from idp import levels
from idp.context import IdPContext
from idp.models import (
    AuthorizationCode,
    Client,
    Consent,
    LogoutDelivery,
    RefreshToken,
    SessionClient,
)

CONFIDENTIAL, PUBLIC = "confidential", "public"
CLIENT_TYPES = (CONFIDENTIAL, PUBLIC)
SECRET_METHODS = ("client_secret_basic", "client_secret_post")
PRIVATE_KEY_JWT = "private_key_jwt"
NONE = "none"
AUTH_METHODS = (*SECRET_METHODS, PRIVATE_KEY_JWT, NONE)
DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"  # RFC 8628, for kiosks and TVs (idp.oidc.device)
GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials", DEVICE_CODE)
# The grants through which a person signs in (a refresh token and the default OpenID scopes come with them).
USER_GRANTS = ("authorization_code", DEVICE_CODE)
# A scope token (RFC 6749 §3.3) as we allow it: no quotes or backslashes, short.
_SCOPE_TOKEN = re.compile(r"^[A-Za-z0-9:._\-/]{1,64}$")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._\-]{3,64}$")
ASSERTION_ALGORITHMS = ("ES256", "ES384", "RS256", "PS256")
ID_TOKEN_ALGS = ("ES256", "RS256")  # the provider's own signing keys (idp.oidc.keys.ALGORITHMS)

CACHE_SECONDS = 5.0
_CACHE = "clients"
_CACHE_LIMIT = 10_000  # unknown client ids are cached too; never let that grow without bound


class ClientError(Problem):
    """A client registration is not acceptable; the message says why."""

    def __init__(self, detail: str):
        super().__init__(400, "Bad Request", detail)


@dataclass(frozen=True)
class RegisteredClient:
    """A client as the protocol code sees it (Authlib's ``ClientMixin`` methods)."""

    client_id: str
    name: str
    client_type: str
    auth_method: str
    secret_hash: str | None = field(repr=False)
    jwks: dict | None
    redirect_uris: tuple[str, ...]
    grant_types: frozenset[str]
    scopes: tuple[str, ...]
    min_acr: int
    first_party: bool
    backchannel_logout_uri: str | None
    frontchannel_logout_uri: str | None
    post_logout_redirect_uris: tuple[str, ...]
    secret_key: bytes = field(repr=False)
    id_token_signed_response_alg: str = "ES256"
    # RFC 8707 resources it may ask for; None: this instance's own APIs serving one of its scopes (idp.oidc.resources)
    resources: tuple[str, ...] | None = None

    @property
    def is_public(self) -> bool:
        return self.client_type == PUBLIC

    # -- authlib.oauth2.rfc6749.ClientMixin -----------------------------------------------

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return self.redirect_uris[0] if len(self.redirect_uris) == 1 else None

    def get_allowed_scope(self, scope: str | None) -> str:
        if not scope:
            return " ".join(self.scopes)
        return " ".join(s for s in scope.split() if s in self.scopes)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        if redirect_uri in self.redirect_uris:  # exact string match
            return True
        # RFC 8252 §7.3: a native (public) client's loopback IP redirect may use any port.
        return self.is_public and _loopback_without_port(redirect_uri) in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        if not self.secret_hash or not isinstance(client_secret, str):
            return False
        return hmac.compare_digest(secret_hash(self.secret_key, self.client_id, client_secret), self.secret_hash)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.is_public:
            # Public clients have nothing to authenticate with; they may use the token
            # endpoint (with PKCE, or a device code), ask for a device code (RFC 8628)
            # and revoke their own tokens, never introspect.
            return method == NONE and endpoint in ("token", "revocation", "device_authorization")
        return method == self.auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and "authorization_code" in self.grant_types

    def check_grant_type(self, grant_type: str) -> bool:
        if grant_type == "client_credentials" and self.is_public:
            return False
        return grant_type in self.grant_types

    # -- ours -----------------------------------------------------------------------------

    def public_keys(self) -> KeySet:
        """The client's own keys, for private_key_jwt assertions."""
        return KeySet.import_key_set(self.jwks or {"keys": []})

    def allows_scopes(self, scopes: list[str]) -> bool:
        return set(scopes) <= set(self.scopes)


def secret_hash(key: bytes, client_id: str, secret: str) -> str:
    message = b"hallmark-client-secret-v1\x00" + client_id.encode() + b"\x00" + secret.encode("utf-8", "surrogatepass")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


# -- lookups ------------------------------------------------------------------------------


def _loaded(ctx: IdPContext, row: Client) -> RegisteredClient:
    return RegisteredClient(
        client_id=row.client_id,
        name=row.name,
        client_type=row.client_type,
        auth_method=row.token_endpoint_auth_method,
        secret_hash=row.secret_hash,
        jwks=json.loads(row.jwks) if row.jwks else None,
        redirect_uris=tuple(json.loads(row.redirect_uris or "[]")),
        grant_types=frozenset(row.grant_types.split()),
        scopes=tuple(row.scope.split()),
        min_acr=row.min_acr,
        first_party=bool(row.first_party),
        backchannel_logout_uri=row.backchannel_logout_uri,
        frontchannel_logout_uri=row.frontchannel_logout_uri,
        post_logout_redirect_uris=tuple(json.loads(row.post_logout_redirect_uris or "[]")),
        secret_key=ctx.secret_key,
        id_token_signed_response_alg=row.id_token_signed_response_alg,
        resources=tuple(row.resources.split()) if row.resources is not None else None,
    )


def get(ctx: IdPContext, client_id: str | None, db: Session | None = None) -> RegisteredClient | None:
    """The client, or None. Cached per process for :data:`CACHE_SECONDS`."""
    if not isinstance(client_id, str) or not _CLIENT_ID.match(client_id):
        return None
    cache: dict = ctx.cache.setdefault(_CACHE, {})
    hit = cache.get(client_id)
    now = time.monotonic()
    if hit is not None and now - hit[0] < CACHE_SECONDS:
        return hit[1]
    if db is None:
        with ctx.sessions() as own:
            row = own.get(Client, client_id)
            client = _loaded(ctx, row) if row is not None else None
    else:
        row = db.get(Client, client_id)
        client = _loaded(ctx, row) if row is not None else None
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[client_id] = (now, client)
    return client


def forget(ctx: IdPContext, client_id: str | None = None) -> None:
    """Drop cached lookups (one client, or all) after a change."""
    cache: dict = ctx.cache.setdefault(_CACHE, {})
    if client_id is None:
        cache.clear()
    else:
        cache.pop(client_id, None)


def all_clients(db: Session) -> list[Client]:
    return list(db.scalars(select(Client).order_by(Client.created_at, Client.client_id)))


# -- validation ---------------------------------------------------------------------------


def validate_redirect_uri(uri: str, *, what: str = "redirect URI") -> str:
    """Absolute; https, or http only to this machine (127.0.0.1, ::1, localhost); no fragment."""
    if not isinstance(uri, str) or not uri or len(uri) > 400:
        raise ClientError(f"the {what} must be 1 to 400 characters")
    if any(c.isspace() or ord(c) < 0x21 or c in '"<>\\^`{|}' for c in uri):
        raise ClientError(f"the {what} {uri!r} contains characters a URI may not hold")
    try:
        parts = urlsplit(uri)
        host = parts.hostname
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ClientError(f"the {what} {uri!r} is not a valid URI") from None
    if parts.scheme not in ("https", "http") or not host:
        raise ClientError(f"the {what} {uri!r} must be an absolute https:// URI")
    if "#" in uri:
        raise ClientError(f"the {what} {uri!r} must not contain a fragment")
    if parts.username is not None or parts.password is not None:
        raise ClientError(f"the {what} {uri!r} must not contain user information")
    if parts.scheme == "http" and not _is_loopback(host):
        raise ClientError(f"the {what} {uri!r} uses plain http; only https, or http to 127.0.0.1/localhost, is allowed")
    return uri


MAX_RESOURCES = 20


def resource_uri_problem(uri: object) -> str | None:
    """Why ``uri`` cannot name a resource (RFC 8707 §2: an absolute URI without a fragment), or None when it can."""
    if not isinstance(uri, str) or not uri or len(uri) > 400:
        return "a resource must be an absolute URI of 1 to 400 characters"
    if any(c.isspace() or ord(c) < 0x21 or ord(c) > 0x7E or c in '"<>\\^`{|}' for c in uri):
        return "a resource URI may hold only printable ASCII characters a URI allows"
    if "#" in uri:
        return "a resource URI must not contain a fragment"
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return "the resource is not a valid URI"
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "a resource must be an absolute http(s) URI"
    if parts.username is not None or parts.password is not None:
        return "a resource URI must not contain user information"
    return None


def validate_resources(resources: list[str]) -> list[str]:
    """Registered resources: each an absolute URI without a fragment, no repeats, at most :data:`MAX_RESOURCES`."""
    out: list[str] = []
    for uri in resources:
        problem = resource_uri_problem(uri)
        if problem:
            raise ClientError(f"{problem}: {uri!r}")
        if uri not in out:
            out.append(uri)
    if len(out) > MAX_RESOURCES:
        raise ClientError(f"a client may have at most {MAX_RESOURCES} resources")
    return out


def _loopback_without_port(uri: str) -> str | None:
    """``http://127.0.0.1:PORT/path`` (or ``[::1]``) without its port; None for anything else."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except (ValueError, TypeError):
        return None
    if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "::1") or port is None or parts.username or parts.password:
        return None
    host = "[::1]" if parts.hostname == "::1" else parts.hostname
    return parts._replace(netloc=host).geturl()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _validate_scopes(scopes: list[str]) -> list[str]:
    out: list[str] = []
    for scope in scopes:
        for token in scope.split():
            if not _SCOPE_TOKEN.match(token):
                raise ClientError(f"the scope {token!r} is not acceptable (letters, digits and : . _ - / only, at most 64)")
            if token not in out:
                out.append(token)
    if len(" ".join(out)) > 500:
        raise ClientError("the scopes together must fit in 500 characters")
    return out


def _validate_jwks(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        raise ClientError("the client's JWKS is not JSON") from None
    if isinstance(data, dict) and "keys" not in data and "kty" in data:
        data = {"keys": [data]}
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list) or not data["keys"]:
        raise ClientError("the client's JWKS must be a JSON object with a non-empty 'keys' list")
    for key in data["keys"]:
        if not isinstance(key, dict):
            raise ClientError("every entry of the JWKS must be a JSON object")
        if any(name in key for name in ("d", "p", "q", "dp", "dq", "qi", "k")):
            raise ClientError("the JWKS holds private or symmetric key material; register public keys only")
        if key.get("kty") not in ("EC", "RSA"):
            raise ClientError("only EC and RSA public keys are accepted for private_key_jwt")
    try:
        KeySet.import_key_set(data)
    except (JoseError, ValueError, TypeError) as exc:
        raise ClientError(f"the client's JWKS cannot be read: {exc}") from None
    return json.dumps(data, separators=(",", ":"))


@dataclass(frozen=True)
class NewClient:
    client_id: str
    client_secret: str | None  # shown once, never stored


def add(
    ctx: IdPContext,
    db: Session,
    *,
    name: str,
    client_type: str,
    redirect_uris: list[str] = (),
    grant_types: list[str] = (),
    scopes: list[str] = (),
    min_acr: int = 1,
    first_party: bool = False,
    auth_method: str | None = None,
    jwks: str | None = None,
    backchannel_logout_uri: str | None = None,
    frontchannel_logout_uri: str | None = None,
    post_logout_redirect_uris: list[str] = (),
    client_id: str | None = None,
    id_token_alg: str = "ES256",
    resources: list[str] | None = None,
    actor: str,
) -> NewClient:
    """Register a client. Raises :class:`ClientError` with a clear reason when it is not acceptable."""
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise ClientError("the client name must be 1 to 100 characters")
    if client_type not in CLIENT_TYPES:
        raise ClientError(f"the client type must be one of {', '.join(CLIENT_TYPES)}")
    if client_id is None:
        client_id = "c-" + secrets.token_urlsafe(12).replace("_", "x").replace("-", "y")
    elif not _CLIENT_ID.match(client_id):
        raise ClientError("a client id must be 3 to 64 letters, digits, '.', '_' or '-'")
    grants = list(dict.fromkeys(grant_types or (["authorization_code", "refresh_token"] if redirect_uris else ["client_credentials"])))
    for grant in grants:
        if grant not in GRANT_TYPES:
            raise ClientError(f"the grant type {grant!r} is not supported; choose from {', '.join(GRANT_TYPES)}")
    if client_type == PUBLIC:
        if auth_method not in (None, NONE):
            raise ClientError("a public client cannot authenticate; its token endpoint method is 'none' (with PKCE)")
        auth_method = NONE
        if "client_credentials" in grants:
            raise ClientError("a public client cannot use client_credentials")
    else:
        auth_method = auth_method or "client_secret_basic"
        if auth_method not in (*SECRET_METHODS, PRIVATE_KEY_JWT):
            raise ClientError(f"a confidential client authenticates with one of {', '.join((*SECRET_METHODS, PRIVATE_KEY_JWT))}")
    if auth_method == PRIVATE_KEY_JWT and not jwks:
        raise ClientError("private_key_jwt needs the client's public keys (--jwks FILE)")
    if jwks and auth_method != PRIVATE_KEY_JWT:
        raise ClientError("a JWKS is only used with private_key_jwt")
    uris = [validate_redirect_uri(u) for u in dict.fromkeys(redirect_uris)]
    if "authorization_code" in grants and not uris:
        raise ClientError("the authorization_code grant needs at least one --redirect-uri")
    if uris and "authorization_code" not in grants:
        raise ClientError("redirect URIs are only used with the authorization_code grant")
    if "refresh_token" in grants and not set(USER_GRANTS) & set(grants):
        raise ClientError("refresh_token is only issued together with authorization_code or the device code grant")
    if len(json.dumps(uris)) > 4000:
        raise ClientError("too many redirect URIs")
    scope_list = _validate_scopes(list(scopes) or (["openid", "profile"] if set(USER_GRANTS) & set(grants) else []))
    if not scope_list:
        raise ClientError("a client needs at least one --scope")
    if min_acr not in levels.LEVELS:
        raise ClientError(f"the minimum level must be one of {', '.join(map(str, levels.LEVELS))}")
    backchannel = validate_redirect_uri(backchannel_logout_uri, what="back-channel logout URI") if backchannel_logout_uri else None
    frontchannel = validate_redirect_uri(frontchannel_logout_uri, what="front-channel logout URI") if frontchannel_logout_uri else None
    post_logout = [validate_redirect_uri(u, what="post-logout redirect URI") for u in dict.fromkeys(post_logout_redirect_uris)]
    jwks_text = _validate_jwks(jwks)
    if id_token_alg not in ID_TOKEN_ALGS:
        raise ClientError(f"the ID token algorithm must be one of {', '.join(ID_TOKEN_ALGS)}")
    resource_list = validate_resources(list(resources)) if resources else None
    if db.get(Client, client_id) is not None:
        raise ClientError(f"a client with id {client_id!r} already exists")

    secret = secrets.token_urlsafe(32) if auth_method in SECRET_METHODS else None
    db.add(
        Client(
            client_id=client_id,
            name=name,
            client_type=client_type,
            secret_hash=secret_hash(ctx.secret_key, client_id, secret) if secret else None,
            token_endpoint_auth_method=auth_method,
            jwks=jwks_text,
            redirect_uris=json.dumps(uris),
            grant_types=" ".join(grants),
            scope=" ".join(scope_list),
            min_acr=min_acr,
            first_party=first_party,
            backchannel_logout_uri=backchannel,
            frontchannel_logout_uri=frontchannel,
            post_logout_redirect_uris=json.dumps(post_logout),
            created_at=utc_now(),
            id_token_signed_response_alg=id_token_alg,
            resources=" ".join(resource_list) if resource_list else None,
        )
    )
    db.flush()
    audit.record(
        db,
        actor=actor,
        action="idp.client.added",
        target=client_id,
        details={
            "name": name,
            "type": client_type,
            "auth_method": auth_method,
            "grants": grants,
            "scope": scope_list,
            "redirect_uris": uris,
            "min_acr": min_acr,
            "first_party": first_party,
            "backchannel_logout_uri": backchannel,
            "frontchannel_logout_uri": frontchannel,
            "resources": resource_list,
        },
    )
    forget(ctx, client_id)
    return NewClient(client_id, secret)


def change(
    ctx: IdPContext,
    db: Session,
    client_id: str,
    *,
    name: str,
    redirect_uris: list[str],
    scopes: list[str],
    first_party: bool,
    backchannel_logout_uri: str | None,
    actor: str,
) -> Client:
    """Change a client's name, redirect URIs, scopes, first-party flag and back-channel logout URI, checked as :func:`add` does."""
    row = db.get(Client, client_id)
    if row is None:
        raise Problem(404, "Not Found", f"no client {client_id!r}")
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise ClientError("the client name must be 1 to 100 characters")
    grants = row.grant_types.split()
    uris = [validate_redirect_uri(u) for u in dict.fromkeys(redirect_uris)]
    if "authorization_code" in grants and not uris:
        raise ClientError("the authorization_code grant needs at least one --redirect-uri")
    if uris and "authorization_code" not in grants:
        raise ClientError("redirect URIs are only used with the authorization_code grant")
    if len(json.dumps(uris)) > 4000:
        raise ClientError("too many redirect URIs")
    scope_list = _validate_scopes(list(scopes))
    if not scope_list:
        raise ClientError("a client needs at least one --scope")
    backchannel = validate_redirect_uri(backchannel_logout_uri, what="back-channel logout URI") if backchannel_logout_uri else None
    before = describe(row)
    row.name, row.redirect_uris, row.scope = name, json.dumps(uris), " ".join(scope_list)
    row.first_party, row.backchannel_logout_uri = bool(first_party), backchannel
    after = describe(row)
    changed = {k: {"before": before[k], "after": after[k]} for k in after if before[k] != after[k]}
    if changed:
        db.flush()
        audit.record(db, actor=actor, action="idp.client.changed", target=client_id, details=changed)
    forget(ctx, client_id)
    return row


def set_resources(ctx: IdPContext, db: Session, client_id: str, resources: list[str] | None, *, actor: str) -> list[str] | None:
    """Replace the resources a client may ask for; None brings back the default (this instance's APIs for its scopes).

    Tokens already issued keep their audience until they expire; refresh tokens
    granted for a resource no longer listed cannot ask for it again.
    """
    row = db.get(Client, client_id)
    if row is None:
        raise Problem(404, "Not Found", f"no client {client_id!r}")
    resource_list = validate_resources(list(resources)) if resources else None
    row.resources = " ".join(resource_list) if resource_list else None
    audit.record(db, actor=actor, action="idp.client.resources_set", target=client_id, details={"resources": resource_list})
    forget(ctx, client_id)
    return resource_list


def new_secret(ctx: IdPContext, db: Session, client_id: str, *, actor: str) -> str:
    """Replace a client's secret; the old one stops working at once here, elsewhere within the cache time."""
    row = db.get(Client, client_id)
    if row is None:
        raise Problem(404, "Not Found", f"no client {client_id!r}")
    if row.token_endpoint_auth_method not in SECRET_METHODS:
        raise ClientError(f"client {client_id!r} does not authenticate with a secret")
    secret = secrets.token_urlsafe(32)
    row.secret_hash = secret_hash(ctx.secret_key, client_id, secret)
    audit.record(db, actor=actor, action="idp.client.secret_replaced", target=client_id)
    forget(ctx, client_id)
    return secret


def remove(ctx: IdPContext, db: Session, client_id: str, *, actor: str) -> None:
    """Remove a client with its codes, refresh tokens, consents and session links.

    Access tokens already issued are JWTs; introspection and userinfo refuse them
    as soon as the client is gone, and they expire within their short lifetime.
    """
    row = db.get(Client, client_id)
    if row is None:
        raise Problem(404, "Not Found", f"no client {client_id!r}")
    now = utc_now()
    families = set(db.scalars(select(RefreshToken.family_id).where(RefreshToken.client_id == client_id)))
    # idp.oidc.tokens revokes the families' access tokens (it subscribes; it also looks clients up).
    events.of(db).emit(events.CLIENT_REMOVED, required=True, session=db, client_id=client_id, families=families, now=now)
    db.execute(update(RefreshToken).where(RefreshToken.client_id == client_id, RefreshToken.revoked_at.is_(None)).values(revoked_at=now))
    for model in (AuthorizationCode, RefreshToken, Consent, SessionClient, LogoutDelivery):
        db.execute(delete(model).where(model.client_id == client_id))
    db.delete(row)
    db.flush()
    audit.record(
        db, actor=actor, action="idp.client.removed", target=client_id, details={"name": row.name, "families_revoked": len(families)}
    )
    forget(ctx, client_id)


def describe(row: Client) -> dict:
    """A client for listings: never the secret or its hash."""
    return {
        "client_id": row.client_id,
        "name": row.name,
        "type": row.client_type,
        "auth_method": row.token_endpoint_auth_method,
        "grant_types": row.grant_types.split(),
        "scope": row.scope.split(),
        "redirect_uris": json.loads(row.redirect_uris or "[]"),
        "min_acr": row.min_acr,
        "first_party": bool(row.first_party),
        "backchannel_logout_uri": row.backchannel_logout_uri,
        "frontchannel_logout_uri": row.frontchannel_logout_uri,
        "post_logout_redirect_uris": json.loads(row.post_logout_redirect_uris or "[]"),
        "id_token_signed_response_alg": row.id_token_signed_response_alg,
        "resources": row.resources.split() if row.resources is not None else None,
        "created_at": row.created_at.isoformat(),
    }
