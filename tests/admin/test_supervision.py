"""E-supervision (电子监察): the figures on the page match counts made here straight from the database, and a
department administrator sees their own department only.

Licences are issued and 索取 requests made and fulfilled through the licence library's own services, then their
times are set to chosen moments (a licence issued at 02:00 on a Monday in China Standard Time belongs to that
week, though it is still Sunday in UTC). Logins are real: password sign-ins, a USB-key step-up, a wrong password.
The expected numbers come from plain SQL over the rows and Python's own week and percentile arithmetic, not the
service's GROUP BY queries.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import requests
from sqlalchemy import text

from admin import roles
from core import db as core_db
from licenses import demo, issuance, lifecycle
from licenses import requests as licence_requests
from tests.admin.conftest import PASSWORD
from tests.licenses.conftest import person_code

pytestmark = pytest.mark.slow

CST = ZoneInfo("Asia/Shanghai")
DRIVING, TEACHER = demo.DRIVING_LICENCE, demo.TEACHER_QUALIFICATION
POLICE, EDUCATION = demo.issuer_for(DRIVING).code, demo.issuer_for(TEACHER).code
ACTOR = "test:supervision"


def at(day: date, hour: int, minute: int = 0) -> datetime:
    """A moment in China Standard Time, as a UTC datetime."""
    return datetime.combine(day, time(hour, minute), CST).astimezone(UTC)


def week_label(moment: datetime | date) -> str:
    day = moment.astimezone(CST).date() if isinstance(moment, datetime) else moment
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def as_utc(value) -> datetime:
    """A timestamp column as read by plain SQL (text on SQLite, a datetime on PostgreSQL)."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def nearest_rank(values: list[float], percent: int) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(len(ordered) * percent / 100) - 1]


@pytest.fixture(scope="module")
def data(console):
    """Licences, requests and logins at chosen times; returns the weeks they fall in."""
    ctx = console.services["licenses"]
    demo.prepare_catalogue(ctx, actor=ACTOR)
    this_monday = lifecycle.today() - timedelta(days=lifecycle.today().weekday())
    last_monday = this_monday - timedelta(weeks=1)
    base = 70000 + int(uuid.uuid4().hex[:4], 16)

    def licence(type_code: str, n: int):
        code = person_code(base + n)
        face = demo.sample_face(type_code, holder_code=code, holder_name="监察测试", seed=str(base + n))
        order = issuance.Order(type_code=type_code, issuer_code=demo.issuer_for(type_code).code, holder_code=code, face=face)
        return issuance.issue(ctx, order, actor=ACTOR, requester=ACTOR), code

    issued_times = [at(last_monday + timedelta(days=1), 10), at(last_monday + timedelta(days=6), 23, 30), at(this_monday, 2)]
    police = [licence(DRIVING, n) for n in range(3)]
    teacher, _ = licence(TEACHER, 3)
    hours = [2, 10, 30]  # request to fulfilment
    with core_db.transaction(ctx.sessions) as db:
        for (row, _), moment in zip(police, issued_times, strict=True):
            db.execute(
                text("UPDATE licenses_licences SET issued_at = :t WHERE identifier = :i"), {"t": _stored(db, moment), "i": row.identifier}
            )
        db.execute(
            text("UPDATE licenses_licences SET issued_at = :t WHERE identifier = :i"),
            {"t": _stored(db, at(last_monday + timedelta(days=2), 9)), "i": teacher.identifier},
        )
    for (row, code), spent in zip(police, hours, strict=True):
        asked = licence_requests.ask(
            ctx, type_code=DRIVING, issuer_code=POLICE, holder_type="111", holder_code=code,
            matter="机动车驾驶证补领", reason="证照库中没有驾驶证", requested_by="client:test",
        )  # fmt: skip
        licence_requests.fulfil(ctx, asked.id, identifier=row.identifier, actor=ACTOR)
        decided = at(last_monday + timedelta(days=3), 16)
        with core_db.transaction(ctx.sessions) as db:
            db.execute(
                text("UPDATE licenses_requests SET created_at = :c, decided_at = :d WHERE id = :i"),
                {"c": _stored(db, decided - timedelta(hours=spent)), "d": _stored(db, decided), "i": asked.id},
            )
    overdue_deadline = last_monday + timedelta(days=2)
    for n, deadline in ((10, overdue_deadline), (11, lifecycle.today() + timedelta(days=10))):
        asked = licence_requests.ask(
            ctx, type_code=DRIVING, issuer_code=POLICE, holder_type="111", holder_code=person_code(base + n),
            matter="机动车驾驶证补领", reason="证照库中没有驾驶证", requested_by="client:test",
        )  # fmt: skip
        with core_db.transaction(ctx.sessions) as db:
            db.execute(text("UPDATE licenses_requests SET deadline = :d WHERE id = :i"), {"d": deadline, "i": asked.id})

    # Logins: a password sign-in (level 2), a USB-key step-up (level 3), a wrong password.
    person = console.person((roles.COUNTER_CLERK, POLICE), name="登录测试")
    browser = console.browser(person)
    assert browser.sign_in().status_code == 200
    stranger = requests.Session()  # another browser: a wrong password for the same account
    login_page = stranger.get(browser.url("/login"), timeout=30)
    token = re.search(r'name="csrf_token" value="([^"]+)"', login_page.text).group(1)
    wrong = stranger.post(
        browser.url("/login"), data={"csrf_token": token, "identifier": person.username, "password": PASSWORD + "x"}, timeout=30
    )
    assert wrong.status_code in (400, 401, 403, 422) and console.audit("idp.login.failed", person.account_id)
    assert browser.confirm_with_usb_key("/admin").status_code == 200  # a USB-key login: level 3
    return {"last": week_label(last_monday), "this": week_label(this_monday), "overdue_week": week_label(overdue_deadline)}


