"""The outbox: every delivery the server owes someone (a logout token, a licence status event, ...).

A package that must tell someone about a change calls :func:`enqueue` in the
transaction that makes the change. The message (``core_outbox``) commits or rolls
back with the change, so nothing announced is lost and nothing is announced for a
change that did not happen. A worker then delivers it, outside any transaction:

- **Senders** are registered per kind by the components when their services are
  built (:func:`register`); ``core`` knows no kind. ``send(message)`` returns when
  the peer took the message and raises when it did not: :class:`Permanent` when
  trying again cannot help (the message goes dead at once), anything else to be
  retried. A process claims only kinds it has a sender for.
- **Claims**: :func:`deliver_due` takes due messages (pending, ``next_attempt_at``
  reached, not claimed or the claim run out) with one conditional ``UPDATE ... WHERE
  id IN (...) AND (claimed_until IS NULL OR claimed_until < now)``; on PostgreSQL
  the candidates are first selected ``FOR UPDATE SKIP LOCKED`` so workers on several
  nodes take different messages instead of queueing on each other's rows. A row is
  taken by one claim only: the loser's ``UPDATE`` matches nothing (PostgreSQL
  re-checks the condition after the winner commits; SQLite runs one writer at a time).
- **Retries**: a failure is retried after an exponentially growing delay with jitter
  (:class:`Retry`: first delay, factor 2, a cap) until the kind's attempts are used up;
  then the message is *dead*, ``last_error`` kept, listed by ``hallmark outbox list
  --dead`` and sent again after ``hallmark outbox retry ID``.
- **Soon**: a kind registered with ``soon=True`` is also tried right after the
  enqueuing transaction commits, on a small thread pool, so a logout reaches the
  halls at once rather than at the next periodic run; the periodic job
  (:data:`JOB`, every ``outbox_seconds``) takes whatever that misses.

Delivery is **at least once**, not exactly once: a worker that crashes (or stalls
past :data:`LEASE`) after the peer took a message and before it marked it
delivered leaves a claim that runs out, and another worker sends the message
again. Two workers never send one message *at the same time*. Receivers must
therefore dedupe, by the identifier each kind puts in its payload (a SET's ``jti``,
stable across resends; a logout token's ``sid``, logging out twice being harmless).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import random
import secrets
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from core import db as core_db
from core.db import utc_now
from core.models import OutboxMessage

log = logging.getLogger("hallmark.outbox")

PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
STATES = (PENDING, DELIVERED, DEAD)
LEASE = timedelta(seconds=60)  # a claim's life: longer than any sender's timeouts, so a live worker keeps its claim
ERROR_CHARS = 300  # core_outbox.last_error
INFO_KEY = "hallmark.outbox"  # where a session factory (and its sessions) keep the senders
SOON_KEY = "hallmark.outbox.soon"  # session.info: ids to try right after this transaction commits
DEFAULT_INTERVAL = 5  # seconds between periodic runs (setting outbox_seconds)
BATCH = 100  # messages one periodic run claims at most


class Failed(Exception):
    """A sender's failure worth retrying; its text is the reason kept in ``last_error``."""


class Permanent(Failed):
    """A failure retrying cannot mend (the peer refused the message): the message goes dead at once."""


@dataclass(frozen=True)
class Retry:
    """When to try again: ``first`` after the first failure, doubling each time up to ``cap``; ``attempts`` in all."""

    first: timedelta = timedelta(seconds=10)
    cap: timedelta = timedelta(hours=1)
    attempts: int = 10

    def ceiling(self, failures: int) -> timedelta:
        """The longest delay after the ``failures``-th failure (the jitter only shortens it)."""
        return min(self.cap, self.first * (2 ** max(failures - 1, 0)))

    def delay(self, failures: int) -> timedelta:
        # "Equal jitter": half the delay fixed, half random, so retries of many messages
        # failed together (a subscriber that was down) do not all come back at once.
        ceiling = self.ceiling(failures).total_seconds()
        return timedelta(seconds=ceiling / 2 + random.uniform(0, ceiling / 2))


@dataclass(frozen=True)
class Message:
    """What a sender gets: a message as it was claimed (``attempts`` made before this one)."""

    id: int
    kind: str
    target: str
    body: bytes
    content_type: str
    headers: dict[str, str]
    dedupe_key: str | None
    attempts: int
    created_at: datetime


@dataclass(frozen=True)
class Outcome:
    """How a message ended, for a kind's ``settled`` hook: delivered, or dead with the reason."""

    delivered: bool
    attempts: int
    error: str = ""


Sender = Callable[[Message], None]
Settled = Callable[[Session, Message, Outcome], None]


