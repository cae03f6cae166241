"""W3C Bitstring Status List v1.0 for licences: per issuer, one list per purpose, a random index per licence.

Every issuer has numbered lists; list ``n`` exists once per purpose, ``revocation``
(final: revoked, withdrawn, cancelled, superseded) and ``suspension`` (reversible:
suspended, then resumed). A licence gets one random index (:func:`allocate`) and
uses it in both purposes' lists of its list number, so one QR claim pair names
both entries. Lists have ``status_list_size`` bits (at least 131,072, the spec's
herd-privacy minimum); a new list is started once a list is
:data:`FILL_THRESHOLD` full, so a free index is found in a few random draws and an
index says nothing about when a licence was issued.

Bit order is the spec's: index 0 is the most significant bit of the first byte.
A bit is set in the transaction of the state change (the ``LICENCE_CHANGED``
handler :func:`on_licence_changed`), under a row lock on the list (``SELECT ...
FOR UPDATE`` on PostgreSQL; SQLite serialises writers), and the list's version
goes up by one, which the served credential's ETag names
(``licenses.statuslist_api``).
"""

from __future__ import annotations

import base64
import gzip
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.db import utc_now
from licenses import lifecycle, signer
from licenses.context import LicencesContext
from licenses.models import Licence, StatusList
from licenses.settings import LicencesSettings

REVOCATION, SUSPENSION = "revocation", "suspension"
PURPOSES = (REVOCATION, SUSPENSION)
FILL_THRESHOLD = 0.5  # share of a list's indexes in use before the next list is started
DEFAULT_SIZE = LicencesSettings.status_list_size  # when a caller without settings (an import) starts a list
MAX_DRAWS = 64  # random draws for a free index before giving up on a list (never reached below the threshold)
TYP = "vc+jwt"  # VC-JOSE-COSE: a credential secured as a JWT; served as application/vc+jwt
MEDIA_TYPE = "application/vc+jwt"
PATH = "/licences/status/{issuer}/{number}/{purpose}"
VALIDITY = timedelta(days=1)  # how long a served status list credential is valid (it is re-signed on each fetch)


def url(ctx: LicencesContext, issuer_code: str, number: int, purpose: str) -> str:
    """Where the status list credential of ``issuer_code``'s list ``number`` for ``purpose`` is served."""
    return ctx.url(PATH.format(issuer=issuer_code, number=number, purpose=purpose))


# -- bits ----------------------------------------------------------------------------------------


