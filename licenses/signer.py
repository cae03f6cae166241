"""The licence library's signing key: use receipts and QR payloads are compact JWS (ES256) made with it.

One EC P-256 key in the HSM, labelled :data:`LABEL`, found or created the first
time a process needs it and cached in the context. Its ``kid`` is the RFC 7638
thumbprint of the public key, so every process and every node names it the same
way without a database row. Verifiers check tokens offline with the JWKS served
at :data:`JWKS_PATH` (``/api/licences/jwks``) and any JOSE library.

Two processes starting at once may both find no key. The key manager's check for
an existing label is not atomic across processes, so one of them gets
``KeyExists`` (it then uses the other's key) or, rarely, two keys with the label
exist. A process that looks after that signs with the one of lowest key id and
publishes both; one that looked earlier keeps its own key until it restarts, and
a token with a kid the cache does not know makes :func:`verify` look again (at
most every :data:`RELOAD_SECONDS`), so tokens signed by either key verify.

Verification checks, in order: the token's shape, the signature against our
published keys, the ``typ`` header, then ``exp``. A token that fails the
signature is :class:`Forged` even when it has also expired, and a genuine but
expired one is :class:`Expired`: a counter clerk must be able to tell "this was
never ours" from "ask the holder for a fresh code".
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jws as jose
from joserfc.errors import BadSignatureError, InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from core import jws
from core.problems import Problem
from hsm import HSMError, KeyAlgorithm, KeyNotFound
from hsm.errors import KeyExists
from hsm.uri import PKCS11URI
from licenses.context import LicencesContext

LABEL = "hallmark-licences-signing"
ALG = "ES256"
JWKS_PATH = "/api/licences/jwks"  # where licenses/api.py publishes jwks(ctx) for offline verifiers
MAX_TOKEN_CHARS = 8192
LEEWAY_SECONDS = 30  # clock difference tolerated between the signer and a verifier's clock
RELOAD_SECONDS = 10.0  # an unknown kid makes us look in the token again, at most this often
_CACHE = "licenses.signer"
_lock = threading.Lock()


class TokenRefused(ValueError):
    """A token this library will not accept; ``code`` says why (for problem+json and pages)."""

    code = "bad_token"
    status = 422

    def problem(self) -> Problem:
        return Problem(self.status, "Unprocessable Content", str(self), code=self.code)


class Malformed(TokenRefused):
    code = "malformed_token"


class Forged(TokenRefused):
    """Not signed by this library's key, or changed after it was signed."""

    code = "forged_token"


class WrongType(TokenRefused):
    """Genuine, but another kind of token (a receipt shown as a QR payload, say)."""

    code = "wrong_token_type"


class Expired(TokenRefused):
    """Genuine, but past its ``exp``."""

    code = "expired_token"

    def __init__(self, message: str, expired_at: int):
        super().__init__(message)
        self.expired_at = expired_at


@dataclass
class _Key:
    kid: str
    private_key: object  # the HSM key object (hsm.signers): sign() runs in the token
    jwks: dict
    keyset: KeySet
    loaded_at: float = field(default_factory=time.monotonic)
    headers: dict[str, bytes] = field(default_factory=dict)  # typ -> encoded protected header


def _by_label(keys) -> list:
    """Every key in the token labelled LABEL, lowest key id first (the one to sign with)."""
    found = [k for k in keys.keys() if k.label == LABEL]  # noqa: SIM118 - a key manager, not a dict
    return sorted(found, key=lambda k: PKCS11URI.parse(k.uri).id or b"")


def _load(keys) -> _Key:
    uri = str(PKCS11URI(path={"object": LABEL}))
    try:
        private_key = keys.signer(uri)
        publish = [private_key.public_key()]
    except KeyNotFound:
        try:
            keys.create_key(LABEL, KeyAlgorithm.EC_P256)
        except KeyExists:
            pass  # another process made it a moment ago: use that one
        private_key, publish = _load_all(keys)
    except HSMError:
        # Most likely two keys with the label (see the module's note); otherwise _load_all raises again.
        private_key, publish = _load_all(keys)
    public = private_key.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp256r1":
        raise HSMError(f"the key labelled {LABEL!r} is not an EC P-256 key; the licence library signs with ES256")
    jwk_list = [jws.public_jwk(public, ALG) for public in publish]
    jwks_dict = {"keys": jwk_list}
    return _Key(kid=jwk_list[0]["kid"], private_key=private_key, jwks=jwks_dict, keyset=KeySet.import_key_set(jwks_dict))