@dataclass(frozen=True)
class Kind:
    send: Sender
    retry: Retry
    soon: bool = False
    settled: Settled | None = None  # run in the transaction that marks the message delivered or dead (audit it there)


class Senders:
    """The kinds one session factory's processes can deliver, by name."""

    def __init__(self) -> None:
        self._kinds: dict[str, Kind] = {}
        self._lock = threading.Lock()

    def add(self, name: str, kind: Kind) -> None:
        with self._lock:
            self._kinds = {**self._kinds, name: kind}

    def get(self, name: str) -> Kind | None:
        return self._kinds.get(name)

    def names(self) -> tuple[str, ...]:
        return tuple(self._kinds)


def senders(holder) -> Senders:
    """The senders of a session factory, or of the factory a session came from (none registered: an empty set)."""
    if isinstance(holder, sessionmaker):
        info = holder.kw.setdefault("info", {})
        found = info.get(INFO_KEY)
        if found is None:
            found = info[INFO_KEY] = Senders()
            _listen(holder)
        return found
    found = (getattr(holder, "info", None) or {}).get(INFO_KEY)
    return found if found is not None else Senders()


def register(
    sessions: sessionmaker,
    kind: str,
    send: Sender,
    *,
    retry: Retry = Retry(),
    soon: bool = False,
    settled: Settled | None = None,
) -> None:
    """Let this process deliver messages of ``kind`` (called by a component when its services are built)."""
    if not kind or len(kind) > 40:
        raise ValueError("an outbox kind is 1 to 40 characters")
    senders(sessions).add(kind, Kind(send=send, retry=retry, soon=soon, settled=settled))


# -- enqueueing --------------------------------------------------------------------------------


def enqueue(
    db: Session,
    *,
    kind: str,
    target: str,
    body: bytes,
    content_type: str,
    headers: dict[str, str] | None = None,
    dedupe_key: str | None = None,
    not_before: datetime | None = None,
) -> OutboxMessage:
    """Queue a message in ``db``'s transaction; with a ``dedupe_key`` already queued (in any state), that message instead.

    Nothing is sent before the transaction commits; if it rolls back, the message was never there.
    """
    if len(target) > 400:
        raise ValueError("an outbox target is at most 400 characters")
    if dedupe_key is not None:
        existing = db.scalar(select(OutboxMessage).where(OutboxMessage.dedupe_key == dedupe_key))
        if existing is not None:
            return existing
    now = utc_now()
    message = OutboxMessage(
        kind=kind,
        target=target,
        body=body,
        content_type=content_type,
        headers=json.dumps(headers or {}, ensure_ascii=False, sort_keys=True),
        dedupe_key=dedupe_key,
        state=PENDING,
        attempts=0,
        next_attempt_at=max(now, not_before) if not_before is not None else now,
        last_error="",
        created_at=now,
    )
    db.add(message)
    db.flush()  # the id, for the caller and for the attempt after commit
    registered = senders(db).get(kind)
    if registered is not None and registered.soon and not_before is None:
        db.info.setdefault(SOON_KEY, []).append(message.id)
    return message


# -- delivering --------------------------------------------------------------------------------


@dataclass
class Counts:
    """What one :func:`deliver_due` pass did."""

    claimed: int = 0
    delivered: int = 0
    retrying: int = 0
    dead: int = 0
    errors: list[str] = field(default_factory=list)


def default_worker_id() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}"


def deliver_due(
    sessions: sessionmaker,
    *,
    worker_id: str | None = None,
    limit: int = BATCH,
    now: datetime | None = None,
    ids: Iterable[int] | None = None,
) -> Counts:
    """Claim up to ``limit`` due messages (only ``ids``, when given), send each, and record each result."""
    now = now or utc_now()
    registry = senders(sessions)
    counts = Counts()
    claim = f"{(worker_id or default_worker_id())[:50]}:{secrets.token_hex(4)}"
    for message in _claim(sessions, registry.names(), claim, now, limit, None if ids is None else list(ids)):
        counts.claimed += 1
        kind = registry.get(message.kind)
        error, permanent = "", False
        try:
            kind.send(message)
        except Permanent as exc:
            error, permanent = str(exc) or type(exc).__name__, True
        except Failed as exc:
            error = str(exc) or type(exc).__name__
        except Exception as exc:  # a sender's bug or an unexpected error: kept and retried like any failure
            log.warning("outbox %s message %d: the sender raised", message.kind, message.id, exc_info=True)
            error = f"{type(exc).__name__}: {exc}"
        _settle(sessions, kind, message, claim, error[:ERROR_CHARS], permanent, now, counts)
    return counts


