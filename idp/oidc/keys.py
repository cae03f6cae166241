"""The provider's JWS signing keys: made in the HSM, published as JWKS, rotated.

ES256 is the default; an RS256 key is kept beside it for relying parties that
cannot verify ECDSA. The ``kid`` is the key's RFC 7638 thumbprint.

Rotation publishes first and signs later: a new key appears in the JWKS at once
but signs only after :data:`PROPAGATION`, so every process and relying party has
seen it by then; the key it replaces keeps signing until that moment and stays
published until the last token it signed has expired (``publish_until``).
``immediately=True`` skips the wait (a suspected compromise, or a single node).

Tokens are compact JWS made by :mod:`core.jws` with the HSM key object (the HSM
signs; the private key never has to look like a key joserfc can export).
Each process caches the active keys and the JWKS for :data:`CACHE_SECONDS`.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.hazmat.primitives import hashes
from joserfc.jwk import KeySet
from sqlalchemy import select
from sqlalchemy.orm import Session

from core import audit, jws
from core.db import utc_now
from hsm import KeyAlgorithm
from idp.context import IdPContext
from idp.models import SigningKey

ALGORITHMS = {"ES256": KeyAlgorithm.EC_P256, "RS256": KeyAlgorithm.RSA_2048}
DEFAULT_ALG = "ES256"
CACHE_SECONDS = 10.0
PROPAGATION = timedelta(seconds=60)
# Signed tokens live at most this long (access and ID tokens; refresh tokens are opaque).
LONGEST_SIGNED_TOKEN = timedelta(minutes=10)
_STATE = "idp.keys"
_SIGNERS = "idp.keys.signers"
_lock = threading.Lock()


@dataclass(frozen=True)
class ActiveKey:
    kid: str
    alg: str
    key_uri: str


@dataclass(frozen=True)
class _State:
    loaded_at: float
    active: dict[str, ActiveKey]
    jwks: dict
    keyset: KeySet


# -- keys in the HSM and the database ----------------------------------------------------


def create_key(ctx: IdPContext, db: Session, alg: str, *, actor: str, now: datetime | None = None) -> SigningKey:
    """A new key pair in the HSM and its row (published at once; see :func:`active_rows`)."""
    if alg not in ALGORITHMS:
        raise ValueError(f"unsupported signing algorithm {alg!r}; choose {', '.join(ALGORITHMS)}")
    now = now or utc_now()
    label = f"idp-{alg.lower()}-{now:%Y%m%d%H%M%S}-{secrets.token_hex(3)}"
    info = ctx.keys.create_key(label, ALGORITHMS[alg])
    jwk = jws.public_jwk(info.public_key, alg)
    row = SigningKey(kid=jwk["kid"], alg=alg, key_uri=info.uri, public_jwk=json.dumps(jwk, separators=(",", ":")), created_at=now)
    db.add(row)
    db.flush()
    audit.record(db, actor=actor, action="idp.signing_key.created", target=row.kid, details={"alg": alg, "key_uri": info.uri})
    return row


def _signing_candidates(rows: list[SigningKey], alg: str, now: datetime) -> list[SigningKey]:
    return [r for r in rows if r.alg == alg and (r.retired_at is None or r.retired_at > now)]


def choose_active(rows: list[SigningKey], alg: str, now: datetime) -> SigningKey | None:
    """The key that signs now: the newest one published for at least PROPAGATION, else the longest published."""
    # Same second: a key already scheduled to retire counts as the older one.
    candidates = sorted(_signing_candidates(rows, alg, now), key=lambda r: (r.created_at, r.retired_at is None, r.kid))
    if not candidates:
        return None
    settled = [r for r in candidates if r.created_at + PROPAGATION <= now]
    return settled[-1] if settled else candidates[0]


def published(rows: list[SigningKey], now: datetime) -> list[SigningKey]:
    return [r for r in rows if r.publish_until is None or r.publish_until > now]


def ensure_keys(ctx: IdPContext, db: Session, *, actor: str = "system:idp", now: datetime | None = None) -> list[SigningKey]:
    """Create a key for every algorithm that has none able to sign. Returns the keys created."""
    now = now or utc_now()
    rows = list(db.scalars(select(SigningKey)))
    made = []
    for alg in ALGORITHMS:
        if not _signing_candidates(rows, alg, now):
            made.append(create_key(ctx, db, alg, actor=actor, now=now))
    return made


@dataclass(frozen=True)
class Rotation:
    alg: str
    new_kid: str
    retired: tuple[str, ...]
    signs_from: datetime
    old_published_until: datetime | None


def rotate(ctx: IdPContext, db: Session, alg: str, *, actor: str, immediately: bool = False, now: datetime | None = None) -> Rotation:
    """Make a new key for ``alg`` and retire the ones it replaces (they stay in JWKS until their tokens expire)."""
    now = now or utc_now()
    old = _signing_candidates(list(db.scalars(select(SigningKey).where(SigningKey.alg == alg))), alg, now)
    new = create_key(ctx, db, alg, actor=actor, now=now)
    stops = now if immediately or not old else now + PROPAGATION
    until = stops + LONGEST_SIGNED_TOKEN + timedelta(seconds=CACHE_SECONDS * 2)
    for row in old:
        row.retired_at = stops
        row.publish_until = until
    db.flush()
    audit.record(
        db,
        actor=actor,
        action="idp.signing_key.rotated",
        target=new.kid,
        details={
            "alg": alg,
            "retired": [r.kid for r in old],
            "signs_from": stops.isoformat(),
            "old_published_until": until.isoformat(),
            "immediately": immediately,
        },
    )
    forget(ctx)
    return Rotation(alg, new.kid, tuple(r.kid for r in old), stops, until if old else None)


# -- per-process state ------------------------------------------------------------------


def forget(ctx: IdPContext) -> None:
    ctx.cache.pop(_STATE, None)


def _load(ctx: IdPContext) -> _State:
    now = utc_now()
    with ctx.sessions() as db, db.begin():
        rows = list(db.scalars(select(SigningKey)))
        if any(not _signing_candidates(rows, alg, now) for alg in ALGORITHMS):
            ensure_keys(ctx, db, now=now)
            rows = list(db.scalars(select(SigningKey)))
    active = {}
    for alg in ALGORITHMS:
        row = choose_active(rows, alg, now)
        if row is not None:
            active[alg] = ActiveKey(row.kid, row.alg, row.key_uri)
    jwks = {"keys": [json.loads(r.public_jwk) for r in sorted(published(rows, now), key=lambda r: (r.alg, r.created_at), reverse=True)]}
    return _State(time.monotonic(), active, jwks, KeySet.import_key_set(jwks))


def _state(ctx: IdPContext) -> _State:
    """The cached state, loaded if there is none. It is never refreshed here but in :func:`warm`,
    which runs before a request opens its own transaction: on SQLite a second
    transaction inside a request's write transaction would wait for it forever."""
    state = ctx.cache.get(_STATE)
    if state is None:
        with _lock:
            state = ctx.cache.get(_STATE)
            if state is None:
                state = ctx.cache[_STATE] = _load(ctx)
    return state


