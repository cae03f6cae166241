"""The audit section of the console: search the audit trail, page through it, export it, verify its hash chain.

* A search names any of: the actor (as recorded, ``account:<id>``, ``ip:<address>``, ``cli``; a console or IdP
  username is looked up and searched as its ``account:<id>``), the subject (the event's target, exactly), an
  action prefix (``idp.login`` finds ``idp.login.failed``) and a time range (China Standard Time, as pages show
  it). Results are newest first, a page at a time, keyed on ``seq`` (``seq < before``), never an OFFSET: the
  hundredth page costs what the first does. A page is read first from the last :data:`WALK` events by number, then,
  if that does not fill it, through the indexes of ``occurred_at`` and ``action`` (the prefix as a range on the
  column, exact under the binary or C collation the project's databases use, with the prefix test kept as the
  guard): common matches come from the short walk, rare ones from the indexes (:func:`newest_below`). Actor and
  subject have indexes of their own, ``(actor, seq)`` and ``(target, seq)`` (core_0005), read in ``seq`` order.
  Measured on SQLite with 2M events: an action prefix 0.04 s a page, a time range 0.05 s; with 1M events a rare
  actor or subject alone 1 to 1.5 ms (0.35 to 0.47 s before those indexes; bench/console_indexes.py).
* Every search, page and export is itself recorded (``admin.audit.searched``, ``admin.audit.exported``): who
  searched for what.
* Exports (CSV, JSON) stream the search in batches of :data:`EXPORT_BATCH` rows, newest first, as stored: the
  trail never holds a full resident ID (``core.audit`` refuses one), so what is masked stays masked. A CSV cell
  that a spreadsheet would take for a formula (starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
  return) is written with a leading apostrophe.
* Verification walks the chain in steps of :data:`VERIFY_STEP` rows (``core.chain.HashChain.verify_span``), one
  request each, so a page can show progress on a trail of millions of events; the last step of a run that
  reaches the newest event checks the head row too. The outcome names the first broken event and what is wrong.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from admin import roles
from core import audit
from core.models import AuditEvent
from core.web.i18n import N_, Refusal

READERS = (roles.AUDITOR, roles.SYSTEM_ADMIN)  # who may use the section
PAGE_SIZE = 50
EXPORT_BATCH = 1000
WALK = 100_000  # events read back by number before a search turns to the indexes (see newest_below)
VERIFY_STEP = 50_000  # rows per verification request (about a second of hashing)
LOCAL = ZoneInfo("Asia/Shanghai")  # times typed into the form are China Standard Time
COLUMNS = ("seq", "occurred_at", "actor", "action", "target", "details")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class TrailRefusal(Refusal):
    status = 400


@dataclass(frozen=True)
class Search:
    """What to look for; empty fields are not filters. ``since`` and ``until`` are stored-form UTC bounds."""

    actor: str = ""
    subject: str = ""
    action: str = ""
    since: str = ""  # occurred_at >= since
    until: str = ""  # occurred_at < until
    typed: tuple = ()  # the form's fields as typed, for links and the audit record

    def conditions(self) -> list:
        found = []
        if self.actor:
            found.append(AuditEvent.actor == self.actor)
        if self.subject:
            found.append(AuditEvent.target == self.subject)
        if self.action:
            upper = self.action[:-1] + chr(ord(self.action[-1]) + 1)
            found += [
                AuditEvent.action >= self.action,
                AuditEvent.action < upper,
                AuditEvent.action.startswith(self.action, autoescape=True),
            ]
        if self.since:
            found.append(AuditEvent.occurred_at >= self.since)
        if self.until:
            found.append(AuditEvent.occurred_at < self.until)
        return found

    def described(self) -> dict:
        """The search as recorded in the audit trail and put in links (the typed values)."""
        return {key: value for key, value in self.typed if value}


def stored_form(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _moment(value: str, field: str, *, end: bool) -> str:
    """A typed date (``2026-12-01``) or date and time (``2026-12-01T09:30``) in China Standard Time, as a stored-form
    bound; an end bound takes in the whole day or minute it names."""
    value = value.strip()
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            moment = datetime.combine(day + timedelta(days=1) if end else day, time(), LOCAL)
        else:
            moment = datetime.fromisoformat(value.replace(" ", "T")[:19])
            if moment.tzinfo is not None:
                raise ValueError
            moment = moment.replace(second=0, tzinfo=LOCAL) + (timedelta(minutes=1) if end else timedelta())
    except ValueError:
        raise TrailRefusal(
            N_("%(value)s is not a date (2026-12-01) or a date and time (2026-12-01T09:30)."),
            code="bad_time",
            field=field,
            value=value[:40],
        ) from None
    return stored_form(moment)


def parse(db: Session, args) -> Search:
    """The search a form (or a link) asks for; bad times are refused with a readable reason."""
    typed = {name: str(args.get(name, "") or "").strip()[:300] for name in ("actor", "subject", "action", "from", "to")}
    actor = typed["actor"][:200]
    if actor and ":" not in actor and actor not in ("cli", "system", "anonymous"):
        actor = _account_actor(db, actor) or actor
    since = _moment(typed["from"], "from", end=False) if typed["from"] else ""
    until = _moment(typed["to"], "to", end=True) if typed["to"] else ""
    if since and until and until <= since:
        raise TrailRefusal(N_("The end of the time range comes before its start."), code="bad_range")
    return Search(actor, typed["subject"], typed["action"][:100], since, until, tuple(typed.items()))


def _account_actor(db: Session, username: str) -> str | None:
    from idp.models import Account

    account_id = db.scalar(select(Account.id).where(Account.username == username))
    return f"account:{account_id}" if account_id else None


@dataclass(frozen=True)
class Page:
    events: list[AuditEvent]
    older: int | None  # ``before`` of the next page, None on the last


def newest_below(db: Session, search: Search, top: int, limit: int, columns=None) -> list:
    """Up to ``limit`` matching events numbered below ``top``, newest first.

    First the :data:`WALK` events just below ``top``, read back by number (the primary key): where matches are common
    (an action prefix like ``idp.``, no filter at all) that fills a page at once, where the action index would have
    the database read every event of the action and sort them. What that stretch does not fill comes from below it
    through the indexes (action, time), which is quick exactly when matches are rare.
    """
    conditions = search.conditions()
    floor = max(0, top - WALK)

    def fetch(*bounds, limit: int) -> list:
        query = select(*columns) if columns is not None else select(AuditEvent)
        query = query.where(*conditions, *bounds).order_by(AuditEvent.seq.desc()).limit(limit)
        return list(db.execute(query).all() if columns is not None else db.scalars(query))

    rows = fetch(AuditEvent.seq < top, AuditEvent.seq >= floor, limit=limit)
    if len(rows) < limit and floor > 0:
        rows += fetch(AuditEvent.seq < floor, limit=limit - len(rows))
    return rows


def page(db: Session, search: Search, before: int | None = None, size: int = PAGE_SIZE) -> Page:
    """One page of matching events, newest first, below ``before`` (keyset on seq)."""
    top = before if before is not None else audit.CHAIN.last_seq(db) + 1
    rows = newest_below(db, search, top, size + 1)
    older = rows[size - 1].seq if len(rows) > size else None
    for row in rows:
        db.expunge(row)
    return Page(rows[:size], older)


def record_search(db: Session, who: str, search: Search, *, before: int | None, shown: int) -> None:
    audit.record(
        db,
        actor=who,
        action="admin.audit.searched",
        target="audit_events",
        details={"search": search.described(), "before": before, "shown": shown},
    )


def record_export(db: Session, who: str, search: Search, fmt: str) -> None:
    audit.record(db, actor=who, action="admin.audit.exported", target="audit_events", details={"search": search.described(), "format": fmt})


def _batches(sessions, search: Search) -> Iterator[list[tuple]]:
    """Matching rows, newest first, EXPORT_BATCH at a time, each batch in a short read of its own (keyset on seq)."""
    from core import db as core_db

    columns = [getattr(AuditEvent, c) for c in COLUMNS]
    before = None
    while True:
        with core_db.read_only(sessions) as db:
            top = before if before is not None else audit.CHAIN.last_seq(db) + 1
            rows = [tuple(row) for row in newest_below(db, search, top, EXPORT_BATCH, columns)]
        if not rows:
            return
        yield rows
        if len(rows) < EXPORT_BATCH:
            return
        before = rows[-1][0]


def safe_cell(value) -> str:
    """A CSV cell a spreadsheet shows as text: one that would start a formula gets a leading apostrophe."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_lines(sessions, search: Search) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    yield "\ufeff" + buffer.getvalue()  # the BOM: spreadsheets then read the Chinese text as UTF-8
    for rows in _batches(sessions, search):
        buffer.seek(0)
        buffer.truncate()
        writer.writerows([safe_cell(cell) for cell in row] for row in rows)
        yield buffer.getvalue()


