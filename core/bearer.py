"""Bearer-token checks for JSON APIs (RFC 6750, tokens as RFC 9068 JWTs), audience included.

Every JSON API is an OAuth protected resource (RFC 8707) named by an absolute URI:
the public URL followed by the API's root (``https://id.example/api/ca``). An API
declares itself once, as an :class:`ApiResource`, and guards its views with
:meth:`ApiResource.require`; a token is accepted only when its ``aud`` names that
API. The identity provider issues tokens for these resources (``resource``
parameter of the token request), so one minted for the signing API is refused by
the CA API and the other way round.

The verification keys and the public URL are handed in at start-up (the
composition root passes the identity provider's JWKS), so ``core`` never imports
``idp``; the same list of :class:`ApiResource` tells the identity provider which
resources this instance serves (:func:`catalogue`).

A well-signed, unexpired token may still have lost its grant: revoked (RFC 7009),
its client removed, its session ended. The issuer hands in ``inactive`` as well, a
function that asks its database why a token no longer counts; it is asked on every
call, never cached, so a revocation made through any worker or node stops the token
at the next request everywhere.
"""

from __future__ import annotations

import functools
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from flask import current_app, g, has_request_context, request
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from core.problems import Problem

EXTENSION = "hallmark.bearer"
ALGORITHMS = ("ES256", "ES384", "RS256", "PS256")
MAX_TOKEN_BYTES = 8192
VERIFIED_CACHE_SIZE = 4096  # tokens whose checked claims a verifier keeps (an approval system reuses one for minutes)


def resource_uri(public_url: str, root: str) -> str:
    """The identifier of the API served under ``root`` at ``public_url``: no trailing slash, no query, no fragment."""
    return public_url.rstrip("/") + "/" + root.strip("/")


@dataclass(frozen=True)
class ApiResource:
    """A JSON API as an OAuth protected resource: where it lives and the scopes it checks."""

    root: str  # e.g. "/api/ca"
    scopes: tuple[str, ...]  # every scope its views ask for; the identity provider uses them to choose a token's default audience

    def uri(self, public_url: str) -> str:
        return resource_uri(public_url, self.root)

    def require(self, *scopes: str):
        """Decorate a view of this API: see :func:`require_scope`."""
        return require_scope(*scopes, resource=self)


def catalogue(public_url: str, resources: Iterable[ApiResource]) -> dict[str, frozenset[str]]:
    """This instance's APIs as the identity provider sees them: resource URI -> the scopes it serves."""
    out: dict[str, set[str]] = {}
    for resource in resources:
        out.setdefault(resource.uri(public_url), set()).update(resource.scopes)
    return {uri: frozenset(scopes) for uri, scopes in out.items()}


def audiences(claims: dict) -> list[str]:
    """The ``aud`` claim as a list (RFC 7519 allows one string or an array)."""
    aud = claims.get("aud")
    if isinstance(aud, str):
        return [aud]
    if isinstance(aud, list):
        return [a for a in aud if isinstance(a, str)]
    return []


