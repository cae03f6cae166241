"""Complete password logins per second, against the argon2id hash-only rate at the same parameters.

A password login costs one argon2id check by design (``idp.people.passwords``); the
question here is how much everything else costs around it. The efficiency is
logins/s divided by argon2id checks/s done by the same number of concurrent
workers with nothing else to do, measured in the same run.

* logins: ``hallmark serve --workers 2`` (granian) on a fresh instance made by
  ``hallmark init`` in a temp dir, with one account (``hallmark idp account add``)
  and a first-party confidential hall (``hallmark idp client add --first-party``:
  no consent page; client_secret_basic). N client threads (default 2), each a
  fresh browser per login (no cookies) over one kept-alive connection, each
  login five requests, checked at every step:

  1. ``GET /oauth/authorize`` (code flow, PKCE S256, state, nonce) -> 302 to the login page;
  2. ``GET /login?next=...`` -> 200, the CSRF cookie and the form's token;
  3. ``POST /login`` (CSRF token, username, password, next) -> 303 back to authorize,
     with the SSO cookie (here the argon2id check runs);
  4. ``GET /oauth/authorize?...`` with the SSO cookie -> 302 to the hall with a code,
     the same state and ``iss``;
  5. ``POST /oauth/token`` (code, redirect_uri, code_verifier, client_secret_basic)
     -> 200 with an access token, ID token and refresh token. Every 25th ID token
     per thread is verified against the JWKS (signature, iss, aud, nonce).

* hash-only: N processes running ``idp.people.passwords.verify`` (argon2-cffi with the
  parameters of ``idp.people.passwords.ARGON2_PARAMETERS``) on a hash made by
  ``idp.people.passwords.hash_password``, the same function the login uses, in a loop.
  Processes, not threads: two argon2 checks in one process do not scale as well
  as in two (measured), and the server runs two processes.

Rounds of S seconds alternate (logins then hashes, hashes then logins, ...),
after a warm-up of each; the ratio is the median of per-round ratios.

Usage: python bench/login.py [--workers N] [--rounds R] [--seconds S] [--quick]
Last line: ``login-efficiency=<logins/s / argon2id checks/s>``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import json
import multiprocessing
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OtherLoad, Server, free_port, group_cpu_seconds, median, table, venv_tool

USERNAME = "benchresident"
CLIENT_ID = "bench-hall"
REDIRECT_URI = "http://127.0.0.1:9/callback"  # never contacted: the code is read from the Location
CHECK_EVERY = 25

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_NEXT = re.compile(r'name="next" value="([^"]*)"')


class LoginFailed(Exception):
    pass


class Browser:
    """A fresh browser per login: one kept-alive connection and a cookie jar that a new login empties.

    HTTP/1.1 over a socket with just the parsing a login needs (status, headers,
    Content-Length or chunked body, cookies): http.client parses every response's
    headers with the email package, and on these 2 CPUs the client's own work is
    taken from the server (measured: ~2.4 ms of client CPU per login with
    http.client). The client's CPU per login is printed with the results.
    """

    def __init__(self, port: int):
        self.port = port
        self.sock: socket.socket | None = None
        self.buffer = b""
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, body: str | None = None, headers: dict | None = None) -> tuple[int, dict, bytes]:
        """(status, headers with lower-case names, body)."""
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}", "User-Agent: hallmark-bench-login"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if self.cookies:
            lines.append("Cookie: " + "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        payload = (body or "").encode()
        if body is not None:
            lines += ["Content-Type: application/x-www-form-urlencoded", f"Content-Length: {len(payload)}"]
        try:
            if self.sock is None:
                self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.buffer = b""
            self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
            status, answer, data = self._response()
        except (OSError, ValueError):
            self.close()
            raise
        for value in answer.pop("set-cookie", ()):
            name, _, rest = value.partition("=")
            self.cookies[name.strip()] = rest.split(";", 1)[0]
        if answer.get("connection", "").lower() == "close":
            self.close()
        return status, answer, data

    def _response(self) -> tuple[int, dict, bytes]:
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            self._fill()
        head, self.buffer = self.buffer[:end].decode("latin-1").split("\r\n"), self.buffer[end + 4 :]
        status = int(head[0].split(" ", 2)[1])
        answer: dict = {"set-cookie": []}
        for line in head[1:]:
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip()
            if name == "set-cookie":
                answer[name].append(value)
            else:
                answer[name] = value
        if "content-length" in answer:
            data = self._take(int(answer["content-length"]))
        elif answer.get("transfer-encoding", "").lower() == "chunked":
            data = b""
            while True:
                while (end := self.buffer.find(b"\r\n")) < 0:
                    self._fill()
                size, self.buffer = int(self.buffer[:end].split(b";")[0], 16), self.buffer[end + 2 :]
                data += self._take(size + 2)[:size]
                if size == 0:
                    break
        else:
            raise ValueError("a response without Content-Length or chunked encoding")
        return status, answer, data

    def _take(self, length: int) -> bytes:
        while len(self.buffer) < length:
            self._fill()
        data, self.buffer = self.buffer[:length], self.buffer[length:]
        return data

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection mid-response")
        self.buffer += chunk

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


STEPS = ("authorize", "login page", "login POST", "authorize again", "token")


def login_once(browser: Browser, password: str, authorization: str, verify_id_token=None, step_seconds: list[float] | None = None) -> None:
    """One complete login, checked at every step; raises LoginFailed. ``step_seconds`` accumulates each request's time."""
    steps = iter(range(len(STEPS)))

    def request(*args, **kwargs):
        started = time.perf_counter()
        try:
            return browser.request(*args, **kwargs)
        finally:
            if step_seconds is not None:
                step_seconds[next(steps)] += time.perf_counter() - started

    browser.cookies.clear()
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    query = urlencode(
        {
            "client_id": CLIENT_ID,
            "redirect_uri": REDIRECT_URI,
            "response_type": "code",
            "scope": "openid profile",
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    status, headers, _ = request("GET", "/oauth/authorize?" + query)
    login_page = headers.get("location", "")
    if status != 302 or not login_page.startswith("/login?"):
        raise LoginFailed(f"authorize: {status} to {login_page[:60]!r}, expected the login page")

    status, _, page = request("GET", login_page)
    text = page.decode("utf-8", "replace")
    csrf, next_field = _CSRF.search(text), _NEXT.search(text)
    if status != 200 or csrf is None or next_field is None or "hallmark_csrf" not in browser.cookies:
        raise LoginFailed(f"login page: {status}, no form or no CSRF cookie")

    form = urlencode(
        {
            "csrf_token": html.unescape(csrf.group(1)),
            "next": html.unescape(next_field.group(1)),
            "identifier": USERNAME,
            "password": password,
        }
    )
    status, headers, _ = request("POST", "/login", form)
    back = headers.get("location", "")
    if status != 303 or not back.startswith("/oauth/authorize?") or "hallmark_sso" not in browser.cookies:
        raise LoginFailed(f"login POST: {status} to {back[:60]!r}")

    status, headers, _ = request("GET", back)
    location = headers.get("location", "")
    if status != 302 or not location.startswith(REDIRECT_URI + "?"):
        raise LoginFailed(f"authorize after login: {status} to {location[:60]!r}")
    answer = parse_qs(urlsplit(location).query)
    if answer.get("state") != [state] or "code" not in answer or "iss" not in answer:
        raise LoginFailed(f"authorization response without code, state or iss: {sorted(answer)}")

    form = urlencode(
        {"grant_type": "authorization_code", "code": answer["code"][0], "redirect_uri": REDIRECT_URI, "code_verifier": verifier}
    )
    status, _, data = request("POST", "/oauth/token", form, {"Authorization": authorization})
    if status != 200:
        raise LoginFailed(f"token: {status} {data[:200]!r}")
    tokens = json.loads(data)
    if not tokens.get("access_token") or not tokens.get("id_token") or tokens.get("token_type", "").lower() != "bearer":
        raise LoginFailed(f"token response lacks tokens: {sorted(tokens)}")
    if verify_id_token is not None:
        verify_id_token(tokens["id_token"], nonce)


class Totals:
    def __init__(self):
        self.logins = self.failures = self.checked = 0
        self.step_seconds = [0.0] * len(STEPS)  # of the logins that completed
        self.errors: list[str] = []
        self.lock = threading.Lock()


def run_logins(port: int, password: str, authorization: str, verify_id_token, threads: int, seconds: float) -> tuple[float, Totals]:
    totals = Totals()
    stop_at = time.monotonic() + seconds

    def worker():
        browser = Browser(port)
        done = failed = checked = 0
        steps = [0.0] * len(STEPS)
        try:
            while time.monotonic() < stop_at:
                check = verify_id_token if done % CHECK_EVERY == 0 else None
                these = [0.0] * len(STEPS)
                try:
                    login_once(browser, password, authorization, check, these)
                except (LoginFailed, OSError, ValueError) as exc:
                    failed += 1
                    with totals.lock:
                        if len(totals.errors) < 5:
                            totals.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                done += 1
                checked += check is not None
                steps = [a + b for a, b in zip(steps, these)]
        finally:
            browser.close()
        with totals.lock:
            totals.logins += done
            totals.failures += failed
            totals.checked += checked
            totals.step_seconds = [a + b for a, b in zip(totals.step_seconds, steps)]

    started = time.monotonic()
    workers = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(seconds + 60)
    return totals.logins / (time.monotonic() - started), totals


# -- hash-only --------------------------------------------------------------------------------

_hash_state: dict = {}


def _hash_worker_init(password: str) -> None:
    from idp.people import passwords

    _hash_state["verify"] = passwords.verify
    _hash_state["hash"] = passwords.hash_password(password)
    _hash_state["password"] = password


def _hash_for(seconds: float) -> tuple[int, float, float]:
    """(checks, seconds taken, CPU seconds used) of one process checking for ``seconds``."""
    verify, stored, password = _hash_state["verify"], _hash_state["hash"], _hash_state["password"]
    count, started, cpu = 0, time.monotonic(), time.process_time()
    stop_at = started + seconds
    while time.monotonic() < stop_at:
        if not verify(stored, password):
            raise RuntimeError("the password did not verify")
        count += 1
    return count, time.monotonic() - started, time.process_time() - cpu


def run_hashes(pool, workers: int, seconds: float) -> tuple[float, float]:
    """(checks/s of all processes together, CPU seconds they used)."""
    results = pool.map(_hash_for, [seconds] * workers, chunksize=1)
    return sum(count / elapsed for count, elapsed, _ in results), sum(cpu for _, _, cpu in results)


# -- main --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="concurrent logins and concurrent hashing processes (default 2)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 round of 2 s")
    args = parser.parse_args()
    workers = max(1, min(args.workers, 8))
    rounds = 1 if args.quick else max(1, min(args.rounds, 15))
    seconds = 2.0 if args.quick else max(1.0, min(args.seconds, 30.0))

    # A SIGTERM to the benchmark must still run the finally blocks that stop the servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    hallmark = venv_tool("hallmark")
    env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF" and not k.startswith(("HALLMARK_", "GRANIAN_"))}
    password = "Bench-" + secrets.token_urlsafe(12)

    with tempfile.TemporaryDirectory(prefix="hallmark-login-bench-") as tmp_name:
        tmp = Path(tmp_name)
        ours_env = {**env, "HALLMARK_INSTANCE": str(tmp / "instance"), "HALLMARK_LOG_LEVEL": "WARNING"}

        def cli(*argv: str, stdin: str | None = None) -> str:
            done = subprocess.run([hallmark, *argv], env=ours_env, input=stdin, capture_output=True, text=True, timeout=180)
            if done.returncode != 0:
                sys.exit(f"hallmark {' '.join(argv[:3])} failed:\n{done.stdout}{done.stderr}")
            return done.stdout

        cli("init")
        cli("idp", "account", "add", "--username", USERNAME, "--display-name", "Bench Resident", "--password-stdin", stdin=password + "\n")
        made = json.loads(
            cli(
                "idp",
                "client",
                "add",
                "--name",
                "Bench hall",
                "--client-id",
                CLIENT_ID,
                "--redirect-uri",
                REDIRECT_URI,
                "--first-party",
                "--json",
            )
        )
        authorization = "Basic " + base64.b64encode(f"{CLIENT_ID}:{made['client_secret']}".encode()).decode()

        port = free_port()
        server = Server(
            "ours", [hallmark, "serve", "--bind", f"127.0.0.1:{port}", "--workers", "2"], port, env=ours_env, cwd=tmp_name, log_dir=tmp
        )
        login_rates: list[float] = []
        hash_rates: list[float] = []
        login_totals: list[Totals] = []
        ctx = multiprocessing.get_context("spawn")  # a clean interpreter: no inherited threads or HSM state
        with ctx.Pool(workers, initializer=_hash_worker_init, initargs=(password,)) as pool:
            try:
                server.start("/healthz")
                from joserfc import jwt
                from joserfc.jwk import KeySet

                with urllib_open(f"http://127.0.0.1:{port}/.well-known/openid-configuration") as meta:
                    issuer = meta["issuer"]
                with urllib_open(f"http://127.0.0.1:{port}/jwks.json") as jwks:
                    keyset = KeySet.import_key_set(jwks)

                def verify_id_token(value: str, nonce: str) -> None:
                    claims = jwt.decode(value, keyset, algorithms=["ES256", "RS256"]).claims
                    if (
                        claims.get("iss") != issuer
                        or claims.get("aud") != CLIENT_ID
                        or claims.get("nonce") != nonce
                        or "auth_time" not in claims
                    ):
                        raise LoginFailed(f"ID token claims not as expected: {sorted(claims)}")

                login_once(Browser(port), password, authorization, verify_id_token)  # fails loudly before any timing
                run_logins(port, password, authorization, verify_id_token, workers, 2.0)  # warm-up
                run_hashes(pool, workers, 1.0)
                pool_cpu = client_cpu = 0.0
                started = time.monotonic()
                with OtherLoad() as other:
                    server_before = group_cpu_seconds(server.proc.pid)
                    server_cpu = 0.0  # during the login rounds only
                    for round_number in range(rounds):
                        order = ("logins", "hashes") if round_number % 2 == 0 else ("hashes", "logins")
                        for side in order:
                            if side == "logins":
                                before, own = group_cpu_seconds(server.proc.pid), time.process_time()
                                rate, totals = run_logins(port, password, authorization, verify_id_token, workers, seconds)
                                server_cpu += group_cpu_seconds(server.proc.pid) - before
                                client_cpu += time.process_time() - own
                                login_rates.append(rate)
                                login_totals.append(totals)
                            else:
                                rate, cpu = run_hashes(pool, workers, seconds)
                                hash_rates.append(rate)
                                pool_cpu += cpu
                        print(
                            f"round {round_number + 1}/{rounds}: logins {login_rates[-1]:.1f}/s, argon2id {hash_rates[-1]:.1f}/s",
                            file=sys.stderr,
                            flush=True,
                        )
                    server_all = group_cpu_seconds(server.proc.pid) - server_before
                # OtherLoad counts only reaped children; the server and the pool are still running.
                other_cpus = max(0.0, other.cpus - (server_all + pool_cpu) / (time.monotonic() - started))
            finally:
                server.stop()

    ratios = [login / hashed for login, hashed in zip(login_rates, hash_rates)]
    logins_done = sum(t.logins for t in login_totals)
    failures = sum(t.failures for t in login_totals)
    server_ms = server_cpu / logins_done * 1e3 if logins_done else 0.0
    client_ms = client_cpu / logins_done * 1e3 if logins_done else 0.0
    step_ms = [sum(t.step_seconds[i] for t in login_totals) / logins_done * 1e3 if logins_done else 0.0 for i in range(len(STEPS))]
    rows = [
        [
            "complete logins",
            f"{median(login_rates):.1f}",
            f"{min(login_rates):.1f}-{max(login_rates):.1f}",
            logins_done,
            failures,
            f"{server_ms:.1f}",
            f"{client_ms:.1f}",
            f"{median(ratios):.2f}",
        ],
        ["argon2id checks", f"{median(hash_rates):.1f}", f"{min(hash_rates):.1f}-{max(hash_rates):.1f}", "", "", "", "", ""],
    ]
    from idp.people import passwords

    print(
        f"\n{workers} concurrent workers, median of {rounds} alternating rounds of {seconds:.0f} s, {os.cpu_count()} cpus, "
        f"other processes used {other_cpus:.2f} of them"
    )
    print(f"argon2id parameters: {json.dumps(passwords.ARGON2_PARAMETERS)}; login = 5 requests against hallmark serve --workers 2")
    print(table(["side", "per second", "range", "done", "failed", "server CPU ms/login", "client CPU ms/login", "efficiency"], rows))
    print("mean time per request, ms: " + ", ".join(f"{name} {ms:.1f}" for name, ms in zip(STEPS, step_ms)))
    print("per-round ratios: " + " ".join(f"{r:.2f}" for r in ratios))
    print(f"ID tokens verified: {sum(t.checked for t in login_totals)}")
    for error in {e for t in login_totals for e in t.errors}:
        print(f"note: {error}")
    if failures:
        sys.exit(f"{failures} logins failed: no ratio")
    print(f"login-efficiency={median(ratios):.2f}")


class urllib_open:
    """GET a JSON document (context manager returning the parsed body)."""

    def __init__(self, url: str):
        self.url = url

    def __enter__(self):
        import urllib.request

        with urllib.request.urlopen(self.url, timeout=10) as response:
            return json.loads(response.read())

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    main()