def _claim(sessions, kinds: tuple[str, ...], claim: str, now: datetime, limit: int, ids: list[int] | None) -> list[Message]:
    if not kinds or limit <= 0 or ids == []:
        return []
    free = or_(OutboxMessage.claimed_until.is_(None), OutboxMessage.claimed_until < now)
    due = (OutboxMessage.state == PENDING, OutboxMessage.next_attempt_at <= now, free)
    query = select(OutboxMessage.id).where(*due, OutboxMessage.kind.in_(kinds))
    if ids is not None:
        query = query.where(OutboxMessage.id.in_(ids))
    # Most periodic runs find nothing: ask a reader first, so they never queue for SQLite's write lock.
    with core_db.read_only(sessions) as db:
        if db.scalar(query.limit(1)) is None:
            return []
    with core_db.transaction(sessions) as db:
        query = query.order_by(OutboxMessage.next_attempt_at, OutboxMessage.id).limit(limit)
        if db.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        candidates = list(db.scalars(query))
        if not candidates:
            return []
        db.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(candidates), *due)
            .values(claimed_by=claim, claimed_until=now + LEASE)
            .execution_options(synchronize_session=False)
        )
        rows = db.scalars(
            select(OutboxMessage).where(OutboxMessage.id.in_(candidates), OutboxMessage.claimed_by == claim).order_by(OutboxMessage.id)
        )
        return [
            Message(
                id=row.id,
                kind=row.kind,
                target=row.target,
                body=row.body,
                content_type=row.content_type,
                headers=json.loads(row.headers or "{}"),
                dedupe_key=row.dedupe_key,
                attempts=row.attempts,
                created_at=row.created_at,
            )
            for row in rows
        ]


def _settle(sessions, kind: Kind, message: Message, claim: str, error: str, permanent: bool, now: datetime, counts: Counts) -> None:
    attempts = message.attempts + 1
    with core_db.transaction(sessions) as db:
        row = db.get(OutboxMessage, message.id, with_for_update=True)
        if row is None or row.state != PENDING:
            return  # marked by another worker meanwhile (our claim had run out)
        if not error:
            row.state, row.delivered_at, row.last_error = DELIVERED, utc_now(), ""
            row.attempts, row.claimed_by, row.claimed_until = attempts, None, None
            counts.delivered += 1
            if kind.settled is not None:
                kind.settled(db, message, Outcome(True, attempts))
            return
        counts.errors.append(f"{message.kind} {message.id}: {error}")
        if row.claimed_by != claim:
            return  # another worker took it over after our claim ran out; its result counts
        row.attempts, row.last_error, row.claimed_by, row.claimed_until = attempts, error, None, None
        if permanent or attempts >= kind.retry.attempts:
            row.state = DEAD
            counts.dead += 1
            log.warning("outbox %s message %d given up after %d attempt(s): %s", message.kind, message.id, attempts, error)
            if kind.settled is not None:
                kind.settled(db, message, Outcome(False, attempts, error))
        else:
            row.next_attempt_at = now + kind.retry.delay(attempts)
            counts.retrying += 1
            log.info("outbox %s message %d failed (attempt %d), will retry: %s", message.kind, message.id, attempts, error)


# -- soon: right after the enqueuing transaction commits -------------------------------------

SOON_THREADS = 4  # per process
_soon_lock = threading.Lock()
_soon: tuple[int, queue.SimpleQueue] | None = None


def deliver_soon(sessions: sessionmaker, ids: list[int]) -> None:
    """Try ``ids`` on a background thread, so the request that queued them does not wait on peers.

    Whatever this misses (a crash, a peer that is down) the periodic job picks up. The
    threads are daemons: a process that exits does not wait for deliveries under way or
    queued (a ThreadPoolExecutor's threads are joined at exit after running all it was
    given: a worker stopping while a peer did not answer waited for every timeout). A
    delivery cut short stays claimed until :data:`LEASE` runs out and is then sent by
    another worker's periodic run: at least once, as always.
    """
    global _soon
    if not ids:
        return
    with _soon_lock:
        if _soon is None or _soon[0] != os.getpid():  # a forked worker needs threads of its own
            work: queue.SimpleQueue = queue.SimpleQueue()
            for number in range(SOON_THREADS):
                threading.Thread(target=_soon_worker, args=(work,), name=f"hallmark-outbox-{number}", daemon=True).start()
            _soon = (os.getpid(), work)
        work = _soon[1]
    work.put((sessions, list(ids)))


def _soon_worker(work: queue.SimpleQueue) -> None:
    while True:
        sessions, ids = work.get()
        try:
            deliver_due(sessions, ids=ids)
        except Exception:
            log.exception("sending outbox messages %s failed; the periodic job will try again", ids)