def _stored(db, moment: datetime):
    return moment.replace(tzinfo=None) if db.get_bind().dialect.name == "sqlite" else moment


def figures(page: str, figure: str) -> dict[str, list[str]]:
    """week -> the numbers of one figure's table, as shown."""
    section = re.search(rf'<section[^>]*id="figure-{figure}".*?</section>', page, re.S).group(0)
    table = re.search(r"<table.*?</table>", section, re.S).group(0)
    rows = re.findall(r'<tr data-week="([^"]+)">(.*?)</tr>', table, re.S)
    return {week: re.findall(r'data-series="\d+">([^<]*)</td>', cells) for week, cells in rows}


def totals(page: str) -> dict[str, dict[str, str]]:
    rows = re.findall(r'<tr data-department="([^"]+)">(.*?)</tr>', page, re.S)
    return {code: dict(re.findall(r'data-figure="(\w+)">([^<]*)</td>', cells)) for code, cells in rows}


def shown(number) -> str:
    return "—" if number is None else str(number)


def independent(console, weeks: list[str], department: str) -> dict:
    """The figures, counted here: plain SQL for the rows, Python for weeks and percentiles."""
    today = lifecycle.today()
    first_monday = today - timedelta(days=today.weekday(), weeks=len(weeks) - 1)
    since = datetime.combine(first_monday, time(), CST).astimezone(UTC)
    with console.services.sessions() as db:
        issued_at = [
            as_utc(v) for (v,) in db.execute(text("SELECT issued_at FROM licenses_licences WHERE issuer_code = :d"), {"d": department})
        ]
        fulfilled = db.execute(
            text("SELECT created_at, decided_at FROM licenses_requests WHERE issuer_code = :d AND state = 'fulfilled'"), {"d": department}
        ).all()
        open_deadlines = [
            v if isinstance(v, date) else date.fromisoformat(str(v)[:10])
            for (v,) in db.execute(
                text("SELECT deadline FROM licenses_requests WHERE issuer_code = :d AND state = 'open'"), {"d": department}
            )
        ]
        logins = db.execute(
            text("SELECT occurred_at, details FROM audit_events WHERE action IN ('idp.session.started', 'idp.session.stepped_up')")
        ).all()
        failed = db.execute(
            text("SELECT occurred_at FROM audit_events WHERE action IN ('idp.login.failed', 'idp.certlogin.refused')")
        ).all()
    expected = {
        "issued": Counter(),
        "turnaround": defaultdict(list),
        "overdue": Counter(),
        "logins": defaultdict(Counter),
        "failed": Counter(),
    }
    for moment in issued_at:
        if moment >= since:
            expected["issued"][week_label(moment)] += 1
    spans = []
    for created, decided in fulfilled:
        created, decided = as_utc(created), as_utc(decided)
        if decided >= since:
            expected["turnaround"][week_label(decided)].append((decided - created).total_seconds())
            spans.append((decided - created).total_seconds())
    for deadline in open_deadlines:
        if deadline < today:
            expected["overdue"][week_label(deadline)] += 1
    for occurred, details in logins:
        if as_utc(occurred) >= since:
            expected["logins"][week_label(as_utc(occurred))][json.loads(details)["acr"]] += 1
    for (occurred,) in failed:
        if as_utc(occurred) >= since:
            expected["failed"][week_label(as_utc(occurred))] += 1
    expected["spans"] = spans
    expected["overdue_now"] = sum(deadline < today for deadline in open_deadlines)
    expected["issued_total"] = sum(expected["issued"].values())
    return expected


