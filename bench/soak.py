"""A soak: mixed load on one ``hallmark serve`` for 10 minutes, counting 5xx and watching the server's memory.

Setup: a fresh instance by ``hallmark init`` in a temp dir (SQLite, or with
``--postgres`` a throwaway PostgreSQL cluster in /dev/shm, ``_common.PostgresCluster``),
its public URL the server's own 127.0.0.1 address; one account and a first-party
confidential hall (as ``bench/login.py``); the demo licence types, departments and
seals with a few driving licences issued (``bench/licences.py --prepare-share``);
an approval-system client (client_credentials; ``sign:seal sign:validate
licences:read``) granted the market regulator's seal and a standing *read* grant on
driving licences; a few person-auth certificates issued from CSRs in process, every
fourth revoked, for OCSP. Then ``hallmark serve --workers 2``, its output (stdout and
stderr) kept in a file.

The per-client limits (``core.ratelimit``: every ``<name>_burst`` / ``<name>_per_minute``
setting the components declare) are raised through their settings
(``HALLMARK_<NAME>``) for this server: the whole soak comes from one address,
127.0.0.1. A 429 is still counted, apart from the 5xx.

Load: T threads (default 8), each with its own keep-alive connection (http.client),
pick operations at random by fixed weights (:data:`WEIGHTS`) until the deadline;
every answer is checked:

* ``login``: the whole authorization-code flow with PKCE (``bench/login.py``'s
  ``login_once``: authorize, login page, login POST with CSRF token, authorize again,
  code exchange); every 25th ID token per thread verified against the JWKS. Its last
  request is also counted on its own as ``token-code``;
* ``token-cc``: ``POST /oauth/token`` client_credentials (the newest token is what the
  API calls below use);
* ``userinfo``: ``GET /oauth/userinfo`` with the access token of a recent login;
* ``ocsp``: ``POST /pki/ocsp`` (DER, no nonce) for one of the certificates; every 10th
  answer parsed, serial and status checked;
* ``seal``: ``POST /api/sign/pdf`` (a one-page PDF, the department seal, default level);
* ``validate``: ``POST /api/validate`` of a PDF sealed at start-up: TOTAL_PASSED;
* ``licence``: ``GET /api/licences/<identifier>`` in read mode under the standing grant.

The server's processes (main and workers: the main process and its children running
the same program, ``_common.process_rss``) have their resident memory summed from
/proc every few seconds.

Everything stops by itself at the deadline (operations in flight finish; each request
has a 60 s timeout), then the server is stopped. Printed: operations per kind with
latency percentiles, HTTP statuses per kind, the first 5xx answers with the server's
log around each, RSS per minute, and two figures:

* ``soak-5xx=<count of 5xx answers>`` (goal 0);
* ``soak-rss-growth=<mean RSS in the last minute / mean RSS in the second minute>``
  (goal at most 1.1); with ``--quick`` (1 minute) the windows are the second and the
  last sixth of the run.

Usage: python bench/soak.py [--minutes N] [--threads T] [--postgres] [--quick] [--seed S]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict, deque
from pathlib import Path
from urllib.parse import quote, urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    Instance,
    OtherLoad,
    PostgresCluster,
    basic_auth,
    client_credentials_token,
    process_rss,
    table,
)

# Relative weights of the operations (a login is five requests and an argon2id check; a seal
# and a validation are the costliest single requests).
WEIGHTS = {"login": 3, "token-cc": 3, "userinfo": 4, "ocsp": 4, "seal": 1, "validate": 2, "licence": 3}
KINDS = ("login", "token-code", "token-cc", "userinfo", "ocsp", "seal", "validate", "licence")
API_CLIENT = "soak-approvals"
API_SCOPE = "sign:seal sign:validate licences:read"
PURPOSE, MATTER = "核验申请人驾驶证信息（浸泡测试）", "JT-SOAK-0001"
CERTIFICATES = 12
LICENCES = 4
REQUEST_TIMEOUT = 60
RAISED_LIMIT = "1000000"
CHECK_EVERY = 25  # ID tokens
OCSP_CHECK_EVERY = 10
SAMPLES_5XX = 5


# -- setup in a child process (HALLMARK_* set for the instance) ---------------------------------


def prepare(count: int) -> None:
    """Print JSON: OCSP requests (hex DER) for ``count`` new certificates, which are revoked, the limit settings, and the
    demo codes the grants name (the market regulator, whose seal the soak uses; the driving licence type)."""
    from dataclasses import fields

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509 import ocsp as x509_ocsp
    from cryptography.x509.oid import NameOID

    from ca import issuance, revocation
    from core.settings import Settings
    from hallmark import components, wiring

    limits = sorted(
        f.name
        for section in (Settings, *components.sections().values())
        for f in fields(section)
        if f.name.endswith(("_burst", "_per_minute"))
    )
    services = wiring.build(components.load_settings())
    try:
        ctx = services.ca
        people = ctx.authority("people")
        certificates = []
        for n in range(count):
            key = ec.generate_private_key(ec.SECP256R1())
            csr = (
                x509.CertificateSigningRequestBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "soak")]))
                .sign(key, hashes.SHA256())
                .public_bytes(serialization.Encoding.PEM)
            )
            row, cert = issuance.issue(
                ctx, "person-auth", csr, issuance.Identity(name=f"Soak Person {n}", subject_id="11010519491231002X"), actor="bench:soak"
            )
            revoked = n % 4 == 3
            if revoked:
                revocation.revoke(ctx, row.serial, "keyCompromise", actor="bench:soak")
            request = x509_ocsp.OCSPRequestBuilder().add_certificate(cert, people.certificate, hashes.SHA1()).build()
            certificates.append(
                {"serial": int(row.serial, 16), "revoked": revoked, "request": request.public_bytes(serialization.Encoding.DER).hex()}
            )
    finally:
        services.close()
    from licenses import demo

    regulator = demo.issuer_for(demo.BUSINESS_LICENCE).code  # its seal was made with the demo departments
    print(json.dumps({"certificates": certificates, "limits": limits, "regulator": regulator, "driving_licence": demo.DRIVING_LICENCE}))


# -- the record of everything the clients saw -------------------------------------------------


class Record:
    def __init__(self, log_path: Path):
        self.lock = threading.Lock()
        self.log_path = log_path
        self.statuses: dict[str, Counter] = defaultdict(Counter)  # kind -> HTTP status (or 'connection') -> count
        self.latencies: dict[str, list[float]] = defaultdict(list)  # kind -> seconds of each operation
        self.ok: Counter = Counter()
        self.failed: Counter = Counter()
        self.failures: dict[str, list[str]] = defaultdict(list)  # kind -> first few reasons
        self.samples_5xx: list[dict] = []
        self.count_5xx = 0

    def answer(self, kind: str, method: str, path: str, status: int | str, body: bytes, at: float) -> None:
        with self.lock:
            self.statuses[kind][status] += 1
            if isinstance(status, int) and status >= 500:
                self.count_5xx += 1
                if len(self.samples_5xx) < SAMPLES_5XX:
                    try:
                        offset = self.log_path.stat().st_size
                    except OSError:
                        offset = 0
                    self.samples_5xx.append(
                        {
                            "kind": kind,
                            "request": f"{method} {path[:120]}",
                            "status": status,
                            "at": at,
                            "log_offset": offset,
                            "body": body[:800],
                        }
                    )

    def operation(self, kind: str, seconds: float, failure: str | None) -> None:
        with self.lock:
            self.latencies[kind].append(seconds)
            if failure is None:
                self.ok[kind] += 1
            else:
                self.failed[kind] += 1
                if len(self.failures[kind]) < 3:
                    self.failures[kind].append(failure[:300])


class Client:
    """One kept-alive HTTP/1.1 connection (http.client) and a cookie jar; every answer goes to the record.

    It has the interface ``bench/login.py``'s ``login_once`` drives (``request``, ``cookies``).
    """

    def __init__(self, port: int, record: Record, started: float):
        self.port, self.record, self.started = port, record, started
        self.connection: http.client.HTTPConnection | None = None
        self.cookies: dict[str, str] = {}
        self.kind = ""
        self.last: tuple[str, int, float, bytes] | None = None  # path, status, seconds, body of the last answer

    def request(self, method: str, path: str, body: str | bytes | None = None, headers: dict | None = None) -> tuple[int, dict, bytes]:
        headers = dict(headers or {})
        if isinstance(body, str):
            body = body.encode()
            headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        kind = "token-code" if self.kind == "login" and path.startswith("/oauth/token") else self.kind
        started = time.monotonic()
        try:
            if self.connection is None:
                self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)
                self.connection.connect()
                self.connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.connection.request(method, path, body, headers)
            response = self.connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            self.record.answer(kind, method, path, "connection", b"", started - self.started)
            raise ConnectionError(f"{method} {path[:60]}: {type(exc).__name__}: {exc}") from None
        answer: dict = {}
        for name, value in response.getheaders():
            name = name.lower()
            if name == "set-cookie":
                cookie, _, rest = value.partition("=")
                self.cookies[cookie.strip()] = rest.split(";", 1)[0]
            else:
                answer[name] = value
        if response.will_close:
            self.close()
        self.last = (path, response.status, time.monotonic() - started, data)
        self.record.answer(kind, method, path, response.status, data, started - self.started)
        return response.status, answer, data

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


# -- the operations ---------------------------------------------------------------------------


class Failed(Exception):
    pass


class Shared:
    """What the operations need, and the newest tokens the threads hand each other."""

    def __init__(self, setup: dict, authorizations: dict, api_token: str, sealed: bytes, pdf: bytes, verify_id_token):
        self.setup, self.authorizations, self.sealed, self.pdf = setup, authorizations, sealed, pdf
        self.verify_id_token = verify_id_token
        self.api_token = api_token
        self.user_tokens: deque[str] = deque(maxlen=16)
        self.lock = threading.Lock()


def expect(status: int, want: int, data: bytes, what: str) -> None:
    if status != want:
        raise Failed(f"{what}: {status} {data[:200]!r}")


def op_login(client: Client, shared: Shared, rng: random.Random, count: int) -> None:
    from login import LoginFailed, login_once

    try:
        login_once(
            client, shared.setup["password"], shared.authorizations["hall"], shared.verify_id_token if count % CHECK_EVERY == 0 else None
        )
    except LoginFailed as exc:
        raise Failed(str(exc)) from None
    finally:
        if client.last is not None and client.last[0].startswith("/oauth/token"):
            _, status, seconds, data = client.last
            client.record.operation("token-code", seconds, None if status == 200 else f"{status} {data[:200]!r}")
    tokens = json.loads(client.last[3])
    with shared.lock:
        shared.user_tokens.append(tokens["access_token"])


def op_token_cc(client: Client, shared: Shared, rng: random.Random, count: int) -> None:
    form = urlencode({"grant_type": "client_credentials", "scope": API_SCOPE})
    status, _, data = client.request("POST", "/oauth/token", form, {"Authorization": shared.authorizations["api"]})
    expect(status, 200, data, "token")
    token = json.loads(data).get("access_token")
    if not token:
        raise Failed("token: no access_token")
    shared.api_token = token


def op_userinfo(client: Client, shared: Shared, rng: random.Random, count: int) -> None:
    with shared.lock:
        token = shared.user_tokens[-1] if shared.user_tokens else None
    if token is None:
        raise Failed("userinfo: no login has given a token yet")
    status, _, data = client.request("GET", "/oauth/userinfo", None, {"Authorization": f"Bearer {token}"})
    expect(status, 200, data, "userinfo")
    if not json.loads(data).get("sub"):
        raise Failed("userinfo: no sub")


def op_ocsp(client: Client, shared: Shared, rng: random.Random, count: int) -> None:
    certificate = rng.choice(shared.setup["certificates"])
    headers = {"Content-Type": "application/ocsp-request", "Accept": "application/ocsp-response"}
    status, _, data = client.request("POST", "/pki/ocsp", certificate["der"], headers)
    expect(status, 200, data, "ocsp")
    if count % OCSP_CHECK_EVERY == 0:
        from cryptography.x509 import ocsp as x509_ocsp

        parsed = x509_ocsp.load_der_ocsp_response(data)
        want = x509_ocsp.OCSPCertStatus.REVOKED if certificate["revoked"] else x509_ocsp.OCSPCertStatus.GOOD
        if parsed.response_status is not x509_ocsp.OCSPResponseStatus.SUCCESSFUL:
            raise Failed(f"ocsp: {parsed.response_status.name}")
        if parsed.serial_number != certificate["serial"] or parsed.certificate_status is not want:
            raise Failed(f"ocsp: serial {parsed.serial_number:x} {parsed.certificate_status.name}, expected {want.name}")


def op_seal(client: Client, shared: Shared, rng: random.Random, count: int) -> None:
    headers = {"Content-Type": "application/pdf", "Authorization": f"Bearer {shared.api_token}"}
    status, answer, data = client.request("POST", "/api/sign/pdf", shared.pdf, headers)
    expect(status, 200, data, "seal")
    if not data.startswith(b"%PDF") or not answer.get("hallmark-document-id"):
        raise Failed("seal: not a sealed PDF with its document id")


def op_validate(client: Client, shared: Shared, rng: random.Random, count: int) -> None:
    headers = {"Content-Type": "application/pdf", "Authorization": f"Bearer {shared.api_token}"}
    status, _, data = client.request("POST", "/api/validate", shared.sealed, headers)
    expect(status, 200, data, "validate")
    signatures = json.loads(data).get("signatures") or [{}]
    if signatures[0].get("indication") != "TOTAL_PASSED":
        raise Failed(f"validate: {signatures[0].get('indication')}")


def op_licence(client: Client, shared: Shared, rng: random.Random, count: int) -> None:
    identifier = rng.choice(shared.setup["licences"])["identifier"]
    query = urlencode({"purpose": PURPOSE, "matter": MATTER, "mode": "read"})
    status, _, data = client.request(
        "GET", f"/api/licences/{quote(identifier, safe='')}?{query}", None, {"Authorization": f"Bearer {shared.api_token}"}
    )
    expect(status, 200, data, "licence")
    if (json.loads(data).get("licence") or {}).get("identifier") != identifier:
        raise Failed("licence: another licence answered")


OPERATIONS = {
    "login": op_login,
    "token-cc": op_token_cc,
    "userinfo": op_userinfo,
    "ocsp": op_ocsp,
    "seal": op_seal,
    "validate": op_validate,
    "licence": op_licence,
}


def load(port: int, shared: Shared, record: Record, threads: int, started: float, stop_at: float, seed: int) -> list[threading.Thread]:
    kinds, weights = list(WEIGHTS), list(WEIGHTS.values())

    def worker(number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        client = Client(port, record, started)
        counts: Counter = Counter()
        try:
            while time.monotonic() < stop_at:
                kind = rng.choices(kinds, weights)[0]
                client.kind, client.last = kind, None
                began = time.monotonic()
                failure = None
                try:
                    OPERATIONS[kind](client, shared, rng, counts[kind])
                except (Failed, ConnectionError) as exc:
                    failure = str(exc)
                except (ValueError, KeyError, TypeError) as exc:  # an answer that is not what it should be
                    failure = f"{type(exc).__name__}: {exc}"
                counts[kind] += 1
                record.operation(kind, time.monotonic() - began, failure)
        finally:
            client.close()

    workers = [threading.Thread(target=worker, args=(n,), name=f"soak-{n}", daemon=True) for n in range(threads)]
    for thread in workers:
        thread.start()
    return workers


# -- memory -----------------------------------------------------------------------------------


class Sampler(threading.Thread):
    """The server's resident memory (main and workers) every ``every`` seconds until stopped."""

    def __init__(self, leader: int, started: float, every: float):
        super().__init__(name="soak-rss", daemon=True)
        self.leader, self.started, self.every = leader, started, every
        self.samples: list[tuple[float, int, int]] = []  # seconds since the load started, bytes, processes
        self.pids: set[int] = set()
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            found = process_rss(self.leader)
            self.pids.update(found)
            self.samples.append((time.monotonic() - self.started, sum(found.values()), len(found)))
            self.halt.wait(self.every)


