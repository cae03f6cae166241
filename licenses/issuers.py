"""Issuing departments: a credit code, a name and the department seal their licence files carry."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import audit
from core.db import utc_now
from core.identifiers import InvalidIdentifier, validate_credit_code
from core.problems import Problem
from licenses.models import Issuer
from signing import seals
from signing.models import Seal


def check_code(code: str) -> str:
    try:
        return validate_credit_code(code or "").value
    except InvalidIdentifier as exc:
        raise Problem(422, "Unprocessable Content", str(exc), code="bad_credit_code") from None


def add(db: Session, *, credit_code: str, name: str, seal_name: str, actor: str) -> tuple[Issuer, bool]:
    """Register a department as an issuer; (row, created). Its seal must be an active seal of the same credit code."""
    code = check_code(credit_code)
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise Problem(422, "Unprocessable Content", "an issuer's name is 1 to 100 characters", code="bad_issuer")
    seal = db.get(Seal, seal_name)
    if seal is None or seal.status != "active":
        raise Problem(
            422,
            "Unprocessable Content",
            f"there is no active seal named {seal_name!r}; add one with 'hallmark sign seal add'",
            code="no_seal",
        )
    if seal.credit_code != code:
        raise Problem(
            422, "Unprocessable Content", f"seal {seal_name!r} belongs to another department ({seal.credit_code})", code="no_seal"
        )
    existing = db.get(Issuer, code)
    if existing is not None:
        if (existing.name, existing.seal_name) == (name, seal.name):
            return existing, False
        existing.name, existing.seal_name = name, seal.name
        audit.record(db, actor=actor, action="licences.issuer.changed", target=code, details={"name": name, "seal": seal.name})
        return existing, False
    row = Issuer(credit_code=code, name=name, seal_name=seal.name, created_at=utc_now(), created_by=actor)
    db.add(row)
    db.flush()
    audit.record(db, actor=actor, action="licences.issuer.added", target=code, details={"name": name, "seal": seal.name})
    return row, True


def get(db: Session, code: str) -> Issuer:
    row = db.get(Issuer, (code or "").strip().upper()[:18])
    if row is None:
        raise Problem(404, "Not Found", f"{str(code)[:40]!r} is not a registered issuing department", code="unknown_issuer")
    return row


def all_issuers(db: Session) -> list[Issuer]:
    return list(db.scalars(select(Issuer).order_by(Issuer.credit_code)))


def seal_name_for(db: Session, issuer: Issuer) -> str:
    """The issuer's seal, checked to be usable now (it may have been retired since)."""
    seal = seals.get(db, issuer.seal_name)
    if seal.status != "active":
        raise Problem(409, "Conflict", f"the seal of {issuer.name} was retired; register a new one for the department", code="no_seal")
    return seal.name
