"""The licence officer's work in the console, on the licence library's own services, kept to the officer's departments.

* the issuing form is made from the licence type's face schema (JSON Schema): one
  field per property, its input chosen by ``type``, ``format`` and ``enum``, its
  label the property's ``title`` (Chinese) or ``x-title-en``; what is typed is
  turned into JSON values and checked by ``licenses.issuance.issue`` itself, whose
  field errors are shown next to the fields;
* lifecycle actions (suspend, resume, withdraw, cancel) go to
  ``licenses.lifecycle.change_state`` with their reason; revoking as a penalty
  (吊销) is a four-eyes operation (``admin.operations``, ``licence.revoke``);
* the 索取 queue (``licenses.requests``): fulfil by issuing or by linking a licence,
  refuse with a reason;
* bulk imports (``licenses.imports`` runs, read only here) and their error reports.

A licence officer sees and acts on the licences, requests and imports whose issuer
is one of their departments: every query is scoped with :func:`admin.roles.in_departments`
on the issuer's credit code, and a row of another department is refused (403).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from admin import roles
from admin.context import AdminContext
from admin.roles import Staff
from core.problems import Problem
from core.web.i18n import N_, Refusal

OFFICERS = (roles.LICENCE_OFFICER,)
DIRECT_ACTIONS = ("suspend", "resume", "withdraw", "cancel")  # revoke (吊销, a penalty) goes through four eyes
MAX_LISTED = 200


class LicenceRefusal(Refusal):
    status = 422


class OutsideDepartment(Refusal):
    status = 403


@dataclass
class FormRefusal(Exception):
    """The issuing form was not accepted: a message for the form and one per field (field name -> msgid, params)."""

    message: str
    params: dict = field(default_factory=dict)
    fields: dict = field(default_factory=dict)
    status: int = 422


# -- what a problem from the library means, for a person ---------------------------------------------------------

MESSAGES = {
    "unknown_type": N_("There is no such licence type."),
    "unknown_licence_type": N_("There is no such licence type."),
    "bad_licence_type": N_("There is no such licence type."),
    "unknown_issuer": N_("Your department is not an issuer in the licence library."),
    "bad_holder": N_("The holder's code is not a valid resident ID or unified social credit code."),
    "licence_exists": N_("A licence with this serial already exists; renew or change it instead."),
    "bad_serial": N_("The serial is not valid."),
    "bad_face": N_("Some fields are not filled in correctly; see the messages next to them."),
    "bad_validity": N_("The validity dates are not acceptable."),
    "reason_required": N_("A reason is required for this change."),
    "reason_too_long": N_("A reason is at most 200 characters."),
    "wrong_state": N_("The licence's state does not allow this (it is %(state)s)."),
    "unknown_licence": N_("There is no licence with this identifier in the library."),
    "unknown_request": N_("There is no such request."),
    "request_decided": N_("This request was already answered."),
    "wrong_licence": N_("That licence is not of this request's type and holder."),
    "holder_mismatch": N_("The holder code given is not this request's holder."),
    "bad_reason": N_("A reason of 1 to 200 characters is required."),
    "bad_note": N_("A note is at most 200 characters."),
}
FIELD_KINDS = {
    "is required": N_("This field is required."),
    "must be a valid date": N_("Enter a date as YYYY-MM-DD."),
    "does not have the expected form": N_("This does not have the expected form."),
}


def refusal_of(problem: Problem) -> LicenceRefusal:
    """A library problem as a refusal the console can show in the person's language."""
    code = problem.extensions.get("code", "")
    message = MESSAGES.get(code)
    if message is None:
        return LicenceRefusal(N_("The licence library refused this: %(detail)s"), code=code or "refused", status=problem.status,
                              detail=(problem.detail or problem.title)[:300])  # fmt: skip
    params = {"state": problem.extensions.get("state", "")} if "%(state)s" in message else {}
    return LicenceRefusal(message, code=code, status=problem.status if problem.status in (404, 409, 422) else 422, **params)