class BearerVerifier:
    """Checks access tokens of one issuer; ``public_url`` (default: the issuer) names this instance's APIs."""

    def __init__(
        self,
        jwks: dict | Callable[[], dict],
        issuer: str,
        public_url: str | None = None,
        leeway: int = 30,
        inactive: Callable[[dict], str | None] | None = None,
    ):
        self._jwks = jwks
        self.issuer = issuer
        self.public_url = public_url or issuer
        self.leeway = leeway
        # Why the issuer no longer honours a well-signed token (revoked, client removed, session ended), or None.
        self.inactive = inactive
        # Checked claims by SHA-256 of the token: signature, typ, iss, sub and exp depend only on the token and the key
        # set, so a token seen before is not verified again until it expires or the key set changes. Whether the
        # issuer still honours it (revocation) is not a property of the token: ``inactive`` is asked on every call.
        self._verified: OrderedDict[bytes, tuple[dict, int, KeySet]] = OrderedDict()
        self._verified_lock = threading.Lock()

    def keyset(self) -> KeySet:
        jwks = self._jwks() if callable(self._jwks) else self._jwks
        # Importing a key set costs ~135 us; the provider hands back the same dict until its keys change.
        if jwks is not getattr(self, "_last_jwks", None):
            with self._verified_lock:
                self._verified.clear()  # checked against the old keys: a key taken out must stop its tokens at once
            self._keyset, self._last_jwks = KeySet.import_key_set(jwks), jwks
        return self._keyset

    def verify(self, token: str, audience: str | None = None) -> dict:
        """The token's claims, or a 401 problem saying what is wrong with it.

        ``audience`` is the resource URI the token must name in its ``aud``.
        """
        if len(token) > MAX_TOKEN_BYTES:
            raise _invalid("the access token is too long")
        keys = self.keyset()  # a changed key set empties the cache before it is read
        key = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        with self._verified_lock:
            hit = self._verified.get(key)
            if hit is not None:
                self._verified.move_to_end(key)
        # Still unexpired (as JWTClaimsRegistry counts it, leeway included), and checked with the keys in force now.
        if hit is not None and time.time() <= hit[1] + self.leeway and hit[2] is keys:
            claims = dict(hit[0])  # a copy: a view that changes its claims must not change the cached ones
        else:
            claims = self._checked_claims(token, keys)
            with self._verified_lock:
                self._verified[key] = (claims, int(claims["exp"]), keys)
                while len(self._verified) > VERIFIED_CACHE_SIZE:
                    self._verified.popitem(last=False)
            claims = dict(claims)
        if audience is not None and audience not in audiences(claims):
            raise _invalid(f"the access token is not meant for this API: its audience does not include {audience}")
        return claims

    def check_active(self, claims: dict) -> None:
        """A 401 problem when the issuer no longer honours the token (asked of its database on every call)."""
        if self.inactive is None:
            return
        reason = self.inactive(claims)
        if reason:
            raise _invalid(f"the access token is no longer valid: {reason}", code="token_inactive")

    def _checked_claims(self, token: str, keys: KeySet) -> dict:
        try:
            decoded = jwt.decode(token, keys, algorithms=ALGORITHMS)
        except JoseError as exc:
            raise _invalid(f"the access token is not valid: {exc.error}") from None
        except ValueError:
            raise _invalid("the access token is not a JWT") from None
        if decoded.header.get("typ", "").lower() not in ("at+jwt", "application/at+jwt"):
            raise _invalid("the token is not an access token (typ must be at+jwt)")
        claims = decoded.claims
        options = {"iss": {"essential": True, "value": self.issuer}, "exp": {"essential": True}, "sub": {"essential": True}}
        try:
            jwt.JWTClaimsRegistry(now=int(time.time()), leeway=self.leeway, **options).validate(claims)
        except JoseError as exc:
            raise _invalid(f"the access token is not valid: {exc.error} {exc.description or ''}".strip()) from None
        return claims


def _invalid(detail: str, **extensions) -> Problem:
    quoted = detail.replace("\\", "\\\\").replace('"', "'")
    return Problem(
        401,
        "Unauthorized",
        detail,
        headers={"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{quoted}"'},
        **extensions,
    )


_ACTIVE_JTI = "hallmark_bearer_active_jti"


def checked_active(claims: dict) -> bool:
    """Whether this request's bearer check already found ``claims`` honoured by the issuer (saves asking twice)."""
    jti = claims.get("jti")
    return bool(jti) and has_request_context() and g.get(_ACTIVE_JTI) == jti


def install(app, verifier: BearerVerifier) -> None:
    app.extensions[EXTENSION] = verifier


def require_scope(*scopes: str, resource: ApiResource):
    """Decorate a view: a valid bearer token for ``resource`` (in its ``aud``) holding every one of ``scopes``.

    The claims are available to the view as ``flask.g.token``.
    """
    needed = set(scopes)
    undeclared = needed - set(resource.scopes)
    if undeclared:
        raise ValueError(f"{resource.root} does not declare the scope(s) {' '.join(sorted(undeclared))}")

    def decorate(view):
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            header = request.headers.get("Authorization", "")
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Problem(401, "Unauthorized", "this API needs a bearer access token", headers={"WWW-Authenticate": "Bearer"})
            verifier: BearerVerifier = current_app.extensions[EXTENSION]
            claims = verifier.verify(token.strip(), audience=resource.uri(verifier.public_url))
            verifier.check_active(claims)
            if verifier.inactive is not None:
                setattr(g, _ACTIVE_JTI, claims.get("jti"))
            granted = set(str(claims.get("scope", "")).split())
            missing = needed - granted
            if missing:
                scope_text = " ".join(sorted(needed))
                raise Problem(
                    403,
                    "Forbidden",
                    f"the access token lacks the scope(s) {' '.join(sorted(missing))}",
                    headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope_text}"'},
                )
            g.token = claims
            return view(*args, **kwargs)

        return wrapped

    return decorate
