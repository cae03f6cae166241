"""Shared test harness: a real SoftHSM2 token, SQLite, and PostgreSQL when asked for.

SoftHSM2 reads ``SOFTHSM2_CONF`` and lists its tokens once, when the module is
initialised, so the test process's own key manager shares one token directory set
up here before anything loads the module. ``hallmark`` commands run in this process
(click's CliRunner); each instance's token is reached through a private copy of the
SoftHSM2 library (see ``pkcs11_module_for``), so every instance keeps a token of its
own, as it would in a ``hallmark`` process.

Instances are made once per session (``hallmark init`` into a template) and copied
where a test needs one of its own (``initialised_copy``). Under pytest-xdist every
worker is a process of its own with its own session folder, tokens and template.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
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
# The system's SoftHSM2 library goes first into the process's global symbol scope, before
# any private copy of it (pkcs11_module_for): its own calls must never bind to a copy.
_SYSTEM_PKCS11 = ctypes.CDLL(softhsm.default_module(), mode=os.RTLD_GLOBAL)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)


# -- coverage ---------------------------------------------------------------------------------


def _whole_suite(config) -> bool:
    """Whether this run is the whole suite: no paths, test ids, -k, -m, --lf or --deselect given."""
    option = config.option
    if option.keyword or option.markexpr or getattr(option, "lf", False) or getattr(option, "deselect", None):
        return False
    tests = config.rootpath / "tests"
    return all(Path(arg).resolve() in (tests, config.rootpath) for arg in config.args)


def pytest_configure(config):
    # fail_under ([tool.coverage.report]) is about the whole suite; a run of one file or one
    # test measures a corner of the code and says nothing about it.
    cov = config.pluginmanager.get_plugin("_cov")
    if cov is not None and not _whole_suite(config):
        cov.options.cov_fail_under = None


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtestloop(session):
    # Inside pytest-cov's wrapper: when nothing was collected, pytest's own "no tests ran"
    # (exit status 5) is the answer, not a coverage failure (exit status 1).
    result = yield
    cov = session.config.pluginmanager.get_plugin("_cov")
    if cov is not None and session.testscollected == 0:
        cov.options.cov_fail_under = None
    return result


# -- pytest-xdist -----------------------------------------------------------------------------

# Session fixtures that take seconds to build: the modules that use one run on one worker.
SHARED_SESSION_FIXTURES = ("signing_world", "running_server", "licence_world", "console")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under ``--dist loadgroup``, one xdist group per test module, so a module's fixtures
    (its instance, its server, its browser) are built once, on one worker; modules that
    use the same costly session fixture share a group. Groups with slow tests are handed
    out first, the largest first, so that no long module is left to run alone at the end
    (pyproject.toml passes --no-loadscope-reorder, which keeps this order).

    Tests that must not run at the same time as each other (a shared port, a file outside
    tmp_path) are given one name with ``@pytest.mark.xdist_group("...")``; that mark, when
    present, wins, and puts them on one worker, one after the other.
    """
    # In the xdist workers, where collection happens, xdist has set option.dist to "no" and left option.loadgroup
    # set: checking dist alone made this a no-op there, and every module's tests were spread over both workers.
    if not (getattr(config.option, "loadgroup", False) or getattr(config.option, "dist", "no") == "loadgroup"):
        return

    def group(item) -> str:
        mark = item.get_closest_marker("xdist_group")
        return str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))

    modules: dict[str, list] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::")[0], []).append(item)
    for module, members in modules.items():
        used = set().union(*(getattr(item, "fixturenames", ()) for item in members))
        shared = next((name for name in SHARED_SESSION_FIXTURES if name in used), module)
        for item in members:
            if item.get_closest_marker("xdist_group") is None:
                item.add_marker(pytest.mark.xdist_group(shared))
    slow_groups = {group(item) for item in items if item.get_closest_marker("slow") is not None}
    sizes: dict[str, int] = {}
    for item in items:
        sizes[group(item)] = sizes.get(group(item), 0) + 1
    items.sort(key=lambda item: (group(item) not in slow_groups, -sizes[group(item)]))


