"""The console's audit search and e-supervision figures are read through their indexes, on SQLite and PostgreSQL
(HALLMARK_TEST_POSTGRES=1): core_0005's (actor, seq) and (target, seq) on the audit trail, licenses_0008's
(issuer_code, issued_at) on licences and (issuer_code, state, decided_at) on 索取 requests.

The statements checked are the ones the service functions send (caught on the engine as they run), explained with
their own parameters: ``EXPLAIN QUERY PLAN`` on SQLite (which keeps no statistics here, so its choice does not depend
on how many rows a test writes), ``EXPLAIN`` on PostgreSQL after ``ANALYZE``. On a table of a test's size PostgreSQL
rightly prefers reading the whole table, so its plans are asked for with ``enable_seqscan`` off: a query that cannot
use an index still shows its ``Seq Scan`` then, and fails. What the indexes change at a million rows is measured by
bench/console_indexes.py (docs/benchmarks.md).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import event, insert, update

from admin import roles, supervision, trail
from core import audit
from core import db as core_db
from core.models import AuditEvent, AuditHead
from licenses.models import Issuer, Licence, LicenceRequest, LicenceType
from tests.admin.conftest import department_code

DEPARTMENTS = [department_code(30 + n) for n in range(3)]
TYPE = "11100000000013952E901"
TODAY = date(2026, 12, 9)
EVENTS, LICENCES, REQUESTS = 20_000, 600, 300


def fill(factory) -> None:
    start = datetime(2026, 6, 1, tzinfo=UTC)
    with core_db.transaction(factory) as db:
        db.add(
            LicenceType(
                code=TYPE, name="测试证", name_en="Test", authority_code=DEPARTMENTS[0], authority_name="甲", holder_kind="person",
                face_schema="{}", validity="{}", layout="{}", created_at=start, created_by="test",
            )
        )  # fmt: skip
        for code in DEPARTMENTS:
            db.add(Issuer(credit_code=code, name=f"部门{code[-4:]}", seal_name="章", created_at=start, created_by="test"))
        db.flush()
        db.execute(
            insert(Licence),
            [
                dict(  # noqa: C408
                    identifier=f"P{n}", type_code=TYPE, issuer_code=DEPARTMENTS[n % 3], serial=f"S{n}", version=1, holder_type="111",
                    holder_hash=f"h{n}", holder_masked="3501**********1234", holder_cipher=b"x", holder_name="某", state="valid",
                    state_changed_at=start, valid_from=start.date(), issued_at=start + timedelta(hours=7 * n), issued_by="test",
                    face_public="{}", requester="test",
                )
                for n in range(LICENCES)
            ],
        )  # fmt: skip
        db.execute(
            insert(LicenceRequest),
            [
                dict(  # noqa: C408
                    id=f"Q{n}", type_code=TYPE, issuer_code=DEPARTMENTS[n % 3], holder_type="111", holder_hash=f"q{n}",
                    holder_masked="3501**********1234", holder_cipher=b"x", requested_by="client:test", matter="事项", reason="理由",
                    state=("open", "fulfilled", "refused")[n % 3], deadline=(start + timedelta(hours=13 * n + 360)).date(),
                    created_at=start + timedelta(hours=13 * n), decided_at=start + timedelta(hours=13 * n + 5) if n % 3 else None,
                )
                for n in range(REQUESTS)
            ],
        )  # fmt: skip
        # Written directly, in time order (20,000 through audit.record would take a minute; the search does not read
        # the hashes): each account acts 10 times, each subject is named 10 times, account:7 and t7 among them.
        first = audit.CHAIN.last_seq(db) + 1
        db.execute(
            insert(AuditEvent),
            [
                dict(  # noqa: C408
                    seq=first + n, occurred_at=audit_time(start + timedelta(minutes=n)), actor=f"account:{n % 2000}",
                    action=("idp.session.started", "licences.accessed")[n % 2], target=f"t{(n * 7) % 2000}", details='{"acr":2}',
                    prev_hash=f"{n:064x}", hash=f"{n + 1:064x}",
                )
                for n in range(EVENTS)
            ],
        )  # fmt: skip
        db.execute(update(AuditHead).values(last_seq=first + EVENTS - 1, last_hash=f"{EVENTS:064x}"))


def audit_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def explained(engine, statements) -> list[str]:
    """Each statement's plan as one line of text."""
    plans = []
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("ANALYZE")
            conn.exec_driver_sql("SET enable_seqscan = off")
        for statement, parameters in statements:
            if engine.dialect.name == "sqlite":
                rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
                plans.append(" | ".join(row[3] for row in rows))
            else:
                plans.append(" | ".join(row[0].strip() for row in conn.exec_driver_sql("EXPLAIN " + statement, parameters)))
        conn.rollback()
    return plans


