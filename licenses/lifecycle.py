"""A licence's states and the changes between them, each with actor, reason and time.

States (the national data push's codes in brackets):

- ``valid`` (01); ``suspended`` (02, 暂扣) can be lifted back to valid;
- ``withdrawn`` (03, 撤销), ``cancelled`` (04, 注销) and ``revoked`` (07, 吊销, a
  penalty) are final;
- ``expired`` (05): past its validity. Reads say *expired* as soon as the date has
  passed, before the periodic job writes the state;
- ``superseded``: a renewal or change made a newer version (``successor`` names it).

Every answer keeps these apart from an *error*: a revoked licence is a fact about
the licence, not a failure of the library.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import audit, events
from core.db import utc_now
from core.problems import Problem
from licenses.models import Licence, StateChange

VALID, SUSPENDED, REVOKED, WITHDRAWN, CANCELLED, EXPIRED, SUPERSEDED = (
    "valid",
    "suspended",
    "revoked",
    "withdrawn",
    "cancelled",
    "expired",
    "superseded",
)
STATES = (VALID, SUSPENDED, REVOKED, WITHDRAWN, CANCELLED, EXPIRED, SUPERSEDED)
FINAL = frozenset({REVOKED, WITHDRAWN, CANCELLED, SUPERSEDED})
NATIONAL_CODES = {VALID: "01", SUSPENDED: "02", WITHDRAWN: "03", CANCELLED: "04", EXPIRED: "05", REVOKED: "07", SUPERSEDED: "99"}
MAX_REASON = 200
TIMEZONE = ZoneInfo("Asia/Shanghai")  # validity dates are calendar days in China Standard Time

LICENCE_CHANGED = "licenses.licence.changed"  # session, licence, previous (state), action, actor: a state or version change

# action -> (states it may start from, the state it leads to)
ACTIONS = {
    "suspend": ((VALID,), SUSPENDED),
    "resume": ((SUSPENDED,), VALID),
    "revoke": ((VALID, SUSPENDED), REVOKED),
    "withdraw": ((VALID, SUSPENDED), WITHDRAWN),
    "cancel": ((VALID, SUSPENDED, EXPIRED), CANCELLED),
}


def today() -> date:
    return datetime.now(TIMEZONE).date()


def effective_state(licence: Licence, on: date | None = None) -> str:
    """The state a reader should see: a valid or suspended licence past its end date is expired."""
    if licence.state in (VALID, SUSPENDED) and licence.valid_until is not None and licence.valid_until < (on or today()):
        return EXPIRED
    return licence.state


@dataclass(frozen=True)
class Status:
    """What every answer about a licence says about its standing."""

    state: str
    national_code: str
    reason: str
    changed_at: datetime
    superseded_by: str | None
    valid_from: date
    valid_until: date | None

    @property
    def usable(self) -> bool:
        return self.state == VALID

    def as_json(self) -> dict:
        return {
            "state": self.state,
            "national_code": self.national_code,
            "usable": self.usable,
            "reason": self.reason or None,
            "changed_at": self.changed_at.isoformat(),
            "superseded_by": self.superseded_by,
            "valid_from": self.valid_from.isoformat(),
            "valid_until": self.valid_until.isoformat() if self.valid_until else None,
        }


def status(licence: Licence, on: date | None = None) -> Status:
    state = effective_state(licence, on)
    return Status(
        state=state,
        national_code=NATIONAL_CODES[state],
        reason=licence.state_reason if state == licence.state else "",
        changed_at=licence.state_changed_at,
        superseded_by=licence.successor,
        valid_from=licence.valid_from,
        valid_until=licence.valid_until,
    )


def check_reason(reason: str | None, *, required: bool = True) -> str:
    reason = (reason or "").strip()
    if required and not reason:
        raise Problem(422, "Unprocessable Content", "a reason is required for this change", code="reason_required")
    if len(reason) > MAX_REASON:
        raise Problem(422, "Unprocessable Content", f"a reason is at most {MAX_REASON} characters", code="reason_too_long")
    return reason


def record_change(
    db: Session, licence: Licence, to_state: str, *, reason: str, actor: str, action: str, at: datetime | None = None
) -> None:
    """Write a state change: the row, its history line, its audit event and the event for subscribers."""
    at = at or utc_now()
    previous = licence.state
    licence.state, licence.state_reason, licence.state_changed_at = to_state, reason, at
    db.add(StateChange(identifier=licence.identifier, from_state=previous, to_state=to_state, reason=reason, actor=actor, at=at))
    audit.record(
        db,
        actor=actor,
        action=f"licences.{action}",
        target=licence.identifier,
        details={"from": previous, "to": to_state, "reason": reason},
    )
    events.of(db).emit(LICENCE_CHANGED, session=db, licence=licence, previous=previous, action=action, actor=actor)


def find(db: Session, identifier: str, *, for_update: bool = False) -> Licence:
    query = select(Licence).where(Licence.identifier == (identifier or "").strip()[:120])
    if for_update:
        query = query.with_for_update()
    licence = db.scalars(query).first()
    if licence is None:
        raise Problem(404, "Not Found", "there is no licence with this identifier in the library", code="unknown_licence")
    return licence


def change_state(db: Session, identifier: str, action: str, *, reason: str | None, actor: str) -> Licence:
    """Apply ``action`` (suspend, resume, revoke, withdraw, cancel); a 409 problem when the licence's state forbids it."""
    if action not in ACTIONS:
        raise Problem(400, "Bad Request", f"unknown action {action!r}", code="bad_action")
    sources, target = ACTIONS[action]
    reason = check_reason(reason, required=action != "resume")
    licence = find(db, identifier, for_update=True)
    current = effective_state(licence)
    if current not in sources:
        raise Problem(
            409,
            "Conflict",
            f"cannot {action} a licence that is {current}" + (f" (superseded by {licence.successor})" if licence.successor else ""),
            code="wrong_state",
            state=current,
        )
    record_change(db, licence, target, reason=reason, actor=actor, action=action)
    return licence


def history(db: Session, identifier: str) -> list[StateChange]:
    return list(db.scalars(select(StateChange).where(StateChange.identifier == identifier).order_by(StateChange.id)))