def pytest_collection_finish(session):
    """Fail loudly if xdist stops grouping: with pytest 9.2 and xdist 3.8 (pytest-xdist#1386) the group marks were
    silently ignored, so every module's costly fixtures were built on both workers and the suite ran a minute longer."""
    config = session.config
    if getattr(config.option, "loadgroup", False) and getattr(config, "workerinput", None) is not None:
        ungrouped = [item.nodeid for item in session.items if "@" not in item.nodeid.rpartition("]")[2].rpartition("::")[2]]
        if ungrouped:
            raise pytest.UsageError(f"xdist did not put {ungrouped[0]} (and {len(ungrouped) - 1} more) in its group")


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
    """A throwaway PostgreSQL cluster in a temporary folder on a private port.

    The folder is in /dev/shm where there is one: a cluster in memory starts, creates
    databases and goes away several times faster than one on disk (fsync is off anyway).
    Each pytest-xdist worker starts a cluster of its own, in its own folder, on its own port.
    """

    def __init__(self):
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not bins:
            raise RuntimeError("HALLMARK_TEST_POSTGRES=1 but PostgreSQL is not installed (apt-get install postgresql)")
        self.bin = bins[-1].parent
        memory = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        self.dir = Path(tempfile.mkdtemp(prefix="hallmark-pg-", dir=memory))
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

    def create_database(self, name: str, template: str | None = None) -> str:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database made for one test, closing what is still connected to it."""
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

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
def database_url(request, tmp_path):
    """An empty database of each kind, one per test (a PostgreSQL one is dropped after it)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    server = request.getfixturevalue("postgres")
    name = f"t{next(_db_counter)}_{os.getpid()}"
    yield server.create_database(name)
    server.drop_database(name)


_migrated_templates: dict[str, str] = {}
_migrated_lock = threading.Lock()


def _upgrade(url: str) -> None:
    from core import db
    from hallmark import components

    engine = db.make_engine(url)
    try:
        components.upgrade_database(engine)
    finally:
        engine.dispose()


@pytest.fixture
def migrated(request, database_url):
    """(engine, session factory) on a database at the latest revision.

    The migrations run once per session and database kind, into a template; each test's
    database is a copy of it (a file copy for SQLite, ``CREATE DATABASE ... TEMPLATE``
    for PostgreSQL), the same schema and rows that running them again would give.
    """
    from core import db

    if database_url.startswith("sqlite:///"):
        with _migrated_lock:
            if "sqlite" not in _migrated_templates:
                path = _SESSION_DIR / "migrated.db"
                _upgrade(f"sqlite:///{path}")
                _migrated_templates["sqlite"] = str(path)
        shutil.copyfile(_migrated_templates["sqlite"], database_url.removeprefix("sqlite:///"))
    else:
        server = request.getfixturevalue("postgres")
        with _migrated_lock:
            if "postgresql" not in _migrated_templates:
                _upgrade(server.create_database("migrated_template"))
                _migrated_templates["postgresql"] = "migrated_template"
        name = database_url.rsplit("/", 1)[1]
        server.drop_database(name)
        server.create_database(name, template=_migrated_templates["postgresql"])
    engine = db.make_engine(database_url)
    yield engine, db.make_session_factory(engine)
    engine.dispose()


# -- processes ------------------------------------------------------------------------------


# Per-client limits for the suite, far above the defaults: many tests register accounts, validate files and
# ask for signed OCSP answers from 127.0.0.1 in one session. The limits' own tests (tests/*/test_limits.py)
# set theirs; an override of the same name wins.
TEST_LIMITS = {
    "HALLMARK_REGISTER_BURST": "1000",
    "HALLMARK_VALIDATE_BURST": "1000",
    "HALLMARK_OCSP_SIGNED_BURST": "10000",
    "HALLMARK_TSA_BURST": "10000",
    # Many tests sign in from 127.0.0.1 to one shared server: past this many wrong passwords from the address, a
    # password sign-in needs a solved challenge (idp.people.loginguard), which plain HTTP clients do not send.
    "HALLMARK_LOGIN_FREE_FAILURES": "20",
}


