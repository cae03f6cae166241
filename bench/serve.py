"""Which WSGI server to run Hallmark under: granian versus gunicorn, by measurement.

Two comparisons, each with 2 worker processes per server and ``wrk -t2 -c20 -d5s``:

* a minimal Flask app (``app`` below: ~1.5 KB of JSON, no database), served by
  ``granian --interface wsgi --workers 2 --blocking-threads 8`` and by gunicorn
  with 2 sync workers;
* the real app's ``/healthz`` (database and HSM check), under ``hallmark serve``
  (granian) and ``gunicorn -w 2 'hallmark.app:create_app()'``, on a fresh instance
  made by ``hallmark init`` in a temp dir.

Both servers of a comparison run side by side on free 127.0.0.1 ports and wrk
alternates between them (rounds in A B / B A order); ratios are per round, then
the median. Every server is started in its own process group and killed, whatever
happens. The last line is ``serve-ratio=<granian/gunicorn on /healthz>``.

Usage: python bench/serve.py [--quick] [--rounds N]
"""

from __future__ import annotations

from flask import Flask

app = Flask(__name__)

# About 1.5 KB once serialised: the size of a typical JSON API answer of ours.
_ITEMS = [
    {
        "id": f"svc-{n:04d}",
        "name": f"Service hall counter {n}",
        "status": "open" if n % 3 else "closed",
        "queue": n * 7 % 23,
        "languages": ["en", "fr"],
        "updated": f"2026-11-{n + 1:02d}T09:00:00Z",
    }
    for n in range(11)
]


@app.get("/items")
def items():
    return {"count": len(_ITEMS), "items": _ITEMS}


# -- the benchmark (not run when a server imports this module for ``app``) -------------------


def main() -> None:
    import argparse
    import os
    import signal
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from _common import OtherLoad, Server, free_port, median, table, venv_tool, wrk

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 round of 2 s per server")
    parser.add_argument("--rounds", type=int, help="wrk runs per server and app (default 3)")
    args = parser.parse_args()
    rounds = max(1, min(args.rounds or (1 if args.quick else 3), 10))
    seconds = 2 if args.quick else 5

    # A SIGTERM to the benchmark must still run the finally blocks that stop the servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    bench_dir = Path(__file__).resolve().parent
    granian, gunicorn, hallmark = venv_tool("granian"), venv_tool("gunicorn"), venv_tool("hallmark")
    env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF" and not k.startswith(("HALLMARK_", "GRANIAN_"))}
    results: dict[str, dict[str, list[float]]] = {}
    notes: list[str] = []

    def compare(label: str, path: str, servers: dict[str, Server]) -> None:
        try:
            for server in servers.values():
                server.start(path)
            for server in servers.values():  # warm up: imports, first connections, caches
                wrk(f"http://127.0.0.1:{server.port}{path}", seconds=1)
            for round_number in range(rounds):
                order = list(servers) if round_number % 2 == 0 else list(reversed(servers))
                for name in order:
                    rate, note = wrk(f"http://127.0.0.1:{servers[name].port}{path}", seconds=seconds)
                    results.setdefault(label, {}).setdefault(name, []).append(rate)
                    if note:
                        notes.append(f"{label} {name} round {round_number + 1}: {note}")
                print(f"{label}: round {round_number + 1}/{rounds} done", file=sys.stderr, flush=True)
        finally:
            for server in servers.values():
                server.stop()

    with OtherLoad() as other, tempfile.TemporaryDirectory(prefix="hallmark-serve-bench-") as tmp:
        logs = Path(tmp)
        ports = [free_port(), free_port()]
        compare(
            "minimal /items",
            "/items",
            {
                "granian": Server(
                    "granian-minimal",
                    [
                        granian,
                        "--interface",
                        "wsgi",
                        "--workers",
                        "2",
                        "--blocking-threads",
                        "8",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(ports[0]),
                        "--log-level",
                        "warning",
                        "--working-dir",
                        str(bench_dir),
                        "serve:app",
                    ],
                    ports[0],
                    env=env,
                    log_dir=logs,
                ),
                "gunicorn": Server(
                    "gunicorn-minimal",
                    [
                        gunicorn,
                        "-w",
                        "2",
                        "-k",
                        "sync",
                        "-b",
                        f"127.0.0.1:{ports[1]}",
                        "--log-level",
                        "warning",
                        "--chdir",
                        str(bench_dir),
                        "serve:app",
                    ],
                    ports[1],
                    env=env,
                    log_dir=logs,
                ),
            },
        )

        instance_env = {**env, "HALLMARK_INSTANCE": str(Path(tmp) / "instance"), "HALLMARK_LOG_LEVEL": "WARNING"}
        init = subprocess.run([hallmark, "init"], env=instance_env, capture_output=True, text=True, timeout=120)
        if init.returncode != 0:
            sys.exit(f"hallmark init failed:\n{init.stdout}{init.stderr}")
        ports = [free_port(), free_port()]
        compare(
            "hallmark /healthz",
            "/healthz",
            {
                "granian": Server(
                    "granian-hallmark",
                    [hallmark, "serve", "--bind", f"127.0.0.1:{ports[0]}", "--workers", "2"],
                    ports[0],
                    env=instance_env,
                    cwd=tmp,
                    log_dir=logs,
                ),
                "gunicorn": Server(
                    "gunicorn-hallmark",
                    [gunicorn, "-w", "2", "-b", f"127.0.0.1:{ports[1]}", "--log-level", "warning", "hallmark.app:create_app()"],
                    ports[1],
                    env=instance_env,
                    cwd=tmp,
                    log_dir=logs,
                ),
            },
        )

    ratios = {label: median(g / u for g, u in zip(by["granian"], by["gunicorn"])) for label, by in results.items()}
    rows = []
    for label, by in results.items():
        for name, rates in by.items():
            rows.append(
                [
                    label,
                    name,
                    f"{median(rates):.0f}",
                    f"{min(rates):.0f}-{max(rates):.0f}",
                    f"{ratios[label]:.2f}" if name == "granian" else "",
                ]
            )
    print(
        f"\nrequests/s: median of {rounds} alternating wrk runs (-t2 -c20 -d{seconds}s), 2 workers per server, "
        f"{os.cpu_count()} cpus, other processes used {other.cpus:.2f} of them"
    )
    print(table(["endpoint", "server", "req/s", "range", "granian/gunicorn"], rows))
    for note in notes:
        print(f"note: {note}")
    print(f"serve-ratio={ratios['hallmark /healthz']:.2f}")


if __name__ == "__main__":
    main()
