"""E-supervision (电子监察): what the departments did, week by week, computed in the database.

Weeks are ISO weeks (Monday to Sunday) in China Standard Time. Each figure is an
aggregate query grouped in SQL by week and department (the counts: one pass serves
the weekly figure and the totals per department, summed here over a few hundred
rows) or by week and then by department (the percentiles), so the database reads
the rows and the console gets a handful of numbers back, whatever the number of
licences or events. The licence and request figures read the indexes (issuer_code,
issued_at) and (issuer_code, state, decided_at) (licenses_0008), province-wide too
(see :func:`_scope`). Measured on SQLite with 1M licences, 300k requests and 1M audit
events on two shared, busy cores: 1.05 s for the province-wide page (5.0 s without
those indexes; most of what is left is the login figures reading every login event
through the action index), 5 ms for one department (52 ms without).

* **licences issued**: versions of licences by ``issued_at`` (new ones, renewals and
  bulk imports alike), by the issuing department;
* **time to fulfil a 索取 request**: from ``created_at`` to ``decided_at`` of the
  requests fulfilled in the week, median and 90th percentile (nearest rank: the value
  at rank ⌈p·n⌉ of the sorted times, taken with a window function in the same query);
* **overdue 索取 requests**: still open, past their deadline today, by the week of the
  deadline (the queue index: department, state, deadline);
* **logins by level**: sign-ins that started an SSO session (``idp.session.started``)
  and step-ups (``idp.session.stepped_up``), by the level (acr) reached, from the audit
  trail (on the index of ``action``, then ``occurred_at``);
* **failed logins**: what the identity provider records as failed sign-ins: wrong or
  unknown password logins (``idp.login.failed``) and refused USB-key certificate
  logins (``idp.certlogin.refused``).

Logins belong to people, not to departments: the two login figures are province-wide
and shown to system administrators and auditors only. A department administrator sees
the licence figures of their own departments (``admin.roles.in_departments``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import JSON, DateTime, Integer, case, cast, func, select
from sqlalchemy.orm import Session

from admin import roles
from core.models import AuditEvent
from core.web.i18n import N_, Refusal
from licenses import lifecycle
from licenses.models import Issuer, Licence, LicenceRequest
from licenses.requests import FULFILLED, OPEN

VIEWERS = (roles.SYSTEM_ADMIN, roles.AUDITOR, roles.DEPARTMENT_ADMIN)  # who may open the section
PROVINCE = (roles.SYSTEM_ADMIN, roles.AUDITOR)  # who sees every department and the login figures
LOCAL = ZoneInfo("Asia/Shanghai")
DEFAULT_WEEKS, MAX_WEEKS = 12, 53
LOGIN_ACTIONS = ("idp.session.started", "idp.session.stepped_up")
FAILED_LOGIN_ACTIONS = ("idp.login.failed", "idp.certlogin.refused")
LEVELS = (1, 2, 3)
WEEK, DEPARTMENT = "week", "department"  # what a figure is grouped by


class SupervisionRefusal(Refusal):
    status = 400


def province_wide(person: roles.Staff) -> bool:
    return any((role, None) in person.grants for role in PROVINCE)


def monday(day: date) -> date:
    return day - timedelta(days=day.weekday())


def iso_week(start: date) -> str:
    year, week, _ = start.isocalendar()
    return f"{year}-W{week:02d}"


@dataclass(frozen=True)
class Window:
    """The weeks shown: ``weeks`` ISO weeks ending with the one holding ``today``."""

    first: date  # Monday of the first week
    weeks: int
    today: date

    @property
    def starts(self) -> list[date]:
        return [self.first + timedelta(weeks=n) for n in range(self.weeks)]

    @property
    def since(self) -> datetime:
        return datetime.combine(self.first, time(), LOCAL).astimezone(UTC)


def window(weeks: object = None, today: date | None = None) -> Window:
    text = str(weeks or "").strip()
    count = DEFAULT_WEEKS
    if text:
        if not text.isdigit() or not 1 <= int(text) <= MAX_WEEKS:
            raise SupervisionRefusal(N_("Show from 1 to %(most)s weeks."), code="bad_weeks", most=MAX_WEEKS)
        count = int(text)
    today = today or lifecycle.today()
    return Window(monday(today) - timedelta(weeks=count - 1), count, today)


# -- SQL pieces that differ between SQLite and PostgreSQL -------------------------------------------------------


def _week_of(db: Session, column, *, is_date: bool = False, is_text: bool = False):
    """The Monday (a 'YYYY-MM-DD' text) of the China-Standard-Time ISO week holding ``column``."""
    if db.get_bind().dialect.name == "sqlite":
        if is_date:
            return func.date(column, "weekday 0", "-6 days")
        return func.date(column, "+8 hours", "weekday 0", "-6 days")
    if is_date:
        moment = func.date_trunc("week", column)
    else:
        stamp = cast(column, DateTime(timezone=True)) if is_text else column
        moment = func.date_trunc("week", func.timezone("Asia/Shanghai", stamp))
    return func.to_char(moment, "YYYY-MM-DD")


def _seconds_between(db: Session, start, end):
    if db.get_bind().dialect.name == "sqlite":
        return (func.julianday(end) - func.julianday(start)) * 86400.0
    return func.extract("epoch", end - start)


def _acr(db: Session):
    if db.get_bind().dialect.name == "sqlite":
        return cast(func.json_extract(AuditEvent.details, "$.acr"), Integer)
    return cast(cast(AuditEvent.details, JSON)["acr"].as_string(), Integer)


def _stored(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- the figures -------------------------------------------------------------------------------------------------


def departments(db: Session, person: roles.Staff) -> list[tuple[str, str]]:
    """(credit code, name) of the departments ``person`` may look at: every issuer, or their own departments."""
    rows = db.execute(select(Issuer.credit_code, Issuer.name).where(roles.in_departments(Issuer.credit_code, person, VIEWERS)))
    named = dict(rows.all())
    if not province_wide(person):
        for code in person.departments(roles.DEPARTMENT_ADMIN):  # a department that issues nothing yet
            named.setdefault(code, code)
    return sorted(named.items(), key=lambda item: item[1])


def _scope(person: roles.Staff, column, department: str | None):
    """Rows of ``department`` (checked against the person's) or of every department the person may look at.

    Every department is named too (``column IN (every issuer)``), not left unfiltered: the figures' indexes lead with
    the department ((issuer_code, issued_at), (issuer_code, state, decided_at), the queue index), so the database
    reads each department's rows of the weeks shown instead of the whole table. Every licence and request names an
    issuer (a foreign key), so the rows counted are the same.
    """
    if department is not None:
        if not (province_wide(person) or person.may(roles.DEPARTMENT_ADMIN, department)):
            raise SupervisionRefusal(N_("You may look only at your own departments."), code="not_your_department", status=403)
        return column == department
    if province_wide(person):
        return column.in_(select(Issuer.credit_code))
    return roles.in_departments(column, person, VIEWERS)


def issued(db: Session, person: roles.Staff, win: Window, *, department: str | None = None) -> list:
    """(week, department, issued) since the window began: one pass over the table serves the weekly figure and the
    totals per department (grouping by the department first would walk its index and fetch every row at random)."""
    week = _week_of(db, Licence.issued_at).label("week")
    query = (
        select(week, Licence.issuer_code.label("department"), func.count().label("issued"))
        .where(Licence.issued_at >= win.since, _scope(person, Licence.issuer_code, department))
        .group_by(week, Licence.issuer_code)
    )
    return db.execute(query).all()


def turnaround(db: Session, person: roles.Staff, win: Window, *, department: str | None = None, per: str = WEEK) -> list:
    """(week or department, fulfilled, median seconds, p90 seconds) of the requests fulfilled since the window began."""
    week = _week_of(db, LicenceRequest.decided_at)
    seconds = _seconds_between(db, LicenceRequest.created_at, LicenceRequest.decided_at)
    partition = week if per == WEEK else LicenceRequest.issuer_code
    inner = (
        select(
            LicenceRequest.issuer_code.label("department"),
            week.label("week"),
            seconds.label("seconds"),
            func.row_number().over(partition_by=partition, order_by=seconds).label("rank"),
            func.count().over(partition_by=partition).label("n"),
        )
        .where(
            LicenceRequest.state == FULFILLED,
            LicenceRequest.decided_at >= win.since,
            _scope(person, LicenceRequest.issuer_code, department),
        )
        .subquery()
    )
    # Nearest rank: ⌈p·n⌉ = (p·n + 99) // 100 for p in percent, in integer arithmetic on both databases.
    median = func.max(case((inner.c.rank == (inner.c.n * 50 + 99) // 100, inner.c.seconds)))
    p90 = func.max(case((inner.c.rank == (inner.c.n * 90 + 99) // 100, inner.c.seconds)))
    keys = [inner.c.week] if per == WEEK else [inner.c.department]
    query = select(*keys, func.count().label("fulfilled"), median.label("median"), p90.label("p90")).group_by(*keys)
    return db.execute(query).all()


def overdue(db: Session, person: roles.Staff, win: Window, *, department: str | None = None) -> list:
    """(week of the deadline, department, overdue): open requests past their deadline as of ``win.today``, every
    week (not only the window's: an old overdue request is the one that matters most). On the queue index."""
    week = _week_of(db, LicenceRequest.deadline, is_date=True).label("week")
    query = (
        select(week, LicenceRequest.issuer_code.label("department"), func.count().label("overdue"))
        .where(
            LicenceRequest.state == OPEN,
            LicenceRequest.deadline < win.today,
            _scope(person, LicenceRequest.issuer_code, department),
        )
        .group_by(week, LicenceRequest.issuer_code)
    )
    return db.execute(query).all()


def logins(db: Session, win: Window) -> list:
    """(week, level, logins) province-wide."""
    week, level = _week_of(db, AuditEvent.occurred_at, is_text=True).label("week"), _acr(db).label("level")
    query = (
        select(week, level, func.count().label("logins"))
        .where(AuditEvent.action.in_(LOGIN_ACTIONS), AuditEvent.occurred_at >= _stored(win.since))
        .group_by(week, level)
    )
    return db.execute(query).all()


def failed_logins(db: Session, win: Window) -> list:
    """(week, failed) province-wide."""
    week = _week_of(db, AuditEvent.occurred_at, is_text=True).label("week")
    query = (
        select(week, func.count().label("failed"))
        .where(AuditEvent.action.in_(FAILED_LOGIN_ACTIONS), AuditEvent.occurred_at >= _stored(win.since))
        .group_by(week)
    )
    return db.execute(query).all()


# -- the report a page shows ---------------------------------------------------------------------------------------


@dataclass
class Week:
    start: date
    label: str  # 2026-W49
    issued: int = 0
    fulfilled: int = 0
    median_hours: float | None = None
    p90_hours: float | None = None
    overdue: int = 0
    logins: dict = field(default_factory=lambda: dict.fromkeys(LEVELS, 0))
    failed: int = 0


@dataclass
class DepartmentTotals:
    code: str
    name: str
    issued: int = 0
    fulfilled: int = 0
    median_hours: float | None = None
    p90_hours: float | None = None
    overdue: int = 0


@dataclass
class Report:
    window: Window
    department: str | None
    weeks: list[Week]
    departments: list[DepartmentTotals]
    province: bool  # the login figures are included
    overdue_earlier: int = 0  # overdue requests whose deadline fell before the window


def _hours(seconds) -> float | None:
    return None if seconds is None else round(float(seconds) / 3600, 1)


def _day(text) -> date:
    return text if isinstance(text, date) else date.fromisoformat(str(text)[:10])


def report(db: Session, person: roles.Staff, *, weeks: object = None, department: str | None = None, today: date | None = None) -> Report:
    """Every figure of the section for ``person``: per week (of ``department`` or of all theirs), and per department."""
    win = window(weeks, today)
    department = (department or "").strip().upper() or None
    shown = {start: Week(start, iso_week(start)) for start in win.starts}
    issued_rows = issued(db, person, win, department=department)
    for row in issued_rows:
        if (week := shown.get(_day(row.week))) is not None:
            week.issued += row.issued
    for row in turnaround(db, person, win, department=department):
        if (week := shown.get(_day(row.week))) is not None:
            week.fulfilled, week.median_hours, week.p90_hours = row.fulfilled, _hours(row.median), _hours(row.p90)
    earlier = 0
    overdue_rows = overdue(db, person, win, department=department)
    for row in overdue_rows:
        day = _day(row.week)
        if day in shown:
            shown[day].overdue += row.overdue
        elif day < win.first:
            earlier += row.overdue
    province = province_wide(person)
    if province:
        for row in logins(db, win):
            week = shown.get(_day(row.week))
            if week is not None and row.level in LEVELS:
                week.logins[row.level] = row.logins
        for row in failed_logins(db, win):
            if (week := shown.get(_day(row.week))) is not None:
                week.failed = row.failed
    names = dict(departments(db, person))
    totals = {code: DepartmentTotals(code, name) for code, name in names.items() if department in (None, code)}

    def total(code) -> DepartmentTotals:
        return totals.setdefault(code, DepartmentTotals(code, names.get(code, code)))

    for row in issued_rows:
        if _day(row.week) in shown:
            total(row.department).issued += row.issued
    for row in turnaround(db, person, win, department=department, per=DEPARTMENT):
        found = total(row.department)
        found.fulfilled, found.median_hours, found.p90_hours = row.fulfilled, _hours(row.median), _hours(row.p90)
    for row in overdue_rows:
        total(row.department).overdue += row.overdue
    return Report(win, department, list(shown.values()), sorted(totals.values(), key=lambda t: t.name), province, earlier)