def hallmark_env(instance: Path, **overrides) -> dict:
    """Environment for a ``hallmark`` subprocess using its own instance (and its own token)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HALLMARK_") and k != "SOFTHSM2_CONF"}
    env.update(TEST_LIMITS)
    env["HALLMARK_INSTANCE"] = str(instance)
    env.update(overrides)
    return env


def run_hallmark_process(instance: Path, *args, input: str | None = None, timeout=120, **overrides) -> subprocess.CompletedProcess:
    """``hallmark`` as its own process, exactly as a user starts it (for the end-to-end smoke tests)."""
    return subprocess.run(
        [sys.executable, "-m", "hallmark.cli", *args],
        env=hallmark_env(instance, **overrides),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


_pkcs11_lock = threading.Lock()
_pkcs11_copies: dict[tuple[str, frozenset[str]], tuple[str, ctypes.CDLL]] = {}


def _token_dir(conf: Path) -> Path | None:
    try:
        for line in conf.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "directories.tokendir":
                return Path(value.strip())
    except OSError:
        pass
    return None


def pkcs11_module_for(conf: Path) -> str:
    """A private copy of the SoftHSM2 library that serves the tokens listed in ``conf``.

    SoftHSM2 keeps its configuration and token list in process-wide state set at
    C_Initialize, so one library serves one token directory per process. A copy of
    the library file, loaded with RTLD_DEEPBIND (its own symbols first), is a second
    SoftHSM2 with state of its own; it is initialised here, with ``SOFTHSM2_CONF``
    naming ``conf`` for that moment, the way hsm.module initialises any module (and
    python-pkcs11 shares it, so keyagent and pyHanko find it ready). A new copy is made
    when the token directory gained or lost a token, since a SoftHSM2 already
    initialised would not see the change.
    """
    tokens = _token_dir(conf)
    present = frozenset(p.name for p in tokens.iterdir()) if tokens is not None and tokens.is_dir() else frozenset()
    key = (str(conf), present)
    with _pkcs11_lock:
        if key not in _pkcs11_copies:
            folder = _SESSION_DIR / "pkcs11" / str(len(_pkcs11_copies))
            folder.mkdir(parents=True)
            path = folder / "libsofthsm2.so"
            shutil.copyfile(softhsm.default_module(), path)
            handle = ctypes.CDLL(str(path), mode=os.RTLD_LOCAL | os.RTLD_DEEPBIND | os.RTLD_NOW)
            before = os.environ.get("SOFTHSM2_CONF")
            os.environ["SOFTHSM2_CONF"] = str(conf)
            try:
                from hsm import module

                module.load(str(path))
            except Exception:  # no usable configuration yet: the command meets the error itself
                pass
            finally:
                os.environ["SOFTHSM2_CONF"] = before if before is not None else ""
                if before is None:
                    del os.environ["SOFTHSM2_CONF"]
            _pkcs11_copies[key] = (str(path), handle)
        return _pkcs11_copies[key][0]


def run_hallmark(instance: Path, *args, input: str | None = None, timeout=120, **overrides) -> subprocess.CompletedProcess:
    """``hallmark *args`` in this process through click's CliRunner, on ``instance``.

    The environment is what ``hallmark_env`` gives a subprocess (no inherited
    ``HALLMARK_*``), for the duration of the call. The answer looks like the
    subprocess's: exit status, stdout, stderr, and a traceback on stderr when a
    command raised instead of exiting. ``timeout`` is kept for the callers and left
    to pytest-timeout.
    """
    import warnings

    from core import settings as settings_module

    # hallmark.cli routes warnings to logging when imported (logging.captureWarnings): keep
    # that to the import, so that pytest's warning filters go on seeing this process's warnings.
    with warnings.catch_warnings():
        from hallmark.cli import main

    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("HALLMARK_")}
    env["HALLMARK_INSTANCE"] = str(instance)
    env.update(overrides)
    try:
        settings = settings_module.load(Path(instance), environ={k: v for k, v in env.items() if v is not None})
        conf, module = Path(settings.softhsm2_conf), settings.pkcs11_module
    except Exception:  # a test of bad settings: the command itself reports them
        conf, module = Path(instance) / "softhsm" / "softhsm2.conf", overrides.get("HALLMARK_PKCS11_MODULE", "")
    if not module or Path(module).resolve() == Path(softhsm.default_module()).resolve():
        env["SOFTHSM2_CONF"] = str(conf)
        env["HALLMARK_PKCS11_MODULE"] = pkcs11_module_for(conf)
    return invoke_cli(main, "hallmark", args, input=input, env=env)


def invoke_cli(main, prog: str, args, *, input: str | None, env: dict[str, str | None]) -> subprocess.CompletedProcess:
    """Run a click command in this process and answer as ``subprocess.run`` would of ``prog *args``.

    Exit status, stdout and stderr; a traceback on stderr when the command raised instead of exiting.
    """
    from click.testing import CliRunner

    result = CliRunner().invoke(main, [str(a) for a in args], input=input, env=env, prog_name=prog, catch_exceptions=True)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "Traceback (most recent call last):\n" + "".join(traceback.format_exception(result.exception))
    return subprocess.CompletedProcess([prog, *map(str, args)], result.exit_code, result.stdout, stderr)


_template: Path | None = None
_template_lock = threading.Lock()


def instance_template() -> Path:
    """An instance made by ``hallmark init`` once per session; never used directly, only copied."""
    global _template
    with _template_lock:
        if _template is None:
            path = _SESSION_DIR / "template"
            result = run_hallmark(path, "init")
            assert result.returncode == 0, result.stdout + result.stderr
            _template = path
        return _template


def initialised_copy(destination: Path) -> Path:
    """A copy of the session's initialised instance at ``destination`` (missing or an empty folder).

    The copy has the template's settings, database, PINs and SoftHSM2 token; its
    ``softhsm2.conf`` names the copy's own token folder, so the copy and the template
    share nothing.
    """
    template = instance_template()
    if destination.exists() and any(destination.iterdir()):
        raise FileExistsError(f"{destination} is not empty")
    shutil.copytree(template, destination, symlinks=True, dirs_exist_ok=True)
    conf = destination / "softhsm" / "softhsm2.conf"
    softhsm.write_config(conf.parent)
    for name in ("hallmark.toml", "softhsm/softhsm2.conf"):
        text = (destination / name).read_text()
        assert str(template) not in text, f"{name} still names the template"
    assert _token_dir(conf) == destination / "softhsm" / "tokens"
    return destination


@pytest.fixture(scope="session")
def initialised_instance(tmp_path_factory) -> Path:
    """An initialised instance shared by the tests that only read it (a copy of the session's template)."""
    return initialised_copy(tmp_path_factory.mktemp("instance") / "instance")


def app_settings(tmp_path: Path, database_url: str, **overrides):
    """Settings for an in-process app on the session's test token and the given database."""
    import json

    from hallmark import components

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
        "HALLMARK_OUTBOX_SECONDS": "0",  # tests drive core.outbox.deliver_due themselves
        **TEST_LIMITS,
        **overrides,
    }
    return components.load_settings(tmp_path, environ=env)


