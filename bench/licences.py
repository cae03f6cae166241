"""The licence library: lookups as the library grows, and compare-only calls through the API against a bare app.

Two figures, both printed as ``name=ratio`` lines (docs/benchmarks.md):

``licence-flatness`` (in process, no server): lookups per second at 1,000,000
licences divided by the same at 1,000. Two fresh databases migrated by
``hallmark.components.upgrade_database`` (SQLite through ``core.db.make_engine``,
with the instance's pragmas; ``--postgres`` adds a throwaway PostgreSQL cluster in
/dev/shm), the four demo types and their departments, then ``licenses_licences``
filled directly with SQLAlchemy Core ``executemany`` in batches of
``BATCH`` rows: identifiers from ``licenses.identifiers.make``, holders with
checksum-valid resident IDs and credit codes (two licences each), their keyed
lookup hash, realistic public face JSON from ``licenses.demo.sample_face``,
random bytes where the ciphertexts go. Rows are generated batch by batch from
their number, so memory stays flat, and a lookup key is rebuilt from a random row
number rather than kept. Lookups, each in a fresh session as an API call makes:

* *identifier*: ``library.by_identifier`` + ``library.describe(face="none")``;
* *holder*: ``library.by_holder_hash`` + ``describe(face="none")`` of each row.

Both databases are warmed (the file read once into the OS cache, then warm-up
lookups), keys are drawn at random from the filled rows, and slices of lookups
alternate between the small and the large database. Each sub-ratio is the median
of the per-slice ratios; the figure is the smaller of the two.

``share-efficiency`` (over HTTP): compare-only calls per second through the full
API (``POST /api/licences/compare`` with a client-credentials token and a standing
grant: token check, grant check, access-log append, signed receipt and signed
result) divided by a minimal Flask + SQLAlchemy app (``peer_app`` below) that
answers the same request body with one indexed select on the same SQLite file.
Both under granian with 2 workers and 8 blocking threads each (``hallmark serve``
and the ``granian`` command with the same settings), side by side on 127.0.0.1,
loaded by ``wrk -t2 -c8`` with keep-alive and a Lua script choosing one of the
issued licences at random per request; rounds alternate which goes first.

Usage: python bench/licences.py [--only flatness|share] [--size N] [--postgres] [--quick]
Last lines: ``licence-flatness=<min of the two>``, ``share-efficiency=<ours / bare>``.
"""

from __future__ import annotations

import json
import os
import sys

# -- the bare peer of share-efficiency (imported by granian: keep this part light) -------------

PEER_DB_ENV = "BENCH_LICENCES_DB"


def peer_app():
    """A minimal Flask + SQLAlchemy app: the compare body in, one select by primary key, per-field match out."""
    import unicodedata

    from flask import Flask, abort, request
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{os.environ[PEER_DB_ENV]}", connect_args={"check_same_thread": False})
    query = text("SELECT identifier, state, valid_until, face_public FROM licenses_licences WHERE identifier = :identifier")
    app = Flask("bare-peer")

    def normal(value) -> str:
        return " ".join(unicodedata.normalize("NFKC", str(value)).split())

    @app.post("/compare")
    def compare():
        body = request.get_json()
        with engine.connect() as conn:
            row = conn.execute(query, {"identifier": body["identifier"]}).first()
        if row is None:
            abort(404)
        face = json.loads(row.face_public)
        fields = {name: "match" if normal(face.get(name, "")) == normal(value) else "no_match" for name, value in body["claims"].items()}
        return {
            "identifier": row.identifier,
            "status": row.state,
            "fields": fields,
            "all_match": all(v == "match" for v in fields.values()),
        }

    @app.get("/healthz")
    def healthz():
        return {"ok": True}

    return app


# -- licence-flatness ------------------------------------------------------------------------

BATCH = 5_000
ENTERPRISE_NAMES = ("恒信商贸有限公司", "闽江食品有限公司", "榕城餐饮管理有限公司", "海峡科技有限公司")
PERSON_NAMES = ("林志明", "陈晓燕", "黄建国", "吴海峰", "郑丽华", "王小红")


