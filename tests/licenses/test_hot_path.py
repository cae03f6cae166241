"""The compare path's shortcuts keep their meaning: only committed types are kept, Core appends chain like ORM ones."""

from __future__ import annotations

import hashlib

import pytest

from core import db
from core.problems import Problem
from licenses import accesslog, catalogue

HOLDER = hashlib.sha256(b"holder").hexdigest()


def test_a_type_seen_only_in_a_rolled_back_transaction_is_not_kept(migrated):
    _, factory = migrated
    definition = catalogue.read_file(catalogue.DEMO_TYPES / "food-business-permit.json")
    with factory() as session:
        session.begin()
        catalogue.add(session, definition, actor="test")
        assert catalogue.get(session, definition.code).code == definition.code  # its own writer sees it
        session.rollback()
    with db.read_only(factory) as session, pytest.raises(Problem) as missing:
        catalogue.get(session, definition.code)
    assert missing.value.status == 404

    with db.transaction(factory) as session:
        catalogue.add(session, definition, actor="test")
    for _ in range(2):  # read once from the row, then from what was kept
        with db.read_only(factory) as session:
            assert catalogue.get(session, definition.code).as_json() == definition.as_json()


def test_appends_through_a_core_connection_and_a_session_make_one_chain(migrated):
    _, factory = migrated
    values = {
        "client_id": "market-approval",
        "holder_hash": HOLDER,
        "type_code": "11100000000013952E001",
        "route": "grant",
        "mode": "compare",
        "purpose": "核对营业执照",
        "matter": "M1",
        "fields": ["name"],
        "result": "match",
    }
    with db.transaction_connection(factory) as connection:
        first = accesslog.append(connection, **values)
    with db.transaction(factory) as session:
        second = accesslog.append(session, **values)
    with db.transaction_connection(factory) as connection:
        third = accesslog.append(connection, **values)
    assert second.prev_hash == first.hash and third.prev_hash == second.hash
    with factory() as session:
        assert accesslog.verify(session).ok
