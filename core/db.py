"""Database engine, sessions and migrations (SQLAlchemy 2 + Alembic).

SQLite is the embedded default; PostgreSQL is production. Alembic's environment
ships inside this package (``core/migrations``); every package keeps its own
revisions in its own ``migrations/versions`` folder with a branch label named after
it (``core`` keeps the audit trail's), and the composition root hands the folders
in, in dependency order. The scripts ship inside the packages, so a wheel install
can migrate.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import DateTime, MetaData, create_engine, event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

MIGRATIONS = Path(__file__).parent / "migrations"  # the Alembic environment (env.py, the revision template)

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


CONNECT_TIMEOUT = 5  # seconds (PostgreSQL): to open a connection
POOL_TIMEOUT = 10  # seconds: to wait for a pooled connection when all are in use


def make_engine(url: str, **kwargs) -> Engine:
    from core.settings import mask_url_password

    try:
        if url.startswith("sqlite"):
            create_private_sqlite_file(url)
            engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)
            event.listen(engine, "connect", _sqlite_on_connect)
            event.listen(engine, "begin", _sqlite_begin_immediate)
        else:
            # Fail fast when the database is down or restarting (the request is answered 503 by core.web): a
            # connection attempt gives up after CONNECT_TIMEOUT seconds, a wait for a pooled connection after
            # POOL_TIMEOUT; a pooled connection is checked before use, so the service recovers by itself.
            engine = create_engine(
                url,
                pool_pre_ping=True,
                pool_size=10,
                max_overflow=10,
                pool_timeout=POOL_TIMEOUT,
                connect_args={"connect_timeout": CONNECT_TIMEOUT, **kwargs.pop("connect_args", {})},
                **kwargs,
            )
    except (ArgumentError, NoSuchModuleError) as exc:
        raise DatabaseUnavailable(f"the database URL {mask_url_password(url)} is not usable: {exc}") from None
    return engine


PRIVATE_FILE = 0o600  # a SQLite database holds password hashes, session secrets and licence faces: its owner only


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (None for an in-memory database, a ``file:`` URI or another database)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    database = parsed.database
    if not parsed.drivername.startswith("sqlite") or not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def create_private_sqlite_file(url: str) -> None:
    """Create a missing SQLite database file readable by its owner only (SQLite would make it 0644 under umask 022).

    SQLite gives its ``-wal`` and ``-shm`` files the database file's mode. A folder that does not exist is left to
    SQLite to report, as before.
    """
    path = sqlite_file(url)
    if path is None or path.exists() or not path.parent.is_dir():
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    except FileExistsError:  # made by another process a moment ago
        pass


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
    """Sessions on ``engine``; every session of one factory shares one event hook list (``core.events.of``)."""
    from core import events

    return sessionmaker(engine, expire_on_commit=False, info={events.INFO_KEY: events.Hooks()})


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
    # Closing the session ends the transaction (rolled back) and keeps what was read usable.
    with factory(bind=_reader(factory)) as session:
        yield session


def _reader(factory: sessionmaker[Session]) -> Engine:
    engine = factory.kw["bind"]
    reader = getattr(engine, "_hallmark_reader", None)
    if reader is None:
        reader = engine._hallmark_reader = engine.execution_options(**{READ_ONLY: True})
    return reader


@contextlib.contextmanager
def read_only_connection(factory: sessionmaker[Session]) -> Iterator[Connection]:
    """As :func:`read_only`, a Core connection without an ORM session (for a hot path's prebuilt statements)."""
    with _reader(factory).connect() as connection:
        yield connection


@contextlib.contextmanager
def transaction_connection(factory: sessionmaker[Session]) -> Iterator[Connection]:
    """As :func:`transaction`, a Core connection without an ORM session: committed together, or not at all."""
    with factory.kw["bind"].begin() as connection:
        yield connection


def check(engine: Engine) -> None:
    """Raise :class:`DatabaseUnavailable` unless a trivial query succeeds."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseUnavailable(f"cannot reach the database at {engine.url.render_as_string(hide_password=True)}: {reason}") from None


def _script_directory(locations: Sequence[Path]):
    from alembic.script import ScriptDirectory

    if not locations:
        raise ValueError("no migration folders given; the composition root lists them (hallmark.components)")
    return ScriptDirectory(str(MIGRATIONS), version_locations=[str(p) for p in locations])


def _alembic_config(engine: Engine, locations: Sequence[Path]):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # Alembic (1.16 and later) splits this option on the separator; ";" never appears in a folder we ship.
    config.set_main_option("path_separator", ";")
    config.set_main_option("version_locations", ";".join(str(p) for p in locations))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, *, locations: Sequence[Path], branches: Sequence[str] = ()) -> None:
    """Apply the revisions in ``locations``: each branch in ``branches`` to its head, in that order, then every head.

    ``branches`` are the packages' branch labels in dependency order, so a
    package's tables exist before those of the packages that build on it.
    """
    from alembic import command

    check(engine)
    labels = _branch_labels(locations)  # refuses an empty list of folders, before anything is applied
    config = _alembic_config(engine, locations)
    for branch in branches:
        if branch in labels:
            command.upgrade(config, f"{branch}@head")
    command.upgrade(config, "heads")


def create_index_online(op, name: str, table: str, columns: Sequence[str]) -> None:
    """In a migration: ``CREATE INDEX`` that lets writes go on meanwhile on PostgreSQL.

    A plain ``CREATE INDEX`` holds a SHARE lock on the table until it is built, so
    every insert and update waits (on the audit trail: every audited action, logins
    included) for minutes on a table of tens of millions of rows. PostgreSQL builds
    the index ``CONCURRENTLY`` instead, which cannot run in a transaction block: the
    build runs in an autocommit block (Alembic's ``autocommit_block``, which commits
    the migrations before it; ``env.py`` runs one transaction per migration). A build
    that failed before (cancelled, timed out) leaves an INVALID index of that name:
    it is dropped and built again; a valid one is kept, so running again is harmless.
    SQLite builds it in the migration's transaction (writers wait; see
    docs/operations.md).
    """
    if op.get_bind().dialect.name != "postgresql":
        op.create_index(name, table, list(columns))
        return
    with op.get_context().autocommit_block():
        bind = op.get_bind()
        valid = bind.execute(text("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)"), {"name": name}).scalar()
        if valid:
            return
        if valid is not None:
            bind.exec_driver_sql(f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"')
        op.create_index(name, table, list(columns), postgresql_concurrently=True)


def drop_index_online(op, name: str, table: str) -> None:
    """In a migration: ``DROP INDEX``, ``CONCURRENTLY`` on PostgreSQL (see :func:`create_index_online`)."""
    if op.get_bind().dialect.name != "postgresql":
        op.drop_index(name, table_name=table)
        return
    with op.get_context().autocommit_block():
        op.get_bind().exec_driver_sql(f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"')


def _branch_labels(locations: Sequence[Path]) -> set[str]:
    script = _script_directory(locations)
    return {label for revision in script.walk_revisions() for label in (revision.branch_labels or ())}


def current_revisions(engine: Engine) -> frozenset[str]:
    """The revisions the database is at (one per package branch)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return frozenset(MigrationContext.configure(connection).get_current_heads())


def pending_revisions(engine: Engine, locations: Sequence[Path]) -> frozenset[str]:
    """The revisions in ``locations`` that the database has not applied yet (empty: it is up to date).

    Compared by ancestry, not by head names: a revision that depends on another
    package's revision (``depends_on``) takes that one's place in the version table.
    """
    from alembic.script import Script

    script = _script_directory(locations)
    applied: set[str] = set()
    waiting: list[Script] = list(script.get_revisions(tuple(current_revisions(engine))))
    while waiting:
        revision = waiting.pop()
        if revision is None or revision.revision in applied:
            continue
        applied.add(revision.revision)
        for parent in (revision.down_revision, revision.dependencies):
            waiting.extend(script.get_revisions(parent) if parent else ())
    return frozenset(r.revision for r in script.walk_revisions()) - applied


def head_revisions(locations: Sequence[Path]) -> frozenset[str]:
    """The newest revision of every branch in ``locations``."""
    return frozenset(_script_directory(locations).get_heads())