class Rows:
    """Licence rows made from their number, so any row's keys can be rebuilt without keeping them."""

    def __init__(self, lookup_key: bytes):
        from licenses import catalogue, demo
        from licenses.context import LicencesContext

        self.lookup_key = lookup_key
        self.ctx = LicencesContext(signing=None, keys=None, public_url="http://127.0.0.1:8000", lookup_key=lookup_key)
        self.types = {view.code: view for view in (catalogue.read_file(p) for p in sorted(catalogue.DEMO_TYPES.glob("*.json")))}
        # The order makes licences 2k and 2k+1 one holder's: an enterprise's two types, then a person's two.
        self.order = (demo.BUSINESS_LICENCE, demo.FOOD_PERMIT, demo.DRIVING_LICENCE, demo.TEACHER_QUALIFICATION)
        self.issuers = {code: demo.issuer_for(code).code for code in self.order}

    @staticmethod
    def holder(h: int) -> tuple[str, str, str]:
        """(GB/T 36903 code type, code, name) of holder number ``h``: even an enterprise, odd a person."""
        from datetime import date, timedelta

        from core.identifiers import generate_credit_code, generate_resident_id, organisation_code_check_char

        k = h // 2
        if h % 2 == 0:
            organisation = f"B{k:07d}"
            code = generate_credit_code("91350100" + organisation + organisation_code_check_char(organisation))
            return "001", code, f"示范市{k}号{ENTERPRISE_NAMES[k % len(ENTERPRISE_NAMES)]}"
        born = date(1960, 1, 1) + timedelta(days=k % 18_250)
        return "111", generate_resident_id("350102", born, (k // 18_250) % 1000), PERSON_NAMES[k % len(PERSON_NAMES)]

    def identifier(self, i: int) -> str:
        from licenses import identifiers

        type_code = self.order[i % 4]
        # Year + 10 digits, scattered (the multiplier is prime to 10), unique for every i below 10**10.
        serial = f"{2018 + i % 8}{(i * 2_654_435_761) % 10**10:010d}"
        return str(identifiers.make(type_code, self.issuers[type_code], serial))

    def holder_hash(self, i: int) -> str:
        from licenses.issuance import holder_hash

        code_type, code, _ = self.holder(i // 2)
        return holder_hash(self.ctx, code_type, code)

    def row(self, i: int) -> dict:
        from datetime import UTC, datetime, timedelta

        from core.identifiers import mask_credit_code, mask_resident_id
        from licenses import demo, issuance
        from licenses.issuance import holder_hash

        type_code = self.order[i % 4]
        definition = self.types[type_code]
        code_type, code, name = self.holder(i // 2)
        face = demo.sample_face(type_code, holder_code=code, holder_name=name, seed=str(i))
        sensitive = definition.sensitive
        public = {k: v for k, v in face.items() if k not in sensitive}
        secret = json.dumps({k: v for k, v in face.items() if k in sensitive}, ensure_ascii=False).encode()
        issued_at = datetime(2018, 1, 1, tzinfo=UTC) + timedelta(seconds=(i * 7_919) % (8 * 365 * 86_400))
        valid_from, valid_until = issuance.validity(definition, issued_at.date(), None)
        identifier = self.identifier(i)
        return {
            "identifier": identifier,
            "type_code": type_code,
            "issuer_code": self.issuers[type_code],
            "serial": identifier.split(".")[-3],
            "version": 1,
            "holder_type": code_type,
            "holder_hash": holder_hash(self.ctx, code_type, code),
            "holder_masked": mask_resident_id(code) if code_type == "111" else mask_credit_code(code),
            "holder_cipher": os.urandom(16 + 12 + len(code) + 16),  # header, nonce, ciphertext, tag
            "holder_name": name,
            "state": "valid",
            "state_reason": "",
            "state_changed_at": issued_at,
            "valid_from": valid_from,
            "valid_until": valid_until,
            "issued_at": issued_at,
            "issued_by": "bench:licences",
            "face_public": json.dumps(public, ensure_ascii=False),
            "face_secret": os.urandom(16 + 12 + len(secret) + 16) if sensitive else None,
            "data_key_id": None,
            "predecessor": None,
            "successor": None,
            "requester": "bench:licences",
            "request_id": None,
            "document_id": os.urandom(16).hex(),
            "pdf_sha256": os.urandom(32).hex(),
            "pdf": None,
        }


def prepare_library(engine, rows: Rows) -> None:
    """A migrated database with the demo types and their departments (issuers), no licences yet."""
    from sqlalchemy import insert

    from core.db import make_session_factory, transaction, utc_now
    from hallmark import components
    from licenses import catalogue, demo
    from licenses.models import Issuer

    components.upgrade_database(engine)
    with transaction(make_session_factory(engine)) as db:
        for view in rows.types.values():
            catalogue.add(db, view, actor="bench:licences")
        db.execute(
            insert(Issuer),
            [
                {"credit_code": i.code, "name": i.name, "seal_name": i.name, "created_at": utc_now(), "created_by": "bench:licences"}
                for i in demo.ISSUERS
            ],
        )


_worker_rows: Rows | None = None


def _start_worker(lookup_key: bytes) -> None:
    global _worker_rows
    _worker_rows = Rows(lookup_key)


def _make_batch(first: int, last: int) -> list[dict]:
    return [_worker_rows.row(i) for i in range(first, last)]


def fill(engine, rows: Rows, count: int, label: str) -> float:
    """``count`` licences inserted in batches (one transaction each); rows per second.

    Worker processes make the rows (the Python side costs more than the insert), at
    most a few batches ahead of the inserts, so memory stays flat whatever ``count``.
    """
    import collections
    import multiprocessing
    import time

    from sqlalchemy import insert

    from licenses.models import Licence

    statement = insert(Licence.__table__)
    started = last = time.monotonic()
    starts = iter(range(0, count, BATCH))
    workers = max(1, min(os.cpu_count() or 1, 4))
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_start_worker, initargs=(rows.lookup_key,)) as pool:
        pending = collections.deque()

        def ask() -> None:
            first = next(starts, None)
            if first is not None:
                pending.append(pool.apply_async(_make_batch, (first, min(count, first + BATCH))))

        for _ in range(workers * 2):
            ask()
        done = 0
        while pending:
            batch = pending.popleft().get(timeout=600)
            ask()
            with engine.begin() as conn:
                conn.execute(statement, batch)
            done += len(batch)
            if time.monotonic() - last > 10 or (done == count and count > BATCH):
                last = time.monotonic()
                rate = done / (last - started)
                print(
                    f"{label}: {done:,}/{count:,} licences, {rate:,.0f}/s, ~{(count - done) / rate:.0f}s left", file=sys.stderr, flush=True
                )
    return count / (time.monotonic() - started)


def warm_file(path: str) -> None:
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


def query_plans(engine, rows: Rows) -> list[str]:
    """How the database finds a licence by identifier and a holder's licences (EXPLAIN QUERY PLAN / EXPLAIN)."""
    from sqlalchemy import select

    from licenses import library
    from licenses.models import Licence

    by_id = select(Licence).where(Licence.identifier == rows.identifier(0))
    by_holder = (
        select(Licence).where(Licence.holder_hash == rows.holder_hash(0)).order_by(Licence.issued_at.desc()).limit(library.MAX_RESULTS)
    )
    lines = []
    with engine.connect() as conn:
        for name, query in (("identifier", by_id), ("holder", by_holder)):
            compiled = query.compile(conn, compile_kwargs={"literal_binds": True})
            if engine.dialect.name == "sqlite":
                plan = [" ".join(str(c) for c in row[3:]) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}")]
            else:
                plan = [row[0].strip() for row in conn.exec_driver_sql(f"EXPLAIN {compiled}")]
            lines.append(f"{name}: " + " | ".join(plan))
    return lines


def lookups(sessions, rows: Rows, kind: str, numbers: list[int]) -> float:
    """Lookups per second of ``kind`` for licences ``numbers``, each in a fresh session as an API call makes."""
    import time

    from licenses import library

    keys = [rows.identifier(i) for i in numbers] if kind == "identifier" else [rows.holder_hash(i) for i in numbers]
    ctx = rows.ctx
    started = time.perf_counter()
    for key in keys:
        with sessions() as db:
            if kind == "identifier":
                body = library.describe(ctx, db, library.by_identifier(db, key), face="none")
                assert body["identifier"] == key
            else:
                found = [library.describe(ctx, db, licence, face="none") for licence in library.by_holder_hash(db, key)]
                assert len(found) == 2, (key, found)
    return len(keys) / (time.perf_counter() - started)


def flatness(args, tmp) -> tuple[list[str], float]:
    """(report lines, the figure: the smaller sub-ratio, of the first database kind measured)."""
    import contextlib
    import random
    import resource

    from _common import OtherLoad, median, table

    from core.db import make_engine, make_session_factory

    sizes = (args.small, args.size)
    rows = Rows(os.urandom(32))
    per_slice = max(50, args.lookups // args.rounds)
    report, figure = [], None
    kinds = ["sqlite"] + (["postgresql"] if args.postgres else [])
    with contextlib.ExitStack() as stack:
        from _common import PostgresCluster

        cluster = stack.enter_context(PostgresCluster()) if args.postgres else None
        for kind in kinds:
            engines, files, fill_rates = {}, {}, {}
            for size in sizes:
                if kind == "sqlite":
                    files[size] = str(tmp / f"library-{size}.db")
                    engine = make_engine(f"sqlite:///{files[size]}")
                else:
                    engine = make_engine(cluster.database(f"library_{size}"))
                stack.callback(engine.dispose)
                prepare_library(engine, rows)
                fill_rates[size] = fill(engine, rows, size, f"{kind} fill")
                if kind == "postgresql":
                    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                        conn.exec_driver_sql("VACUUM ANALYZE licenses_licences")
                engines[size] = engine
            plans = query_plans(engines[args.size], rows)
            sessions = {size: make_session_factory(engine) for size, engine in engines.items()}
            rng = random.Random(20261206)
            for size in sizes:  # warm: the file into the OS cache, then the database's own cache and the code paths
                if size in files:
                    warm_file(files[size])
                for what in ("identifier", "holder"):
                    lookups(sessions[size], rows, what, [rng.randrange(size) for _ in range(per_slice)])
            rates = {(what, size): [] for what in ("identifier", "holder") for size in sizes}
            ratios = {"identifier": [], "holder": []}
            with OtherLoad() as other:
                for round_number in range(args.rounds):
                    for what in ("identifier", "holder"):
                        order = sizes if round_number % 2 == 0 else tuple(reversed(sizes))
                        got = {}
                        for size in order:
                            got[size] = lookups(sessions[size], rows, what, [rng.randrange(size) for _ in range(per_slice)])
                            rates[(what, size)].append(got[size])
                        ratios[what].append(got[args.size] / got[args.small])
                    print(
                        f"{kind} round {round_number + 1}/{args.rounds}: "
                        + ", ".join(f"{w} {ratios[w][-1]:.2f}" for w in ("identifier", "holder")),
                        file=sys.stderr,
                        flush=True,
                    )
            sub = {what: median(values) for what, values in ratios.items()}
            figure = min(sub.values()) if figure is None else figure
            size_note = ""
            if files:
                size_note = ", file " + " / ".join(f"{os.path.getsize(files[s]) / 1e6:,.0f} MB" for s in sizes)
            report.append(
                f"\n{kind}: lookups/s, {args.rounds} alternating slices of {per_slice} random lookups per kind and size, "
                f"fresh session each, other processes used {other.cpus:.2f} of {os.cpu_count()} cpus; "
                f"filled at {fill_rates[args.size]:,.0f} rows/s{size_note}"
            )
            table_rows = []
            for what in ("identifier", "holder"):
                for size in sizes:
                    r = rates[(what, size)]
                    table_rows.append(
                        [
                            what,
                            f"{size:,}",
                            f"{median(r):.0f}",
                            f"{min(r):.0f}-{max(r):.0f}",
                            f"{sub[what]:.2f}" if size == args.size else "",
                        ]
                    )
            report.append(table(["lookup", "licences", "lookups/s", "range", f"{args.size:,}/{args.small:,}"], table_rows))
            report.append("per-slice ratios: " + "; ".join(f"{w} " + " ".join(f"{r:.2f}" for r in ratios[w]) for w in ratios))
            report.extend(f"plan ({kind}, {args.size:,}) {line}" for line in plans)
            report.append(f"licence-flatness {kind} identifier={sub['identifier']:.2f} holder={sub['holder']:.2f}")
            for engine in engines.values():
                engine.dispose()
            for path in files.values():  # a million rows take ~1 GB: give the space back before the next part
                for suffix in ("", "-wal", "-shm"):
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(path + suffix)
    report.append(f"peak memory of the benchmark process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")
    return report, figure


# -- share-efficiency --------------------------------------------------------------------------

CLIENT_ID = "bench-approvals"
MATTER = "JT-BENCH-0001"
PURPOSE = "核验申请人驾驶证信息（基准测试）"
COMPARED = ("name", "nationality", "vehicle_class", "first_issued_on")  # public fields of the driving licence

LUA = """local bodies = {bodies}
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "{authorization}"
request = function()
  return wrk.format(nil, "{path}", nil, bodies[math.random(#bodies)])
end
"""


def prepare_share_instance(count: int) -> None:
    """Run in a child process with HALLMARK_INSTANCE set: the demo types, departments and seals, ``count`` issued licences.

    Prints the licences' identifiers and compared face values as JSON.
    """
    from hallmark import components, wiring
    from licenses import demo, issuance

    services = wiring.build(components.load_settings())
    try:
        ctx = services["licenses"]
        demo.prepare_catalogue(ctx, actor="bench:licences")
        issued = []
        for n in range(count):
            code_type, code, name = Rows.holder(2 * n + 1)  # odd: a person
            assert code_type == "111"
            face = demo.sample_face(demo.DRIVING_LICENCE, holder_code=code, holder_name=name, seed=str(n))
            order = issuance.Order(
                type_code=demo.DRIVING_LICENCE, issuer_code=demo.issuer_for(demo.DRIVING_LICENCE).code, holder_code=code, face=face
            )
            licence = issuance.issue(ctx, order, actor="bench:licences", requester="bench:licences")
            issued.append({"identifier": licence.identifier, "claims": {name: face[name] for name in COMPARED}})
        print(json.dumps(issued, ensure_ascii=False))
    finally:
        services.close()


def _run(argv: list[str], env: dict, timeout: float) -> str:
    import subprocess

    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv[:4])} ... failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def _post(url: str, body: bytes, headers: dict) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _token(base: str, secret: str) -> str:
    import base64
    import urllib.request

    authorization = "Basic " + base64.b64encode(f"{CLIENT_ID}:{secret}".encode()).decode()
    with urllib.request.urlopen(base + "/.well-known/openid-configuration", timeout=10) as response:
        meta = json.loads(response.read())
    token_endpoint = base + meta["token_endpoint"].removeprefix(meta["issuer"])
    status, answer = _post(
        token_endpoint,
        b"grant_type=client_credentials&scope=licences:read",
        {"Content-Type": "application/x-www-form-urlencoded", "Authorization": authorization},
    )
    if status != 200:
        sys.exit(f"no token: {status} {answer}")
    return answer["access_token"]


def _check_answers(base_ours: str, base_peer: str, token: str, sample: dict) -> None:
    """One call to each side: ours a 200 with a signed result and receipt that verify against the published JWKS; same fields."""
    import urllib.request

    from joserfc import jws
    from joserfc.jwk import KeySet

    body = json.dumps({"identifier": sample["identifier"], "claims": sample["claims"], "purpose": PURPOSE, "matter": MATTER}).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    status, ours = _post(base_ours + "/api/licences/compare", body, headers)
    if status != 200 or not ours.get("all_match"):
        sys.exit(f"ours: compare answered {status}: {json.dumps(ours, ensure_ascii=False)[:600]}")
    with urllib.request.urlopen(base_ours + "/api/licences/jwks", timeout=10) as response:
        keys = KeySet.import_key_set(json.loads(response.read()))
    receipt = json.loads(jws.deserialize_compact(ours["receipt"], keys).payload)  # raises if the signature does not verify
    if receipt.get("comparison", {}).get("fields") != ours["fields"]:
        sys.exit(f"ours: the receipt does not carry the comparison: {receipt}")
    status, peer = _post(base_peer + "/compare", body, headers)
    if status != 200 or peer["fields"] != ours["fields"] or peer["status"] != ours["status"]["state"]:
        sys.exit(f"the bare app answered {status} {peer}, ours {ours['fields']} {ours['status']}")


def share(args, tmp) -> tuple[list[str], float]:
    import time

    from _common import OtherLoad, Server, free_port, group_cpu_seconds, median, table, venv_tool, wrk

    hallmark, granian = venv_tool("hallmark"), venv_tool("granian")
    env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF" and not k.startswith(("HALLMARK_", "GRANIAN_"))}
    instance = tmp / "instance"
    ports = {"ours": free_port(), "bare": free_port()}
    ours_env = {
        **env,
        "HALLMARK_INSTANCE": str(instance),
        "HALLMARK_LOG_LEVEL": "WARNING",
        "HALLMARK_PUBLIC_URL": f"http://127.0.0.1:{ports['ours']}",
    }
    print("share: hallmark init, demo types and seals, issuing licences", file=sys.stderr, flush=True)
    _run([hallmark, "init"], ours_env, 180)
    issued = json.loads(_run([sys.executable, os.path.abspath(__file__), "--prepare-share", str(args.licences)], ours_env, 600))
    added = _run(
        [
            hallmark,
            "idp",
            "client",
            "add",
            "--name",
            "基准审批系统",
            "--client-id",
            CLIENT_ID,
            "--grant",
            "client_credentials",
            "--scope",
            "licences:read",
            "--json",
        ],
        ours_env,
        60,
    )
    secret = json.loads(added)["client_secret"]
    from licenses import demo

    _run([hallmark, "licences", "grant", "add", CLIENT_ID, demo.DRIVING_LICENCE, "--mode", "compare", "--matter", MATTER], ours_env, 60)

    threads = 8
    servers = {
        "ours": Server(
            "ours",
            [hallmark, "serve", "--bind", f"127.0.0.1:{ports['ours']}", "--workers", "2"],
            ports["ours"],
            env=ours_env,
            cwd=str(tmp),
            log_dir=tmp,
        ),
        "bare": Server(
            "bare",
            [
                granian,
                "--interface",
                "wsgi",
                "--workers",
                "2",
                "--blocking-threads",
                str(threads),
                "--backpressure",
                "1024",  # hallmark.serving.CONNECTIONS_PER_WORKER
                "--host",
                "127.0.0.1",
                "--port",
                str(ports["bare"]),
                "--log-level",
                "warning",
                "--no-access-log",
                "--working-dir",
                os.path.dirname(os.path.abspath(__file__)),
                "--factory",
                "licences:peer_app",
            ],
            ports["bare"],
            env={**env, PEER_DB_ENV: str(instance / "hallmark.db")},
            log_dir=tmp,
        ),
    }
    paths = {"ours": "/api/licences/compare", "bare": "/compare"}
    rates: dict[str, list[float]] = {name: [] for name in servers}
    cpu_per_call: dict[str, list[float]] = {name: [] for name in servers}
    notes: list[str] = []
    try:
        for server in servers.values():
            server.start("/healthz", timeout=60)
        bases = {name: f"http://127.0.0.1:{ports[name]}" for name in servers}
        token = _token(bases["ours"], secret)
        token_at = time.monotonic()
        _check_answers(bases["ours"], bases["bare"], token, issued[0])
        bodies = [
            json.dumps({"identifier": s["identifier"], "claims": s["claims"], "purpose": PURPOSE, "matter": MATTER}, ensure_ascii=False)
            for s in issued
        ]
        lua_bodies = "{" + ", ".join(json.dumps(b, ensure_ascii=False) for b in bodies) + "}"
        scripts = {}
        for name in servers:
            scripts[name] = tmp / f"{name}.lua"
            scripts[name].write_text(
                LUA.replace("{bodies}", lua_bodies).replace("{authorization}", f"Bearer {token}").replace("{path}", paths[name])
            )
        for name in servers:  # warm up: imports, caches, first connections
            wrk(bases[name] + paths[name], threads=2, connections=args.connections, seconds=2, script=str(scripts[name]))
        server_cpu, started = 0.0, time.monotonic()
        with OtherLoad() as other:
            for round_number in range(args.share_rounds):
                if time.monotonic() - token_at > 500:  # tokens live 600 s
                    raise RuntimeError("the run outlived its access token; use fewer rounds or shorter ones")
                order = list(servers) if round_number % 2 == 0 else list(reversed(servers))
                for name in order:
                    before = group_cpu_seconds(servers[name].proc.pid)
                    rate, note = wrk(
                        bases[name] + paths[name], threads=2, connections=args.connections, seconds=args.seconds, script=str(scripts[name])
                    )
                    used = group_cpu_seconds(servers[name].proc.pid) - before
                    server_cpu += used
                    rates[name].append(rate)
                    cpu_per_call[name].append(used / (rate * args.seconds) * 1e6 if rate else 0.0)
                    if note:
                        notes.append(f"{name} round {round_number + 1}: {note}")
                print(
                    f"share round {round_number + 1}/{args.share_rounds}: " + ", ".join(f"{n} {rates[n][-1]:.0f}/s" for n in servers),
                    file=sys.stderr,
                    flush=True,
                )
        other_cpus = max(0.0, other.cpus - server_cpu / (time.monotonic() - started))
    finally:
        for server in servers.values():
            server.stop()
    ratios = [o / b for o, b in zip(rates["ours"], rates["bare"])]
    figure = median(ratios)
    rows = [
        [
            name,
            f"{median(rates[name]):.0f}",
            f"{min(rates[name]):.0f}-{max(rates[name]):.0f}",
            f"{median(cpu_per_call[name]):.0f}",
            f"{figure:.2f}" if name == "ours" else "",
        ]
        for name in servers
    ]
    report = [
        f"\ncompare-only calls/s: median of {args.share_rounds} alternating runs of wrk -t2 -c{args.connections} -d{args.seconds}s "
        f"over {len(issued)} licences, 2 workers x {threads} threads per server, {os.cpu_count()} cpus, "
        f"other processes used {other_cpus:.2f} of them",
        table(["server", "calls/s", "range", "server CPU us/call", "ours/bare"], rows),
        "per-round ratios: " + " ".join(f"{r:.2f}" for r in ratios),
        *(f"note: {n}" for n in notes),
    ]
    return report, figure


def main() -> None:
    import argparse
    import signal
    import tempfile
    from pathlib import Path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("flatness", "share"), help="run one of the two parts")
    parser.add_argument("--size", type=int, default=1_000_000, help="licences in the large library (default 1,000,000)")
    parser.add_argument("--small", type=int, default=1_000, help="licences in the small library (default 1,000)")
    parser.add_argument("--lookups", type=int, default=6_000, help="timed lookups per kind and size (default 6,000)")
    parser.add_argument("--rounds", type=int, default=15, help="alternating slices per kind and size (default 15)")
    parser.add_argument("--postgres", action="store_true", help="also measure flatness on a throwaway PostgreSQL cluster")
    parser.add_argument("--licences", type=int, default=8, help="licences issued for the share part (default 8)")
    parser.add_argument("--share-rounds", type=int, default=5, help="wrk runs per server (default 5)")
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run (default 5)")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections, 2 threads (default 8)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 20,000 licences, fewer lookups, 1 round of 2 s")
    parser.add_argument("--prepare-share", type=int, help=argparse.SUPPRESS)  # the child process of the share part
    args = parser.parse_args()
    if args.prepare_share is not None:
        prepare_share_instance(max(1, min(args.prepare_share, 50)))
        return
    if args.quick:
        args.size, args.lookups, args.rounds, args.share_rounds, args.seconds = 20_000, 1_200, 2, 1, 2
    args.size = max(1_000, min(args.size, 5_000_000))
    args.small = max(100, min(args.small, args.size))
    args.lookups = max(200, min(args.lookups, 100_000))
    args.rounds = max(1, min(args.rounds, 20))
    args.licences = max(1, min(args.licences, 50))
    args.share_rounds = max(1, min(args.share_rounds, 15))
    args.seconds = max(1, min(args.seconds, 30))
    args.connections = max(1, min(args.connections, 100))

    # A SIGTERM must still run the finally blocks and exits that stop servers and clusters and remove the temp dir.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    report, figures = [], {}
    with tempfile.TemporaryDirectory(prefix="hallmark-licences-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if args.only in (None, "flatness"):
            lines, figures["licence-flatness"] = flatness(args, tmp)
            report += lines
        if args.only in (None, "share"):
            lines, figures["share-efficiency"] = share(args, tmp)
            report += lines
    print("\n".join(report))
    for name, value in figures.items():
        print(f"{name}={value:.2f}")


if __name__ == "__main__":
    main()
