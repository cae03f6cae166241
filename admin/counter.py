"""The counter desk (counter clerk): find a person by resident ID with a reason, check them in person, unlock, reset.

A *visit* (``admin_counter_visits``) is what a search opens: which clerk, in which of
their departments, why, whose account (the resident ID only masked). Every later step
names the visit, and only a counter clerk of the visit's department may act on it; a
visit ends an hour after it was opened.

* :func:`search`: the full resident ID is looked up by its keyed hash
  (``idp.people.realname.id_hash``); the search itself is audited
  (``admin.counter.search``: masked ID, reason, clerk, found or not).
* :func:`verify`: the counter camera's photo (JPEG or PNG, at most ``MAX_PHOTO``
  bytes, checked by its signature) is sealed with ``licenses.privacy`` (AES-256-GCM,
  data keys wrapped by the HSM) and kept with the visit; the in-person check itself is
  the IdP's ``realname.confirm_at_counter`` (the rules of its ``verify_at_counter``:
  the clerk must also be the IdP's clerk, not their own account; the document's name
  and ID must be the account's proofing);
  the audit event (``admin.counter.verified``) names the photo by its SHA-256 and the
  originals seen.
* :func:`unlock`: the login guard's count for the account's names starts again, the
  account's lock columns are cleared, a disabled account is not re-enabled here.
* :func:`reset_password`: only after the visit's in-person check; the IdP's
  ``accounts.set_password`` (policy, every session ends) and
  ``recovery.revoke_tokens`` (every refresh token family with its access tokens), and
  the owner is texted as after a recovery (``password_reset``).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from admin import roles
from admin.models import CounterVisit
from core import audit, sms
from core import db as core_db
from core.db import utc_now
from core.web import N_, Refusal

CLERK = roles.COUNTER_CLERK
MAX_PHOTO = 2 * 1024 * 1024
MAX_REASON = 500
VISIT_LIFETIME = timedelta(hours=1)
SIGNATURES = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG\r\n\x1a\n": "image/png"}


class CounterRefusal(Refusal):
    pass


class OutsideDepartment(CounterRefusal):
    """A visit of a department where the clerk is not a counter clerk (or that is no longer open)."""


@dataclass(frozen=True)
class Person:
    visit_id: str
    account_id: str
    label: str
    legal_name: str
    resident_id_masked: str
    status: str
    locked: bool
    verified_at: datetime | None
    documents: tuple[str, ...]
    photo_sha256: str | None
    department: str | None


def _actor(staff) -> str:
    return f"account:{staff.account_id}"


def photo_type(data: bytes) -> str | None:
    """``image/jpeg`` or ``image/png`` when the bytes begin as one, else None."""
    for magic, kind in SIGNATURES.items():
        if data.startswith(magic):
            return kind
    return None


def search(ctx, staff, *, resident_id: str, reason: str, department: str | None) -> Person | None:
    """The person whose proofed resident ID this is (a new visit), or None; the search is audited either way."""
    from idp.people import realname

    reason = " ".join((reason or "").split())
    if not reason:
        raise CounterRefusal(N_("Give the reason for this search."), code="reason_missing")
    if len(reason) > MAX_REASON:
        raise CounterRefusal(N_("The reason may have at most %(max)s characters."), code="reason_too_long", max=MAX_REASON)
    departments = staff.departments(CLERK)
    if department not in departments:
        if len(departments) == 1 and not department:
            department = next(iter(departments))
        else:
            raise OutsideDepartment(N_("You are not a counter clerk of this department."), code="outside_department", status=403)
    rid = realname.parse_resident_id(resident_id)  # its refusal says what is wrong (422), never the number
    with core_db.transaction(ctx.sessions) as db:
        from sqlalchemy import select

        from idp.models import IdentityProofing

        proofing = db.scalar(select(IdentityProofing).where(IdentityProofing.resident_id_hash == realname.id_hash(ctx.idp, rid)))
        audit.record(
            db,
            actor=_actor(staff),
            action="admin.counter.search",
            target=proofing.account_id if proofing else "",
            details={"resident_id": rid.masked(), "reason": reason, "department": department, "found": proofing is not None},
        )
        if proofing is None:
            return None
        visit = CounterVisit(
            id=secrets.token_hex(16),
            clerk_id=staff.account_id,
            department=department,
            account_id=proofing.account_id,
            resident_id_masked=rid.masked(),
            reason=reason,
            opened_at=utc_now(),
            documents="",
        )
        db.add(visit)
        db.flush()
        return _person(db, visit)


def _person(db, visit: CounterVisit) -> Person:
    from idp.models import Account, IdentityProofing
    from idp.people import accounts

    account = db.get(Account, visit.account_id)
    proofing = db.get(IdentityProofing, visit.account_id)
    now = utc_now()
    return Person(
        visit_id=visit.id,
        account_id=account.id,
        label=accounts.label(account),
        legal_name=proofing.legal_name if proofing else "",
        resident_id_masked=visit.resident_id_masked,
        status=account.status,
        locked=bool(account.failed_logins) or (account.locked_until is not None and account.locked_until > now),
        verified_at=visit.verified_at,
        documents=tuple(visit.documents.split()),
        photo_sha256=visit.photo_sha256,
        department=visit.department,
    )


def _check(ctx, staff, visit_id: str, *, action: str) -> str:
    """The id of the open visit, if the clerk may act on it; otherwise refused (audited, outside the department).

    Called before the action's own transaction, so that the refusal's audit event is committed.
    """
    visit_id = (visit_id or "")[:32]
    outside = False
    with core_db.transaction(ctx.sessions) as db:
        visit = db.get(CounterVisit, visit_id)
        if visit is None or visit.opened_at + VISIT_LIFETIME < utc_now():
            raise CounterRefusal(N_("This visit is over. Search for the person again."), code="visit_over", status=404)
        if not staff.may(CLERK, visit.department):
            outside = True
            audit.record(
                db,
                actor=_actor(staff),
                action="admin.refused",
                target=visit.account_id,
                details={"reason": "outside_department", "visit": visit.id, "attempted": action},
            )
    if outside:
        raise OutsideDepartment(N_("You are not a counter clerk of this department."), code="outside_department", status=403)
    return visit_id


def person(ctx, staff, visit_id: str) -> Person:
    visit_id = _check(ctx, staff, visit_id, action="view")
    with core_db.transaction(ctx.sessions) as db:
        return _person(db, db.get(CounterVisit, visit_id))


def _photo_aad(visit_id: str) -> bytes:
    return b"admin-counter-photo\x00" + visit_id.encode("ascii")


def verify(ctx, staff, visit_id: str, *, name: str, resident_id: str, documents: list[str], location: str, photo: bytes) -> Person:
    """Record the in-person check with the IdP's counter check; the photo sealed; the audit names its digest."""
    from idp.models import Account
    from idp.people import realname
    from licenses import privacy

    visit_id = _check(ctx, staff, visit_id, action="verify")  # the department first, then the form
    documents = [code for code in dict.fromkeys(documents) if code]
    if not documents:
        raise CounterRefusal(N_("Tick the originals you have seen."), code="documents_missing")
    if any(code not in realname.DOCUMENTS for code in documents):
        raise CounterRefusal(N_("Unknown document."), code="bad_document")
    if not photo:
        raise CounterRefusal(N_("Take the person's photo with the counter camera (or choose the photo file)."), code="photo_missing")
    if len(photo) > MAX_PHOTO:
        raise CounterRefusal(N_("The photo may be at most %(max)s MB."), code="photo_too_large", status=413, max=MAX_PHOTO // 1024 // 1024)
    kind = photo_type(photo)
    if kind is None:
        raise CounterRefusal(N_("The photo must be a JPEG or PNG image."), code="photo_type", status=415)
    with core_db.transaction(ctx.sessions) as db:
        visit = db.get(CounterVisit, visit_id)
        clerk = db.get(Account, staff.account_id)
        clerk_name = clerk.username or clerk.mobile or ""
        account_id = visit.account_id
    realname.confirm_at_counter(
        ctx.idp,
        account=account_id,
        resident_id=resident_id,
        name=name,
        clerk=clerk_name,
        location=location,
        document=documents[0],
        via="console",
    )
    digest = hashlib.sha256(photo).hexdigest()
    visit_id = _check(ctx, staff, visit_id, action="verify")
    with core_db.transaction(ctx.sessions) as db:
        visit = db.get(CounterVisit, visit_id)
        visit.photo_key_id, visit.photo_sealed = privacy.seal_value(ctx.licences, db, photo, _photo_aad(visit.id))
        visit.photo_type, visit.photo_sha256 = kind, digest
        visit.documents = " ".join(documents)
        visit.verified_at = utc_now()
        audit.record(
            db,
            actor=_actor(staff),
            action="admin.counter.verified",
            target=visit.account_id,
            details={
                "visit": visit.id,
                "department": visit.department,
                "photo_sha256": digest,
                "photo_type": kind,
                "originals_seen": documents,
                "location": " ".join(location.split())[:200],
            },
        )
        return _person(db, visit)


def photo(ctx, staff, visit_id: str) -> tuple[str, bytes]:
    """The visit's photo, opened (for the clerk of the department, while the visit is open)."""
    from licenses import privacy

    visit_id = _check(ctx, staff, visit_id, action="photo")
    with core_db.transaction(ctx.sessions) as db:
        visit = db.get(CounterVisit, visit_id)
        if visit.photo_sealed is None:
            raise CounterRefusal(N_("No photo was taken in this visit."), code="no_photo", status=404)
        return visit.photo_type, privacy.open_value(ctx.licences, db, visit.photo_key_id, visit.photo_sealed, _photo_aad(visit.id))


def unlock(ctx, staff, visit_id: str) -> Person:
    """The login guard forgets the account's wrong passwords; the lock columns are cleared."""
    from idp.models import Account
    from idp.people import accounts, loginguard

    visit_id = _check(ctx, staff, visit_id, action="unlock")
    with core_db.transaction(ctx.sessions) as db:
        visit = db.get(CounterVisit, visit_id)
        account = db.get(Account, visit.account_id)
        names = [name for name in (account.username, account.mobile) if name]
        account.failed_logins, account.locked_until = 0, None
        audit.record(
            db,
            actor=_actor(staff),
            action="admin.counter.unlocked",
            target=account.id,
            details={"visit": visit.id, "department": visit.department},
        )
        person_ = _person(db, visit)
    for name in names:
        loginguard.succeeded(ctx.idp, name=accounts._failure_key(ctx.idp, name))
    return person_


def reset_password(ctx, staff, visit_id: str, *, new_password: str) -> Person:
    """A new password after the visit's in-person check: every session and refresh token ends, the owner is told."""
    from idp.models import Account
    from idp.people import accounts, recovery

    visit_id = _check(ctx, staff, visit_id, action="reset_password")
    with core_db.transaction(ctx.sessions) as db:
        visit = db.get(CounterVisit, visit_id)
        if visit.verified_at is None:
            audit.record(
                db,
                actor=_actor(staff),
                action="admin.refused",
                target=visit.account_id,
                details={"reason": "not_verified_in_person", "visit": visit.id, "attempted": "reset_password"},
            )
            refused = CounterRefusal(
                N_("Verify the person in person (photo and originals) before resetting the password."), code="not_verified", status=409
            )
        else:
            refused = None
            account = db.get(Account, visit.account_id)
            actor = _actor(staff)
            accounts.set_password(db, account, new_password, actor=actor)  # the policy's refusal rolls all back
            families = recovery.revoke_tokens(db, account.id, actor=actor)
            audit.record(
                db,
                actor=actor,
                action="admin.counter.password_reset",
                target=account.id,
                details={
                    "visit": visit.id,
                    "department": visit.department,
                    "originals_seen": visit.documents.split(),
                    "photo_sha256": visit.photo_sha256,
                    "token_families": families,
                },
            )
            if account.mobile and account.phone_confirmed_at:
                stamp = datetime.now(UTC).astimezone(recovery._zone()).strftime("%Y-%m-%d %H:%M")
                sms.send(db, phone=account.mobile, purpose="password_reset", params={"time": stamp})
            person_ = _person(db, visit)
    if refused is not None:
        raise refused
    return person_
