"""Requests for licences missing from the library (索取): a holder or an approval system asks a department for one.

A request names the licence type, the issuing department, the holder, the matter
it serves and why. It goes to that department's queue with a deadline of
``request_days`` working days (Monday to Friday; public holidays are not known
here). Staff fulfil it, by linking a licence of that holder and type already in
the library or by issuing one (``licenses.issuance.issue``, idempotent per
request), or refuse it with a reason. Every step is audited in its own
transaction. The requester learns the answer: a holder on ``/licences`` (with a
notice until ``seen_at``), an approval system by reading the request back.

The holder's code is sealed like a licence's (``licenses.privacy``, bound to the
request id): the department needs it to issue. A request made under a holder's
consent token may carry only the holder's lookup hash (the identity provider
never keeps a full resident ID); the department then gives the code when it
issues, and it is checked against that hash.

One open request per holder, type and department: asking again answers 409 with
the open request's id.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import replace
from datetime import date, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import audit
from core.db import utc_now
from core.people import HolderRef
from core.problems import Problem
from licenses import catalogue, grants, issuance, issuers, library, lifecycle, privacy
from licenses.context import LicencesContext
from licenses.issuance import Order
from licenses.models import Issuer, Licence, LicenceRequest

OPEN, FULFILLED, REFUSED = "open", "fulfilled", "refused"
STATES = (OPEN, FULFILLED, REFUSED)
MAX_REASON = 200
MAX_LISTED = 500
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _unprocessable(detail: str, code: str, **extensions) -> Problem:
    return Problem(422, "Unprocessable Content", detail, code=code, **extensions)


def check_reason(value: object, what: str = "reason") -> str:
    """Why a licence is asked for (or refused): 1 to 200 characters, spaces folded (not NFKC: it keeps full-width ，。)."""
    text = " ".join(value.split()) if isinstance(value, str) else ""
    if not text or _CONTROL.search(text):
        raise _unprocessable(f"{what} is required: at most {MAX_REASON} characters", "bad_reason")
    if len(text) > MAX_REASON:
        raise _unprocessable(f"{what} is at most {MAX_REASON} characters, not {len(text)}", "bad_reason")
    return text


def working_days_after(start: date, days: int) -> date:
    """The day ``days`` working days (Monday to Friday) after ``start``."""
    day = start
    while days > 0:
        day += timedelta(days=1)
        if day.weekday() < 5:
            days -= 1
    return day


def _known(db: Session, type_code: str, issuer_code: str):
    """The type and the department, or a 422 naming the unknown one (a body that names them, not a missing resource)."""
    try:
        return catalogue.get(db, type_code), issuers.get(db, issuer_code)
    except Problem as problem:
        raise _unprocessable(problem.detail or problem.title, problem.extensions.get("code", "unknown")) from None


def _aad(request_id: str) -> str:
    # privacy seals a holder code bound to an identifier; a request's id (32 hex digits) never looks like a licence's.
    return request_id


class _Sealed:
    """What ``privacy.open_holder`` reads: the sealed code and what it is bound to."""

    def __init__(self, row: LicenceRequest):
        self.identifier = _aad(row.id)
        self.holder_cipher = row.holder_cipher


def holder_code(ctx: LicencesContext, db: Session, row: LicenceRequest) -> str:
    """The holder's code in clear ('' when the request came with the holder's hash only). Never log or show it."""
    return privacy.open_holder(ctx, db, _Sealed(row))


def ask(
    ctx: LicencesContext,
    *,
    type_code: str,
    issuer_code: str,
    holder: HolderRef | None = None,
    holder_type: str | None = None,
    holder_code: str | None = None,
    matter: object,
    reason: object,
    requested_by: str,
) -> LicenceRequest:
    """File a request in the department's queue; refuses an unknown type or department, a holder of the wrong kind,
    a missing or over-long reason and a second open request for the same holder, type and department (409)."""
    matter = grants.check_matter(matter)
    reason = check_reason(reason)
    requested_by = (requested_by or "").strip()[:200]
    with ctx.sessions() as db, db.begin():
        definition, issuer = _known(db, type_code, issuer_code)
        kind = holder.code_type if holder is not None else holder_type
        if kind != definition.holder_code_type:
            raise _unprocessable(
                f"{definition.name} is held by {'a person (111)' if definition.holder_kind == 'person' else 'an enterprise (001)'}; "
                f"this holder is of kind {str(kind)[:3]!r}",
                "wrong_holder_kind",
            )
        code, masked, hashed = "", holder.masked if holder is not None else "", holder.lookup_hash if holder is not None else ""
        if holder_code not in (None, ""):
            code, _kind, masked = issuance.check_holder(kind, holder_code)
            given = issuance.holder_hash(ctx, kind, code)
            if holder is not None and given != holder.lookup_hash:
                raise _unprocessable("the code given is not this holder's", "holder_mismatch")
            hashed = given
        if not hashed:
            raise _unprocessable("holder is required: holder_type (111 or 001) and holder", "bad_holder")
        # Asks to one department queue one after the other (PostgreSQL; SQLite takes its write lock at BEGIN).
        db.execute(select(Issuer.credit_code).where(Issuer.credit_code == issuer.credit_code).with_for_update())
        existing = db.scalars(
            select(LicenceRequest.id).where(
                LicenceRequest.holder_hash == hashed,
                LicenceRequest.type_code == definition.code,
                LicenceRequest.issuer_code == issuer.credit_code,
                LicenceRequest.state == OPEN,
                # per requester: another system's open request must neither block the holder's nor tell anyone it exists
                LicenceRequest.requested_by == requested_by,
            )
        ).first()
        if existing is not None:
            raise Problem(
                409,
                "Conflict",
                f"you already have an open request for this holder's {definition.name} at {issuer.name}",
                code="duplicate_request",
                existing=existing,
            )
        request_id = secrets.token_hex(16)
        _key, cipher = privacy.seal_holder(ctx, db, code, _aad(request_id))
        now = utc_now()
        row = LicenceRequest(
            id=request_id,
            type_code=definition.code,
            issuer_code=issuer.credit_code,
            holder_type=definition.holder_code_type,
            holder_hash=hashed,
            holder_masked=masked,
            holder_cipher=cipher,
            requested_by=requested_by,
            matter=matter,
            reason=reason,
            state=OPEN,
            deadline=working_days_after(lifecycle.today(), ctx.settings.request_days),
            created_at=now,
        )
        db.add(row)
        db.flush()
        audit.record(
            db,
            actor=requested_by,
            action="licences.request.filed",
            target=request_id,
            details={
                "type": definition.code,
                "issuer": issuer.credit_code,
                "holder": masked,
                "matter": matter,
                "deadline": str(row.deadline),
            },
        )
    return row


def get(db: Session, request_id: str, *, for_update: bool = False) -> LicenceRequest:
    query = select(LicenceRequest).where(LicenceRequest.id == str(request_id or "").strip().lower()[:32])
    row = db.scalars(query.with_for_update() if for_update else query).first()
    if row is None:
        raise Problem(404, "Not Found", f"there is no licence request {str(request_id)[:40]!r}", code="unknown_request")
    return row


def is_overdue(row: LicenceRequest, today: date | None = None) -> bool:
    return row.state == OPEN and row.deadline < (today or lifecycle.today())


def queue(db: Session, issuer_code: str, *, state: str | None = None, overdue_only: bool = False) -> list[LicenceRequest]:
    """A department's requests, the nearest deadline first; ``overdue_only``: open ones past their deadline."""
    issuer = issuers.get(db, issuer_code)
    query = select(LicenceRequest).where(LicenceRequest.issuer_code == issuer.credit_code)
    if state is not None:
        if state not in STATES:
            raise _unprocessable(f"state is one of {', '.join(STATES)}", "bad_state")
        query = query.where(LicenceRequest.state == state)
    if overdue_only:
        query = query.where(LicenceRequest.state == OPEN, LicenceRequest.deadline < lifecycle.today())
    return list(db.scalars(query.order_by(LicenceRequest.deadline, LicenceRequest.created_at).limit(MAX_LISTED)))


