"""Finding licences and describing them: by identifier, by holder; the one shape every answer uses."""

from __future__ import annotations

import functools
import json

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.identifiers import InvalidIdentifier
from core.problems import Problem
from licenses import catalogue, identifiers, lifecycle, privacy
from licenses.context import LicencesContext
from licenses.issuance import check_holder, holder_hash
from licenses.models import Issuer, Licence, LicenceType

MAX_RESULTS = 200


def check_identifier(text: str) -> str:
    """A well-formed identifier with the right check character, or a 422 problem ``bad_identifier`` saying what is wrong."""
    try:
        return _canonical_identifier(text if isinstance(text, str) else "")
    except InvalidIdentifier as exc:
        raise Problem(422, "Unprocessable Content", str(exc), code="bad_identifier") from None


@functools.lru_cache(maxsize=4096)
def _canonical_identifier(text: str) -> str:
    # A pure function of the text, asked on every call by identifier; a refusal raises and is not kept.
    return str(identifiers.parse(text))


def by_identifier(db: Session, identifier: str) -> Licence:
    return lifecycle.find(db, check_identifier(identifier))


def by_holder(ctx: LicencesContext, db: Session, code_type: str, code: str, type_code: str | None = None) -> list[Licence]:
    """A holder's licences (every version, newest first), given the holder's code and its GB/T 36903 type (111 or 001)."""
    canonical, _kind, _masked = check_holder(code_type, code)
    return by_holder_hash(db, holder_hash(ctx, code_type, canonical), type_code)


def by_holder_hash(db: Session, hashed: str, type_code: str | None = None) -> list[Licence]:
    query = select(Licence).where(Licence.holder_hash == hashed)
    if type_code:
        query = query.where(Licence.type_code == type_code.strip().upper()[:21])
    return list(db.scalars(query.order_by(Licence.issued_at.desc()).limit(MAX_RESULTS)))


def describe(ctx: LicencesContext, db: Session, licence: Licence, *, face: str = "none", fields: list[str] | None = None) -> dict:
    """A licence as every answer shows it. ``face``: ``none``, ``masked`` (sensitive fields masked) or ``full``.

    ``fields`` limits the face to those fields (what a caller's purpose needs).
    """
    definition = catalogue.get(db, licence.type_code)
    issuer = db.get(Issuer, licence.issuer_code)
    body = {
        "identifier": licence.identifier,
        "type": {"code": definition.code, "name": definition.name, "name_en": definition.name_en},
        "issuer": {"code": licence.issuer_code, "name": issuer.name if issuer else ""},
        "holder": {"type": licence.holder_type, "code": licence.holder_masked, "name": licence.holder_name},
        "version": f"{licence.version:03d}",
        "status": lifecycle.status(licence).as_json(),
        "predecessor": licence.predecessor,
        "successor": licence.successor,
        "issued_at": licence.issued_at.isoformat(),
        "verify_url": ctx.verify_url(licence.identifier),
        "file": {"sealed": licence.pdf_sha256 is not None, "sha256": licence.pdf_sha256},
    }
    return _with_face(ctx, db, licence, definition, body, face, fields)


def describe_minimal(ctx: LicencesContext, db: Session, licence: Licence) -> dict:
    """What a caller below ``read`` mode may learn of a licence: which licence it is and whether it stands.

    No holder name in full, no reason for a penalty, no other versions' identifiers beyond the one that replaced it:
    comparing and looking up must not turn a resident ID into a name and a history.
    """
    full = describe(ctx, db, licence)
    status = full["status"]
    return {
        "identifier": full["identifier"],
        "type": full["type"],
        "issuer": full["issuer"],
        "holder": {
            "type": licence.holder_type,
            "code": licence.holder_masked,
            "name": privacy.public_name(licence.holder_type, licence.holder_name),
        },
        "version": full["version"],
        "status": {k: status[k] for k in ("state", "national_code", "usable", "superseded_by", "valid_from", "valid_until")},
        "successor": full["successor"],
        "verify_url": full["verify_url"],
    }


def _with_face(ctx, db, licence, definition, body: dict, face: str, fields: list[str] | None) -> dict:
    if face != "none":
        values = privacy.open_face(ctx, db, licence, definition)
        if face == "masked":
            values = privacy.mask_face(definition, values)
        if fields is not None:
            values = {name: values[name] for name in fields if name in values}
        body["face"] = values
    return body


def public_face(licence: Licence) -> dict:
    """The face fields not marked sensitive, without touching a key."""
    return json.loads(licence.face_public)


def type_rows(db: Session) -> list[LicenceType]:
    return list(db.scalars(select(LicenceType).order_by(LicenceType.code)))