def _who(person: Staff) -> str:
    return f"account:{person.account_id}"


# -- departments and licences --------------------------------------------------------------------------------------


def issuers(db: Session, person: Staff) -> list:
    """The licence library's issuers that are departments of this officer."""
    from licenses.models import Issuer

    query = select(Issuer).where(roles.in_departments(Issuer.credit_code, person, OFFICERS)).order_by(Issuer.credit_code)
    return list(db.scalars(query))


def licences(db: Session, person: Staff, *, search: str = "", limit: int = MAX_LISTED) -> list:
    """The newest licences of the officer's departments; ``search`` matches an identifier or holder name (start)."""
    from licenses.models import Licence

    query = select(Licence).where(roles.in_departments(Licence.issuer_code, person, OFFICERS))
    search = " ".join(search.split())[:120]
    if search:
        query = query.where(or_(Licence.identifier == search, Licence.holder_name.startswith(search, autoescape=True)))
    return list(db.scalars(query.order_by(Licence.issued_at.desc(), Licence.identifier).limit(limit)))


def licence(db: Session, person: Staff, identifier: str):
    """One licence of the officer's departments: 404 when unknown, 403 when another department's."""
    from licenses import lifecycle

    try:
        row = lifecycle.find(db, identifier)
    except Problem as problem:
        raise refusal_of(problem) from None
    if not person.may(roles.LICENCE_OFFICER, row.issuer_code):
        raise OutsideDepartment(N_("This licence belongs to another department."), code="other_department")
    return row


def change(ctx: AdminContext, person: Staff, identifier: str, action: str, reason: str):
    """Suspend, resume, withdraw or cancel one of the department's licences, with the reason (recorded by the library)."""
    from core import db as core_db
    from licenses import lifecycle

    if action not in DIRECT_ACTIONS:
        raise LicenceRefusal(N_("Unknown action."), code="bad_action", status=400)
    with core_db.transaction(ctx.sessions) as db:
        row = licence(db, person, identifier)
        try:
            return lifecycle.change_state(db, row.identifier, action, reason=reason, actor=_who(person)).state
        except Problem as problem:
            raise refusal_of(problem) from None


# -- the issuing form ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FormField:
    name: str
    label: str  # Chinese, or English with the page
    input: str  # text | date | number | checkbox | select
    required: bool
    options: tuple = ()
    step: str = ""
    max_length: int | None = None
    pattern: str = ""
    sensitive: bool = False


def form_fields(definition, *, english: bool = False) -> list[FormField]:
    """The face schema's properties as form fields, in the type's layout order."""
    schema = definition.schema
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or ())
    order = [n for n in (definition.layout.get("fields") or []) if n in properties]
    order += [n for n in properties if n not in order]
    shown = []
    for name in order:
        spec = properties[name] if isinstance(properties[name], dict) else {}
        kind = spec.get("type", "string")
        label = (spec.get("x-title-en") if english else None) or spec.get("title") or name
        options = tuple(str(v) for v in spec.get("enum") or ())
        if options:
            control = "select"
        elif kind == "boolean":
            control = "checkbox"
        elif kind in ("integer", "number"):
            control = "number"
        elif spec.get("format") == "date":
            control = "date"
        else:
            control = "text"
        shown.append(
            FormField(
                name=name,
                label=str(label),
                input=control,
                required=name in required,
                options=options,
                step="1" if kind == "integer" else ("any" if kind == "number" else ""),
                max_length=spec.get("maxLength") if isinstance(spec.get("maxLength"), int) else None,
                pattern=spec.get("pattern", "") if isinstance(spec.get("pattern"), str) else "",
                sensitive=bool(spec.get("x-sensitive")),
            )
        )
    return shown


