"""core.outbox on SQLite and PostgreSQL: written with the caller's transaction, deduplicated, claimed by one worker
at a time (two workers with engines of their own deliver every message exactly once), retried with backoff, dead
after the last attempt or a refusal, resent after a crashed worker's claim runs out (at least once)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from core import db as core_db
from core import outbox
from core.db import utc_now
from core.models import OutboxMessage

KIND = "test.echo"


class Crash(BaseException):
    """A worker dying between sending and marking (not an Exception: nothing in deliver_due catches it)."""


def put(sessions, n: int = 1, **kw) -> list[int]:
    with core_db.transaction(sessions) as db:
        return [
            outbox.enqueue(db, kind=KIND, target=f"peer-{i}", body=f"m{i}".encode(), content_type="text/plain", **kw).id for i in range(n)
        ]


def row(sessions, message_id: int) -> OutboxMessage:
    with sessions() as db:
        return db.get(OutboxMessage, message_id)


def test_a_message_commits_with_its_change_and_a_dedupe_key_makes_one(migrated):
    _, sessions = migrated
    with pytest.raises(RuntimeError), core_db.transaction(sessions) as db:
        outbox.enqueue(db, kind=KIND, target="peer", body=b"x", content_type="text/plain", dedupe_key="k-1")
        raise RuntimeError("the change fails")
    with sessions() as db:
        assert db.scalars(select(OutboxMessage)).all() == []
    first = put(sessions, dedupe_key="k-1")
    again = put(sessions, dedupe_key="k-1")
    assert first == again
    with sessions() as db:
        assert len(db.scalars(select(OutboxMessage)).all()) == 1


def test_failures_back_off_then_the_message_is_dead_and_a_refusal_is_dead_at_once(migrated):
    _, sessions = migrated
    retry = outbox.Retry(first=timedelta(seconds=10), cap=timedelta(seconds=40), attempts=4)
    seen: list[int] = []

    def send(message):
        seen.append(message.attempts)
        if message.body == b"refused":
            raise outbox.Permanent("HTTP 400: no")
        raise outbox.Failed("HTTP 503: later")

    outbox.register(sessions, KIND, send, retry=retry)
    (failing,) = put(sessions)
    moment = utc_now()
    first = outbox.deliver_due(sessions, worker_id="w", now=moment)
    assert (first.claimed, first.retrying) == (1, 1)
    waiting = row(sessions, failing)
    assert waiting.state == "pending" and waiting.attempts == 1 and waiting.last_error == "HTTP 503: later"
    delay = waiting.next_attempt_at - moment
    assert retry.ceiling(1) / 2 <= delay <= retry.ceiling(1)
    assert outbox.deliver_due(sessions, worker_id="w", now=moment + retry.ceiling(1) / 2 - timedelta(seconds=1)).claimed == 0
    for failures in range(1, retry.attempts):
        moment += retry.ceiling(failures) + timedelta(seconds=1)
        outbox.deliver_due(sessions, worker_id="w", now=moment)
    dead = row(sessions, failing)
    assert dead.state == "dead" and dead.attempts == retry.attempts and "503" in dead.last_error
    assert seen == [0, 1, 2, 3]
    assert retry.ceiling(10) == retry.cap

    with core_db.transaction(sessions) as db:
        refused = outbox.enqueue(db, kind=KIND, target="peer", body=b"refused", content_type="text/plain").id
    counts = outbox.deliver_due(sessions, worker_id="w", now=moment + timedelta(days=1))
    assert counts.dead == 1 and row(sessions, refused).attempts == 1 and row(sessions, refused).state == "dead"

    # Staff put it back in line: a fresh set of attempts, audited.
    with core_db.transaction(sessions) as db:
        outbox.retry(db, refused, actor="test")
    assert row(sessions, refused).state == "pending" and row(sessions, refused).attempts == 0
    with core_db.transaction(sessions) as db:
        assert outbox.retry(db, refused + 1000, actor="test") is None
    outbox.register(sessions, KIND, lambda message: None, retry=retry)
    assert outbox.deliver_due(sessions, worker_id="w").delivered == 1
    with core_db.transaction(sessions) as db, pytest.raises(ValueError, match="nothing to retry"):
        outbox.retry(db, refused, actor="test")


def test_a_worker_that_dies_after_sending_leaves_a_claim_that_runs_out_and_the_message_is_sent_again(migrated):
    _, sessions = migrated
    sent: list[int] = []
    crash = {"armed": True}

    def send(message):
        sent.append(message.id)
        if crash["armed"]:
            crash["armed"] = False
            raise Crash()

    outbox.register(sessions, KIND, send)
    (message_id,) = put(sessions)
    moment = utc_now()
    with pytest.raises(Crash):
        outbox.deliver_due(sessions, worker_id="dies", now=moment)
    claimed = row(sessions, message_id)
    assert claimed.state == "pending" and claimed.claimed_by.startswith("dies:")
    # While the claim lasts no one else takes it; after it runs out another worker sends it again (at least once).
    assert outbox.deliver_due(sessions, worker_id="other", now=moment + outbox.LEASE - timedelta(seconds=1)).claimed == 0
    assert outbox.deliver_due(sessions, worker_id="other", now=moment + outbox.LEASE + timedelta(seconds=1)).delivered == 1
    assert sent == [message_id, message_id] and row(sessions, message_id).state == "delivered"


def test_a_process_claims_only_kinds_it_can_send(migrated):
    _, sessions = migrated
    (message_id,) = put(sessions)
    assert outbox.deliver_due(sessions, worker_id="w").claimed == 0  # nothing registered for test.echo here
    assert row(sessions, message_id).claimed_by is None


def test_two_workers_on_one_database_deliver_every_message_exactly_once(migrated):
    engine, sessions = migrated
    other_engine = core_db.make_engine(engine.url.render_as_string(hide_password=False))
    other_sessions = core_db.make_session_factory(other_engine)
    deliveries: list[tuple[int, str]] = []
    lock = threading.Lock()

    def sender(worker: str):
        def send(message):
            with lock:
                deliveries.append((message.id, worker))

        return send

    outbox.register(sessions, KIND, sender("a"))
    outbox.register(other_sessions, KIND, sender("b"))
    ids = put(sessions, 300)
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def work(factory, worker):
        try:
            start.wait()
            while True:
                if outbox.deliver_due(factory, worker_id=worker, limit=7).claimed == 0:
                    with factory() as db:  # nothing for us: done when nothing is pending any more
                        if db.scalar(select(OutboxMessage.id).where(OutboxMessage.state == "pending").limit(1)) is None:
                            return
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(sessions, "a")), threading.Thread(target=work, args=(other_sessions, "b"))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    finally:
        other_engine.dispose()
    assert not errors
    sent = sorted(message_id for message_id, _ in deliveries)
    assert sent == sorted(ids)  # every message once: none lost, none sent by both
    with sessions() as db:
        states = set(db.scalars(select(OutboxMessage.state)))
    assert states == {"delivered"}


def test_delivered_messages_are_purged_after_the_keep_period_and_dead_or_pending_ones_stay(migrated):
    _, sessions = migrated
    outbox.register(sessions, KIND, lambda message: None if message.body != b"refused" else (_ for _ in ()).throw(outbox.Permanent("no")))
    delivered = put(sessions, 3)
    with core_db.transaction(sessions) as db:
        dead = outbox.enqueue(db, kind=KIND, target="peer", body=b"refused", content_type="text/plain").id
    assert outbox.deliver_due(sessions, worker_id="w").delivered == 3
    with core_db.transaction(sessions) as db:
        waiting = outbox.enqueue(db, kind=KIND, target="later", body=b"x", content_type="text/plain").id
    keep = timedelta(days=30)
    assert outbox.purge_delivered(sessions, older_than=keep) == 0  # delivered just now: kept
    assert outbox.purge_delivered(sessions, older_than=keep, now=utc_now() + keep + timedelta(minutes=1)) == 3
    with sessions() as db:
        left = {m.id: m.state for m in db.scalars(select(OutboxMessage))}
    assert left == {dead: "dead", waiting: "pending"} and not set(delivered) & set(left)

    # The periodic job delivers, then purges what is older than its keep period (the outbox_keep_days setting).
    assert outbox.Outbox(sessions, keep=keep).run_periodic()
    with sessions() as db:
        assert {m.id: m.state for m in db.scalars(select(OutboxMessage))} == {dead: "dead", waiting: "delivered"}
    assert outbox.Outbox(sessions, keep=-timedelta(seconds=2)).run_periodic()  # "older than two seconds from now"
    with sessions() as db:
        assert {m.id for m in db.scalars(select(OutboxMessage))} == {dead}