def statements_of(engine, factory, call, table: str) -> list[tuple]:
    """The SELECTs on ``table`` that ``call(db)`` sends, with their parameters."""
    seen = []

    def catch(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT") and f" {table}" in statement:
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", catch)
    try:
        with core_db.read_only(factory) as db:
            call(db)
    finally:
        event.remove(engine, "before_cursor_execute", catch)
    assert seen, f"no SELECT on {table}"
    return seen


def assert_uses(engine, plans: list[str], index: str, *, covering: bool = False, in_order: bool = False) -> None:
    for plan in plans:
        assert index in plan, plan
        assert "Seq Scan" not in plan and "SCAN licenses_licences" not in plan and "SCAN audit_events" not in plan, plan
        if engine.dialect.name == "sqlite":
            if covering:
                assert f"COVERING INDEX {index}" in plan, plan
            if in_order:  # the keyset page comes in the index's order: no sort of the matches
                assert "TEMP B-TREE FOR ORDER BY" not in plan, plan


@pytest.mark.parametrize("field,index", [("actor", "ix_audit_events_actor_seq"), ("subject", "ix_audit_events_target_seq")])
def test_the_audit_search_by_actor_or_subject_reads_its_index(migrated, monkeypatch, field, index):
    # A walk of 5,000 events: the page is looked for in the newest 5,000 first, then below them; both statements checked.
    monkeypatch.setattr(trail, "WALK", 5_000)
    engine, factory = migrated
    fill(factory)
    wanted = {"actor": "account:7", "subject": "t7"}[field]
    with core_db.read_only(factory) as db:
        search = trail.parse(db, {field: wanted})
    found = []
    statements = statements_of(engine, factory, lambda db: found.extend(trail.page(db, search, size=5).events), "audit_events")
    assert len(statements) == 2 and len(found) == 5
    assert all((e.actor if field == "actor" else e.target) == wanted for e in found)
    assert_uses(engine, explained(engine, statements), index, in_order=True)


@pytest.mark.parametrize("scope", ["every department", "one department"])
def test_the_supervision_figures_read_their_indexes(migrated, scope):
    engine, factory = migrated
    fill(factory)
    if scope == "every department":
        person, department = roles.Staff("s", "", frozenset({(roles.AUDITOR, None)})), None
    else:
        person, department = roles.Staff("d", "", frozenset({(roles.DEPARTMENT_ADMIN, DEPARTMENTS[1])})), DEPARTMENTS[1]
    win = supervision.window(weeks=12, today=TODAY)
    counted = []

    def issued(db):
        counted.extend(supervision.issued(db, person, win, department=department))

    plans = explained(engine, statements_of(engine, factory, issued, "licenses_licences"))
    assert_uses(engine, plans, "ix_licenses_licences_issued", covering=True)
    assert sum(row.issued for row in counted) > 0
    for per in (supervision.WEEK, supervision.DEPARTMENT):
        fulfilled = []

        def turnaround(db, per=per, fulfilled=fulfilled):
            fulfilled.extend(supervision.turnaround(db, person, win, department=department, per=per))

        plans = explained(engine, statements_of(engine, factory, turnaround, "licenses_requests"))
        assert_uses(engine, plans, "ix_licenses_requests_decided")
        assert sum(row.fulfilled for row in fulfilled) > 0
