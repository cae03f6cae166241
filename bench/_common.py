"""Helpers shared by the benchmarks: timing, tables, and servers that are always stopped.

Every benchmark reports ratios against a baseline measured in the same run, with
the two sides interleaved, because the machines we run on are small and noisy.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

median = statistics.median


def venv_tool(name: str) -> str:
    """An executable next to this Python (the venv's), else from PATH."""
    beside = Path(sys.executable).parent / name  # not resolved: a venv's python is a symlink
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        sys.exit(f"{name} is not installed (looked in {beside.parent} and PATH)")
    return found


def table(headers: list[str], rows: list[list[object]]) -> str:
    cells = [headers] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    line = lambda row: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in cells[1:]])


class OtherLoad:
    """CPUs kept busy by other processes while the benchmark ran (Linux /proc/stat).

    Printed with the results: a run during which something else ate a core is noisy,
    however well the sides were interleaved.
    """

    def __enter__(self):
        self._start = (time.monotonic(), _busy_cpu_seconds(), _own_cpu_seconds())
        return self

    def __exit__(self, *exc):
        wall0, busy0, own0 = self._start
        wall = time.monotonic() - wall0
        self.cpus = max(0.0, ((_busy_cpu_seconds() - busy0) - (_own_cpu_seconds() - own0)) / wall) if wall else 0.0


def _busy_cpu_seconds() -> float:
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + fields[4]  # idle + iowait
    guest = sum(fields[8:10])  # already counted in user and nice
    return (sum(fields) - idle - guest) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    # This process and the children it waited for (wrk, servers once stopped).
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


# -- servers --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _with_parent_death_signal(argv: list[str]) -> list[str]:
    """``argv`` run so that Linux sends it SIGTERM when the benchmark dies, even by SIGKILL.

    setpriv (util-linux) rather than a preexec_fn, which is unsafe in a process with threads.
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--", *argv] if setpriv else argv


class Server:
    """A server command in its own process group, so stopping it takes its workers too."""

    def __init__(self, name: str, argv: list[str], port: int, *, env: dict | None = None, cwd: str | None = None, log_dir: Path):
        self.name, self.argv, self.port, self.env, self.cwd = name, argv, port, env, cwd
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, ready_path: str, timeout: float = 30.0) -> None:
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                _with_parent_death_signal(self.argv),
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()  # the child has its own copy
        url = f"http://127.0.0.1:{self.port}{ready_path}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log_path}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not answer 200 on {url} within {timeout:.0f}s; see {self.log_path}:\n{self.log_tail()}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        # The group id is the server's pid (start_new_session); TERM lets it stop workers cleanly.
        for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        # Workers that outlived their master would keep the port and the CPU.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_ERRORS = re.compile(r"Socket errors:.*")


def wrk(url: str, *, threads: int = 2, connections: int = 20, seconds: int = 5, script: str | None = None) -> tuple[float, str]:
    """(requests/s, note on errors) from one bounded wrk run against ``url`` (``script``: a wrk Lua file, e.g. for a POST)."""
    assert url.startswith("http://127.0.0.1:"), "benchmarks only load the local machine"
    argv = [
        venv_tool("wrk"),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        *(["-s", script] if script else []),
        url,
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30).stdout
    found = _RPS.search(out)
    if found is None:
        raise RuntimeError(f"no Requests/sec in wrk output:\n{out}")
    notes = []
    if (bad := _NON_2XX.search(out)) is not None:
        notes.append(f"{bad.group(1)} non-2xx")
    if (errors := _ERRORS.search(out)) is not None:
        notes.append(errors.group(0))
    return float(found.group(1)), "; ".join(notes)


def group_cpu_seconds(leader: int) -> float:
    """User + system CPU of the live processes in process group ``leader`` (a server and its workers)."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == leader:  # pgrp; fields[0] is the state (field 3 of the file)
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


# -- databases ------------------------------------------------------------------------------


