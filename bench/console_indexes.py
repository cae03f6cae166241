"""The staff console's audit search and e-supervision as the tables grow, with and without their indexes.

What the indexes of core_0005 (audit trail: ``(actor, seq)``, ``(target, seq)``) and
licenses_0008 (``licenses_licences (issuer_code, issued_at)``, ``licenses_requests
(issuer_code, state, decided_at)``) change, measured through the console's own
service functions (``admin.trail.page``, ``admin.supervision.report``), in process:

* two fresh databases per kind (SQLite through ``core.db.make_engine``; ``--postgres``
  adds a throwaway PostgreSQL cluster in /dev/shm), migrated by the project's
  migrations up to the revisions *before* those two, then filled directly with
  SQLAlchemy Core ``executemany``, ``BATCH`` rows a transaction, rows made from their
  number batch by batch (memory stays flat): N audit events (a trail of two years, in
  time order; ~25 events per account, ~4 per licence; logins with their level), N
  licences of ``DEPARTMENTS`` departments issued over eight years in random order,
  0.3 N 索取 requests over two years (80 % fulfilled after 1 to 240 hours);
* then the remaining migrations run (the two above: the index builds), timed, with a
  writer appending to the audit trail in short transactions meanwhile: its longest
  wait says whether the build stopped writes;
* then rounds; in each, every operation on the small database, on the large one, and
  on the large one inside a transaction that has dropped the four indexes (rolled
  back after: DDL is transactional on both databases), so *with* and *without* are
  measured side by side in the same minutes:

  - *trail actor* / *trail subject*: the first page (50 events) of one account's /
    one subject's events, a random one each call (a rare match: the search that read
    the whole trail);
  - *supervision all* / *supervision one*: the whole e-supervision report (every
    figure, 12 weeks) of an auditor (every department) / of one department.

Each figure is the median over rounds of a per-round ratio:
``growth`` = ms at N ÷ ms at ``--small`` (with the indexes), ``gain`` = ms without ÷ ms
with (at N). The query plans of one call of each operation at N are printed.

Usage: python bench/console_indexes.py [--size N] [--small N] [--rounds R] [--postgres] [--quick]
Last lines: ``console-trail-growth=<max over the two searches>``, ``console-index-gain trail=<min> supervision=<min>``.
"""

from __future__ import annotations

import os
import sys

BATCH = 5_000
DEPARTMENTS = 60
BEFORE = {"core": "core_0004", "licenses": "licenses_0007"}  # the revisions before the ones that add the indexes
NEW_INDEXES = (
    "ix_audit_events_actor_seq",
    "ix_audit_events_target_seq",
    "ix_licenses_licences_issued",
    "ix_licenses_requests_decided",
)
ACTIONS = (  # one in twenty events each; the login figures read the first nine
    *["idp.session.started"] * 6,
    "idp.session.stepped_up",
    "idp.login.failed",
    "idp.certlogin.refused",
    *["licences.accessed"] * 5,
    *["licences.issued"] * 3,
    "admin.audit.searched",
    "idp.token.issued",
    "signing.sealed",
)


