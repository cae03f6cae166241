"""Privacy at rest: sensitive face fields and holder codes, encrypted with data keys an HSM key wraps.

Envelope encryption. A data key is 32 random bytes used in this process with
AES-256-GCM (``cryptography``); it is stored only wrapped, by the HSM's AES key
labelled ``hallmark-licences-data`` (AES-GCM inside the token, see
``hsm.KeyManager.encrypt``), in ``licenses_data_keys``. So the HSM is asked once
per data key and process (to wrap a new one or unwrap a stored one), never per
licence; unwrapped keys are cached by id in ``ctx._cache``.

Every sealed value is ``version (1) | data key id (4, big-endian) | nonce (12) |
ciphertext and tag``. The header is authenticated with the caller's associated
data, which names what the value is and which licence it belongs to, so a value
moved to another row or another column does not open. Because the header names
its data key, a holder cipher opens without a column of its own; face and holder
of one licence use the same (current) data key anyway.

The newest data key is the current one; a process keeps using it. Random 96-bit
nonces allow about 2**32 values per key (NIST SP 800-38D 8.3), far above two per
licence for any province's library; rotating is adding a newer row.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db import utc_now
from core.identifiers import RESIDENT_ID_PATTERN, mask_resident_id
from core.people import RESIDENT_ID
from core.problems import Problem
from hsm import CiphertextInvalid
from licenses.catalogue import TypeView
from licenses.context import LicencesContext
from licenses.models import DataKey, Licence

WRAPPING_KEY_LABEL = "hallmark-licences-data"
VERSION = 1
_HEADER = struct.Struct(">BI")  # version, data key id
_NONCE_BYTES = 12
_TAG_BYTES = 16
# What the HSM's AES-GCM authenticates with a wrapped data key: nothing else it encrypts can pass for one.
_WRAP_AAD = b"hallmark-licences-data-key-v1"
_FACE_AAD = b"hallmark-licence-face\x00"
_HOLDER_AAD = b"hallmark-licence-holder\x00"
# ctx._cache entries of this module
_KEYS = "privacy.data_keys"  # data key id -> (wrapped bytes, AESGCM)
_CURRENT = "privacy.current_data_key"  # id of the data key new values are sealed with

log = logging.getLogger(__name__)

MASKED_DATE = "****-**-**"
MASKED = "***"


class UnreadableData(Problem):
    """A stored value that does not open: altered, moved from another licence, or its data key is gone.

    Never the caller's fault and never a value in the message: a 500 naming what is broken.
    """

    def __init__(self, what: str):
        self.what = what
        super().__init__(
            500,
            "Internal Server Error",
            f"stored licence data does not open: {what}; the record may have been altered",
            code="unreadable_data",
        )


# -- data keys ---------------------------------------------------------------------------------


def _keys(ctx: LicencesContext) -> dict[int, tuple[bytes, AESGCM]]:
    return ctx._cache.setdefault(_KEYS, {})


def _unwrap(ctx: LicencesContext, row: DataKey) -> AESGCM:
    """The data key of ``row``: from the cache when its wrapped form is what we unwrapped before, else from the HSM."""
    cached = _keys(ctx).get(row.id)
    # An id alone is not enough: a data key made in a transaction that was rolled back left
    # its id in our cache, and SQLite may hand that id to the next row.
    if cached is not None and cached[0] == row.wrapped:
        return cached[1]
    try:
        key = ctx.keys.decrypt(row.wrapping_key_uri, row.wrapped, aad=_WRAP_AAD)
    except CiphertextInvalid:
        raise UnreadableData(f"data key {row.id} does not unwrap") from None
    if len(key) != 32:
        raise UnreadableData(f"data key {row.id} is not 32 bytes")
    aead = AESGCM(key)
    _keys(ctx)[row.id] = (row.wrapped, aead)
    return aead


def _new_data_key(ctx: LicencesContext, db: Session) -> DataKey:
    """A fresh data key, wrapped by the HSM key, added in the caller's transaction.

    Two processes may each add one at the same moment; both rows are used and both open.
    """
    uri = ctx.keys.secret_key(WRAPPING_KEY_LABEL)
    key = AESGCM.generate_key(bit_length=256)
    row = DataKey(wrapping_key_uri=uri, wrapped=ctx.keys.encrypt(uri, key, aad=_WRAP_AAD), created_at=utc_now())
    db.add(row)
    db.flush()
    _keys(ctx)[row.id] = (row.wrapped, AESGCM(key))
    return row


def _current(ctx: LicencesContext, db: Session) -> tuple[int, AESGCM]:
    """The data key new values are sealed with: this process's current one, the newest stored, or a new one."""
    key_id = ctx._cache.get(_CURRENT)
    if key_id is not None:
        cached = _keys(ctx).get(key_id)
        row = db.get(DataKey, key_id)  # one look-up by primary key (usually in the session already)
        # Gone (made in a transaction that was rolled back) or another key under that id: choose again.
        if cached is not None and row is not None and row.wrapped == cached[0]:
            return key_id, cached[1]
    row = db.scalars(select(DataKey).order_by(DataKey.id.desc()).limit(1)).first()
    if row is None:
        row = _new_data_key(ctx, db)
    aead = _unwrap(ctx, row)  # from the cache when just made
    ctx._cache[_CURRENT] = row.id
    return row.id, aead