def warm(ctx: IdPContext) -> None:
    """Reload the keys if the cached ones are older than CACHE_SECONDS (call outside any transaction)."""
    state = ctx.cache.get(_STATE)
    if state is not None and time.monotonic() - state.loaded_at < CACHE_SECONDS:
        return
    with _lock:
        state = ctx.cache.get(_STATE)
        if state is None or time.monotonic() - state.loaded_at >= CACHE_SECONDS:
            ctx.cache[_STATE] = _load(ctx)


def jwks_dict(ctx: IdPContext) -> dict:
    """The public keys relying parties and our own APIs verify with (cheap: cached per process)."""
    warm(ctx)
    return _state(ctx).jwks


def keyset(ctx: IdPContext) -> KeySet:
    return _state(ctx).keyset


def active(ctx: IdPContext, alg: str = DEFAULT_ALG) -> ActiveKey:
    key = _state(ctx).active.get(alg)
    if key is None:
        raise ValueError(f"no {alg} signing key")
    return key


def _signer(ctx: IdPContext, key: ActiveKey):
    signers: dict = ctx.cache.setdefault(_SIGNERS, {})
    signer = signers.get(key.kid)
    if signer is None:
        signer = signers[key.kid] = ctx.keys.signer(key.key_uri)
    return signer


# -- signing -----------------------------------------------------------------------------

_HEADERS: dict[tuple[str, str, str], bytes] = {}  # encoded once: per token it costs more than the HSM call's Python


def sign(ctx: IdPContext, claims: dict, *, typ: str = "JWT", alg: str = DEFAULT_ALG) -> str:
    """A compact JWS over ``claims``, signed in the HSM with the active ``alg`` key."""
    key = active(ctx, alg)
    header = _HEADERS.get((key.kid, alg, typ))
    if header is None:
        header = _HEADERS[(key.kid, alg, typ)] = jws.encode_header({"alg": alg, "kid": key.kid, "typ": typ})
    return jws.sign_encoded(header, claims, _signer(ctx, key), alg)


def half_hash(value: str, alg: str = DEFAULT_ALG) -> str:
    """``at_hash``: the left half of the SHA-256 of the token's ASCII, base64url (both our algs use SHA-256)."""
    digest = hashes.Hash(hashes.SHA256())
    digest.update(value.encode("ascii"))
    return jws.b64url(digest.finalize()[:16])


def all_rows(db: Session) -> list[SigningKey]:
    return list(db.scalars(select(SigningKey).order_by(SigningKey.alg, SigningKey.created_at)))