def bit(bits: bytes, index: int) -> bool:
    return bool(bits[index // 8] & (0x80 >> (index % 8)))


def with_bit(bits: bytes, index: int, value: bool) -> bytes:
    out = bytearray(bits)
    if value:
        out[index // 8] |= 0x80 >> (index % 8)
    else:
        out[index // 8] &= ~(0x80 >> (index % 8)) & 0xFF
    return bytes(out)


def encode(bits: bytes) -> str:
    """The spec's ``encodedList``: multibase base64url (prefix ``u``, no padding) of the GZIP-compressed bitstring."""
    # mtime=0: the same bits always give the same text
    return "u" + base64.urlsafe_b64encode(gzip.compress(bits, mtime=0)).rstrip(b"=").decode("ascii")


def decode(encoded: str) -> bytes:
    body = encoded.removeprefix("u")
    return gzip.decompress(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


# -- allocation ----------------------------------------------------------------------------------


def _create(db: Session, issuer_code: str, number: int, size: int) -> None:
    """Both purposes' rows of list ``number`` (all bits clear); another process making them at once is fine."""
    now = utc_now()
    try:
        with db.begin_nested():
            for purpose in PURPOSES:
                db.add(
                    StatusList(
                        issuer_code=issuer_code,
                        list_number=number,
                        purpose=purpose,
                        size=size,
                        bits=bytes(size // 8),
                        version=1,
                        updated_at=now,
                    )
                )
    except IntegrityError:
        pass  # made by a concurrent allocation a moment ago


def _used(db: Session, issuer_code: str, number: int) -> int:
    return (
        db.scalar(select(func.count()).select_from(Licence).where(Licence.issuer_code == issuer_code, Licence.status_list == number)) or 0
    )


def _current(db: Session, issuer_code: str, size: int, wanted: int = 1) -> tuple[int, int, int]:
    """(list number, its size, indexes in use) of the list new entries go to, starting one when the last is full enough."""
    row = db.execute(
        select(StatusList.list_number, StatusList.size)
        .where(StatusList.issuer_code == issuer_code, StatusList.purpose == REVOCATION)
        .order_by(StatusList.list_number.desc())
        .limit(1)
    ).first()
    if row is not None:
        used = _used(db, issuer_code, row.list_number)
        if used + wanted <= row.size * FILL_THRESHOLD:
            return row.list_number, row.size, used
    number = 1 if row is None else row.list_number + 1
    _create(db, issuer_code, number, size)
    return number, size, 0


def _taken(db: Session, issuer_code: str, number: int, index: int) -> bool:
    found = db.scalar(
        select(Licence.identifier)
        .where(Licence.issuer_code == issuer_code, Licence.status_list == number, Licence.status_index == index)
        .limit(1)
    )
    return found is not None


def allocate(db: Session, issuer_code: str, *, size: int | None = None) -> tuple[int, int]:
    """(list number, index) for a new licence of ``issuer_code``: a random index no licence of that list uses.

    The entry is taken by the licence row that stores it (the unique constraint on
    issuer, list and index decides a race, which a fresh random draw makes rare).
    """
    size = size or DEFAULT_SIZE
    while True:
        number, list_size, _used_now = _current(db, issuer_code, size)
        for _ in range(MAX_DRAWS):
            index = secrets.randbelow(list_size)
            if not _taken(db, issuer_code, number, index):
                return number, index
        # Unreachable below the fill threshold (2^-64); a list filled by hand: start the next one.
        _create(db, issuer_code, number + 1, size)


def allocate_many(db: Session, issuer_code: str, n: int, *, size: int | None = None) -> list[tuple[int, int]]:
    """``n`` distinct (list number, index) entries for new licences of ``issuer_code`` (a bulk import's batch).

    Random draws, of which only the drawn indexes are looked up (through the unique index on issuer, list and
    index), never the list's tens of thousands of used ones: below the fill threshold at most half the draws are
    taken, so a round or two finds them all. A batch that would pass the threshold continues in the next list.
    """
    size = size or DEFAULT_SIZE
    entries: list[tuple[int, int]] = []
    while len(entries) < n:
        number, list_size, used_now = _current(db, issuer_code, size, wanted=1)
        room = max(1, int(list_size * FILL_THRESHOLD) - used_now)
        take = min(n - len(entries), room)
        entries.extend((number, index) for index in _free_indexes(db, issuer_code, number, list_size, take))
        if len(entries) < n:
            _create(db, issuer_code, number + 1, size)  # this list has had its share
    return entries


_IN_CHUNK = 900  # values per IN (...): below every database's limit on bound parameters


def _free_indexes(db: Session, issuer_code: str, number: int, list_size: int, take: int) -> list[int]:
    """``take`` distinct random indexes of list ``number`` that no licence uses, in draw order (the n-th row of a batch
    must not get the n-th smallest index)."""
    drawn: list[int] = []
    tried: set[int] = set()
    while len(drawn) < take:
        candidates: list[int] = []
        want = take - len(drawn)
        while len(candidates) < want and len(tried) < list_size:
            index = secrets.randbelow(list_size)
            if index not in tried:
                tried.add(index)
                candidates.append(index)
        if not candidates:
            raise RuntimeError(f"status list {number} of {issuer_code} has no free index left")  # filled by hand
        taken: set[int] = set()
        for start in range(0, len(candidates), _IN_CHUNK):
            chunk = candidates[start : start + _IN_CHUNK]
            taken.update(
                db.scalars(
                    select(Licence.status_index).where(
                        Licence.issuer_code == issuer_code, Licence.status_list == number, Licence.status_index.in_(chunk)
                    )
                )
            )
        drawn.extend(index for index in candidates if index not in taken)
    return drawn[:take]


def reserve(ctx: LicencesContext, issuer_code: str) -> tuple[int, int]:
    """:func:`allocate` in a transaction of its own: issuing needs the entry for the file's QR code before it stores the licence."""
    with ctx.sessions() as db, db.begin():
        return allocate(db, issuer_code, size=ctx.settings.status_list_size)


# -- changes -------------------------------------------------------------------------------------


def _set(db: Session, issuer_code: str, number: int, purpose: str, index: int, value: bool) -> None:
    row = db.scalars(
        select(StatusList)
        .where(StatusList.issuer_code == issuer_code, StatusList.list_number == number, StatusList.purpose == purpose)
        .with_for_update()
    ).first()
    if row is None or index >= row.size or bit(row.bits, index) == value:
        return
    row.bits = with_bit(row.bits, index, value)
    row.version += 1
    row.updated_at = utc_now()


def on_licence_changed(session: Session, licence: Licence, previous: str, action: str, actor: str, **_) -> None:
    """Keep the licence's bits in step with its state, in the transaction of the change."""
    if licence.status_list is None or licence.status_index is None:
        return  # a licence from before status lists (or an import not yet given entries)
    entry = (licence.issuer_code, licence.status_list)
    if licence.state in lifecycle.FINAL:
        _set(session, *entry, REVOCATION, licence.status_index, True)
    elif licence.state == lifecycle.SUSPENDED:
        _set(session, *entry, SUSPENSION, licence.status_index, True)
    elif licence.state == lifecycle.VALID and previous == lifecycle.SUSPENDED:
        _set(session, *entry, SUSPENSION, licence.status_index, False)


def subscribe(hooks) -> None:
    hooks.subscribe(lifecycle.LICENCE_CHANGED, on_licence_changed)


# -- the credential ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    token: str  # the VC-JWT
    etag: str
    signed_at: float


def etag(row: StatusList) -> str:
    # Weak: each signing has its own validFrom and signature, but the same version says the same bits.
    return f'W/"{row.version}"'


def find(db: Session, issuer_code: str, number: int, purpose: str) -> StatusList | None:
    if purpose not in PURPOSES:
        return None
    return db.get(StatusList, (issuer_code, number, purpose))


def credential(ctx: LicencesContext, row: StatusList, *, now: datetime | None = None) -> dict:
    """The status list credential (VC Data Model 2.0, a ``BitstringStatusListCredential``) of one list."""
    now = (now or utc_now()).replace(microsecond=0)
    address = url(ctx, row.issuer_code, row.list_number, row.purpose)
    until = now + VALIDITY
    return {
        "@context": ["https://www.w3.org/ns/credentials/v2"],
        "id": address,
        "type": ["VerifiableCredential", "BitstringStatusListCredential"],
        "issuer": ctx.public_url,  # the library signs every issuer's lists with its own key
        "validFrom": now.isoformat().replace("+00:00", "Z"),
        "validUntil": until.isoformat().replace("+00:00", "Z"),
        "credentialSubject": {
            "id": f"{address}#list",
            "type": "BitstringStatusList",
            "statusPurpose": row.purpose,
            "encodedList": encode(row.bits),
            "ttl": ctx.settings.status_list_ttl_seconds * 1000,
        },
        # JWT claims beside the credential (VC-JOSE-COSE allows them): when it was signed and until when it holds.
        "iat": int(now.timestamp()),
        "exp": int(until.timestamp()),
    }


def signed(ctx: LicencesContext, row: StatusList) -> Served:
    """The signed credential of ``row``: signed again when the list changed or the last signing is a ``ttl`` old."""
    key = ("licenses.statuslist", row.issuer_code, row.list_number, row.purpose)
    cached = ctx._cache.get(key)
    if cached is not None and cached.etag == etag(row) and time.monotonic() - cached.signed_at < ctx.settings.status_list_ttl_seconds:
        return cached
    served = ctx._cache[key] = Served(token=signer.sign(ctx, credential(ctx, row), typ=TYP), etag=etag(row), signed_at=time.monotonic())
    return served
