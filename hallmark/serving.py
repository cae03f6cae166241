"""Serving the WSGI app under granian.

granian was chosen by benchmark over gunicorn (see docs/benchmarks.md,
``bench/serve.py``): gunicorn's sync workers close every connection, granian keeps
them alive and handles the socket work in Rust.

Stopping: on SIGTERM (or Ctrl-C) granian stops accepting and each worker finishes
the requests it holds. A request can be held for ever, though: a client that stalls
half-way through an upload keeps its worker waiting for the rest of the body, and
granian's main process waits for its workers without limit unless told otherwise.
So workers still running :data:`GRACE_SECONDS` after the signal are killed, which
bounds a shutdown well inside the 10 s that ``docker stop`` and most service
managers allow. Nothing a worker is doing needs more: database transactions roll
back, and the outbox delivers at least once (a claim of a killed worker runs out
and another worker sends the message).
"""

from __future__ import annotations

from core.settings import ConfigError


def parse_bind(bind: str) -> tuple[str, int]:
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--bind must be HOST:PORT, not {bind!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


GRACE_SECONDS = 5  # after SIGTERM, how long workers may go on finishing requests before they are killed
# granian's "backpressure" bounds the connections a worker holds open, idle keep-alive ones included, not the
# requests being worked on (blocking_threads bounds those). At 32 a worker, 64 idle keep-alive connections (64
# browsers, or one client that keeps its sockets) stopped a two-worker server from taking any new connection until
# hyper's 30 s header-read timeout closed some: every request in that time waited 30 s.
CONNECTIONS_PER_WORKER = 1024


def serve(bind: str, workers: int, threads: int | None = None, log_level: str = "info", grace_seconds: int = GRACE_SECONDS) -> None:
    from granian import Granian
    from granian.constants import Interfaces
    from granian.log import LogLevels

    host, port = parse_bind(bind)
    if workers < 1:
        raise ConfigError("--workers must be at least 1")
    if not 1 <= grace_seconds <= 1800:
        raise ConfigError("--grace must be between 1 and 1800 seconds")
    Granian(
        "hallmark.app:create_app",
        factory=True,
        address=host,
        port=port,
        interface=Interfaces.WSGI,
        workers=workers,
        # A few threads per worker: enough to overlap HSM and database waits, few
        # enough that the GIL is not fought over (granian would otherwise allow 128).
        blocking_threads=threads or 8,
        backpressure=CONNECTIONS_PER_WORKER,
        backlog=max(1024, CONNECTIONS_PER_WORKER * workers),
        log_level=LogLevels(log_level.lower()),
        respawn_failed_workers=True,
        workers_kill_timeout=grace_seconds,
    ).serve()