def _value(spec: dict, text: str):
    """What was typed, as the JSON value the schema expects where it reads as one (else the text, for the schema to refuse)."""
    kind = spec.get("type", "string")
    if kind == "integer":
        try:
            return int(text)
        except ValueError:
            return text
    if kind == "number":
        try:
            number = float(text)
            return int(number) if number.is_integer() and "." not in text else number
        except ValueError:
            return text
    if kind == "boolean":
        return text in ("1", "on", "true")
    return text


def face_from_form(definition, form) -> dict:
    """The face data from a submitted form: empty fields left out (so a required one is reported missing)."""
    properties = definition.schema.get("properties") or {}
    face = {}
    for name, spec in properties.items():
        spec = spec if isinstance(spec, dict) else {}
        if spec.get("type") == "boolean":
            face[name] = _value(spec, form.get(name, ""))
            continue
        text = " ".join(str(form.get(name, "")).split())[:2000]
        if text:
            face[name] = _value(spec, text)
    return face


def face_errors(definition, face: dict) -> dict:
    """The library's own check of the face data (``licenses.catalogue.check_face``), its errors by field."""
    from licenses import catalogue

    fields: dict = {}
    try:
        catalogue.check_face(definition, face)
    except Problem as problem:
        for error in problem.extensions.get("errors") or []:
            name = (error.get("field") or "").split(".")[0] or "_face"
            detail = error.get("detail", "")
            fields.setdefault(name, (FIELD_KINDS[detail], {}) if detail in FIELD_KINDS else (N_("%(detail)s"), {"detail": detail}))
    return fields


def new_request_id() -> str:
    """A fresh form's key: the same form sent twice issues one licence (the library is idempotent per request id)."""
    return "admin-" + secrets.token_hex(12)


def issue(ctx: AdminContext, person: Staff, form) -> object:
    """Issue a licence from the generated form through ``licenses.issuance.issue``; a :class:`FormRefusal` says what is wrong."""
    from core import db as core_db
    from licenses import catalogue, issuance

    type_code = str(form.get("type", ""))[:40]
    issuer_code = str(form.get("issuer", "")).strip().upper()[:18]
    with core_db.read_only(ctx.sessions) as db:
        try:
            definition = catalogue.get(db, type_code)
        except Problem:
            raise FormRefusal(MESSAGES["unknown_licence_type"], status=422) from None
        if not person.may(roles.LICENCE_OFFICER, issuer_code):
            raise FormRefusal(N_("You may issue only for your own departments."), status=403)
    fields: dict = {}
    holder = " ".join(str(form.get("holder_code", "")).split()).upper()
    if not holder:
        fields["holder_code"] = (FIELD_KINDS["is required"], {})
    valid_from = _date(form.get("valid_from", ""), "valid_from", fields)
    valid_until = _date(form.get("valid_until", ""), "valid_until", fields)
    face = face_from_form(definition, form)
    fields.update({k: v for k, v in face_errors(definition, face).items() if k not in fields})
    if fields:
        raise FormRefusal(MESSAGES["bad_face"], fields=fields)
    order = issuance.Order(
        type_code=definition.code,
        issuer_code=issuer_code,
        holder_code=holder,
        face=face,
        valid_from=valid_from,
        valid_until=valid_until,
        request_id=str(form.get("request_id", ""))[:100] or None,
    )
    try:
        return issuance.issue(ctx.licences, order, actor=_who(person), requester=_who(person))
    except Problem as problem:
        refusal = refusal_of(problem)
        if refusal.code == "bad_holder":
            raise FormRefusal(MESSAGES["bad_face"], fields={"holder_code": (refusal.message, {})}) from None
        raise FormRefusal(refusal.message, refusal.params, status=refusal.status) from None


def _date(text: object, name: str, fields: dict) -> date | None:
    text = str(text or "").strip()
    if not text:
        return None
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        fields[name] = (FIELD_KINDS["must be a valid date"], {})
        return None


# -- the 索取 queue -------------------------------------------------------------------------------------------------


