"""CAContext: authorities loaded once per process, without holding its lock across a database wait."""

from __future__ import annotations

import threading

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from ca.models import Authority


class _Watched(sessionmaker):
    """A session factory that tells when a given thread asks it for a session."""

    watched: threading.Thread | None = None
    asked = threading.Event()

    def __call__(self, **kw):
        if threading.current_thread() is self.watched:
            self.asked.set()
        return super().__call__(**kw)


def test_an_authority_read_while_another_thread_holds_the_write_lock_and_wants_one_too(ca_context):
    """Found by bench/soak.py: right after a worker started, the first OCSP answer, userinfo, authorize and validation
    failed with 'database is locked' after 30 s. A thread loading an authority (cold cache) held the context's lock while
    its session waited for SQLite's write lock; the thread holding that write lock asked for an authority in its
    session and waited for the context's lock: each waited for the other until the busy timeout."""
    ctx = ca_context
    engine = ctx.sessions.kw["bind"]
    watched = _Watched(bind=engine, expire_on_commit=False, info=dict(ctx.sessions.kw.get("info") or {}))
    watched.asked = threading.Event()
    ctx.sessions = watched
    ctx.forget_authorities()
    in_transaction = threading.Event()
    results: dict[str, object] = {}

    def load_people() -> None:
        in_transaction.wait(30)
        try:
            results["reader"] = ctx.authority("people").name
        except Exception as exc:  # the failure this test is about: OperationalError, database is locked
            results["reader"] = exc

    reader = threading.Thread(target=load_people)
    watched.watched = reader
    reader.start()
    with ctx.sessions() as session, session.begin():
        session.execute(select(Authority.name)).all()  # on SQLite every transaction holds the write lock from here (core.db)
        in_transaction.set()
        assert watched.asked.wait(30), "the reader never asked for a session"
        results["writer"] = ctx.authority("services", session).name
    reader.join(60)
    assert not reader.is_alive()
    assert results == {"reader": "people", "writer": "services"}