def _listen(sessions: sessionmaker) -> None:
    from sqlalchemy import event

    def after_commit(db: Session) -> None:
        ids = db.info.pop(SOON_KEY, None)
        if ids:
            deliver_soon(sessions, ids)

    def after_soft_rollback(db: Session, previous) -> None:
        db.info.pop(SOON_KEY, None)

    event.listen(sessions, "after_commit", after_commit)
    event.listen(sessions, "after_soft_rollback", after_soft_rollback)


# -- staff: the dead letters -------------------------------------------------------------------


def listing(db: Session, *, state: str | None = None, kind: str | None = None, limit: int = 100) -> list[OutboxMessage]:
    """Messages, newest first; ``state`` and ``kind`` narrow the list."""
    query = select(OutboxMessage)
    if state is not None:
        query = query.where(OutboxMessage.state == state)
    if kind is not None:
        query = query.where(OutboxMessage.kind == kind)
    return list(db.scalars(query.order_by(OutboxMessage.id.desc()).limit(limit)))


def retry(db: Session, message_id: int, *, actor: str) -> OutboxMessage | None:
    """Put a dead (or pending) message back in line now, with a fresh set of attempts; None when there is no such message.

    A delivered message is left as it is (``ValueError``): it reached its peer.
    """
    from core import audit

    row = db.get(OutboxMessage, message_id, with_for_update=True)
    if row is None:
        return None
    if row.state == DELIVERED:
        raise ValueError(f"message {message_id} was delivered on {row.delivered_at:%Y-%m-%d %H:%M:%S} UTC; there is nothing to retry")
    previous = row.state
    row.state, row.attempts, row.next_attempt_at, row.claimed_by, row.claimed_until = PENDING, 0, utc_now(), None, None
    audit.record(db, actor=actor, action="outbox.retry", target=str(message_id), details={"kind": row.kind, "from": previous})
    return row


# -- the periodic job and its setting --------------------------------------------------------------

MAX_BATCHES = 20  # one periodic run sends at most this many batches; the next run goes on
KEEP_DAYS = 30  # delivered messages are kept this long (setting outbox_keep_days), then purged
PURGE_BATCH = 1000  # rows one purge statement deletes at most, so no run holds the write lock for long


def purge_delivered(sessions: sessionmaker, *, older_than: timedelta, now: datetime | None = None, max_batches: int = 20) -> int:
    """Delete messages delivered more than ``older_than`` ago, in batches; how many went.

    Delivered messages are kept a while for staff (``hallmark outbox list``) and for the
    dedupe keys of recent messages; without a purge the table grows with every logout
    and event for ever. Dead and pending messages are never purged.
    """
    cutoff = (now or utc_now()) - older_than
    gone = 0
    old = (OutboxMessage.state == DELIVERED, OutboxMessage.next_attempt_at < cutoff, OutboxMessage.delivered_at < cutoff)
    for _ in range(max_batches):
        with core_db.transaction(sessions) as db:
            batch = list(db.scalars(select(OutboxMessage.id).where(*old).order_by(OutboxMessage.id).limit(PURGE_BATCH)))
            if batch:
                db.execute(delete(OutboxMessage).where(OutboxMessage.id.in_(batch), *old).execution_options(synchronize_session=False))
        gone += len(batch)
        if len(batch) < PURGE_BATCH:
            break
    if gone:
        log.info("outbox: purged %d message(s) delivered before %s", gone, f"{cutoff:%Y-%m-%d %H:%M}")
    return gone


@dataclass(frozen=True)
class OutboxSettings:
    """``core``'s settings section: how often each worker looks for due messages (seconds; 0 = never),
    and how many days delivered messages are kept."""

    outbox_seconds: int = DEFAULT_INTERVAL
    outbox_keep_days: int = KEEP_DAYS

    def __post_init__(self):
        from core.settings import ConfigError

        if self.outbox_seconds < 0:
            raise ConfigError(f"outbox_seconds must be 0 (off) or more, not {self.outbox_seconds}")
        if self.outbox_keep_days < 1:
            raise ConfigError(f"outbox_keep_days must be 1 or more, not {self.outbox_keep_days}")


@dataclass(frozen=True)
class Outbox:
    """``core``'s service: the outbox of this process's session factory (see the module's text)."""

    sessions: sessionmaker
    keep: timedelta = timedelta(days=KEEP_DAYS)

    def register(self, kind: str, send: Sender, **options) -> None:
        register(self.sessions, kind, send, **options)

    def run_periodic(self) -> bool:
        """One periodic pass: deliver what is due, batch after batch, until a batch comes back short; then purge."""
        for _ in range(MAX_BATCHES):
            if deliver_due(self.sessions).claimed < BATCH:
                break
        purge_delivered(self.sessions, older_than=self.keep)
        return True


def interval(settings: Any) -> float:
    return settings.section("core").outbox_seconds
