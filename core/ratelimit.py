"""Rate limits shared by every worker and node: one row per key in the database (``core_rate_limits``).

A limit kept in process memory is multiplied by the number of workers and nodes,
and forgotten on restart; an attacker simply spreads the attempts. So a limit
here lives in the database every node already shares.

Each limit is a token bucket of ``capacity`` attempts refilled at ``rate`` per
second, kept in the form of the *generic cell rate algorithm* (GCRA): one number
per key, the *theoretical arrival time* ``tat`` (epoch seconds) at which the bucket
would be full again. Taking an attempt is one upsert,
``tat = max(tat, now) + 1/rate``, atomic on SQLite and PostgreSQL alike; the wait
before the next attempt is ``tat - now - (capacity - 1)/rate`` when positive. A row
whose ``tat`` has passed is a full bucket and is deleted by :func:`purge` (a
periodic job), so the table holds only keys limited in the last moments.

Keys are hashed (SHA-256, the limit's name as a prefix): the table does not keep
which addresses or accounts were seen.

Use it where an attempt is costly or sensitive (a failed password, a code sent, a
challenge issued): ``wait_time(key)`` before (a read, no lock), ``take(key)`` once
the attempt counts (one write); or ``attempt(key)`` where every allowed attempt
counts and a refused one does not (one transaction).

A package's limits come from its settings section as a :class:`Limit` (a burst and
a rate per minute); :func:`shared` keeps one bucket per name in a per-process cache
the package owns, so every package limits the same way.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

from sqlalchemy import bindparam, case, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from core import db as core_db
from core.models import RateLimit

PURGE_SECONDS = 300  # how often the periodic job deletes full buckets


@dataclass(frozen=True)
class Limit:
    """A limit as settings state it: ``burst`` attempts at once, then ``per_minute`` (a fraction: fewer than one a minute)."""

    burst: int
    per_minute: float

    def check(self, name: str) -> None:
        """ValueError naming the setting when the limit cannot be kept."""
        if self.burst < 1:
            raise ValueError(f"{name}_burst must be 1 or more, not {self.burst}")
        if not self.per_minute > 0 or math.isinf(self.per_minute):
            raise ValueError(f"{name}_per_minute must be a number more than 0, not {self.per_minute}")


def shared(cache: dict, sessions: sessionmaker, name: str, limit: Limit | tuple[float, float]) -> SharedBucket:
    """The bucket of limit ``name`` (``limit``: a :class:`Limit`, or capacity and rate per second), kept in ``cache``."""
    entry = f"{name}.limiter"
    bucket = cache.get(entry)
    if bucket is None:
        capacity, rate = (limit.burst, limit.per_minute / 60) if isinstance(limit, Limit) else limit
        bucket = cache.setdefault(entry, SharedBucket(sessions, name, capacity, rate))
    return bucket


def retry_after(wait: float) -> int:
    """``wait`` seconds as a Retry-After value: whole seconds, at least 1."""
    return max(1, math.ceil(wait))


# Built once: a login asks it every time, and a freshly built select costs more than the read.
_TAT = select(RateLimit.tat).where(RateLimit.key == bindparam("key"))


def _key(name: str, key: str) -> str:
    return hashlib.sha256(f"{name}\x00{key}".encode()).hexdigest()


@dataclass(frozen=True)
class SharedBucket:
    """``capacity`` attempts at once per key, then ``rate`` per second, counted in the database for every worker."""

    sessions: sessionmaker
    name: str
    capacity: float
    rate: float

    def __post_init__(self):
        if self.capacity < 1 or self.rate <= 0:
            raise ValueError(f"limit {self.name}: capacity must be at least 1 and rate more than 0")

    @property
    def interval(self) -> float:
        return 1 / self.rate

    def wait_time(self, key: str, *, now: float | None = None, db: Session | None = None) -> float:
        """Seconds until one more attempt of ``key`` is allowed; 0 when allowed now. ``db``: read in that session."""
        now = time.time() if now is None else now
        params = {"key": _key(self.name, key)}
        if db is not None:
            return self._wait(db.scalar(_TAT, params), now)
        with core_db.read_only(self.sessions) as own:
            return self._wait(own.scalar(_TAT, params), now)

    def take(self, key: str, *, now: float | None = None, db: Session | None = None) -> float:
        """Count one attempt of ``key``; returns the wait before the next one (0: the next is allowed now).

        ``db``: count it in that (writing) session, committed with the caller's work; a caller
        that already holds a transaction must pass it (on SQLite a second writer would wait
        for the first, its own caller).
        """
        now = time.time() if now is None else now
        if db is not None:
            return self._take(db, key, now)
        with core_db.transaction(self.sessions) as own:
            return self._take(own, key, now)

    def attempt(self, key: str, *, now: float | None = None, db: Session | None = None) -> float:
        """Count one attempt of ``key`` if it is allowed now and return 0; else the wait, nothing counted.

        Read and write in one transaction (``db``'s, or one of its own): on SQLite the
        transaction holds the write lock, so no two workers let the same last attempt
        through; on PostgreSQL two racing attempts may both pass, one over the limit.
        """
        now = time.time() if now is None else now
        if db is not None:
            return self._attempt(db, key, now)
        with core_db.transaction(self.sessions) as own:
            return self._attempt(own, key, now)

    def _attempt(self, db: Session, key: str, now: float) -> float:
        wait = self._wait(db.scalar(select(RateLimit.tat).where(RateLimit.key == _key(self.name, key))), now)
        if wait > 0:
            return wait
        self._take(db, key, now)
        return 0.0

    def _take(self, db: Session, key: str, now: float) -> float:
        hashed = _key(self.name, key)
        table = RateLimit.__table__
        dialect = db.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = insert(table).values(key=hashed, tat=now + self.interval)
        statement = statement.on_conflict_do_update(
            index_elements=[table.c.key],
            set_={"tat": case((table.c.tat > now, table.c.tat), else_=now) + self.interval},
        )
        db.execute(statement)
        return self._wait(db.scalar(select(table.c.tat).where(table.c.key == hashed)), now)

    def reset(self, key: str) -> None:
        """Forget ``key``'s attempts (after a success that proves the attempts were the owner's)."""
        with core_db.transaction(self.sessions) as db:
            db.execute(delete(RateLimit).where(RateLimit.key == _key(self.name, key)))

    def _wait(self, tat: float | None, now: float) -> float:
        if tat is None:
            return 0.0
        return max(0.0, tat - now - (self.capacity - 1) * self.interval)


def purge(sessions: sessionmaker, *, now: float | None = None) -> int:
    """Delete the rows of full buckets (their ``tat`` has passed); how many went."""
    now = time.time() if now is None else now
    with core_db.transaction(sessions) as db:
        return db.execute(delete(RateLimit).where(RateLimit.tat < now)).rowcount or 0
