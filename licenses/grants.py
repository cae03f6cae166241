"""Standing grants: a client (an approval or issuing system) may reach licences of one type, in one mode, for some matters.

Sharing modes nest: ``copy`` includes ``read``, which includes ``compare``
(compare-only is the least a caller can do: claimed values in, match or no match
out, nothing disclosed). ``issue`` is apart from them: it lets an issuing system
issue licences of the type and change their state (suspend, revoke, renew, ...),
and says nothing about reading other departments' licences. An issuing client
acts for a department only where it also holds that department's seal grant
(``hallmark sign seal grant CLIENT DEPARTMENT``): the licence file carries that
seal, so the same grant that lets a client use the seal decides which
department it may issue for. Issue grants have no matters (they are stored as ``*``).

Grants are public: ``active`` lists every standing grant for the public page, so
anyone can see which system may see which licences and why.
"""

from __future__ import annotations

import json
import re
import unicodedata

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from core import audit
from core.db import utc_now
from core.problems import Problem
from licenses import catalogue
from licenses.models import Grant

COMPARE, READ, COPY, ISSUE = "compare", "read", "copy", "issue"
SHARING_MODES = (COMPARE, READ, COPY)  # each includes the ones before it
MODES = (*SHARING_MODES, ISSUE)
ANY_MATTER = "*"
MAX_MATTER = 100
MAX_PURPOSE = 200  # a call's stated purpose (GB/T 36906 practice: a use reason of at most 200 characters)
MAX_MATTERS = 50
MAX_CLIENT_ID = 100
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _unprocessable(detail: str, code: str) -> Problem:
    return Problem(422, "Unprocessable Content", detail, code=code)


def check_mode(mode: object, *, allowed: tuple[str, ...] = MODES) -> str:
    # A JSON body may carry anything here (a list, a number): not text is refused like an unknown mode.
    mode = mode.strip().lower() if isinstance(mode, str) else ""
    if mode not in allowed:
        raise _unprocessable(f"mode must be one of {', '.join(allowed)}", "bad_mode")
    return mode


def check_matter(matter: object) -> str:
    """A matter as callers and grants name it: 1 to 100 printable characters (spaces folded)."""
    if not isinstance(matter, str):
        raise _unprocessable("matter is required: the matter (事项) this access serves, at most 100 characters", "bad_matter")
    text = " ".join(unicodedata.normalize("NFKC", matter).split())
    if not text or _CONTROL.search(text):
        raise _unprocessable("matter is required: the matter (事项) this access serves, at most 100 characters", "bad_matter")
    if len(text) > MAX_MATTER:
        raise _unprocessable(f"matter is at most {MAX_MATTER} characters", "bad_matter")
    return text


def check_purpose(value: object) -> str:
    """A call's purpose: 1 to MAX_PURPOSE characters after folding spaces (NFKC), as consent and grants compare it."""
    if not isinstance(value, str) or not " ".join(value.split()):
        raise _unprocessable(f"purpose is required: why you need this, at most {MAX_PURPOSE} characters", "bad_purpose")
    text = " ".join(unicodedata.normalize("NFKC", value).split())
    if len(text) > MAX_PURPOSE:
        raise _unprocessable(f"purpose is at most {MAX_PURPOSE} characters, not {len(text)}", "bad_purpose")
    return text


def covers(granted: str, wanted: str) -> bool:
    """Whether a grant (or consent) in mode ``granted`` allows ``wanted``: copy ⊇ read ⊇ compare; issue only itself."""
    if granted == ISSUE or wanted == ISSUE:
        return granted == wanted
    return granted in SHARING_MODES and wanted in SHARING_MODES and SHARING_MODES.index(granted) >= SHARING_MODES.index(wanted)


def matters_of(grant: Grant) -> list[str]:
    return json.loads(grant.matters)


def as_json(grant: Grant) -> dict:
    return {
        "id": grant.id,
        "client_id": grant.client_id,
        "type": grant.type_code,
        "mode": grant.mode,
        "matters": matters_of(grant),
        "created_at": grant.created_at.isoformat(),
        "created_by": grant.created_by,
        "revoked_at": grant.revoked_at.isoformat() if grant.revoked_at else None,
    }