class Data:
    """Rows made from their number, so that any row's keys can be rebuilt without keeping them."""

    def __init__(self, size: int):
        from datetime import UTC, datetime, timedelta

        from core.identifiers import generate_credit_code, organisation_code_check_char

        self.size = size
        self.first_seq = 1  # after the events that preparing the database wrote (prepare)
        self.now = datetime.now(UTC).replace(microsecond=0)
        self.trail_start = self.now - timedelta(days=730)
        self.departments = []
        for k in range(DEPARTMENTS):
            organisation = f"D{k:07d}"
            self.departments.append(generate_credit_code("11350100" + organisation + organisation_code_check_char(organisation)))

    # -- the audit trail: N events in time order over two years
    def actor(self, i: int) -> str:
        if ACTIONS[i % 20] in ("idp.login.failed", "idp.certlogin.refused"):
            return f"ip:10.{i % 251}.{(i // 251) % 251}.{(i // 63_001) % 251}"
        return f"account:{(i * 2_654_435_761) % max(1, self.size // 25):08d}"  # ~25 events an account

    def target(self, i: int) -> str:
        if ACTIONS[i % 20].startswith("licences."):
            return f"licence:{(i * 40_503) % max(1, self.size // 4):08d}"  # ~4 events a licence
        return f"session:{i:012x}"

    def event(self, i: int) -> dict:
        from datetime import timedelta

        action = ACTIONS[i % 20]
        moment = self.trail_start + timedelta(seconds=730 * 86_400 * i / self.size)
        details = f'{{"acr":{1 + (i // 20) % 3},"amr":"pwd"}}' if action.startswith("idp.session.") else f'{{"n":{i}}}'
        return {
            "seq": self.first_seq + i,
            "occurred_at": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "actor": self.actor(i),
            "action": action,
            "target": self.target(i),
            "details": details,
            "prev_hash": f"{i:064x}",
            "hash": f"{i + 1:064x}",
        }

    # -- licences: N of DEPARTMENTS departments over eight years, in random order
    def licence(self, i: int) -> dict:
        from datetime import timedelta

        from licenses import demo

        types = (demo.BUSINESS_LICENCE, demo.FOOD_PERMIT, demo.DRIVING_LICENCE, demo.TEACHER_QUALIFICATION)
        issued_at = self.now - timedelta(seconds=(i * 7_919) % (8 * 365 * 86_400))
        return {
            "identifier": f"BENCH.{i:010d}",
            "type_code": types[i % 4],
            "issuer_code": self.departments[(i * 31) % DEPARTMENTS],
            "serial": f"{i:010d}",
            "version": 1,
            "holder_type": "111",
            "holder_hash": f"{(i * 2_654_435_761) % 10**12:064x}",
            "holder_masked": "350102**********12",
            "holder_cipher": b"\0" * 60,
            "holder_name": "林志明",
            "state": "valid",
            "state_reason": "",
            "state_changed_at": issued_at,
            "valid_from": issued_at.date(),
            "valid_until": None,
            "issued_at": issued_at,
            "issued_by": "bench:console",
            "face_public": '{"name":"林志明"}',
            "requester": "bench:console",
            "file_state": "sealed",
        }

    # -- 索取 requests: 0.3 N over two years
    def request(self, i: int) -> dict:
        from datetime import timedelta

        from licenses import demo

        created = self.now - timedelta(seconds=(i * 7_919) % (730 * 86_400))
        state = ("open", "refused", *["fulfilled"] * 8)[i % 10]
        decided = created + timedelta(hours=1 + (i * 37) % 240) if state != "open" else None
        return {
            "id": f"R{i:011d}",
            "type_code": demo.DRIVING_LICENCE,
            "issuer_code": self.departments[(i * 17) % DEPARTMENTS],
            "holder_type": "111",
            "holder_hash": f"{i:064x}",
            "holder_masked": "350102**********12",
            "holder_cipher": b"\0" * 60,
            "requested_by": "client:bench",
            "matter": "BENCH-0001",
            "reason": "基准测试",
            "state": state,
            "deadline": (created + timedelta(days=15)).date(),
            "created_at": created,
            "decided_at": decided,
            "decided_by": "bench" if decided else "",
            "decision": "",
        }


def migrate_before(engine) -> None:
    """Every component's migrations, the core and licenses branches only up to the revisions before the indexes."""
    from alembic import command

    from core import db
    from hallmark import components

    config = db._alembic_config(engine, components.migration_locations())
    for component in components.COMPONENTS:
        if component.migrations is not None:
            command.upgrade(config, BEFORE.get(component.name, f"{component.name}@head"))


