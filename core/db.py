"""Database engine, sessions and migrations (SQLAlchemy 2 + Alembic).

SQLite is the embedded default; PostgreSQL is production. Alembic's scripts ship
inside the package (``core/migrations``), so a wheel install can migrate.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import DateTime, MetaData, create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

MIGRATIONS = Path(__file__).parent / "migrations"

# Stable constraint names, so Alembic migrations are the same on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def utc_now() -> datetime:
    """The current time as Hallmark stores it: timezone-aware UTC, whole seconds."""
    return datetime.now(UTC).replace(microsecond=0)


class UTCDateTime(TypeDecorator):
    """A timestamp that is always timezone-aware UTC in Python, on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; attach a timezone")
        value = value.astimezone(UTC)
        # SQLite keeps the text as given; store it without an offset so ordering is textual.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class DatabaseUnavailable(Exception):
    """The database cannot be reached or used; the message says which and why."""


def make_engine(url: str, **kwargs) -> Engine:
    from core.settings import mask_url_password

    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)
            event.listen(engine, "connect", _sqlite_on_connect)
            event.listen(engine, "begin", _sqlite_begin_immediate)
        else:
            engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10, **kwargs)
    except (ArgumentError, NoSuchModuleError) as exc:
        raise DatabaseUnavailable(f"the database URL {mask_url_password(url)} is not usable: {exc}") from None
    return engine


def _sqlite_on_connect(dbapi_connection, _record):
    # Let SQLAlchemy, not pysqlite, decide when transactions begin (see _sqlite_begin_immediate).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


READ_ONLY = "hallmark_read_only"


def _sqlite_begin_immediate(connection):
    # Take the write lock at BEGIN: a reader that later writes (the audit chain's
    # read-then-append) would otherwise fail with "database is locked" under load.
    # A read-only transaction (see read_only) takes a snapshot and no lock.
    if connection.get_execution_options().get(READ_ONLY):
        connection.exec_driver_sql("BEGIN")
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextlib.contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work is committed together, or not at all."""
    with factory() as session, session.begin():
        yield session


@contextlib.contextmanager
def read_only(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session for reads only: on SQLite a plain (deferred) BEGIN, so it does not
    queue for the write lock that every other transaction takes.

    Nothing it writes is kept: it is rolled back at the end, and on SQLite a write
    in it could fail with "database is locked", so never write in one.
    """
    engine = factory.kw["bind"]
    reader = getattr(engine, "_hallmark_reader", None)
    if reader is None:
        reader = engine._hallmark_reader = engine.execution_options(**{READ_ONLY: True})
    # Closing the session ends the transaction (rolled back) and keeps what was read usable.
    with factory(bind=reader) as session:
        yield session


def check(engine: Engine) -> None:
    """Raise :class:`DatabaseUnavailable` unless a trivial query succeeds."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseUnavailable(f"cannot reach the database at {engine.url.render_as_string(hide_password=True)}: {reason}") from None


def _alembic_config(engine: Engine):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "heads") -> None:
    from alembic import command

    check(engine)
    command.upgrade(_alembic_config(engine), revision)


def current_revisions(engine: Engine) -> frozenset[str]:
    """The revisions the database is at (more than one while branches are unmerged)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return frozenset(MigrationContext.configure(connection).get_current_heads())


def head_revisions() -> frozenset[str]:
    """The newest revision of every branch in core/migrations."""
    from alembic.script import ScriptDirectory

    return frozenset(ScriptDirectory(str(MIGRATIONS)).get_heads())
