"""admin.trail's search, keyset pages and stepwise chain check on both databases (SQLite, and PostgreSQL with
HALLMARK_TEST_POSTGRES=1)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from admin import trail
from core import audit
from core import db as core_db


@pytest.mark.parametrize("walk", [trail.WALK, 4])
def test_search_pages_and_the_chain_check_on_each_database(migrated, walk, monkeypatch):
    # With a walk of 4 events, pages are filled from the short stretch read back by number and then through the indexes.
    monkeypatch.setattr(trail, "WALK", walk)
    engine, factory = migrated
    with core_db.transaction(factory) as db:
        for n in range(30):
            action = ("test.alpha.one", "test.alpha_two", "test.beta")[n % 3]
            audit.record(
                db,
                actor=f"test:{n % 2}",
                action=action,
                target=f"t{n % 5}",
                details={"n": n},
                at=datetime(2026, 1, 1, n, tzinfo=UTC) if n < 24 else None,
            )
    with core_db.read_only(factory) as db:
        search = trail.parse(db, {"action": "test.alpha"})
        first = trail.page(db, search, size=7)
        second = trail.page(db, search, first.older, size=7)
        everything = [e.seq for e in first.events + second.events]
        while second.older:
            second = trail.page(db, search, second.older, size=7)
            everything += [e.seq for e in second.events]
        # "test.alpha" is a prefix: test.alpha.one and test.alpha_two, not test.beta; "_" is no wildcard in "alpha_".
        assert len(everything) == 20 and everything == sorted(everything, reverse=True)
        assert len(trail.page(db, trail.parse(db, {"action": "test.alpha_"})).events) == 10
        # 2026-01-01 08:00 to 09:59 in China Standard Time is 00:00 to 01:59 UTC: events 0 and 1.
        timed = trail.page(db, trail.parse(db, {"from": "2026-01-01T08:00", "to": "2026-01-01T09:59"}))
        assert sorted(e.target for e in timed.events) == ["t0", "t1"]
        both = trail.page(db, trail.parse(db, {"actor": "test:1", "subject": "t3"}))
        assert [e.details for e in both.events] == ['{"n":23}', '{"n":13}', '{"n":3}']
        victim = everything[5]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only"))
        else:
            conn.execute(text("DROP TRIGGER IF EXISTS audit_events_no_update"))
        conn.execute(text("UPDATE audit_events SET details = '{}' WHERE seq = :s"), {"s": victim})
    with core_db.read_only(factory) as db:
        first_seq, last_seq, newest = trail.verify_bounds(db, "", "")
        at = first_seq
        while True:
            step = trail.verify_step(db, first_seq, last_seq, at, to_newest=newest, step=4)
            if step.next is None:
                break
            at = step.next
        assert not step.ok and step.broken_at == victim and "altered" in step.reason
        assert trail.verify_step(db, victim + 1, last_seq, victim + 1, to_newest=True).ok
