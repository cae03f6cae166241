"""Issuing a licence, and making its next version on renewal or change.

Issuing is synchronous and idempotent: the file is rendered and sealed first (no
database transaction is held while the HSM and the time-stamping authority work),
then the licence, its first history line and its audit event are written in one
transaction. A requester's ``request_id`` seen before gives back the licence it
made instead of a second one, also when two requests race (the unique constraint
decides, and the loser reads the winner's licence).
"""

from __future__ import annotations

import calendar
import secrets
from dataclasses import dataclass, field
from datetime import date, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core import audit, events
from core.db import utc_now
from core.identifiers import InvalidIdentifier, lookup_hash, mask_credit_code, mask_resident_id, validate_credit_code, validate_resident_id
from core.people import CREDIT_CODE, HOLDER_CODE_TYPES, RESIDENT_ID
from core.problems import Problem
from licenses import catalogue, identifiers, issuers, lifecycle, privacy, qrpayload, rendering, statuslist
from licenses.catalogue import TypeView
from licenses.context import LicencesContext
from licenses.models import Issuer, Licence, StateChange

MAX_REQUEST_ID = 100


@dataclass
class Order:
    """What an issuing department asks for."""

    type_code: str
    issuer_code: str
    holder_code: str
    face: dict
    valid_from: date | None = None
    valid_until: date | None = None
    serial: str | None = None
    request_id: str | None = None
    extra: dict = field(default_factory=dict)


def _unprocessable(detail: str, code: str, **extensions) -> Problem:
    return Problem(422, "Unprocessable Content", detail, code=code, **extensions)


def check_holder(code_type: str, code: str) -> tuple[str, str, str]:
    """(canonical code, lookup-hash kind, masked) of a holder code of GB/T 36903 type ``code_type`` (111 or 001)."""
    if code_type not in HOLDER_CODE_TYPES:
        raise _unprocessable("holder_type must be 111 (resident ID) or 001 (unified social credit code)", "bad_holder")
    try:
        if code_type == RESIDENT_ID:
            value = validate_resident_id(code or "").value
            return value, HOLDER_CODE_TYPES[RESIDENT_ID], mask_resident_id(value)
        value = validate_credit_code(code or "").value
        return value, HOLDER_CODE_TYPES[CREDIT_CODE], mask_credit_code(value)
    except InvalidIdentifier as exc:
        raise _unprocessable(f"holder: {exc}", "bad_holder") from None


def holder_hash(ctx: LicencesContext, code_type: str, code: str) -> str:
    """The lookup hash of a holder code of GB/T 36903 type ``code_type`` (the same hash the identity provider keeps)."""
    return lookup_hash(ctx.lookup_key, HOLDER_CODE_TYPES[code_type], code)


def _add_months(day: date, months: int) -> date:
    month = day.month - 1 + months
    year, month = day.year + month // 12, month % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def validity(definition: TypeView, valid_from: date | None, valid_until: date | None) -> tuple[date, date | None]:
    """The validity dates: the type's rule fills the end date (the day before the anniversary) when none is given."""
    start = valid_from or lifecycle.today()
    if valid_until is None:
        months = definition.validity.get("years", 0) * 12 + definition.validity.get("months", 0)
        valid_until = _add_months(start, months) - timedelta(days=1) if months else None
    if valid_until is not None and valid_until < start:
        raise _unprocessable("valid_until is before valid_from", "bad_validity")
    return start, valid_until


def check_request_id(request_id: str | None) -> str | None:
    if request_id is None:
        return None
    request_id = str(request_id).strip()
    if not request_id or len(request_id) > MAX_REQUEST_ID or not request_id.isprintable():
        raise _unprocessable(f"request_id must be 1 to {MAX_REQUEST_ID} printable characters", "bad_request_id")
    return request_id


def new_serial(on: date) -> str:
    """Year and 10 random digits: unguessable, and sorted by year for people who read them."""
    return f"{on.year}{secrets.randbelow(10**10):010d}"


def _by_request(db: Session, requester: str, request_id: str) -> Licence | None:
    return db.scalars(select(Licence).where(Licence.requester == requester, Licence.request_id == request_id)).first()


def _same_order(licence: Licence, definition: TypeView, hashed_holder: str) -> Licence:
    if licence.type_code != definition.code or licence.holder_hash != hashed_holder:
        raise Problem(
            409,
            "Conflict",
            "this request_id was already used for a different licence; use a new request_id for a new licence",
            code="request_id_reused",
            identifier=licence.identifier,
        )
    return licence