def overdue(db: Session, today: date | None = None) -> list[LicenceRequest]:
    """Open requests past their deadline in every department, for supervisors: the longest overdue first."""
    query = select(LicenceRequest).where(LicenceRequest.state == OPEN, LicenceRequest.deadline < (today or lifecycle.today()))
    return list(db.scalars(query.order_by(LicenceRequest.deadline, LicenceRequest.issuer_code).limit(MAX_LISTED)))


def for_holders(db: Session, holder_hashes: list[str]) -> list[LicenceRequest]:
    """Requests concerning these holders (whoever asked), newest first."""
    if not holder_hashes:
        return []
    query = select(LicenceRequest).where(LicenceRequest.holder_hash.in_(holder_hashes))
    return list(db.scalars(query.order_by(LicenceRequest.created_at.desc()).limit(MAX_LISTED)))


def _must_be_open(row: LicenceRequest) -> None:
    if row.state != OPEN:
        raise Problem(409, "Conflict", f"request {row.id} was already {row.state}", code="request_decided", state=row.state)


def fulfil(
    ctx: LicencesContext, request_id: str, *, identifier: str | None = None, order: Order | None = None, actor: str, note: str = ""
) -> LicenceRequest:
    """Answer a request with a licence: link ``identifier`` (a licence of that holder and type), or issue ``order``.

    The order's type and department are the request's; its holder code is the request's unless the request came
    without one (then the order's, checked against the request's holder). Issuing is idempotent per request.
    """
    if (identifier is None) == (order is None):
        raise _unprocessable("fulfil with a licence identifier or an order to issue one, not both", "bad_fulfilment")
    note = check_reason(note, "note") if note else ""
    with ctx.sessions() as db:
        row = get(db, request_id)
        _must_be_open(row)
        if identifier is not None:
            licence = library.by_identifier(db, identifier)
            if licence.holder_hash != row.holder_hash or licence.type_code != row.type_code:
                raise _unprocessable(f"licence {licence.identifier} is not a {row.type_code} of this request's holder", "wrong_licence")
            identifier = licence.identifier
        else:
            code = holder_code(ctx, db, row) or order.holder_code
            order = replace(
                order, type_code=row.type_code, issuer_code=row.issuer_code, holder_code=code, request_id=f"licence-request:{row.id}"
            )
            canonical, _kind, _masked = issuance.check_holder(row.holder_type, code)
            if issuance.holder_hash(ctx, row.holder_type, canonical) != row.holder_hash:
                raise _unprocessable("the holder code given is not this request's holder", "holder_mismatch")
        requester = row.requested_by or actor
    if order is not None:
        identifier = issuance.issue(ctx, order, actor=actor, requester=requester).identifier
    with ctx.sessions() as db, db.begin():
        row = get(db, request_id, for_update=True)
        if row.state == FULFILLED and row.identifier == identifier:
            return row  # answered by a concurrent call with the same licence
        _must_be_open(row)
        row.state, row.identifier = FULFILLED, identifier
        row.decided_at, row.decided_by, row.decision = utc_now(), actor[:200], note
        audit.record(
            db,
            actor=actor,
            action="licences.request.fulfilled",
            target=row.id,
            details={"licence": identifier, "by": "issue" if order is not None else "link", "requested_by": row.requested_by},
        )
    return row


