"""Several ``hallmark serve`` nodes on one PostgreSQL database and one SoftHSM2 token, behind Debian's nginx.

What production looks like (docs/operations.md), on 127.0.0.1: node A is initialised by
``hallmark init`` (its instance holds the SoftHSM2 token and the PINs); node B has an
instance folder of its own whose ``hallmark.toml`` names the same database, the same
token (``softhsm2_conf``, ``pin_source``) and the same keys. nginx listens on
127.0.0.1 and proxies to both nodes round-robin, connecting *from* 127.0.0.2
(``proxy_bind``) so that the nodes can tell the proxy (``trusted_proxies =
127.0.0.2``) from a client on 127.0.0.1. Every process here is started by the harness,
in a new session, and stopped by it; nothing listens beyond 127.0.0.1/127.0.0.2.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.conftest import ROOT, PostgresServer, free_port, hallmark_env, run_hallmark_process, stop_server, wait_for_http

PROXY_ADDRESS = "127.0.0.2"  # nginx's side of its connections to the nodes


class RestartablePostgres(PostgresServer):
    """A private PostgreSQL cluster that a fault test may stop and start again on the same port."""

    def halt(self) -> None:
        """Stop at once, as a crash would (``-m immediate``: no checkpoint, every connection cut)."""
        self._run(self.bin / "pg_ctl", "-D", self.dir / "data", "-m", "immediate", "-w", "stop")

    def resume(self) -> None:
        self._run(
            self.bin / "pg_ctl",
            "-D",
            self.dir / "data",
            "-l",
            self.dir / "log",
            "-w",
            "-t",
            "60",
            "start",
            "-o",
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off",
        )


@dataclass
class Node:
    name: str
    instance: Path
    port: int
    log: Path
    process: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Nginx:
    folder: Path
    port: int
    upstreams: list[int]
    process: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        servers = "\n".join(f"        server 127.0.0.1:{port} max_fails=0;" for port in self.upstreams)
        folder = self.folder
        user = "user root root;\n" if os.geteuid() == 0 else ""  # workers keep the harness's account
        return f"""{user}worker_processes 1;
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {folder}/access.log;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    client_max_body_size 20m;
    upstream hallmark {{
{servers}
        keepalive 8;
        keepalive_timeout 20s;  # below granian's 30 s idle close, so nginx never reuses a connection being closed
    }}
    server {{
        listen 127.0.0.1:{self.port};
        location / {{
            proxy_pass http://hallmark;
            proxy_bind {PROXY_ADDRESS};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_next_upstream off;
            proxy_read_timeout 60s;
            add_header X-Hallmark-Upstream $upstream_addr always;
        }}
    }}
}}
"""

    def start(self) -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.path.exists(binary):
            raise RuntimeError("the multi-node tests need Debian's nginx (apt-get install nginx; make test installs it)")
        self.folder.mkdir(parents=True, exist_ok=True)
        conf = self.folder / "nginx.conf"
        conf.write_text(self.config())
        with open(self.folder / "stderr.log", "wb") as stderr:  # nginx keeps its own handle
            self.process = subprocess.Popen(
                [binary, "-p", str(self.folder), "-c", str(conf), "-e", str(self.folder / "error.log")],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        wait_for_http(self.base + "/healthz", process=self.process)

    def stop(self) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGQUIT)  # graceful: finish the requests in flight
            self.process.wait(10)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)
        self.process = None


@dataclass
class Cluster:
    """Nodes A, B, ... on one database and token, and nginx in front (``proxy``)."""

    folder: Path
    database_url: str
    nodes: list[Node] = field(default_factory=list)
    proxy: Nginx | None = None
    env: dict = field(default_factory=dict)  # HALLMARK_* every node (and every CLI call) gets

    @classmethod
    def create(cls, folder: Path, database_url: str, *, nodes: int = 2, **env) -> Cluster:
        folder.mkdir(parents=True, exist_ok=True)
        cluster = cls(folder, database_url)
        proxy_port = free_port()
        cluster.env = {
            "HALLMARK_PUBLIC_URL": f"http://127.0.0.1:{proxy_port}",
            "HALLMARK_TRUSTED_PROXIES": PROXY_ADDRESS,
            "HALLMARK_OUTBOX_SECONDS": "1",
            **env,
        }
        first = folder / "node-a"
        initialised = cluster.cli(first, "init", HALLMARK_DATABASE_URL=database_url)
        assert initialised.returncode == 0, initialised.stdout + initialised.stderr
        with (first / "hallmark.toml").open("a") as settings_file:
            settings_file.write(f'database_url = "{database_url}"\n')
        settings = (first / "hallmark.toml").read_text()
        for index in range(1, nodes):
            other = folder / f"node-{chr(ord('a') + index)}"
            other.mkdir(mode=0o700)
            # The same database, keys and token (not a copy of it): the token folder and PINs of node A.
            (other / "hallmark.toml").write_text(
                settings + f'softhsm2_conf = "{first / "softhsm" / "softhsm2.conf"}"\npin_source = "file:{first / "hsm-pins.json"}"\n'
            )
        for index in range(nodes):
            instance = folder / f"node-{chr(ord('a') + index)}"
            cluster.nodes.append(Node(chr(ord("A") + index), instance, free_port(), folder / f"node-{chr(ord('a') + index)}.log"))
        cluster.proxy = Nginx(folder / "nginx", proxy_port, [node.port for node in cluster.nodes])
        return cluster

    @property
    def base(self) -> str:
        """The public address: nginx."""
        return self.proxy.base

    def cli(self, instance: Path, *args, timeout: float = 180, **env) -> subprocess.CompletedProcess:
        """``hallmark *args`` as its own process on ``instance`` (node A's unless said)."""
        return run_hallmark_process(instance, *args, timeout=timeout, **{**self.env, **env})

    def hallmark(self, *args, node: int = 0, **env) -> str:
        result = self.cli(self.nodes[node].instance, *args, **env)
        assert result.returncode == 0, f"hallmark {' '.join(map(str, args))}: {result.stdout}{result.stderr}"
        return result.stdout

    def add_client(self, *args) -> dict:
        return json.loads(self.hallmark("idp", "client", "add", "--json", *args))

    def services_in_process(self):
        """The services of node A's instance in this process, for setting up and checking (close them after). This
        process runs no outbox or CA upkeep of its own: what the test looks at is done by the nodes."""
        from hallmark import components, wiring
        from tests.conftest import pkcs11_module_for

        instance = self.nodes[0].instance
        environ = {
            **os.environ,
            **self.env,
            "HALLMARK_PKCS11_MODULE": pkcs11_module_for(instance / "softhsm" / "softhsm2.conf"),
            "HALLMARK_OUTBOX_SECONDS": "0",
            "HALLMARK_CA_UPKEEP_SECONDS": "0",
        }
        return wiring.build(components.load_settings(instance, environ=environ))

    def start(self, *, workers: int = 1) -> None:
        for node in self.nodes:
            self.start_node(node, workers=workers)
        self.proxy.start()

    def start_node(self, node: Node, *, workers: int = 1) -> None:
        """``hallmark serve`` for ``node``, its output and granian's (worker deaths and respawns) in ``node.log``."""
        with open(node.log, "ab") as log:
            node.process = subprocess.Popen(
                [sys.executable, "-m", "hallmark.cli", "serve", "--bind", f"127.0.0.1:{node.port}", "--workers", str(workers)],
                env=hallmark_env(node.instance, **self.env),
                cwd=ROOT,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        try:
            wait_for_http(node.base + "/healthz", process=node.process)
        except Exception:
            stop_server(node.process)
            raise

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
        for node in self.nodes:
            if node.process is not None:
                stop_server(node.process)
                node.process = None

    def logs(self) -> str:
        """The tail of every log, for an assertion message."""
        parts = []
        for path in [node.log for node in self.nodes] + [self.folder / "nginx" / "error.log"]:
            if path.exists():
                parts.append(f"== {path.name}\n" + path.read_text(errors="replace")[-3000:])
        return "\n".join(parts)


def allow_driving_licences(services, client_id: str, *, actor: str) -> None:
    """Let ``client_id`` issue the demo driving licence through /api/licences/issue: its issue grant and the use of
    the issuing department's seal."""
    from core import db as core_db
    from licenses import demo, grants
    from signing import seals

    with core_db.transaction(services["licenses"].sessions) as db:
        grants.add(db, client_id=client_id, type_code=demo.DRIVING_LICENCE, mode="issue", matters=[], actor=actor)
    seals.grant(services["ca"], client_id, demo.issuer_for(demo.DRIVING_LICENCE).name, actor=actor)


def driving_licence_order(holder_code: str, holder_name: str, request_prefix: str) -> dict:
    """A body for /api/licences/issue: the demo driving licence of ``holder_code``, under a request id of its own."""
    import uuid

    from licenses import demo

    return {
        "type": demo.DRIVING_LICENCE,
        "issuer": demo.issuer_for(demo.DRIVING_LICENCE).code,
        "holder": holder_code,
        "face": demo.sample_face(demo.DRIVING_LICENCE, holder_code=holder_code, holder_name=holder_name),
        "request_id": request_prefix + uuid.uuid4().hex,
    }


def upstream_of(response: requests.Response) -> str:
    """Which node nginx sent a request to (``host:port``)."""
    return response.headers.get("X-Hallmark-Upstream", "")


def wait_until(check, *, timeout: float, every: float = 0.25, message="condition"):
    """Poll ``check()`` until it returns something true; AssertionError after ``timeout`` seconds.

    ``message`` may be a callable, asked only then (to report the state at that moment)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{message() if callable(message) else message}: not within {timeout} s")
        time.sleep(every)