def queue(db: Session, person: Staff, *, state: str = "open") -> list:
    """The requests to the officer's departments, the nearest deadline first (``state``: open, fulfilled, refused or all)."""
    from licenses.models import LicenceRequest

    query = select(LicenceRequest).where(roles.in_departments(LicenceRequest.issuer_code, person, OFFICERS))
    if state in ("open", "fulfilled", "refused"):
        query = query.where(LicenceRequest.state == state)
    return list(db.scalars(query.order_by(LicenceRequest.deadline, LicenceRequest.created_at).limit(MAX_LISTED)))


def request(db: Session, person: Staff, request_id: str):
    from licenses import requests

    try:
        row = requests.get(db, request_id)
    except Problem as problem:
        raise refusal_of(problem) from None
    if not person.may(roles.LICENCE_OFFICER, row.issuer_code):
        raise OutsideDepartment(N_("This request is for another department."), code="other_department")
    return row


def fulfil_by_link(ctx: AdminContext, person: Staff, request_id: str, identifier: str, note: str = ""):
    from core import db as core_db
    from licenses import requests

    with core_db.read_only(ctx.sessions) as db:
        request(db, person, request_id)
    identifier = " ".join(str(identifier).split())[:120]
    if not identifier:
        raise LicenceRefusal(N_("Name the licence that answers this request."), code="identifier_required")
    try:
        return requests.fulfil(ctx.licences, request_id, identifier=identifier, actor=_who(person), note=note)
    except Problem as problem:
        raise refusal_of(problem) from None


def fulfil_by_issuing(ctx: AdminContext, person: Staff, request_id: str, form):
    """Issue the licence a request asks for from the generated form (type and department are the request's)."""
    from core import db as core_db
    from licenses import catalogue, issuance, requests

    with core_db.read_only(ctx.sessions) as db:
        row = request(db, person, request_id)
        definition = catalogue.get(db, row.type_code)
        holder = requests.holder_code(ctx.licences, db, row) or " ".join(str(form.get("holder_code", "")).split()).upper()
    face = face_from_form(definition, form)
    fields = face_errors(definition, face)
    if fields:
        raise FormRefusal(MESSAGES["bad_face"], fields=fields)
    order = issuance.Order(type_code=row.type_code, issuer_code=row.issuer_code, holder_code=holder, face=face)
    try:
        return requests.fulfil(ctx.licences, request_id, order=order, actor=_who(person))
    except Problem as problem:
        refusal = refusal_of(problem)
        raise FormRefusal(refusal.message, refusal.params, status=refusal.status) from None


def refuse(ctx: AdminContext, person: Staff, request_id: str, reason: str):
    from core import db as core_db
    from licenses import requests

    with core_db.read_only(ctx.sessions) as db:
        request(db, person, request_id)
    try:
        return requests.refuse(ctx.licences, request_id, reason=reason, actor=_who(person))
    except Problem as problem:
        raise refusal_of(problem) from None


# -- bulk imports ------------------------------------------------------------------------------------------------


def import_runs(db: Session, person: Staff) -> list:
    from licenses.models import ImportRun

    query = select(ImportRun).where(roles.in_departments(ImportRun.issuer_code, person, OFFICERS))
    return list(db.scalars(query.order_by(ImportRun.started_at.desc()).limit(MAX_LISTED)))


def import_run(db: Session, person: Staff, run_id: str):
    from licenses.models import ImportRun

    row = db.get(ImportRun, str(run_id)[:32])
    if row is None:
        raise LicenceRefusal(N_("There is no such import."), code="unknown_import", status=404)
    if not person.may(roles.LICENCE_OFFICER, row.issuer_code):
        raise OutsideDepartment(N_("This import belongs to another department."), code="other_department")
    return row


def error_report(row) -> Path | None:
    """The run's error report file, when it was written and is still there."""
    if not row.error_report:
        return None
    path = Path(row.error_report)
    return path if path.is_file() else None
