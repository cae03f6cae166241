"""Moving licences past their validity to *expired*, in batches, each through ``lifecycle.record_change``.

Reads already say *expired* once the date has passed (``lifecycle.effective_state``);
this writes the state, so the audit trail, the state history and the
``LICENCE_CHANGED`` event (status events to subscribers) say it too. Several
workers may run it at once: each licence is claimed with a conditional UPDATE
(``state`` still what was read) and only the worker whose UPDATE changed the row
records the change.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import select, update

from licenses import lifecycle
from licenses.context import ACTOR, LicencesContext
from licenses.models import Licence

BATCH = 200
REASON = "validity ended"


def expire(ctx: LicencesContext, *, today: date | None = None, batch: int = BATCH, actor: str = ACTOR) -> int:
    """Expire every valid or suspended licence whose ``valid_until`` is before ``today`` (China time); how many this run moved."""
    today = today or lifecycle.today()
    table = Licence.__table__
    moved = 0
    while True:
        with ctx.sessions() as db, db.begin():
            due = list(
                db.scalars(
                    select(Licence)
                    .where(Licence.state.in_((lifecycle.VALID, lifecycle.SUSPENDED)), Licence.valid_until < today)
                    .order_by(Licence.valid_until)
                    .limit(batch)
                )
            )
            if not due:
                return moved
            for licence in due:
                # The claim: another worker that got here first changed the state, so this UPDATE matches nothing.
                claimed = db.execute(
                    update(table)
                    .where(table.c.identifier == licence.identifier, table.c.state == licence.state)
                    .values(state=lifecycle.EXPIRED)
                ).rowcount
                if claimed == 1:
                    lifecycle.record_change(db, licence, lifecycle.EXPIRED, reason=REASON, actor=actor, action="expire")
                    moved += 1


def run(ctx: LicencesContext) -> bool:
    """The periodic job (``expiry_seconds``)."""
    expire(ctx)
    return True