def json_chunks(sessions, search: Search) -> Iterator[str]:
    """A JSON document ``{"search": ..., "events": [...]}`` written as it is read; ``details`` as the object it holds."""
    yield '{"search":' + json.dumps(search.described(), ensure_ascii=False) + ',"events":['
    first = True
    for rows in _batches(sessions, search):
        parts = []
        for row in rows:
            event = dict(zip(COLUMNS, row, strict=True))
            try:
                event["details"] = json.loads(event["details"] or "{}")
            except ValueError:
                pass  # as stored (verification would find such a row altered)
            parts.append(json.dumps(event, ensure_ascii=False, separators=(",", ":")))
        yield ("" if first else ",") + "\n" + ",\n".join(parts)
        first = False
    yield "\n]}\n"


# -- verification --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """Where a verification run stands after one step."""

    first: int  # the run's range
    last: int
    next: int | None  # where the next step starts; None when the run is over
    checked: int  # rows checked in this step
    ok: bool
    broken_at: int | None = None
    reason: str = ""

    @property
    def done(self) -> int:
        """Rows of the range checked so far (for the progress bar)."""
        if self.next is None:
            return self.total if self.ok else max(0, (self.broken_at or self.first) - self.first)
        return self.next - self.first

    @property
    def total(self) -> int:
        return max(0, self.last - self.first + 1)

    @property
    def percent(self) -> int:
        return 100 if not self.total else min(100, self.done * 100 // self.total)


def verify_bounds(db: Session, first: object, last: object) -> tuple[int, int, bool]:
    """The range a run covers: ``first`` from 1, ``last`` up to the newest event (empty: the newest); and whether it
    reaches the newest, so that its last step checks the head row too."""
    newest = audit.CHAIN.last_seq(db)
    first_seq = seq_param(first, 1)
    last_seq = min(seq_param(last, newest), newest)
    if first_seq > last_seq and newest:
        raise TrailRefusal(N_("The range has no events: the trail runs from 1 to %(newest)s."), code="bad_range", newest=newest)
    return first_seq, last_seq, last_seq == newest


def seq_param(value: object, default: int) -> int:
    text = str(value or "").strip()
    if not text:
        return default
    if not text.isdigit() or len(text) > 15 or int(text) < 1:
        raise TrailRefusal(N_("%(value)s is not an event number."), code="bad_seq", value=text[:20])
    return int(text)


def verify_step(db: Session, first: int, last: int, at: int, *, to_newest: bool, step: int = VERIFY_STEP) -> Step:
    """Verify rows ``at`` .. ``at + step - 1`` of the run ``first`` .. ``last``.

    A run to the newest event takes in, at its last step, the events written since it began (its own record among
    them) and then checks the head row; events another request appends meanwhile are checked as well, a few times
    over, before a head row that still names more events than there are counts as a broken end.
    """
    at = max(first, at)
    if at > last and not to_newest:  # nothing left
        return Step(first, last, None, 0, True)
    end = min(last, at + step - 1)
    if not (to_newest and end == last):
        span = audit.CHAIN.verify_span(db, at, end)
        if not span.ok:
            return Step(first, last, None, span.checked, False, span.broken_at, span.reason)
        return Step(first, last, end + 1 if end < last else None, span.checked, True)
    checked = 0
    for _ in range(4):
        span = audit.CHAIN.verify_span(db, at, None)
        checked += span.checked
        if not span.ok:
            return Step(first, max(last, span.broken_at or last), None, checked, False, span.broken_at, span.reason)
        headed = audit.CHAIN.verify_head(db, span)
        if headed.ok:
            return Step(first, max(last, span.last_seq), None, checked, True)
        at = span.last_seq + 1
    return Step(first, max(last, span.last_seq), None, checked, False, headed.broken_at, headed.reason)


def record_verification(db: Session, who: str, step: Step) -> None:
    audit.record(
        db,
        actor=who,
        action="admin.audit.verified",
        target="audit_events",
        details={"first": step.first, "last": step.last, "ok": step.ok, "broken_at": step.broken_at, "reason": step.reason[:200]},
    )


# What is wrong, in the person's language: core.chain words its reasons in English for logs and the CLI.
BREAKS = (
    ("was altered", N_("Event #%(seq)s was changed after it was written: its content no longer matches its hash.")),
    ("does not link", N_("Event #%(seq)s does not link to the event before it: its prev_hash differs.")),
    ("removed from the end", N_("Events from #%(seq)s on were removed from the end of the trail: the head row records more.")),
    ("is missing", N_("Event #%(seq)s is missing.")),
    ("head", N_("The trail's head row does not match the newest event.")),
)


def explained(step: Step) -> tuple[str, dict]:
    """The msgid and values that say what broke (``step.reason`` as a fallback in the person's language)."""
    for words, message in BREAKS:
        if words in step.reason:
            return message, {"seq": step.broken_at}
    return N_("The chain is broken at event #%(seq)s: %(reason)s"), {"seq": step.broken_at, "reason": step.reason}
