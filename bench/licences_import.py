"""import-efficiency: the bulk import of legacy licences against a bare Core executemany of the same rows.

For N generated driving-licence rows (a CSV file, UTF-8), two sides on fresh databases
of the same kind, in this run:

- **import**: ``licenses.imports.import_file`` as ``hallmark licences import`` runs it:
  digest and encoding pass, streaming read, every row checked (holder check digits,
  serial, dates, the face against the type's JSON Schema), faces and holder codes
  sealed with AES-GCM, batches of 1,000 written with Core executemany together with
  the resume point, history lines, error report;
- **bare**: the same rows as dicts (made beforehand per batch, outside the clock)
  written with Core ``executemany`` into the same two tables (licences, history), the
  same batch size, one transaction per batch, no checks.

``import-efficiency`` = import rows/s ÷ bare rows/s (goal ≥ 0.5). Each side runs in a
child process, so its peak RSS is its own: the import's at N and at N/10 are printed
(goal: at N ≤ 1.2 × at N/10).

The data key: imports seal with a data key that an HSM key wraps, asked of the HSM
once per process; here a process-local AES key wraps it instead (``LocalKeys``), so no
SoftHSM token is needed. Nothing else differs from the command.

Usage: python bench/licences_import.py [--size N] [--small N] [--postgres] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BATCH = 1000
TYPE = "1110000000001375XN001"  # the demo driving licence
COLUMNS = (
    "serial",
    "holder_code",
    "valid_from",
    "licence_number",
    "name",
    "sex",
    "nationality",
    "address",
    "birth_date",
    "first_issued_on",
    "vehicle_class",
)


def holder(i: int) -> str:
    from licences import Rows  # bench/licences.py: the holder numbering its fill uses

    return Rows.holder(2 * i + 1)[1]  # odd numbers are people


def source_row(i: int) -> dict:
    from licenses import demo

    code = holder(i)
    face = demo.sample_face(TYPE, holder_code=code, holder_name="林志明", seed=str(i))
    start = date(2018, 1, 1) + timedelta(days=i % 2500)
    return {"serial": f"IMP{i:010d}", "holder_code": code, "valid_from": start.isoformat(), **face}


def write_source(path: Path, count: int) -> None:
    import csv

    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        for i in range(count):
            row = source_row(i)
            writer.writerow([row[c] for c in COLUMNS])


class LocalKeys:
    """Wraps the data key with a process-local AES-GCM key instead of the HSM's (asked once per process either way)."""

    def __init__(self):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(AESGCM.generate_key(bit_length=256))

    def secret_key(self, label: str) -> str:
        return f"local:{label}"

    def encrypt(self, uri: str, data: bytes, *, aad: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, data, aad)

    def decrypt(self, uri: str, blob: bytes, *, aad: bytes) -> bytes:
        return self._aead.decrypt(blob[:12], blob[12:], aad)


def _context(url: str):
    from types import SimpleNamespace

    from core.db import make_engine, make_session_factory
    from licenses.context import LicencesContext

    engine = make_engine(url)
    sessions = make_session_factory(engine)
    return engine, LicencesContext(
        signing=SimpleNamespace(sessions=sessions), keys=LocalKeys(), public_url="http://127.0.0.1:8000", lookup_key=b"k" * 32
    )


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_import(url: str, source: str, issuer: str) -> dict:
    from licenses import imports

    engine, ctx = _context(url)
    started = time.perf_counter()
    result = imports.import_file(
        ctx, Path(source), type_code=TYPE, issuer_code=issuer, actor="bench:import", batch=BATCH, error_report=Path(source + ".errors.csv")
    )
    elapsed = time.perf_counter() - started
    engine.dispose()
    assert result.rows_rejected == 0 and result.rows_added == result.rows_read, result
    return {"rows": result.rows_added, "seconds": elapsed, "rate": result.rows_added / elapsed, "peak_mb": _peak_mb()}