def refuse(ctx: LicencesContext, request_id: str, *, reason: object, actor: str) -> LicenceRequest:
    """Refuse a request, saying why (the requester reads it)."""
    reason = check_reason(reason)
    with ctx.sessions() as db, db.begin():
        row = get(db, request_id, for_update=True)
        _must_be_open(row)
        row.state = REFUSED
        row.decided_at, row.decided_by, row.decision = utc_now(), actor[:200], reason
        audit.record(
            db, actor=actor, action="licences.request.refused", target=row.id, details={"reason": reason, "requested_by": row.requested_by}
        )
    return row


def mark_seen(ctx: LicencesContext, request_id: str, *, holder_hashes: list[str], actor: str) -> LicenceRequest:
    """The holder has read the answer: its notice goes away. Another holder's request is a 404."""
    with ctx.sessions() as db, db.begin():
        row = get(db, request_id, for_update=True)
        if row.holder_hash not in holder_hashes:
            raise Problem(404, "Not Found", f"there is no licence request {str(request_id)[:40]!r}", code="unknown_request")
        if row.state != OPEN and row.seen_at is None:
            row.seen_at = utc_now()
            audit.record(db, actor=actor, action="licences.request.seen", target=row.id, details={"state": row.state})
    return row


def as_json(ctx: LicencesContext, db: Session, row: LicenceRequest) -> dict:
    """A request as the API and the CLI show it (the holder masked)."""
    definition = catalogue.get(db, row.type_code)
    issuer = db.get(Issuer, row.issuer_code)
    answer = None
    if row.state != OPEN:
        answer = {"decided_at": row.decided_at.isoformat() if row.decided_at else None, "decision": row.decision}
        if row.identifier:
            licence = db.get(Licence, row.identifier)
            answer["licence"] = {
                "identifier": row.identifier,
                "verify_url": ctx.verify_url(row.identifier),
                "status": lifecycle.status(licence).as_json() if licence is not None else None,
            }
    return {
        "id": row.id,
        "state": row.state,
        "type": {"code": definition.code, "name": definition.name, "name_en": definition.name_en},
        "issuer": {"code": row.issuer_code, "name": issuer.name if issuer else ""},
        "holder": {"type": row.holder_type, "code": row.holder_masked},
        "matter": row.matter,
        "reason": row.reason,
        "requested_by": row.requested_by,
        "created_at": row.created_at.isoformat(),
        "deadline": row.deadline.isoformat(),
        "overdue": is_overdue(row),
        "answer": answer,
    }