def _data_key(ctx: LicencesContext, db: Session, key_id: int, *, reload: bool = False) -> AESGCM:
    cached = _keys(ctx).get(key_id)
    if cached is not None and not reload:
        return cached[1]
    row = db.get(DataKey, key_id)
    if row is None:
        raise UnreadableData(f"data key {key_id} is missing")
    return _unwrap(ctx, row)


# -- sealed values -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sealer:
    """The current data key, chosen once for one transaction: every value sealed in it uses that key.

    Choosing it checks that its row is still there (a key made in a rolled-back transaction is not); within the
    transaction that chose it the answer cannot change, so a bulk import's batch asks once, not twice a row.
    """

    key_id: int
    aead: AESGCM

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        header = _HEADER.pack(VERSION, self.key_id)
        nonce = os.urandom(_NONCE_BYTES)
        return header + nonce + self.aead.encrypt(nonce, bytes(plaintext), header + bytes(aad))


def sealer(ctx: LicencesContext, db: Session) -> Sealer:
    """A :class:`Sealer` for the transaction of ``db``; use it only inside that transaction."""
    return Sealer(*_current(ctx, db))


def seal_value(ctx: LicencesContext, db: Session, plaintext: bytes, aad: bytes) -> tuple[int, bytes]:
    """(data key id, blob): ``plaintext`` encrypted with the current data key, bound to ``aad``."""
    current = sealer(ctx, db)
    return current.key_id, current.seal(plaintext, aad)


def blob_key_id(blob: bytes) -> int:
    """The id of the data key a sealed value names in its header."""
    if not isinstance(blob, bytes | bytearray | memoryview) or len(blob) < _HEADER.size + _NONCE_BYTES + _TAG_BYTES:
        raise UnreadableData("a sealed value is too short")
    version, key_id = _HEADER.unpack_from(blob)
    if version != VERSION:
        raise UnreadableData(f"a sealed value has unknown format version {version}")
    return key_id


def open_value(ctx: LicencesContext, db: Session, data_key_id: int, blob: bytes, aad: bytes) -> bytes:
    """The plaintext of what ``seal_value`` returned; ``UnreadableData`` if it was altered or ``aad`` differs."""
    blob = bytes(blob)
    if blob_key_id(blob) != data_key_id:
        raise UnreadableData(f"a sealed value names data key {blob_key_id(blob)}, its record data key {data_key_id}")
    header, nonce, body = blob[: _HEADER.size], blob[_HEADER.size : _HEADER.size + _NONCE_BYTES], blob[_HEADER.size + _NONCE_BYTES :]
    try:
        return _data_key(ctx, db, data_key_id).decrypt(nonce, body, header + bytes(aad))
    except InvalidTag:
        pass
    # Perhaps the cached key is one whose row was rolled back and whose id came back: look at the row once.
    try:
        return _data_key(ctx, db, data_key_id, reload=True).decrypt(nonce, body, header + bytes(aad))
    except InvalidTag:
        raise UnreadableData("a sealed value fails its integrity check") from None