def _load_all(keys):
    found = _by_label(keys)
    if not found:
        raise KeyNotFound(str(PKCS11URI(path={"object": LABEL})))
    return keys.signer(found[0].uri), [k.public_key for k in found]


def _key(ctx: LicencesContext) -> _Key:
    key = ctx._cache.get(_CACHE)
    if key is None:
        with _lock:
            key = ctx._cache.get(_CACHE)
            if key is None:
                key = ctx._cache[_CACHE] = _load(ctx.keys)
    return key


def forget(ctx: LicencesContext) -> None:
    """Drop the cached key (it is looked up again when next needed)."""
    ctx._cache.pop(_CACHE, None)


def kid(ctx: LicencesContext) -> str:
    return _key(ctx).kid


def jwks(ctx: LicencesContext) -> dict:
    """The public key(s) receipts and QR payloads verify with, as a JWK Set (served at :data:`JWKS_PATH`)."""
    return _key(ctx).jwks


def sign(ctx: LicencesContext, claims: dict, *, typ: str) -> str:
    """A compact JWS (ES256, ``kid`` the key's thumbprint, ``typ`` as given) over the JSON ``claims``."""
    key = _key(ctx)
    header = key.headers.get(typ)
    if header is None:
        header = key.headers[typ] = jws.encode_header({"alg": ALG, "kid": key.kid, "typ": typ})
    return jws.sign_encoded(header, claims, key.private_key, ALG)


def _same_typ(found, wanted: str) -> bool:
    # RFC 7515 4.1.9: media types compare case-insensitively and "application/" may be left out.
    def norm(value: str) -> str:
        value = value.lower()
        return value.removeprefix("application/")

    return isinstance(found, str) and norm(found) == norm(wanted)


def verify(ctx: LicencesContext, token: str, *, typ: str, now: datetime | None = None) -> dict:
    """The claims of a token this library signed, or a :class:`TokenRefused` saying why not.

    ``exp`` is checked when the token has one (receipts may have none: they are records).
    """
    token = (token or "").strip()
    if not token or len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
        raise Malformed("this is not a signed licence token (a compact JWS has three parts separated by dots)")
    key = _key(ctx)
    try:
        try:
            decoded = jose.deserialize_compact(token, key.keyset, algorithms=[ALG])
        except InvalidKeyIdError:
            # Perhaps a key another process made in a start-up race (see the module's note): look again,
            # but not for every forged token that names some kid.
            if time.monotonic() - key.loaded_at < RELOAD_SECONDS:
                raise
            forget(ctx)
            key = _key(ctx)
            decoded = jose.deserialize_compact(token, key.keyset, algorithms=[ALG])
    except (BadSignatureError, InvalidKeyIdError):
        raise Forged("the signature does not match: this was not issued by this licence library, or it was changed") from None
    except JoseError as exc:
        if exc.error == "unsupported_algorithm":
            raise Forged(f"the token is not signed with {ALG}, the only algorithm this licence library uses") from None
        raise Malformed(f"this is not a signed licence token ({exc.error})") from None
    except ValueError:
        raise Malformed("this is not a signed licence token (its parts are not base64url JSON)") from None
    if not _same_typ(decoded.headers().get("typ"), typ):
        raise WrongType(f"this is a genuine token of another kind ({decoded.headers().get('typ')!r}), not {typ!r}")
    try:
        claims = json.loads(decoded.payload)
    except ValueError:
        raise Malformed("the token's payload is not JSON") from None
    if not isinstance(claims, dict):
        raise Malformed("the token's payload is not a JSON object")
    exp = claims.get("exp")
    if exp is not None:
        if not isinstance(exp, int) or isinstance(exp, bool):
            raise Malformed("the token's exp is not a whole number of seconds")
        current = now.timestamp() if now is not None else time.time()
        if current > exp + LEEWAY_SECONDS:
            moment = datetime.fromtimestamp(exp, UTC).isoformat(timespec="seconds")
            raise Expired(f"this token is genuine but expired at {moment}", exp)
    return claims