def mean_rss(samples, start: float, end: float) -> float | None:
    values = [rss for at, rss, _ in samples if start <= at < end]
    return sum(values) / len(values) if values else None


# -- report -----------------------------------------------------------------------------------


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


def log_around(path: Path, offset: int, before: int = 2500, after: int = 4000) -> str:
    """The server's log lines around byte ``offset`` (where the log ended when a 5xx was answered)."""
    try:
        with open(path, "rb") as log:
            log.seek(max(0, offset - before))
            text = log.read(before + after).decode("utf-8", "replace")
    except OSError as exc:
        return f"(log unreadable: {exc})"
    lines = text.splitlines()
    return "\n".join(lines[1:] if offset > before else lines)  # the first line may be cut


def report(record: Record, sampler: Sampler, seconds: float, window: float, server_log: Path, limits: list[str], other_cpus: float) -> bool:
    """Print the results; True when the server's log is worth keeping (a 5xx, a worker replaced)."""
    rows = []
    for kind in KINDS:
        values = sorted(record.latencies.get(kind, []))
        statuses = record.statuses.get(kind, Counter())
        rows.append(
            [
                kind,
                len(values),
                f"{len(values) / seconds:.2f}",
                record.ok[kind],
                record.failed[kind],
                statuses.get(429, 0),
                sum(n for s, n in statuses.items() if isinstance(s, int) and s >= 500),
                *(f"{percentile(values, q) * 1e3:.0f}" for q in (0.5, 0.9, 0.99)),
                f"{values[-1] * 1e3:.0f}" if values else "0",
            ]
        )
    print(
        f"\noperations over {seconds:.0f} s (weights {' '.join(f'{k}={w}' for k, w in WEIGHTS.items())}; token-code is a login's last step)"
    )
    print(table(["kind", "ops", "ops/s", "ok", "failed", "429", "5xx", "p50 ms", "p90 ms", "p99 ms", "max ms"], rows))
    print("\nHTTP statuses per kind (every request; 'connection': no answer)")
    for kind in KINDS:
        statuses = record.statuses.get(kind)
        if statuses:
            print(f"  {kind}: " + ", ".join(f"{s} x{n}" for s, n in sorted(statuses.items(), key=lambda item: str(item[0]))))
    requests = sum(sum(c.values()) for c in record.statuses.values())
    count_429 = sum(c.get(429, 0) for c in record.statuses.values())
    print(f"requests: {requests}; 429 (rate limited, not an error of the server): {count_429}")
    for kind, reasons in record.failures.items():
        for reason in reasons:
            print(f"note: failed {kind}: {reason}")
    if limits:
        print(f"limits raised to {RAISED_LIMIT} for this server: {', '.join(limits)}")

    for sample in record.samples_5xx:
        print(f"\n5xx at {sample['at']:.1f} s: {sample['kind']} {sample['request']} -> {sample['status']}")
        print("body: " + sample["body"].decode("utf-8", "replace"))
        print(f"server log around it ({server_log}):\n{log_around(server_log, sample['log_offset'])}")

    samples = sampler.samples
    at_once = max((n for _, _, n in samples), default=0)
    print(
        f"\nserver RSS (main + workers) sampled every {sampler.every:.0f} s: {len(samples)} samples, "
        f"{at_once} processes at most at once, {len(sampler.pids)} different ones"
        + (" (a worker was replaced: see the server log)" if len(sampler.pids) > at_once else "")
    )
    minutes = []
    for start in range(0, int(seconds), 60):
        mean = mean_rss(samples, start, start + 60)
        if mean is not None:
            minutes.append(f"{start // 60 + 1}: {mean / 2**20:.0f}")
    print("mean MB per minute: " + ", ".join(minutes))
    if samples:
        print(
            f"first {samples[0][1] / 2**20:.0f} MB, last {samples[-1][1] / 2**20:.0f} MB, peak {max(s[1] for s in samples) / 2**20:.0f} MB"
        )
    second, last = mean_rss(samples, window, 2 * window), mean_rss(samples, seconds - window, seconds + 1)
    print(f"other processes used {other_cpus:.2f} of {os.cpu_count()} cpus; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"soak-5xx={record.count_5xx}")
    if second and last:
        print(
            f"soak-rss-growth={last / second:.3f} (mean of {last / 2**20:.0f} MB in [{seconds - window:.0f}, {seconds:.0f}) s / "
            f"{second / 2**20:.0f} MB in [{window:.0f}, {2 * window:.0f}) s)"
        )
    else:
        print("soak-rss-growth=? (no samples)")
    return bool(record.count_5xx) or len(sampler.pids) > at_once


# -- main -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the load (default 10)")
    parser.add_argument("--threads", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--postgres", action="store_true", help="run the instance on a throwaway PostgreSQL cluster")
    parser.add_argument("--quick", action="store_true", help="a smoke run of 1 minute")
    parser.add_argument("--seed", type=int, default=20261206)
    parser.add_argument("--prepare", type=int, help=argparse.SUPPRESS)  # the child process of the setup
    args = parser.parse_args()
    if args.prepare is not None:
        prepare(max(1, min(args.prepare, 100)))
        return
    minutes = 1.0 if args.quick else max(1.0, min(args.minutes, 120.0))
    seconds = minutes * 60
    threads = max(1, min(args.threads, 32))
    window = 60.0 if minutes >= 3 else seconds / 6  # the second and the last of these are compared

    # A SIGTERM must still run the finally blocks that stop the server and the cluster and remove the temp dir.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hallmark-soak-")))
        database_url = stack.enter_context(PostgresCluster()).database("hallmark_soak") if args.postgres else None
        instance = Instance(tmp, database_url=database_url)
        setup, authorizations = set_up(instance)
        server = stack.enter_context(instance.server(env={f"HALLMARK_{name.upper()}": RAISED_LIMIT for name in setup["limits"]}))
        print(
            f"soak: starting hallmark serve on {instance.base} ({'PostgreSQL' if args.postgres else 'SQLite'})", file=sys.stderr, flush=True
        )
        server.start("/healthz", timeout=60)
        api_token = client_credentials_token(instance.base, API_CLIENT, setup["api_secret"], API_SCOPE)
        from sign import sample_pdf

        pdf = sample_pdf()
        sealed = first_seal(instance.port, api_token, pdf)
        shared = Shared(setup, authorizations, api_token, sealed, pdf, id_token_check(instance.base))
        first = Client(instance.port, Record(server.log_path), time.monotonic())  # a first login, checked, gives userinfo a token
        first.kind = "login"
        try:
            op_login(first, shared, random.Random(0), 0)
        except (Failed, ConnectionError) as exc:
            sys.exit(f"the first login failed: {exc}")
        finally:
            first.close()

        record = Record(server.log_path)
        started = time.monotonic()
        stop_at = started + seconds
        sampler = Sampler(server.proc.pid, started, 2.0 if seconds < 180 else 5.0)
        sampler.start()
        print(f"soak: {threads} clients for {minutes:g} min", file=sys.stderr, flush=True)
        with OtherLoad() as other:
            server_cpu0 = group_cpu(server)
            workers = load(instance.port, shared, record, threads, started, stop_at, args.seed)
            while time.monotonic() < stop_at:
                time.sleep(min(30.0, max(0.1, stop_at - time.monotonic())))
                if time.monotonic() < stop_at - 1:
                    done = sum(len(v) for v in record.latencies.values())
                    print(
                        f"soak: {time.monotonic() - started:.0f} s, {done} operations, {record.count_5xx} 5xx, "
                        f"RSS {sampler.samples[-1][1] / 2**20:.0f} MB",
                        file=sys.stderr,
                        flush=True,
                    )
            for thread in workers:
                thread.join(REQUEST_TIMEOUT * 3)
            elapsed = time.monotonic() - started
            server_cpu = group_cpu(server) - server_cpu0
        sampler.halt.set()
        sampler.join(10)
        stuck = [t.name for t in workers if t.is_alive()]
        other_cpus = max(0.0, other.cpus - server_cpu / elapsed)
        keep = report(record, sampler, seconds, window, server.log_path, setup["limits"], other_cpus)
        if stuck:
            print(f"note: clients still waiting after the deadline: {', '.join(stuck)}")
        if keep:
            kept = Path(tempfile.gettempdir()) / f"hallmark-soak-{time.strftime('%Y%m%dT%H%M%S')}.log"
            shutil.copyfile(server.log_path, kept)
            print(f"server log kept in {kept}")


def group_cpu(server) -> float:
    from _common import group_cpu_seconds

    return group_cpu_seconds(server.proc.pid) if server.proc is not None else 0.0


def set_up(instance: Instance) -> tuple[dict, dict]:
    """The instance's accounts, clients, grants, licences and certificates (see the module's docstring)."""
    import secrets
    import subprocess

    from login import CLIENT_ID, REDIRECT_URI, USERNAME

    print(f"soak: setting up an instance in {instance.dir}", file=sys.stderr, flush=True)
    instance.cli("init")
    password = "Soak-" + secrets.token_urlsafe(12)
    instance.cli(
        "idp", "account", "add", "--username", USERNAME, "--display-name", "Soak Resident", "--password-stdin", stdin=password + "\n"
    )
    hall = instance.add_client(CLIENT_ID, "--redirect-uri", REDIRECT_URI, "--first-party")
    api = instance.add_client(API_CLIENT, "--grant", "client_credentials", "--scope", API_SCOPE)

    def child(*argv: str) -> str:
        done = subprocess.run([sys.executable, *argv], env=instance.env, capture_output=True, text=True, timeout=600, cwd=instance.dir)
        if done.returncode != 0:
            sys.exit(f"{' '.join(argv[:2])} failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    here = Path(__file__).resolve().parent
    licences = json.loads(child(str(here / "licences.py"), "--prepare-share", str(LICENCES)))
    prepared = json.loads(child(str(here / "soak.py"), "--prepare", str(CERTIFICATES)))
    instance.cli("sign", "seal", "grant", API_CLIENT, prepared["regulator"])
    instance.cli("licences", "grant", "add", API_CLIENT, prepared["driving_licence"], "--mode", "read", "--matter", MATTER)
    for certificate in prepared["certificates"]:
        certificate["der"] = bytes.fromhex(certificate.pop("request"))
    setup = {
        "password": password,
        "api_secret": api["client_secret"],
        "licences": licences,
        "certificates": prepared["certificates"],
        "limits": prepared["limits"],
    }
    authorizations = {"hall": basic_auth(CLIENT_ID, hall["client_secret"]), "api": basic_auth(API_CLIENT, api["client_secret"])}
    return setup, authorizations


def first_seal(port: int, token: str, pdf: bytes) -> bytes:
    """One PDF sealed through the API before the load, for the validations (fails loudly)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    try:
        connection.request("POST", "/api/sign/pdf", pdf, {"Content-Type": "application/pdf", "Authorization": f"Bearer {token}"})
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    if response.status != 200 or not data.startswith(b"%PDF"):
        sys.exit(f"the first seal failed: {response.status} {data[:500]!r}")
    return data


def id_token_check(base: str):
    """A function checking an ID token against the server's JWKS (signature, iss, aud, nonce), as bench/login.py does."""
    import urllib.request

    from joserfc import jwt
    from joserfc.jwk import KeySet
    from login import CLIENT_ID, LoginFailed

    with urllib.request.urlopen(base + "/.well-known/openid-configuration", timeout=10) as response:
        meta = json.loads(response.read())
    with urllib.request.urlopen(base + meta["jwks_uri"].removeprefix(meta["issuer"]), timeout=10) as response:
        keyset = KeySet.import_key_set(json.loads(response.read()))

    def verify(value: str, nonce: str) -> None:
        claims = jwt.decode(value, keyset, algorithms=["ES256", "RS256"]).claims
        if claims.get("iss") != meta["issuer"] or claims.get("aud") != CLIENT_ID or claims.get("nonce") != nonce:
            raise LoginFailed(f"ID token claims not as expected: {sorted(claims)}")

    return verify


if __name__ == "__main__":
    main()