def child_bare(url: str, count: int, issuer: str) -> dict:
    """The same rows, made outside the clock, written with Core executemany: licences and their history lines."""
    import json as json_module

    from sqlalchemy import insert

    from core.db import utc_now
    from core.identifiers import mask_resident_id
    from licenses import catalogue, identifiers, issuance
    from licenses.models import Licence, StateChange

    engine, ctx = _context(url)
    definition = catalogue.read_file(catalogue.DEMO_TYPES / "driving-licence.json")
    sensitive = definition.sensitive
    clock = 0.0
    for first in range(0, count, BATCH):
        licences, history = [], []
        now = utc_now()
        for i in range(first, min(first + BATCH, count)):
            row = source_row(i)
            face = {k: v for k, v in row.items() if k not in ("serial", "holder_code", "valid_from")}
            identifier = str(identifiers.make(TYPE, issuer, row["serial"]))
            start, until = issuance.validity(definition, date.fromisoformat(row["valid_from"]), None)
            secret = json_module.dumps({k: v for k, v in face.items() if k in sensitive}, ensure_ascii=False).encode()
            licences.append(
                {
                    "identifier": identifier, "type_code": TYPE, "issuer_code": issuer, "serial": row["serial"], "version": 1,
                    "holder_type": "111", "holder_hash": issuance.holder_hash(ctx, "111", row["holder_code"]),
                    "holder_masked": mask_resident_id(row["holder_code"]), "holder_cipher": os.urandom(5 + 12 + 18 + 16),
                    "holder_name": face["name"], "state": "valid", "state_reason": "", "state_changed_at": now,
                    "valid_from": start, "valid_until": until, "issued_at": now, "issued_by": "bench:bare",
                    "face_public": json_module.dumps({k: v for k, v in face.items() if k not in sensitive}, ensure_ascii=False),
                    "face_secret": os.urandom(5 + 12 + len(secret) + 16), "data_key_id": None, "predecessor": None,
                    "successor": None, "requester": "bench:bare", "request_id": None, "document_id": None,
                    "pdf_sha256": None, "pdf": None, "import_id": None, "source_row": i + 2, "file_state": "pending",
                    "status_list": None, "status_index": None,
                }
            )  # fmt: skip
            history.append(
                {"identifier": identifier, "from_state": "", "to_state": "valid", "reason": "import", "actor": "bench:bare", "at": now}
            )
        started = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(insert(Licence.__table__), licences)
            conn.execute(insert(StateChange.__table__), history)
        clock += time.perf_counter() - started
    engine.dispose()
    return {"rows": count, "seconds": clock, "rate": count / clock, "peak_mb": _peak_mb()}


def _child(*args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"child {args[0]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _database(kind: str, cluster, tmp: Path, name: str) -> str:
    from licences import Rows, prepare_library

    from core.db import make_engine

    url = f"sqlite:///{tmp / (name + '.db')}" if kind == "sqlite" else cluster.database(name)
    engine = make_engine(url)
    prepare_library(engine, Rows(b"k" * 32))
    engine.dispose()
    return url


def _drop(url: str) -> None:
    if url.startswith("sqlite:///"):
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(url[len("sqlite:///") :] + suffix)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--postgres", action="store_true", help="also on a throwaway PostgreSQL cluster")
    parser.add_argument("--quick", action="store_true", help="20,000 and 2,000 rows (a smoke run)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        what, url, *rest = args.child
        out = child_import(url, rest[0], rest[1]) if what == "import" else child_bare(url, int(rest[0]), rest[1])
        print(json.dumps(out))
        return
    if args.quick:
        args.size, args.small = 20_000, 2_000
    args.size = max(1_000, min(args.size, 5_000_000))
    args.small = max(100, min(args.small, args.size))

    import signal

    from _common import OtherLoad, PostgresCluster, table

    from licenses import demo

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    issuer = demo.issuer_for(TYPE).code
    report, figures = [], {}
    kinds = ["sqlite"] + (["postgresql"] if args.postgres else [])
    with tempfile.TemporaryDirectory(prefix="hallmark-import-bench-") as tmp_name, contextlib.ExitStack() as stack:
        tmp = Path(tmp_name)
        cluster = stack.enter_context(PostgresCluster()) if args.postgres else None
        sources = {}
        for size in (args.small, args.size):
            sources[size] = tmp / f"legacy-{size}.csv"
            started = time.perf_counter()
            write_source(sources[size], size)
            print(
                f"wrote {size:,} rows ({sources[size].stat().st_size / 1e6:,.0f} MB) in {time.perf_counter() - started:.0f} s",
                file=sys.stderr,
                flush=True,
            )
        for kind in kinds:
            results = {}
            with OtherLoad() as other:
                for size in (args.small, args.size):
                    for side in ("bare", "import"):
                        url = _database(kind, cluster, tmp, f"{side}_{size}")
                        arg = str(sources[size]) if side == "import" else str(size)
                        results[(side, size)] = _child(side, url, arg, issuer)
                        print(f"{kind} {side} {size:,}: {results[(side, size)]['rate']:,.0f} rows/s", file=sys.stderr, flush=True)
                        _drop(url)
            rows = [
                [side, f"{size:,}", f"{r['rate']:,.0f}", f"{r['seconds']:,.1f}", f"{r['peak_mb']:,.0f}"]
                for (side, size), r in results.items()
            ]
            efficiency = results[("import", args.size)]["rate"] / results[("bare", args.size)]["rate"]
            flat = results[("import", args.size)]["peak_mb"] / results[("import", args.small)]["peak_mb"]
            report.append(f"\n{kind}: other processes used {other.cpus:.2f} of {os.cpu_count()} cpus")
            report.append(table(["side", "rows", "rows/s", "seconds", "peak RSS MB"], rows))
            report.append(
                f"import-efficiency {kind}={efficiency:.2f}  peak RSS import {args.size:,}: "
                f"{results[('import', args.size)]['peak_mb']:,.0f} MB, {args.small:,}: {results[('import', args.small)]['peak_mb']:,.0f} MB "
                f"(ratio {flat:.2f})"
            )
            figures[kind] = efficiency
    print("\n".join(report))
    print("import-efficiency=" + " ".join(f"{kind}:{value:.2f}" for kind, value in figures.items()))


if __name__ == "__main__":
    main()