def prepare(engine, data: Data) -> None:
    from sqlalchemy import insert, select

    from core.db import make_session_factory, transaction, utc_now
    from core.models import AuditHead
    from licenses import catalogue
    from licenses.models import Issuer

    migrate_before(engine)
    with transaction(make_session_factory(engine)) as db:
        data.first_seq = db.scalar(select(AuditHead.last_seq)) + 100  # catalogue.add records events too
        for path in sorted(catalogue.DEMO_TYPES.glob("*.json")):
            catalogue.add(db, catalogue.read_file(path), actor="bench:console")
        db.execute(
            insert(Issuer),
            [
                {"credit_code": code, "name": f"部门{n:02d}", "seal_name": f"部门{n:02d}", "created_at": utc_now(), "created_by": "bench"}
                for n, code in enumerate(data.departments)
            ],
        )


def fill(engine, data: Data, label: str) -> float:
    """N events, N licences, 0.3 N requests, BATCH rows a transaction; rows per second."""
    import time

    from sqlalchemy import insert, update

    from core.models import AuditEvent, AuditHead
    from licenses.models import Licence, LicenceRequest

    started = last = time.monotonic()
    total = 0
    for table, make, count in (
        (AuditEvent.__table__, data.event, data.size),
        (Licence.__table__, data.licence, data.size),
        (LicenceRequest.__table__, data.request, max(1, data.size * 3 // 10)),
    ):
        statement = insert(table)
        for first in range(0, count, BATCH):
            with engine.begin() as conn:
                conn.execute(statement, [make(i) for i in range(first, min(count, first + BATCH))])
            total += min(count, first + BATCH) - first
            if time.monotonic() - last > 10:
                last = time.monotonic()
                print(
                    f"{label}: {table.name} {first + BATCH:,}/{count:,}, {total / (last - started):,.0f} rows/s",
                    file=sys.stderr,
                    flush=True,
                )
    with engine.begin() as conn:
        last = data.first_seq + data.size - 1
        conn.execute(update(AuditHead).values(last_seq=last, last_hash=f"{last:064x}"))
    return total / (time.monotonic() - started)


def migrate_with_writer(engine, data: Data) -> tuple[float, float, int]:
    """The index migrations, timed, while a thread appends to the audit trail: (seconds, longest append wait, appends)."""
    import threading
    import time

    from sqlalchemy import insert

    from core.models import AuditEvent
    from hallmark import components

    stop = threading.Event()
    waits: list[float] = []

    def writer() -> None:
        seq = data.first_seq + data.size + 1_000_000  # above the head: searches do not see them
        statement = insert(AuditEvent.__table__)
        while not stop.is_set():
            row = data.event(seq % data.size) | {"seq": seq}
            started = time.monotonic()
            with engine.begin() as conn:
                conn.execute(statement, row)
            waits.append(time.monotonic() - started)
            seq += 1
            time.sleep(0.01)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    try:
        components.upgrade_database(engine)
    finally:
        took = time.monotonic() - started
        time.sleep(0.3)
        stop.set()
        thread.join(60)
    return took, max(waits, default=0.0), len(waits)


def operations(data: Data):
    """(name, function of a session and a random generator) for each measured operation."""
    from admin import roles, supervision, trail

    auditor = roles.Staff("bench", "", frozenset({(roles.AUDITOR, None)}))
    department = data.departments[7]
    head = roles.Staff("bench-head", "", frozenset({(roles.DEPARTMENT_ADMIN, department)}))

    def actor(db, rng):
        found = trail.page(db, trail.Search(actor=data.actor(rng.randrange(data.size))))
        assert found.events

    def subject(db, rng):
        found = trail.page(db, trail.Search(subject=data.target(rng.randrange(data.size))))
        assert found.events

    def everyone(db, rng):
        report = supervision.report(db, auditor)
        assert sum(w.issued for w in report.weeks) and sum(w.fulfilled for w in report.weeks)

    def one(db, rng):
        report = supervision.report(db, head, department=department)
        assert sum(w.issued for w in report.weeks)

    return [("trail actor", actor), ("trail subject", subject), ("supervision all", everyone), ("supervision one", one)]


def timed(sessions, function, rng, *, at_least: float, most: int) -> float:
    """Milliseconds per call: calls repeated until ``at_least`` seconds or ``most`` calls, each in a fresh session."""
    import time

    calls, started = 0, time.perf_counter()
    while True:
        with sessions() as db:
            function(db, rng)
        calls += 1
        elapsed = time.perf_counter() - started
        if elapsed >= at_least or calls >= most:
            return elapsed * 1000 / calls


def without_indexes(engine):
    """A session factory inside one transaction that has dropped the four indexes; rolled back by ``close()``."""
    from sqlalchemy.orm import Session

    conn = engine.connect()
    conn.begin()
    for name in NEW_INDEXES:
        conn.exec_driver_sql(f"DROP INDEX {name}")

    def sessions():
        return Session(bind=conn, join_transaction_mode="rollback_only")

    def close():
        conn.rollback()
        conn.close()

    return sessions, close


def plans(engine, data: Data) -> list[str]:
    """EXPLAIN QUERY PLAN (SQLite) / EXPLAIN (PostgreSQL) of the statements one call of each operation makes."""
    import random

    from sqlalchemy import event

    from core.db import make_session_factory

    lines = []
    sessions = make_session_factory(engine)
    for name, function in operations(data):
        seen: list[tuple[str, object]] = []

        def capture(conn, cursor, statement, parameters, context, executemany, seen=seen):
            if statement.lstrip().upper().startswith("SELECT") and ("audit_events" in statement or "licenses_" in statement):
                seen.append((statement, parameters))

        event.listen(engine, "before_cursor_execute", capture)
        try:
            with sessions() as db:
                function(db, random.Random(1))
        finally:
            event.remove(engine, "before_cursor_execute", capture)
        for statement, parameters in seen:
            with engine.connect() as conn:
                if engine.dialect.name == "sqlite":
                    plan = [row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)]
                else:
                    plan = [row[0].strip() for row in conn.exec_driver_sql("EXPLAIN " + statement, parameters)]
                    plan = [p for p in plan if "Scan" in p or "Sort" in p or "Index Cond" in p]
            uses = [p for p in plan if "INDEX" in p.upper() or "SCAN" in p.upper() or "Sort" in p]
            lines.append(f"plan {name}: " + " | ".join(uses or plan))
    return lines


def run_kind(kind: str, args, tmp, cluster) -> tuple[list[str], dict]:
    import random

    from _common import OtherLoad, median, table

    from core.db import make_engine, make_session_factory

    sizes = (args.small, args.size)
    engines, datas, files, builds, fills = {}, {}, {}, {}, {}
    for size in sizes:
        if kind == "sqlite":
            files[size] = tmp / f"console-{size}.db"
            engine = make_engine(f"sqlite:///{files[size]}")
        else:
            engine = make_engine(cluster.database(f"console_{size}"))
        datas[size] = Data(size)
        prepare(engine, datas[size])
        fills[size] = fill(engine, datas[size], f"{kind} fill {size:,}")
        if kind == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ANALYZE")
        builds[size] = migrate_with_writer(engine, datas[size])
        if kind == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("ANALYZE")
        engines[size] = engine
    large, small = args.size, args.small
    sessions = {size: make_session_factory(engines[size]) for size in sizes}
    ops = operations(datas[large])
    small_ops = dict(operations(datas[small]))
    rng = random.Random(20261206)
    for size in sizes:  # warm: the code paths, the caches
        for _, function in small_ops.items() if size == small else ops:
            timed(sessions[size], function, rng, at_least=0.0, most=2)
    ms = {(name, side): [] for name, _ in ops for side in ("small", "with", "without")}
    growth = {name: [] for name, _ in ops}
    gain = {name: [] for name, _ in ops}
    with OtherLoad() as other:
        for round_number in range(args.rounds):
            got = {}
            for name, function in ops:
                got[(name, "small")] = timed(sessions[small], small_ops[name], rng, at_least=args.slice, most=200)
                got[(name, "with")] = timed(sessions[large], function, rng, at_least=args.slice, most=200)
            bare, close = without_indexes(engines[large])
            try:
                for name, function in ops:
                    got[(name, "without")] = timed(bare, function, rng, at_least=0.0, most=1)
            finally:
                close()
            for key, value in got.items():
                ms[key].append(value)
            for name, _ in ops:
                growth[name].append(got[(name, "with")] / got[(name, "small")])
                gain[name].append(got[(name, "without")] / got[(name, "with")])
            print(
                f"{kind} round {round_number + 1}/{args.rounds}: "
                + ", ".join(f"{name} {got[(name, 'without')]:.0f}->{got[(name, 'with')]:.1f} ms" for name, _ in ops),
                file=sys.stderr,
                flush=True,
            )
    report = [
        f"\n{kind}: {large:,} audit events, {large:,} licences ({DEPARTMENTS} departments), {large * 3 // 10:,} requests "
        f"against {small:,}; {args.rounds} rounds, other processes used {other.cpus:.2f} of {os.cpu_count()} cpus; "
        f"filled at {fills[large]:,.0f} rows/s" + (f", file {os.path.getsize(files[large]) / 1e6:,.0f} MB" if files else "")
    ]
    rows = []
    for name, _ in ops:
        rows.append(
            [
                name,
                f"{median(ms[(name, 'small')]):.1f}",
                f"{median(ms[(name, 'with')]):.1f}",
                f"{median(ms[(name, 'without')]):.0f}",
                f"{median(growth[name]):.2f}",
                f"{median(gain[name]):.0f}",
            ]
        )
    report.append(table(["operation", f"ms at {small:,}", f"ms at {large:,}", "without indexes", "growth", "gain"], rows))
    took, longest, appends = builds[large]
    report.append(
        f"index migrations at {large:,}: {took:.1f} s; an audit append every 10 ms meanwhile: {appends} appends, longest wait {longest * 1000:.0f} ms"
    )
    report.extend(f"{kind} {line}" for line in plans(engines[large], datas[large]))
    figures = {
        "growth": max(median(growth[n]) for n in ("trail actor", "trail subject")),
        "gain trail": min(median(gain[n]) for n in ("trail actor", "trail subject")),
        "gain supervision": min(median(gain[n]) for n in ("supervision all", "supervision one")),
    }
    report.append(
        f"console {kind} trail-growth={figures['growth']:.2f} gain trail={figures['gain trail']:.0f} supervision={figures['gain supervision']:.1f}"
    )
    for engine in engines.values():
        engine.dispose()
    for path in files.values():
        for suffix in ("", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
    return report, figures


def main() -> None:
    import argparse
    import contextlib
    import resource
    import signal
    import tempfile
    from pathlib import Path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000, help="audit events and licences in the large database (1,000,000)")
    parser.add_argument("--small", type=int, default=1_000, help="the same in the small database (1,000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--slice", type=float, default=0.3, help="seconds of calls per operation and size with the indexes (0.3)")
    parser.add_argument("--postgres", action="store_true", help="also measure on a throwaway PostgreSQL cluster")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 20,000 rows, 2 rounds")
    args = parser.parse_args()
    if args.quick:
        args.size, args.rounds, args.slice = 20_000, 2, 0.1
    args.size = max(1_000, min(args.size, 5_000_000))
    args.small = max(100, min(args.small, args.size))
    args.rounds = max(1, min(args.rounds, 15))
    args.slice = max(0.05, min(args.slice, 5.0))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: the cluster and temp dir go
    report, first = [], None
    with tempfile.TemporaryDirectory(prefix="hallmark-console-bench-") as tmp_name, contextlib.ExitStack() as stack:
        from _common import PostgresCluster

        cluster = stack.enter_context(PostgresCluster()) if args.postgres else None
        for kind in ["sqlite"] + (["postgresql"] if args.postgres else []):
            lines, figures = run_kind(kind, args, Path(tmp_name), cluster)
            report += lines
            first = first or figures
    report.append(f"peak memory of the benchmark process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")
    print("\n".join(report))
    print(f"console-trail-growth={first['growth']:.2f}")
    print(f"console-index-gain trail={first['gain trail']:.0f} supervision={first['gain supervision']:.1f}")


if __name__ == "__main__":
    main()