def test_the_figures_match_counts_made_from_the_database(console, data):
    auditor = console.person((roles.AUDITOR, None), usb=False, name="监察审计员")
    browser = console.browser(auditor)
    assert browser.sign_in().status_code == 200
    answer = browser.get(f"/admin/supervision?weeks=4&department={POLICE}")
    assert answer.status_code == 200, answer.text[:500]
    page = answer.text
    issued = figures(page, "issued")
    weeks = list(issued)
    assert len(weeks) == 4 and weeks[-2:] == [data["last"], data["this"]]
    expected = independent(console, weeks, POLICE)
    # What this test made is in there (a test that cannot fail otherwise would prove nothing).
    assert expected["issued"][data["last"]] >= 2 and expected["issued"][data["this"]] >= 1
    assert len(expected["turnaround"][data["last"]]) >= 3 and expected["overdue"][data["overdue_week"]] >= 1

    for week in weeks:
        assert issued[week] == [str(expected["issued"][week])], week
        spans = expected["turnaround"][week]
        median = round(nearest_rank(spans, 50) / 3600, 1) if spans else None
        p90 = round(nearest_rank(spans, 90) / 3600, 1) if spans else None
        assert figures(page, "turnaround")[week] == [shown(median), shown(p90)], week
        assert figures(page, "overdue")[week] == [str(expected["overdue"][week])], week
        assert figures(page, "logins")[week] == [str(expected["logins"][week][level]) for level in (1, 2, 3)], week
        assert figures(page, "failed")[week] == [str(expected["failed"][week])], week
    # The logins of this test: the password sign-in (2), the USB-key one (3), the wrong password.
    assert expected["logins"][data["this"]][2] >= 1 and expected["logins"][data["this"]][3] >= 1
    assert expected["failed"][data["this"]] >= 1

    row = totals(page)[POLICE]
    spans = expected["spans"]
    assert row == {
        "issued": str(expected["issued_total"]),
        "fulfilled": str(len(spans)),
        "median": str(round(nearest_rank(spans, 50) / 3600, 1)),
        "p90": str(round(nearest_rank(spans, 90) / 3600, 1)),
        "overdue": str(expected["overdue_now"]),
    }
    assert 'role="img"' in page and '<title id="chart-issued-title">' in page and "<desc" in page
    assert "<script" not in page.split("</main>")[0].split("<main")[-1]  # drawn on the server


def test_a_department_administrator_sees_their_own_department_only(console, data):
    head = console.person((roles.DEPARTMENT_ADMIN, POLICE), usb=False, name="公安部门管理员")
    browser = console.browser(head)
    home = browser.sign_in()
    assert 'href="/admin/supervision"' in home.text and 'href="/admin/audit"' not in home.text
    page = browser.get("/admin/supervision?weeks=4")
    assert page.status_code == 200
    assert set(totals(page.text)) == {POLICE}
    assert f'<option value="{EDUCATION}"' not in page.text
    assert 'id="figure-logins"' not in page.text and 'id="figure-failed"' not in page.text
    assert "登录情况属于个人" in page.text or "系统管理员和审计员" in page.text
    # The weekly figures of "all my departments" are the police's.
    weeks = list(figures(page.text, "issued"))
    expected = independent(console, weeks, POLICE)
    assert figures(page.text, "issued") == {week: [str(expected["issued"][week])] for week in weeks}
    other = browser.get(f"/admin/supervision?department={EDUCATION}")
    assert other.status_code == 403 and "无权操作" in other.text
    assert [e for e in console.audit("admin.refused") if e.actor == f"account:{head.account_id}" and e.target == "/admin/supervision"]
    assert browser.get("/admin/audit").status_code == 403


def test_a_licence_officer_is_refused_both_sections(console):
    officer = console.person((roles.LICENCE_OFFICER, POLICE), usb=False, name="证照管理员")
    browser = console.browser(officer)
    home = browser.sign_in()
    assert home.status_code == 200
    for path in ("/admin/supervision", "/admin/audit", "/admin/audit/verify", "/admin/audit/export.csv"):
        answer = browser.get(path)
        assert answer.status_code == 403 and "无权操作" in answer.text, path
        assert f'href="{path}"' not in home.text