class PostgresCluster:
    """A throwaway PostgreSQL cluster in /dev/shm on a private 127.0.0.1 port (what tests/conftest.py's fixture does)."""

    def __init__(self):
        import tempfile
        from pathlib import Path

        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not bins:
            sys.exit("--postgres: PostgreSQL is not installed (apt-get install postgresql)")
        self.bin = bins[-1].parent
        memory = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        self.dir = Path(tempfile.mkdtemp(prefix="hallmark-bench-pg-", dir=memory))
        self.port, self.user = free_port(), "hallmark"

    def _run(self, *args) -> None:
        import subprocess

        command = [str(a) for a in args]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)

    def __enter__(self):
        import shutil

        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        data = self.dir / "data"
        self._run(self.bin / "initdb", "-D", data, "-U", self.user, "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8")
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(self.bin / "pg_ctl", "-D", data, "-l", self.dir / "log", "-w", "-t", "60", "start", "-o", options)
        return self

    def database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{name}"

    def __exit__(self, *exc):
        import shutil

        try:
            self._run(self.bin / "pg_ctl", "-D", self.dir / "data", "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


# -- a fresh Hallmark instance ----------------------------------------------------------------


def clean_env() -> dict[str, str]:
    """This environment without Hallmark's, granian's and SoftHSM2's settings: a bench's instance gets only its own."""
    return {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF" and not k.startswith(("HALLMARK_", "GRANIAN_"))}


class Instance:
    """A fresh instance in ``directory`` for ``hallmark serve`` on a free 127.0.0.1 port: ``hallmark`` commands, the server.

    The public URL is the server's own address, so the certificates, discovery and token
    audiences point at it. ``database_url``: e.g. a :class:`PostgresCluster` database (default:
    SQLite in the instance). ``hallmark init`` is the caller's first :meth:`cli` call.
    """

    def __init__(self, directory: Path, *, database_url: str | None = None, log_level: str = "WARNING"):
        self.dir = directory
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            **clean_env(),
            "HALLMARK_INSTANCE": str(directory / "instance"),
            "HALLMARK_PUBLIC_URL": self.base,
            "HALLMARK_LOG_LEVEL": log_level,
        }
        if database_url:
            self.env["HALLMARK_DATABASE_URL"] = database_url

    def cli(self, *argv: str, stdin: str | None = None, timeout: float = 180) -> str:
        """``hallmark ARGV...``'s standard output; exits the benchmark with its output when it fails."""
        done = subprocess.run(
            [venv_tool("hallmark"), *argv], env=self.env, input=stdin, capture_output=True, text=True, timeout=timeout, cwd=self.dir
        )
        if done.returncode != 0:
            sys.exit(f"hallmark {' '.join(argv[:3])} failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    def add_client(self, client_id: str, *args: str) -> dict:
        """``hallmark idp client add --client-id CLIENT_ID ARGS... --json``: the client, with its ``client_secret``."""
        import json

        return json.loads(self.cli("idp", "client", "add", "--name", client_id, "--client-id", client_id, *args, "--json"))

    def server(self, *, workers: int = 2, env: dict | None = None, name: str = "hallmark") -> Server:
        """``hallmark serve`` on this instance's port (not started; ``env`` adds settings), its output in ``<directory>/<name>.log``."""
        return Server(
            name,
            [venv_tool("hallmark"), "serve", "--bind", f"127.0.0.1:{self.port}", "--workers", str(workers)],
            self.port,
            env={**self.env, **(env or {})},
            cwd=str(self.dir),
            log_dir=self.dir,
        )


def basic_auth(client_id: str, secret: str) -> str:
    """The Authorization header value of client_secret_basic (RFC 6749 2.3.1: both form-encoded first)."""
    import base64
    from urllib.parse import quote

    return "Basic " + base64.b64encode(f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()).decode()


def client_credentials_token(base: str, client_id: str, secret: str, scope: str) -> str:
    """An access token from ``base``'s token endpoint (found by discovery) for a client_credentials client."""
    import json
    from urllib.parse import urlencode

    with urllib.request.urlopen(base + "/.well-known/openid-configuration", timeout=10) as response:
        meta = json.loads(response.read())
    request = urllib.request.Request(
        base + meta["token_endpoint"].removeprefix(meta["issuer"]),
        data=urlencode({"grant_type": "client_credentials", "scope": scope}).encode(),
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded", "Authorization": basic_auth(client_id, secret)},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["access_token"]


def process_rss(leader: int) -> dict[int, int]:
    """Resident bytes of ``leader`` and of its children running the same program: a server and its workers.

    Not the helpers a worker starts (pdftoppm, ...): while forked and not yet exec'd, such a
    child is a copy of its worker and would count the worker's memory twice.
    """
    try:
        program = os.readlink(f"/proc/{leader}/exe")
    except OSError:
        return {}
    page = os.sysconf("SC_PAGE_SIZE")
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                state = stat.read().rsplit(")", 1)[1].split()  # state, ppid, pgrp, ...
            if int(entry.name) != leader and int(state[1]) != leader:
                continue
            if os.readlink(f"/proc/{entry.name}/exe") != program:
                continue
            with open(f"/proc/{entry.name}/statm") as statm:
                found[int(entry.name)] = int(statm.read().split()[1]) * page
        except (OSError, ValueError, IndexError):
            continue
    return found