def render_and_seal(
    ctx: LicencesContext,
    definition: TypeView,
    issuer: Issuer,
    seal_name: str,
    *,
    status_entry: tuple[int, int] | None = None,
    identifier: str,
    face: dict,
    holder_name: str,
    holder_masked: str,
    valid_from: date,
    valid_until: date | None,
    version: int,
    actor: str,
    issued_on: date | None = None,
) -> tuple[bytes, str]:
    """The licence's file, rendered and sealed: (PDF, signing document id). Sensitive fields are printed masked.

    ``issued_on`` is the date printed as the issue date (today unless given: an imported licence keeps its own).
    """
    qr_text = qrpayload.payload(
        ctx,
        identifier=identifier,
        type_code=definition.code,
        issuer_code=issuer.credit_code,
        holder_masked=holder_masked,
        # anyone who scans the file reads this offline: a person's name masked, as on public pages
        holder_name=privacy.public_name(definition.holder_code_type, holder_name),
        valid_from=valid_from,
        valid_until=valid_until,
        kind="file",
        lifetime=timedelta(days=ctx.settings.file_qr_days),
        status_entry=status_entry,  # so a verifier can check the status lists offline-first
    )
    pdf = rendering.render_face(
        definition,
        identifier=identifier,
        face=privacy.mask_face(definition, face),
        holder_name=holder_name,
        issuer_name=issuer.name,
        valid_from=valid_from,
        valid_until=valid_until,
        issued_on=issued_on or lifecycle.today(),
        version=version,
        qr_text=qr_text,
    )
    sealed = rendering.seal_file(ctx.signing, pdf, seal_name=seal_name, actor=actor, reason=f"{definition.name} {identifier}")
    return sealed.pdf, sealed.document.id


def issue(ctx: LicencesContext, order: Order, *, actor: str, requester: str) -> Licence:
    """Issue a licence (version 001); the same requester and request_id again give back the first one."""
    request_id = check_request_id(order.request_id)
    with ctx.sessions() as db:
        definition = catalogue.get(db, order.type_code)
        issuer = issuers.get(db, order.issuer_code)
        seal_name = issuers.seal_name_for(db, issuer)
        code, _kind, masked = check_holder(definition.holder_code_type, order.holder_code)
        hashed = holder_hash(ctx, definition.holder_code_type, code)
        if request_id is not None:
            earlier = _by_request(db, requester, request_id)
            if earlier is not None:
                return _same_order(earlier, definition, hashed)
        face = catalogue.check_face(definition, order.face)
        valid_from, valid_until = validity(definition, order.valid_from, order.valid_until)
        try:
            serial = identifiers.check_serial(order.serial) if order.serial else new_serial(valid_from)
        except InvalidIdentifier as exc:
            raise _unprocessable(str(exc), "bad_serial") from None
        identifier = str(identifiers.make(definition.code, issuer.credit_code, serial, 1))
        if db.get(Licence, identifier) is not None:
            raise Problem(409, "Conflict", "a licence with this serial already exists; renew or change it instead", code="licence_exists")
    entry = statuslist.reserve(ctx, issuer.credit_code)  # before the file: its QR code names the entry
    holder_name = str(face[definition.holder_name_field])
    pdf, document_id = render_and_seal(
        ctx,
        definition,
        issuer,
        seal_name,
        identifier=identifier,
        face=face,
        holder_name=holder_name,
        holder_masked=masked,
        valid_from=valid_from,
        valid_until=valid_until,
        version=1,
        actor=actor,
        status_entry=entry,
    )
    try:
        with ctx.sessions() as db, db.begin():
            licence = _store(
                ctx,
                db,
                definition,
                issuer,
                identifier=identifier,
                serial=serial,
                version=1,
                holder=(code, hashed, masked, holder_name),
                face=face,
                valid_from=valid_from,
                valid_until=valid_until,
                pdf=pdf,
                document_id=document_id,
                actor=actor,
                requester=requester,
                request_id=request_id,
                status_entry=entry,
            )
            _issued(db, licence, actor=actor, action="issue", details={"type": definition.code, "issuer": issuer.credit_code})
    except IntegrityError:
        # A concurrent request with the same request_id (or serial) won the race.
        with ctx.sessions() as db:
            if request_id is not None:
                earlier = _by_request(db, requester, request_id)
                if earlier is not None:
                    return _same_order(earlier, definition, hashed)
        raise Problem(409, "Conflict", "a licence with this serial already exists", code="licence_exists") from None
    return licence


def _store(
    ctx: LicencesContext,
    db: Session,
    definition: TypeView,
    issuer: Issuer,
    *,
    identifier: str,
    serial: str,
    version: int,
    holder: tuple[str, str, str, str],
    face: dict,
    valid_from: date,
    valid_until: date | None,
    pdf: bytes | None,
    document_id: str | None,
    actor: str,
    requester: str,
    request_id: str | None,
    predecessor: str | None = None,
    status_entry: tuple[int, int] | None = None,
) -> Licence:
    import hashlib

    code, hashed, masked, holder_name = holder
    face_public, face_secret, data_key_id = privacy.seal_face(ctx, db, definition, face, identifier)
    _holder_key, holder_cipher = privacy.seal_holder(ctx, db, code, identifier)
    now = utc_now()
    status_list, status_index = status_entry or statuslist.allocate(db, issuer.credit_code, size=ctx.settings.status_list_size)
    licence = Licence(
        identifier=identifier,
        type_code=definition.code,
        issuer_code=issuer.credit_code,
        serial=serial,
        version=version,
        holder_type=definition.holder_code_type,
        holder_hash=hashed,
        holder_masked=masked,
        holder_cipher=holder_cipher,
        holder_name=holder_name[:200],
        state=lifecycle.VALID,
        state_reason="",
        state_changed_at=now,
        valid_from=valid_from,
        valid_until=valid_until,
        issued_at=now,
        issued_by=actor,
        face_public=face_public,
        face_secret=face_secret,
        data_key_id=data_key_id,
        predecessor=predecessor,
        requester=requester[:200],
        request_id=request_id,
        document_id=document_id,
        pdf=pdf,
        pdf_sha256=hashlib.sha256(pdf).hexdigest() if pdf is not None else None,
        status_list=status_list,
        status_index=status_index,
    )
    db.add(licence)
    db.flush()
    return licence