# -- faces and holders ---------------------------------------------------------------------------


def _face_aad(identifier: str) -> bytes:
    return _FACE_AAD + identifier.encode("utf-8")


def _holder_aad(identifier: str) -> bytes:
    return _HOLDER_AAD + identifier.encode("utf-8")


def seal_face(
    ctx: LicencesContext, db: Session, definition: TypeView, face: dict, identifier: str, *, using: Sealer | None = None
) -> tuple[str, bytes | None, int | None]:
    """(JSON text of the fields not marked sensitive, sealed JSON of the sensitive ones or None, data key id or None).

    ``using``: a :class:`Sealer` already chosen in this transaction (many licences at once)."""
    sensitive = definition.sensitive
    public = {name: value for name, value in face.items() if name not in sensitive}
    secret = {name: value for name, value in face.items() if name in sensitive}
    public_text = json.dumps(public, ensure_ascii=False)
    if not secret:
        return public_text, None, None
    plaintext = json.dumps(secret, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    current = using or sealer(ctx, db)
    return public_text, current.seal(plaintext, _face_aad(identifier)), current.key_id


def open_face(ctx: LicencesContext, db: Session, licence: Licence, definition: TypeView) -> dict:
    """The whole face (public fields and the decrypted sensitive ones), in the type's field order."""
    values: dict[str, Any] = json.loads(licence.face_public)
    if licence.face_secret is not None:
        if licence.data_key_id is None:
            raise UnreadableData(f"licence {licence.identifier} has sensitive fields but no data key")
        try:
            secret = json.loads(open_value(ctx, db, licence.data_key_id, licence.face_secret, _face_aad(licence.identifier)))
        except UnreadableData as exc:
            log.error("licence %s: its sensitive fields do not open (%s)", licence.identifier, exc.what)  # tampering shows here
            raise UnreadableData(f"the sensitive fields of licence {licence.identifier} ({exc.what})") from None
        values.update(secret)
    order = [f.name for f in definition.fields]
    return {name: values[name] for name in order if name in values} | {k: v for k, v in values.items() if k not in order}


def seal_holder(ctx: LicencesContext, db: Session, code: str, identifier: str, *, using: Sealer | None = None) -> tuple[int, bytes]:
    """(data key id, sealed holder code) for ``Licence.holder_cipher``; the blob's header names its data key."""
    current = using or sealer(ctx, db)
    return current.key_id, current.seal(code.encode("utf-8"), _holder_aad(identifier))


def open_holder(ctx: LicencesContext, db: Session, licence: Licence) -> str:
    """The holder's code (resident ID or credit code) in clear. Never log or show it unmasked."""
    try:
        blob = licence.holder_cipher
        return open_value(ctx, db, blob_key_id(blob), blob, _holder_aad(licence.identifier)).decode("utf-8")
    except UnreadableData as exc:
        log.error("licence %s: its holder code does not open (%s)", licence.identifier, exc.what)
        raise UnreadableData(f"the holder of licence {licence.identifier} ({exc.what})") from None


# -- display -------------------------------------------------------------------------------------


def mask_face(definition: TypeView, face: dict) -> dict:
    """The face with its sensitive fields masked, for pages, files and logs."""
    sensitive = definition.sensitive
    return {name: (_mask(definition, name, value) if name in sensitive else value) for name, value in face.items()}


def _mask(definition: TypeView, name: str, value: Any) -> Any:
    if value is None:
        return None
    field = definition.field(name)
    if field is not None and field.format == "date":
        return MASKED_DATE
    if not isinstance(value, str):
        return MASKED  # a number or a yes/no is short enough that any part gives it away
    text = value.strip()
    if RESIDENT_ID_PATTERN.fullmatch(text):
        return mask_resident_id(text)
    if len(text) >= 4:
        return text[0] + MASKED + text[-1]
    if len(text) == 3:
        return text[0] + MASKED
    return MASKED  # one or two characters: any of them is half the value


def public_name(holder_type: str, name: str) -> str:
    """A holder's name for anyone to see: an enterprise's in full, a person's with only the last character (``**红``)."""
    if holder_type != RESIDENT_ID or not name or "*" in name:
        return name
    return "*" * (len(name) - 1) + name[-1]
