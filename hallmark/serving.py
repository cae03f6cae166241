"""Serving the WSGI app under granian.

granian was chosen by benchmark over gunicorn (see docs/benchmarks.md,
``bench/serve.py``): gunicorn's sync workers close every connection, granian keeps
them alive and handles the socket work in Rust.
"""

from __future__ import annotations

from core.settings import ConfigError


def parse_bind(bind: str) -> tuple[str, int]:
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--bind must be HOST:PORT, not {bind!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def serve(bind: str, workers: int, threads: int | None = None, log_level: str = "info") -> None:
    from granian import Granian
    from granian.constants import Interfaces
    from granian.log import LogLevels

    host, port = parse_bind(bind)
    if workers < 1:
        raise ConfigError("--workers must be at least 1")
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
        backpressure=(threads or 8) * 4,
        log_level=LogLevels(log_level.lower()),
        respawn_failed_workers=True,
    ).serve()
