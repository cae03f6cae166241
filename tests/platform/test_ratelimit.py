"""core.ratelimit on SQLite and PostgreSQL: a token bucket per key kept in the database, so two workers (engines
of their own) share one allowance, concurrent attempts are each counted once, and full buckets are purged."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from core import db as core_db
from core import ratelimit
from core.models import RateLimit

NOW = 1_800_000_000.0


def test_capacity_at_once_then_one_per_interval(migrated):
    _, sessions = migrated
    bucket = ratelimit.SharedBucket(sessions, "test.login", capacity=3, rate=1 / 10)
    assert bucket.wait_time("203.0.113.9", now=NOW) == 0
    assert [bucket.take("203.0.113.9", now=NOW) for _ in range(3)] == [0, 0, 10]
    assert bucket.wait_time("203.0.113.9", now=NOW) == 10
    assert bucket.wait_time("203.0.113.9", now=NOW + 4) == 6
    assert bucket.wait_time("198.51.100.1", now=NOW) == 0  # another key has its own bucket
    assert bucket.wait_time("203.0.113.9", now=NOW + 10) == 0  # one attempt back after one interval
    assert bucket.take("203.0.113.9", now=NOW + 10) == 10
    assert bucket.wait_time("203.0.113.9", now=NOW + 40) == 0
    assert bucket.take("203.0.113.9", now=NOW + 40) == 0  # refilled: two more before the wait
    bucket.reset("203.0.113.9")
    assert [bucket.take("203.0.113.9", now=NOW + 40) for _ in range(3)] == [0, 0, 10]
    other = ratelimit.SharedBucket(sessions, "test.other", capacity=3, rate=1 / 10)
    assert other.wait_time("203.0.113.9", now=NOW) == 0  # limits of another name do not mix
    with sessions() as db:
        keys = list(db.scalars(select(RateLimit.key)))
    assert keys and not any("203.0.113" in key for key in keys)  # the table keeps hashes, not addresses


def test_two_workers_share_one_allowance_and_concurrent_attempts_each_count(migrated):
    engine, sessions = migrated
    other_engine = core_db.make_engine(engine.url.render_as_string(hide_password=False))
    try:
        a = ratelimit.SharedBucket(sessions, "test.shared", capacity=5, rate=1 / 60)
        b = ratelimit.SharedBucket(core_db.make_session_factory(other_engine), "test.shared", capacity=5, rate=1 / 60)
        for _ in range(3):
            a.take("account-1", now=NOW)
        b.take("account-1", now=NOW)
        a.take("account-1", now=NOW)
        assert b.wait_time("account-1", now=NOW) == 60  # five attempts through two workers use one allowance

        start = threading.Barrier(8)
        errors: list[BaseException] = []

        def attempt(bucket):
            try:
                start.wait()
                for _ in range(5):
                    bucket.take("account-2", now=NOW)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=attempt, args=(a if n % 2 else b,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors
        assert a.wait_time("account-2", now=NOW) == (40 - 4) * 60  # 40 attempts, none lost to a race
    finally:
        other_engine.dispose()


def test_purge_deletes_full_buckets_only(migrated):
    _, sessions = migrated
    bucket = ratelimit.SharedBucket(sessions, "test.purge", capacity=2, rate=1)
    bucket.take("old", now=NOW)
    for _ in range(5):
        bucket.take("busy", now=NOW)
    assert ratelimit.purge(sessions, now=NOW + 2) == 1  # "old" is full again; "busy" still waits
    assert bucket.wait_time("busy", now=NOW + 2) == 2  # full again at NOW + 5, and one attempt of the two may be taken early
    assert bucket.wait_time("old", now=NOW + 2) == 0
    with sessions() as db:
        assert len(db.scalars(select(RateLimit.key)).all()) == 1


def test_a_limit_needs_a_capacity_and_a_rate(migrated):
    _, sessions = migrated
    with pytest.raises(ValueError, match="capacity"):
        ratelimit.SharedBucket(sessions, "test.bad", capacity=0, rate=1)
    with pytest.raises(ValueError):
        ratelimit.SharedBucket(sessions, "test.bad", capacity=1, rate=0)


def test_attempt_counts_what_it_allows_and_nothing_it_refuses(migrated):
    _, sessions = migrated
    bucket = ratelimit.SharedBucket(sessions, "test.attempt", capacity=2, rate=1 / 10)
    assert [bucket.attempt("192.0.2.1", now=NOW) for _ in range(4)] == [0, 0, 10, 10]  # refused ones add no wait
    assert bucket.attempt("192.0.2.1", now=NOW + 10) == 0  # one back after one interval, as if never refused
    assert bucket.attempt("192.0.2.1", now=NOW + 10) == 10
    with core_db.transaction(sessions) as db:  # in the caller's transaction
        assert bucket.attempt("192.0.2.2", now=NOW, db=db) == 0
    assert bucket.wait_time("192.0.2.2", now=NOW) == 0 and bucket.take("192.0.2.2", now=NOW) == 10


def test_limits_from_settings_are_checked_and_kept_per_name():
    cache: dict = {}
    limit = ratelimit.Limit(burst=5, per_minute=0.5)
    bucket = ratelimit.shared(cache, None, "test.settings", limit)
    assert (bucket.capacity, bucket.rate) == (5, 0.5 / 60) and ratelimit.shared(cache, None, "test.settings", limit) is bucket
    assert ratelimit.retry_after(0.2) == 1 and ratelimit.retry_after(10.01) == 11
    limit.check("register")
    for bad, words in ((ratelimit.Limit(0, 1), "register_burst"), (ratelimit.Limit(1, 0), "register_per_minute")):
        with pytest.raises(ValueError, match=words):
            bad.check("register")
    with pytest.raises(ValueError, match="register_per_minute"):
        ratelimit.Limit(1, float("nan")).check("register")


def test_a_limit_setting_is_read_as_a_number_from_the_environment(tmp_path):
    from core.settings import ConfigError
    from tests.conftest import app_settings

    settings = app_settings(tmp_path, "sqlite://", HALLMARK_REGISTER_PER_MINUTE="0.25", HALLMARK_VALIDATE_BURST="4")
    assert settings.section("idp").register_per_minute == 0.25 and settings.section("signing").validate_burst == 4
    for name, value in (("HALLMARK_REGISTER_PER_MINUTE", "often"), ("HALLMARK_TSA_PER_MINUTE", "0"), ("HALLMARK_VALIDATE_BURST", "0")):
        with pytest.raises(ConfigError):
            app_settings(tmp_path, "sqlite://", **{name: value})