def add(db: Session, *, client_id: str, type_code: str, mode: str, matters: list[str] | None, actor: str) -> tuple[Grant, bool]:
    """Add a standing grant; (row, created). The same active grant again changes nothing.

    ``matters``: the matter codes it serves, or ``["*"]`` (or nothing) for any. Issue grants take no matters.
    """
    client_id = (client_id or "").strip()
    if not client_id or len(client_id) > MAX_CLIENT_ID or _CONTROL.search(client_id):
        raise _unprocessable(f"client_id is 1 to {MAX_CLIENT_ID} characters", "bad_client")
    definition = catalogue.get(db, type_code)
    mode = check_mode(mode)
    wanted = [ANY_MATTER] if not matters or ANY_MATTER in matters else sorted({check_matter(m) for m in matters})
    if mode == ISSUE and wanted != [ANY_MATTER]:
        raise _unprocessable("an issue grant is for a licence type, not for matters: leave the matters out", "bad_matter")
    if len(wanted) > MAX_MATTERS:
        raise _unprocessable(f"a grant names at most {MAX_MATTERS} matters", "bad_matter")
    for existing in _active(db, client_id, definition.code):
        if existing.mode == mode and matters_of(existing) == wanted:
            return existing, False
    grant = Grant(
        client_id=client_id,
        type_code=definition.code,
        mode=mode,
        matters=json.dumps(wanted, ensure_ascii=False),
        created_at=utc_now(),
        created_by=actor[:200],
    )
    db.add(grant)
    db.flush()
    audit.record(
        db,
        actor=actor,
        action="licences.grant.added",
        target=str(grant.id),
        details={"client": client_id, "type": definition.code, "mode": mode, "matters": wanted},
    )
    return grant, True


def revoke(db: Session, grant_id: int, *, actor: str) -> Grant:
    """End a standing grant (kept, with the time it ended, for the record)."""
    grant = db.get(Grant, grant_id)
    if grant is None:
        raise Problem(404, "Not Found", f"there is no grant #{grant_id}", code="unknown_grant")
    if grant.revoked_at is None:
        grant.revoked_at = utc_now()
        audit.record(
            db,
            actor=actor,
            action="licences.grant.revoked",
            target=str(grant.id),
            details={"client": grant.client_id, "type": grant.type_code, "mode": grant.mode},
        )
    return grant


def _active(db: Session, client_id: str, type_code: str) -> list[Grant]:
    query = select(Grant).where(Grant.client_id == client_id, Grant.type_code == type_code, Grant.revoked_at.is_(None))
    return list(db.scalars(query))


def active(db: Session, *, include_revoked: bool = False) -> list[Grant]:
    """Every standing grant (the public page lists them), by client and type."""
    query = select(Grant)
    if not include_revoked:
        query = query.where(Grant.revoked_at.is_(None))
    return list(db.scalars(query.order_by(Grant.client_id, Grant.type_code, Grant.id)))


# Asked on every sharing call: three columns by (client, type) in Core, not whole ORM rows.
_ACTIVE_TERMS = (
    select(Grant.id, Grant.mode, Grant.matters)
    .where(Grant.client_id == bindparam("client_id"), Grant.type_code == bindparam("type_code"), Grant.revoked_at.is_(None))
    .order_by(Grant.id)
)


def allowed(db: Session, client_id: str, type_code: str, mode: str, matter: str):
    """The active grant (its ``id``, ``mode`` and ``matters``) that lets ``client_id`` reach licences of ``type_code``
    in ``mode`` for ``matter``, or None."""
    db.flush()  # Core bypasses autoflush: a grant added in this session must count (a no-op in a clean session)
    for grant in db.connection().execute(_ACTIVE_TERMS, {"client_id": client_id, "type_code": type_code}):
        if covers(grant.mode, mode):
            granted = matters_of(grant)
            if ANY_MATTER in granted or matter in granted:
                return grant
    return None


def for_client(db: Session, client_id: str) -> list[Grant]:
    return list(db.scalars(select(Grant).where(Grant.client_id == client_id, Grant.revoked_at.is_(None)).order_by(Grant.id)))


def check_issuing_client(db: Session, client_id: str, type_code: str, issuer_code: str) -> None:
    """A client may issue (and change) licences of ``type_code`` for ``issuer_code``: an issue grant and the department's seal grant."""
    from signing.models import SealGrant

    if allowed(db, client_id, type_code, ISSUE, ANY_MATTER) is None:
        raise Problem(
            403,
            "Forbidden",
            f"client {client_id!r} may not issue licences of type {type_code}; apply for an issue grant: "
            f"hallmark licences grant add {client_id} {type_code} --mode issue",
            code="no_grant",
            ask_for={"grant": {"client_id": client_id, "type": type_code, "mode": ISSUE, "matters": [ANY_MATTER]}},
        )
    if db.get(SealGrant, (client_id, issuer_code)) is None:
        raise Problem(
            403,
            "Forbidden",
            f"client {client_id!r} does not act for the department {issuer_code}: the department grants it its seal with "
            f"hallmark sign seal grant {client_id} {issuer_code}",
            code="no_grant",
            ask_for={"seal_grant": {"client_id": client_id, "department": issuer_code}},
        )
