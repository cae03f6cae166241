"""Bearer-token checks for JSON APIs (RFC 6750, tokens as RFC 9068 JWTs).

The verification keys are handed in at start-up (the composition root passes the
identity provider's JWKS), so ``core`` never imports ``idp``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

from flask import current_app, g, request
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from core.problems import Problem

EXTENSION = "hallmark.bearer"
ALGORITHMS = ("ES256", "ES384", "RS256", "PS256")
MAX_TOKEN_BYTES = 8192


class BearerVerifier:
    def __init__(self, jwks: dict | Callable[[], dict], issuer: str, audience: str | None = None, leeway: int = 30):
        self._jwks = jwks
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway

    def keyset(self) -> KeySet:
        jwks = self._jwks() if callable(self._jwks) else self._jwks
        # Importing a key set costs ~135 us; the provider hands back the same dict until its keys change.
        if jwks is not getattr(self, "_last_jwks", None):
            self._keyset, self._last_jwks = KeySet.import_key_set(jwks), jwks
        return self._keyset

    def verify(self, token: str) -> dict:
        """The token's claims, or a 401 problem saying what is wrong with it."""
        if len(token) > MAX_TOKEN_BYTES:
            raise _invalid("the access token is too long")
        try:
            decoded = jwt.decode(token, self.keyset(), algorithms=ALGORITHMS)
        except JoseError as exc:
            raise _invalid(f"the access token is not valid: {exc.error}") from None
        except ValueError:
            raise _invalid("the access token is not a JWT") from None
        if decoded.header.get("typ", "").lower() not in ("at+jwt", "application/at+jwt"):
            raise _invalid("the token is not an access token (typ must be at+jwt)")
        claims = decoded.claims
        options = {"iss": {"essential": True, "value": self.issuer}, "exp": {"essential": True}, "sub": {"essential": True}}
        if self.audience:
            options["aud"] = {"essential": True, "value": self.audience}
        try:
            jwt.JWTClaimsRegistry(now=int(time.time()), leeway=self.leeway, **options).validate(claims)
        except JoseError as exc:
            raise _invalid(f"the access token is not valid: {exc.error} {exc.description or ''}".strip()) from None
        return claims


def _invalid(detail: str) -> Problem:
    return Problem(
        401,
        "Unauthorized",
        detail,
        headers={"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{detail}"'},
    )


def install(app, verifier: BearerVerifier) -> None:
    app.extensions[EXTENSION] = verifier


def require_scope(*scopes: str):
    """Decorate a view: a valid bearer token holding every one of ``scopes``.

    The claims are available to the view as ``flask.g.token``.
    """
    needed = set(scopes)

    def decorate(view):
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            header = request.headers.get("Authorization", "")
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Problem(401, "Unauthorized", "this API needs a bearer access token", headers={"WWW-Authenticate": "Bearer"})
            verifier: BearerVerifier = current_app.extensions[EXTENSION]
            claims = verifier.verify(token.strip())
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
