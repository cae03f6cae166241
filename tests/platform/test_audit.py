"""The hash-chained audit trail on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from core import audit, db
from tests.conftest import initialised_copy, run_hallmark


def append(factory, n, actor="tester"):
    for i in range(n):
        with db.transaction(factory) as session:
            audit.record(session, actor=actor, action="test.event", target=f"thing-{i}", details={"i": i, "名称": "测试"})


def _tamper(engine, sql: str) -> None:
    """What an attacker with database rights does: lift the append-only guard, then edit."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only"))
        else:
            conn.execute(text("DROP TRIGGER IF EXISTS audit_events_no_update"))
            conn.execute(text("DROP TRIGGER IF EXISTS audit_events_no_delete"))
        conn.exec_driver_sql(sql)


def test_intact_chain_verifies(migrated):
    engine, factory = migrated
    append(factory, 25)
    with factory() as session:
        result = audit.verify(session, batch=7)  # several batches
    assert result.ok and result.checked == 25


def test_altered_row_is_named(migrated):
    engine, factory = migrated
    append(factory, 10)
    _tamper(engine, "UPDATE audit_events SET details = '{\"i\":999}' WHERE seq = 4")
    with factory() as session:
        result = audit.verify(session)
    assert not result.ok and result.broken_at == 4 and "altered" in result.reason


def test_rehashed_row_breaks_the_next_link(migrated):
    engine, factory = migrated
    append(factory, 6)
    with factory() as session:
        row = session.get(audit.AuditEvent, 3)
        row.details = '{"i":42}'
        forged = audit.event_hash(row)
    _tamper(engine, f"UPDATE audit_events SET details = '{{\"i\":42}}', hash = '{forged}' WHERE seq = 3")
    with factory() as session:
        result = audit.verify(session)
    assert not result.ok and result.broken_at == 4 and "does not link" in result.reason


def test_removed_rows_are_found(migrated):
    engine, factory = migrated
    append(factory, 6)
    _tamper(engine, "DELETE FROM audit_events WHERE seq = 2")
    with factory() as session:
        result = audit.verify(session)
    assert not result.ok and result.broken_at == 2 and "missing" in result.reason
    _tamper(engine, "DELETE FROM audit_events WHERE seq >= 2")
    with factory() as session:
        result = audit.verify(session)
    assert not result.ok and "removed from the end" in result.reason


def test_database_refuses_update_and_delete(migrated):
    engine, factory = migrated
    append(factory, 2)
    for sql in ("UPDATE audit_events SET actor = 'x'", "DELETE FROM audit_events"):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text(sql))


def test_action_and_event_commit_together(migrated):
    engine, factory = migrated
    with pytest.raises(RuntimeError), db.transaction(factory) as session:
        audit.record(session, actor="a", action="will.roll.back")
        raise RuntimeError("the action failed")
    append(factory, 1)
    with factory() as session:
        result = audit.verify(session)
        assert result.ok and result.checked == 1


@pytest.mark.parametrize("where", ["details", "target", "actor"])
@pytest.mark.parametrize("value", ["11010519491231002X", "110105194912310021"])  # valid, and with a mistyped check character
def test_full_resident_id_is_refused(migrated, where, value):
    _, factory = migrated
    fields = {"actor": "clerk", "action": "x", "target": "", "details": {}}
    fields[where] = {"id": value} if where == "details" else f"about {value}"
    with pytest.raises(ValueError, match="full resident ID"), db.transaction(factory) as session:
        audit.record(session, **fields)
    with factory() as session:
        assert audit.verify(session).checked == 0  # nothing half-written


def test_other_18_digit_numbers_are_not_mistaken_for_resident_ids(migrated):
    _, factory = migrated
    with db.transaction(factory) as session:
        # An all-digit unified social credit code (registration authority 9, not a province) and a serial number.
        audit.record(
            session, actor="test", action="idp.enterprise.added", target="913501024322642298", details={"serial": "123456789012345678"}
        )
    with factory() as session:
        assert audit.verify(session).ok


def test_concurrent_appends_keep_one_chain(migrated):
    engine, factory = migrated
    errors = []

    def worker(n):
        try:
            append(factory, 15, actor=f"worker-{n}")
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:2]
    with factory() as session:
        result = audit.verify(session)
    assert result.ok and result.checked == 60


def test_cli_names_the_first_broken_link(tmp_path):
    instance = tmp_path / "inst"
    initialised_copy(instance)
    ok = run_hallmark(instance, "audit", "verify")
    assert ok.returncode == 0 and "audit trail intact:" in ok.stdout
    engine = db.make_engine(f"sqlite:///{instance / 'hallmark.db'}")
    factory = db.make_session_factory(engine)
    append(factory, 3)
    _tamper(engine, "UPDATE audit_events SET actor = 'mallory' WHERE seq = 3")  # an event written by init
    engine.dispose()
    broken = run_hallmark(instance, "audit", "verify")
    assert broken.returncode == 2
    assert "audit trail BROKEN at event #3: event #3 was altered" in broken.stderr
    assert "Traceback" not in broken.stderr
