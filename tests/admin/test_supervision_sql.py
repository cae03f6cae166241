"""admin.supervision's aggregate queries on both databases (SQLite, and PostgreSQL with HALLMARK_TEST_POSTGRES=1):
rows written with chosen times, figures known by construction. The weeks are China Standard Time ISO weeks, so a
licence issued at 01:00 on a Monday there (still Sunday in UTC) counts in that Monday's week."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from admin import roles, supervision
from core import audit
from core import db as core_db
from licenses.models import Issuer, Licence, LicenceRequest, LicenceType
from tests.admin.conftest import department_code

CST = ZoneInfo("Asia/Shanghai")
TODAY = date(2026, 12, 9)  # a Wednesday: week 2026-W50 runs from Monday 7 December
A, B = department_code(11), department_code(12)
TYPE = "11100000000013952E901"


def cst(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), CST).astimezone(UTC)


def fill(factory) -> None:
    monday = TODAY - timedelta(days=TODAY.weekday())
    last = monday - timedelta(weeks=1)
    now = cst(TODAY, 9)
    with core_db.transaction(factory) as db:
        db.add(
            LicenceType(
                code=TYPE, name="测试证", name_en="Test", authority_code=A, authority_name="甲", holder_kind="person",
                face_schema="{}", validity="{}", layout="{}", created_at=now, created_by="test",
            )
        )  # fmt: skip
        for code in (A, B):
            db.add(Issuer(credit_code=code, name=f"部门{code[-4:]}", seal_name="章", created_at=now, created_by="test"))
        db.flush()
        issued = [
            (A, cst(last, 10)),
            (A, cst(last + timedelta(days=6), 23)),
            (A, cst(monday, 1)),
            (B, cst(last, 11)),
            (A, cst(last - timedelta(weeks=9), 8)),
        ]
        for n, (issuer, moment) in enumerate(issued):
            db.add(
                Licence(
                    identifier=f"L{n}", type_code=TYPE, issuer_code=issuer, serial=f"S{n}", version=1, holder_type="111",
                    holder_hash=f"h{n}", holder_masked="3501**********1234", holder_cipher=b"x", holder_name="某",
                    state="valid", state_changed_at=moment, valid_from=moment.date(), issued_at=moment, issued_by="test",
                    face_public="{}", requester="test",
                )
            )  # fmt: skip
        # Requests of A fulfilled last Thursday after 1, 2, 3, 4 and 10 hours; one of B after 5 hours.
        decided = cst(last + timedelta(days=3), 16)
        requests = [(A, h, "fulfilled", TODAY) for h in (1, 2, 3, 4, 10)] + [(B, 5, "fulfilled", TODAY)]
        # Open ones of A: two past their deadline (last Tuesday, and long ago), one not yet due.
        requests += [(A, 0, "open", last + timedelta(days=1)), (A, 0, "open", date(2026, 1, 5)), (A, 0, "open", TODAY + timedelta(days=3))]
        for n, (issuer, hours, state, deadline) in enumerate(requests):
            db.add(
                LicenceRequest(
                    id=f"R{n}", type_code=TYPE, issuer_code=issuer, holder_type="111", holder_hash=f"r{n}",
                    holder_masked="3501**********1234", holder_cipher=b"x", requested_by="client:test", matter="事项",
                    reason="理由", state=state, deadline=deadline,
                    created_at=decided - timedelta(hours=hours) if state == "fulfilled" else now,
                    decided_at=decided if state == "fulfilled" else None,
                )
            )  # fmt: skip
        for level, moment in ((2, cst(last, 9)), (2, cst(monday, 1)), (3, cst(monday, 2)), (1, cst(last - timedelta(weeks=20), 9))):
            audit.record(db, actor="account:x", action="idp.session.started", target="s", details={"acr": level, "amr": "pwd"}, at=moment)
        audit.record(
            db, actor="account:x", action="idp.session.stepped_up", target="s", details={"acr": 3, "method": "hwk"}, at=cst(last, 9)
        )
        audit.record(db, actor="ip:1", action="idp.login.failed", target="x", details={"reason": "password"}, at=cst(monday, 0, 30))
        audit.record(db, actor="ip:1", action="idp.certlogin.refused", target="x", details={}, at=cst(last, 12))
        audit.record(db, actor="ip:1", action="idp.login.identifier_locked", target="x", details={}, at=cst(last, 12))


def week(report, label):
    return next(w for w in report.weeks if w.label == label)


def test_the_figures_on_each_database(migrated):
    _, factory = migrated
    fill(factory)
    everyone = roles.Staff("s", "", frozenset({(roles.AUDITOR, None)}))
    with core_db.read_only(factory) as db:
        report = supervision.report(db, everyone, weeks=4, today=TODAY)
    assert [w.label for w in report.weeks] == ["2026-W47", "2026-W48", "2026-W49", "2026-W50"]
    w49, w50 = week(report, "2026-W49"), week(report, "2026-W50")
    assert (w49.issued, w50.issued) == (3, 1)  # Sunday 23:00 is W49; Monday 01:00 is W50
    # All departments together: 1, 2, 3, 4, 5, 10 hours: nearest-rank median the 3rd (3 h), p90 the 6th (10 h).
    assert (w49.fulfilled, w49.median_hours, w49.p90_hours) == (6, 3.0, 10.0)
    assert (w50.fulfilled, w50.median_hours) == (0, None)
    assert w49.overdue == 1 and report.overdue_earlier == 1 and w50.overdue == 0
    assert w49.logins == {1: 0, 2: 1, 3: 1} and w50.logins == {1: 0, 2: 1, 3: 1}
    assert (w49.failed, w50.failed) == (1, 1)
    totals = {t.code: t for t in report.departments}
    assert (totals[A].issued, totals[A].fulfilled, totals[A].median_hours, totals[A].p90_hours, totals[A].overdue) == (3, 5, 3.0, 10.0, 2)
    assert (totals[B].issued, totals[B].fulfilled, totals[B].median_hours, totals[B].overdue) == (1, 1, 5.0, 0)

    head_of_b = roles.Staff("b", "", frozenset({(roles.DEPARTMENT_ADMIN, B)}))
    with core_db.read_only(factory) as db:
        mine = supervision.report(db, head_of_b, weeks=4, today=TODAY)
    assert [t.code for t in mine.departments] == [B] and not mine.province
    assert week(mine, "2026-W49").issued == 1 and week(mine, "2026-W49").logins == {1: 0, 2: 0, 3: 0}
    assert (week(mine, "2026-W49").median_hours, week(mine, "2026-W49").overdue) == (5.0, 0)
