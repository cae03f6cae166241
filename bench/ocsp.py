"""Our OCSP responder against OpenSSL's, serving the same certificates; and issuance from CSRs.

Setup: a fresh instance by ``hallmark init`` in a temp dir; N certificates
(person-auth, people CA) issued in-process through ``ca.issuance.issue``, one
CSR each, timed: that is the ``issued-per-second`` line. Every tenth is revoked.
OpenSSL gets the same certificates as an ``index.txt`` built from the database
rows, and a responder certificate for a software P-256 key, issued by the same
people CA (HSM key) with the ocsp-signing profile; it signs every answer live
(``-ndays 1 -resp_key_id``, like our responses).

Servers: ``hallmark serve`` (granian, 2 workers) and ``openssl ocsp -multi 2``,
side by side on free 127.0.0.1 ports, each in its own process group, stopped in
``finally``.

Client, the same for both: T threads (default 3), each with one connection it
keeps alive as long as the server does, POSTing a DER request without nonce
(RFC 5019 style, SHA-1 CertID) for a random one of the N serials. OpenSSL's
responder answers one request per connection (HTTP/1.0) and closes it, so
against it the client reconnects for every request (the "connections" column
shows it); ours keeps each connection. Every 50th response per thread is parsed
and its serial and status checked against the database (good, or revoked for
the revoked tenth); a wrong one voids the run. By default the client speaks
HTTP through a socket with minimal parsing (``LeanConnection``), because
http.client, measured here, tops out at 4,000-5,000 requests/s per process and
would time itself rather than the servers; ``--client http.client`` uses it
anyway. Rounds of S seconds alternate between the servers (A B, B A, ...),
after a 1 s warm-up of each.

The client shares the 2 CPUs with the servers, so both figures are lower than
the servers could do alone; the ratio is what is compared.

Usage: python bench/ocsp.py [--certificates N] [--rounds R] [--seconds S] [--threads T] [--client lean|http.client]
Last line: ``ocsp-ratio=<ours / openssl>`` (requests/s, all rounds together).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OtherLoad, Server, free_port, median, table, venv_tool

REQUEST_HEADERS = {"Content-Type": "application/ocsp-request", "Accept": "application/ocsp-response"}


class OCSPServer(Server):
    """A Server whose readiness is an answered OCSP POST (OpenSSL's responder has no other page)."""

    def start(self, request: bytes, timeout: float = 30.0) -> None:  # type: ignore[override]
        # OpenSSL's -multi parent makes itself a process-group leader, which fails
        # (exit 1) in a session leader; a process group of its own is enough to stop it.
        group = {"process_group": 0} if self.name == "openssl" else {"start_new_session": True}
        with open(self.log_path, "ab") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT, **group)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                status, body, _ = (
                    post_once(self.port, "/", request) if self.name == "openssl" else post_once(self.port, "/pki/ocsp", request)
                )
                if status == 200 and len(body) > 5:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not answer OCSP within {timeout:.0f}s:\n{self.log_tail()}")


def post_once(port: int, path: str, body: bytes) -> tuple[int, bytes, bool]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("POST", path, body, REQUEST_HEADERS)
        response = connection.getresponse()
        return response.status, response.read(), response.will_close
    finally:
        connection.close()


# -- setup ------------------------------------------------------------------------------------