@pytest.fixture
def ca_context(migrated, key_manager):
    """A CA hierarchy (root, issuing CAs, OCSP responders, TSA) in a fresh database, keys in the test token."""
    from ca import hierarchy
    from ca.context import CAContext
    from ca.status import publication
    from core import events

    _, sessions = migrated
    ctx = CAContext(sessions=sessions, keys=key_manager, public_url="http://127.0.0.1:8000", lookup_key=b"test-lookup-key-0123456789")
    publication.subscribe(events.of(sessions))  # what the CA component does when the composition root builds it
    hierarchy.init_hierarchy(ctx, actor="test")
    return ctx


def start_server(instance: Path, workers: int = 2, *, port: int | None = None, log: Path | None = None, **overrides):
    """``hallmark serve`` on ``port`` (default: a free one); returns (process, base URL). Stop it with stop_server.

    ``log``: a file for the server's stderr (read it when a test meets a 500); without it, stderr is dropped.
    """
    port = port or free_port()
    overrides.setdefault("HALLMARK_PUBLIC_URL", f"http://127.0.0.1:{port}")
    with open(log or os.devnull, "wb") as stderr:  # the server keeps its own handle
        process = subprocess.Popen(
            [sys.executable, "-m", "hallmark.cli", "serve", "--bind", f"127.0.0.1:{port}", "--workers", str(workers)],
            env=hallmark_env(instance, **overrides),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
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
