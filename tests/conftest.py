"""Shared test harness: a real SoftHSM2 token, SQLite, and PostgreSQL when asked for.

SoftHSM2 reads ``SOFTHSM2_CONF`` once, when the module is initialised, so the
whole test process shares one token directory set up here before anything loads
the module. Tests that need a token of their own run in a subprocess.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="hallmark-tests-"))
TOKEN_LABEL = "hallmark-test"
USER_PIN = "20261121"
SO_PIN = "11212026"

from hsm import softhsm  # noqa: E402

_CONF = softhsm.write_config(_SESSION_DIR / "softhsm")
os.environ["SOFTHSM2_CONF"] = str(_CONF)
softhsm.init_token(_CONF, TOKEN_LABEL, USER_PIN, SO_PIN)
# A second token that plays a person's USB key in in-process tests. It must exist before
# any test loads the PKCS#11 module: SoftHSM2 lists its tokens once, at C_Initialize.
USB_TOKEN_LABEL = "usbkey-certlogin"
USB_TOKEN_PIN, USB_TOKEN_SO_PIN = "135792", "246813"
softhsm.init_token(_CONF, USB_TOKEN_LABEL, USB_TOKEN_PIN, USB_TOKEN_SO_PIN)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def softhsm_conf() -> Path:
    return _CONF


@pytest.fixture(scope="session")
def key_manager():
    from hsm import PKCS11KeyManager

    manager = PKCS11KeyManager(softhsm.default_module(), TOKEN_LABEL, USER_PIN)
    yield manager
    manager.close()


# -- databases ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """A throwaway PostgreSQL cluster in a temporary folder on a private port."""

    def __init__(self):
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not bins:
            raise RuntimeError("HALLMARK_TEST_POSTGRES=1 but PostgreSQL is not installed (apt-get install postgresql)")
        self.bin = bins[-1].parent
        self.dir = Path(tempfile.mkdtemp(prefix="hallmark-pg-"))
        self.port = free_port()
        self.user = "hallmark"

    def _run(self, *args, **kwargs):
        command = [str(a) for a in args]
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root; use Debian's postgres account.
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=True, capture_output=True, text=True, **kwargs)

    def start(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        data = self.dir / "data"
        self._run(self.bin / "initdb", "-D", data, "-U", self.user, "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8")
        self._run(
            self.bin / "pg_ctl",
            "-D",
            data,
            "-l",
            self.dir / "log",
            "-w",
            "-t",
            "60",
            "start",
            "-o",
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
        )

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run(self.bin / "pg_ctl", "-D", self.dir / "data", "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres():
    if os.environ.get("HALLMARK_TEST_POSTGRES") != "1":
        pytest.skip("PostgreSQL tests run with HALLMARK_TEST_POSTGRES=1 (CI sets it)")
    server = PostgresServer()
    server.start()
    yield server
    server.stop()


_db_counter = iter(range(1, 10**6))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """An empty database of each kind, one per test."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    server = request.getfixturevalue("postgres")
    return server.create_database(f"t{next(_db_counter)}_{os.getpid()}")


@pytest.fixture
def migrated(database_url):
    """(engine, session factory) on a database at the latest revision."""
    from core import db

    engine = db.make_engine(database_url)
    db.upgrade(engine)
    yield engine, db.make_session_factory(engine)
    engine.dispose()


# -- processes ------------------------------------------------------------------------------


def hallmark_env(instance: Path, **overrides) -> dict:
    """Environment for a ``hallmark`` subprocess using its own instance (and its own token)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HALLMARK_") and k != "SOFTHSM2_CONF"}
    env["HALLMARK_INSTANCE"] = str(instance)
    env.update(overrides)
    return env


def run_hallmark(instance: Path, *args, timeout=120, **overrides) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hallmark.cli", *args],
        env=hallmark_env(instance, **overrides),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


@pytest.fixture(scope="session")
def initialised_instance(tmp_path_factory) -> Path:
    """An instance made by ``hallmark init``, shared by the tests that only read it."""
    instance = tmp_path_factory.mktemp("instance")
    result = run_hallmark(instance, "init")
    assert result.returncode == 0, result.stderr
    return instance


def app_settings(tmp_path: Path, database_url: str, **overrides):
    """Settings for an in-process app on the session's test token and the given database."""
    import json

    from core import settings

    pins = tmp_path / "pins.json"
    pins.write_text(json.dumps({"user_pin": USER_PIN}))
    env = {
        "HALLMARK_DATABASE_URL": database_url,
        "HALLMARK_TOKEN_LABEL": TOKEN_LABEL,
        "HALLMARK_PIN_SOURCE": f"file:{pins}",
        "HALLMARK_PUBLIC_URL": "https://id.test",
        "HALLMARK_LOOKUP_KEY": "test-lookup-key-0123456789",
        "HALLMARK_SECRET_KEY": "test-secret-key-0123456789",
        "HALLMARK_CA_UPKEEP_SECONDS": "0",
        "HALLMARK_LOGOUT_RETRY_SECONDS": "0",
        **overrides,
    }
    return settings.load(tmp_path, environ=env)


@pytest.fixture
def ca_context(migrated, key_manager):
    """A CA hierarchy (root, issuing CAs, OCSP responders, TSA) in a fresh database, keys in the test token."""
    from ca import hierarchy
    from ca.context import CAContext

    _, sessions = migrated
    ctx = CAContext(sessions=sessions, keys=key_manager, public_url="http://127.0.0.1:8000", lookup_key=b"test-lookup-key-0123456789")
    hierarchy.init_hierarchy(ctx, actor="test")
    return ctx


def start_server(instance: Path, workers: int = 2, **overrides):
    """``hallmark serve`` on a free port; returns (process, base URL). Stop it with stop_server."""
    port = free_port()
    overrides.setdefault("HALLMARK_PUBLIC_URL", f"http://127.0.0.1:{port}")
    process = subprocess.Popen(
        [sys.executable, "-m", "hallmark.cli", "serve", "--bind", f"127.0.0.1:{port}", "--workers", str(workers)],
        env=hallmark_env(instance, **overrides),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(base + "/healthz", process=process)
    except Exception:
        stop_server(process)
        raise
    return process, base


def stop_server(process) -> None:
    import signal

    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(15)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


@pytest.fixture(scope="session")
def running_server(initialised_instance):
    """One ``hallmark serve`` for the whole session, on the shared initialised instance."""
    process, base = start_server(initialised_instance)
    yield base
    stop_server(process)


def wait_for_http(url: str, timeout: float = 30.0, process: subprocess.Popen | None = None) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited early with status {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout} s")