def setup(tmp: Path, env: dict, count: int):
    """Instance, certificates and OpenSSL's files; returns what the load needs."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509 import ocsp as x509_ocsp
    from cryptography.x509.oid import NameOID

    hallmark = venv_tool("hallmark")
    subprocess.run([hallmark, "init"], env=env, check=True, capture_output=True, timeout=180)

    os.environ.update({k: v for k, v in env.items() if k.startswith("HALLMARK_")})
    from ca import issuance, profiles, revocation
    from hallmark import components, wiring

    services = wiring.build(components.load_settings())
    try:
        ctx = services.ca
        keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(count)]
        csrs = [
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")]))
            .sign(key, hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM)
            for key in keys
        ]
        started = time.perf_counter()
        issued = [
            issuance.issue(
                ctx, "person-auth", csr, issuance.Identity(name=f"Bench Person {n}", subject_id="11010519491231002X"), actor="bench"
            )
            for n, csr in enumerate(csrs)
        ]
        issue_rate = count / (time.perf_counter() - started)
        revoked = set()
        for n, (row, _) in enumerate(issued):
            if n % 10 == 9:
                revocation.revoke(ctx, row.serial, "keyCompromise", actor="bench")
                revoked.add(int(row.serial, 16))

        people = ctx.authority("people")
        # OpenSSL's responder key must be a file: a software key, certified by the people CA (HSM).
        responder_key = ec.generate_private_key(ec.SECP256R1())
        profile = profiles.get("ocsp-signing")
        subject, _, _ = issuance.subject_for(profile, issuance.Identity(name="OpenSSL bench responder (people)"))
        with ctx.sessions() as session:
            serial = issuance.random_serial(session)
        responder = issuance.build(ctx, profile, people, responder_key.public_key(), subject, serial=serial)
        (tmp / "r.pem").write_bytes(responder.public_bytes(serialization.Encoding.PEM))
        (tmp / "r.key").write_bytes(
            responder_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        (tmp / "ca.pem").write_bytes(people.certificate.public_bytes(serialization.Encoding.PEM))

        from sqlalchemy import select

        from ca.models import Certificate

        with ctx.sessions() as session:
            rows = session.scalars(select(Certificate).where(Certificate.authority == "people", Certificate.profile == "person-auth")).all()
        lines = []
        for row in rows:
            hex_serial = format(int(row.serial, 16), "X")
            hex_serial = hex_serial.rjust(len(hex_serial) + len(hex_serial) % 2, "0")  # OpenSSL writes whole octets
            expires = row.not_after.astimezone(UTC).strftime("%y%m%d%H%M%SZ")
            subject_text = f"/CN=bench-{row.serial}"
            if row.status == "revoked":
                when = row.revoked_at.astimezone(UTC).strftime("%y%m%d%H%M%SZ")
                lines.append(f"R\t{expires}\t{when},{row.revocation_reason}\t{hex_serial}\tunknown\t{subject_text}")
            else:
                lines.append(f"V\t{expires}\t\t{hex_serial}\tunknown\t{subject_text}")
        (tmp / "index.txt").write_text("\n".join(lines) + "\n")
        (tmp / "index.txt.attr").write_text("unique_subject = no\n")

        requests = [
            (
                int(row.serial, 16),
                x509_ocsp.OCSPRequestBuilder()
                .add_certificate(cert, people.certificate, hashes.SHA1())
                .build()
                .public_bytes(serialization.Encoding.DER),
            )
            for row, cert in issued
        ]
    finally:
        services.close()
    return requests, revoked, issue_rate


# -- load -------------------------------------------------------------------------------------


class Totals:
    def __init__(self):
        self.ok = self.bad = self.connects = self.checked = self.wrong = 0
        self.lock = threading.Lock()
        self.errors: list[str] = []


class HTTPClientConnection:
    """http.client, as any Python caller would use it."""

    def __init__(self, port: int):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.connection.connect()
        self.connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def post(self, path: str, body: bytes) -> tuple[int, bytes, bool]:
        self.connection.request("POST", path, body, REQUEST_HEADERS)
        response = self.connection.getresponse()
        return response.status, response.read(), response.will_close

    def close(self) -> None:
        self.connection.close()


class LeanConnection:
    """HTTP/1.1 over a socket with just enough parsing: status, Content-Length, Connection.

    http.client parses every response's headers with the email package: its
    ceiling here (~4,000-5,000 requests/s per process, measured) is below what
    either server does, so with it the benchmark would mostly time the client.
    """

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        self.heads: dict[tuple[str, int], bytes] = {}

    def post(self, path: str, body: bytes) -> tuple[int, bytes, bool]:
        head = self.heads.get((path, len(body)))
        if head is None:
            lines = [
                f"POST {path} HTTP/1.1",
                "Host: 127.0.0.1",
                *(f"{k}: {v}" for k, v in REQUEST_HEADERS.items()),
                f"Content-Length: {len(body)}",
            ]
            head = self.heads[(path, len(body))] = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self.sock.sendall(head + body)
        buffer = self.buffer
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            buffer += self._recv()
        lines = buffer[:end].split(b"\r\n")
        version, status = lines[0].split(b" ", 2)[:2]
        close, length = version == b"HTTP/1.0", None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection":
                close = value.strip().lower() == b"close"
        rest = buffer[end + 4 :]
        if length is None:  # body until the server closes
            while chunk := self.sock.recv(65536):
                rest += chunk
            length, close = len(rest), True
        while len(rest) < length:
            rest += self._recv()
        self.buffer = rest[length:]
        return int(status), rest[:length], close

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection mid-response")
        return chunk

    def close(self) -> None:
        self.sock.close()


CLIENTS = {"lean": LeanConnection, "http.client": HTTPClientConnection}


def client(kind, port: int, path: str, requests, revoked: set[int], stop_at: float, cap: int, totals: Totals, seed: int) -> None:
    from cryptography.x509 import ocsp as x509_ocsp

    rng = random.Random(seed)
    connection = None
    ok = bad = connects = checked = wrong = 0
    while ok + bad < cap and time.monotonic() < stop_at:
        serial, body = requests[rng.randrange(len(requests))]
        try:
            if connection is None:
                connection = kind(port)
                connects += 1
            status, data, will_close = connection.post(path, body)
            if will_close:  # OpenSSL's responder: one request per connection
                connection.close()
                connection = None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            bad += 1
            if connection is not None:
                connection.close()
                connection = None
            if len(totals.errors) < 5:
                totals.errors.append(f"{type(exc).__name__}: {exc}")
            continue
        if status != 200 or len(data) < 6:
            bad += 1
            continue
        ok += 1
        if ok % 50 == 1:  # check a sample: right serial, right status
            parsed = x509_ocsp.load_der_ocsp_response(data)
            want = x509_ocsp.OCSPCertStatus.REVOKED if serial in revoked else x509_ocsp.OCSPCertStatus.GOOD
            if parsed.serial_number != serial or parsed.certificate_status is not want:
                wrong += 1
                if len(totals.errors) < 5:
                    totals.errors.append(f"wrong answer for serial {serial:x}: {parsed.certificate_status.name}")
            checked += 1
    if connection is not None:
        connection.close()
    with totals.lock:
        totals.ok += ok
        totals.bad += bad
        totals.connects += connects
        totals.checked += checked
        totals.wrong += wrong


def load(
    port: int, path: str, requests, revoked, seconds: float, threads: int, kind=LeanConnection, cap: int = 500_000
) -> tuple[float, Totals]:
    totals = Totals()
    started = time.monotonic()
    stop_at = started + seconds
    workers = [
        threading.Thread(target=client, args=(kind, port, path, requests, revoked, stop_at, cap // threads, totals, n), daemon=True)
        for n in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(seconds + 30)
    elapsed = time.monotonic() - started
    return totals.ok / elapsed, totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--certificates", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=3)
    parser.add_argument("--client", choices=sorted(CLIENTS), default="lean", help="HTTP client of the load threads (default: lean)")
    args = parser.parse_args()
    count = max(10, min(args.certificates, 5000))
    rounds, seconds, threads = max(1, min(args.rounds, 10)), max(1.0, min(args.seconds, 30.0)), max(1, min(args.threads, 8))
    kind = CLIENTS[args.client]

    # A SIGTERM to the benchmark must still run the finally blocks that stop the servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF" and not k.startswith(("HALLMARK_", "GRANIAN_"))}

    with tempfile.TemporaryDirectory(prefix="hallmark-ocsp-bench-") as tmp_name:
        tmp = Path(tmp_name)
        env.update({"HALLMARK_INSTANCE": str(tmp / "instance"), "HALLMARK_LOG_LEVEL": "WARNING"})
        requests, revoked, issue_rate = setup(tmp, env, count)
        print(f"setup: {count} certificates issued from CSRs at {issue_rate:.1f}/s, {len(revoked)} revoked", file=sys.stderr, flush=True)

        ports = {"ours": free_port(), "openssl": free_port()}
        servers = {
            "ours": OCSPServer(
                "ours",
                [venv_tool("hallmark"), "serve", "--bind", f"127.0.0.1:{ports['ours']}", "--workers", "2"],
                ports["ours"],
                env=env,
                cwd=tmp_name,
                log_dir=tmp,
            ),
            "openssl": OCSPServer(
                "openssl",
                [
                    "openssl",
                    "ocsp",
                    "-index",
                    "index.txt",
                    "-port",
                    str(ports["openssl"]),
                    "-rsigner",
                    "r.pem",
                    "-rkey",
                    "r.key",
                    "-CA",
                    "ca.pem",
                    "-multi",
                    "2",
                    "-ndays",
                    "1",
                    "-resp_key_id",
                ],
                ports["openssl"],
                env=env,
                cwd=tmp_name,
                log_dir=tmp,
            ),
        }
        paths = {"ours": "/pki/ocsp", "openssl": "/"}
        rates: dict[str, list[float]] = {name: [] for name in servers}
        totals: dict[str, list[Totals]] = {name: [] for name in servers}
        try:
            for server in servers.values():
                server.start(requests[0][1])
            for name in servers:  # warm up: imports, caches, first connections
                load(ports[name], paths[name], requests, revoked, 1.0, threads, kind)
            with OtherLoad() as other:
                for round_number in range(rounds):
                    order = list(servers) if round_number % 2 == 0 else list(reversed(servers))
                    for name in order:
                        rate, total = load(ports[name], paths[name], requests, revoked, seconds, threads, kind)
                        rates[name].append(rate)
                        totals[name].append(total)
                    print(
                        f"round {round_number + 1}/{rounds}: " + ", ".join(f"{n} {rates[n][-1]:.0f}/s" for n in servers),
                        file=sys.stderr,
                        flush=True,
                    )
        finally:
            for server in servers.values():
                server.stop()

    rows = []
    for name in servers:
        ok = sum(t.ok for t in totals[name])
        rows.append(
            [
                name,
                f"{median(rates[name]):.0f}",
                f"{min(rates[name]):.0f}-{max(rates[name]):.0f}",
                ok,
                sum(t.bad for t in totals[name]),
                sum(t.connects for t in totals[name]),
                sum(t.checked for t in totals[name]),
                sum(t.wrong for t in totals[name]),
            ]
        )
    print(
        f"\nOCSP POST without nonce, {count} certificates ({len(revoked)} revoked), {threads} client threads ({args.client}), "
        f"{rounds} alternating rounds of {seconds:.0f} s, {os.cpu_count()} cpus, other load {other.cpus:.2f} cpus"
    )
    print(table(["server", "req/s median", "range", "answers", "failed", "connections", "checked", "wrong"], rows))
    for name in servers:
        for error in {e for t in totals[name] for e in t.errors}:
            print(f"note: {name}: {error}")
    if any(t.wrong for by in totals.values() for t in by):
        sys.exit("some sampled answers had the wrong serial or status: no ratio")
    ratio = sum(rates["ours"]) / sum(rates["openssl"])
    print(f"issued-per-second={issue_rate:.1f} (person-auth from CSRs, in-process issuance API, SQLite, CA key P-384 in SoftHSM2)")
    print(f"ocsp-ratio={ratio:.2f}")


if __name__ == "__main__":
    main()