def _issued(db: Session, licence: Licence, *, actor: str, action: str, details: dict) -> None:
    db.add(
        StateChange(
            identifier=licence.identifier, from_state="", to_state=lifecycle.VALID, reason=action, actor=actor, at=licence.issued_at
        )
    )
    audit.record(db, actor=actor, action=f"licences.{action}", target=licence.identifier, details=details)
    events.of(db).emit(lifecycle.LICENCE_CHANGED, session=db, licence=licence, previous="", action=action, actor=actor)


def next_version(
    ctx: LicencesContext,
    identifier: str,
    *,
    action: str,
    actor: str,
    reason: str | None,
    face_changes: dict | None = None,
    valid_from: date | None = None,
    valid_until: date | None = None,
) -> Licence:
    """Renew (``action="renew"``: new validity, same face unless changed) or change (``"change"``: new face, same validity).

    The new version (``002``, ...) points to its predecessor, which becomes *superseded* and names its successor.
    """
    if action not in ("renew", "change"):
        raise Problem(400, "Bad Request", f"unknown action {action!r}", code="bad_action")
    reason = lifecycle.check_reason(reason, required=action == "change")
    if action == "change" and not face_changes:
        raise _unprocessable("a change needs the changed face fields", "bad_face")
    with ctx.sessions() as db:
        old = lifecycle.find(db, identifier)
        state = lifecycle.effective_state(old)
        # a suspended licence is not renewed: that would lift the suspension without anyone deciding to
        allowed = (lifecycle.VALID, lifecycle.EXPIRED) if action == "renew" else (lifecycle.VALID,)
        if state not in allowed:
            raise Problem(409, "Conflict", f"cannot {action} a licence that is {state}", code="wrong_state", state=state)
        definition = catalogue.get(db, old.type_code)
        issuer = issuers.get(db, old.issuer_code)
        seal_name = issuers.seal_name_for(db, issuer)
        face = privacy.open_face(ctx, db, old, definition)
        code = privacy.open_holder(ctx, db, old)
        hashed, masked = old.holder_hash, old.holder_masked
        face = catalogue.check_face(definition, {**face, **(face_changes or {})})
        if action == "renew":
            start = valid_from or max(lifecycle.today(), (old.valid_until or lifecycle.today()) + timedelta(days=1))
            valid_from, valid_until = validity(definition, start, valid_until)
        else:
            valid_from, valid_until = old.valid_from, old.valid_until
        new_id = identifiers.parse(old.identifier).next_version()
        serial, old_version = old.serial, old.version
    entry = statuslist.reserve(ctx, issuer.credit_code)  # the new version has an entry of its own
    holder_name = str(face[definition.holder_name_field])
    pdf, document_id = render_and_seal(
        ctx,
        definition,
        issuer,
        seal_name,
        identifier=str(new_id),
        face=face,
        holder_name=holder_name,
        holder_masked=masked,
        valid_from=valid_from,
        valid_until=valid_until,
        version=new_id.version,
        actor=actor,
        status_entry=entry,
    )
    try:
        with ctx.sessions() as db, db.begin():
            old = lifecycle.find(db, identifier, for_update=True)
            if old.successor is not None or old.version != old_version:
                raise Problem(409, "Conflict", f"the licence was already superseded by {old.successor}", code="wrong_state")
            # checked again under the lock: a revocation or suspension while the file was being sealed wins
            state = lifecycle.effective_state(old)
            if state not in allowed:
                raise Problem(409, "Conflict", f"cannot {action} a licence that is {state}", code="wrong_state", state=state)
            licence = _store(
                ctx,
                db,
                definition,
                issuer,
                identifier=str(new_id),
                serial=serial,
                version=new_id.version,
                holder=(code, hashed, masked, holder_name),
                face=face,
                valid_from=valid_from,
                valid_until=valid_until,
                pdf=pdf,
                document_id=document_id,
                actor=actor,
                requester=actor,
                request_id=None,
                predecessor=old.identifier,
                status_entry=entry,
            )
            old.successor = licence.identifier
            lifecycle.record_change(db, old, lifecycle.SUPERSEDED, reason=reason or action, actor=actor, action=f"superseded.{action}")
            _issued(db, licence, actor=actor, action=action, details={"predecessor": old.identifier, "reason": reason})
    except IntegrityError:
        raise Problem(409, "Conflict", "the licence was already renewed or changed", code="wrong_state") from None
    return licence
