"""The component contract: a package joins by declaring itself, and nothing below hallmark knows the list.

A small extra component, declared here, gets its blueprint served, its CLI group
in ``hallmark --help``, its settings section read and its migration applied; the
packages have no import circles; events reach subscribers through the hook list.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import threading
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from flask import Blueprint
from sqlalchemy import inspect, text

from core import component, events
from core.component import Component, HealthCheck, PeriodicJob
from core.settings import ConfigError
from hallmark import components
from tests.conftest import ROOT, app_settings

# -- a small extra component, as a new package would declare it ----------------------------------


@dataclasses.dataclass(frozen=True)
class ExtraSettings:
    extra_greeting: str = "你好"


@dataclasses.dataclass
class ExtraService:
    greeting: str
    ca_public_url: str  # built from the service of a component below it
    jobs_run: int = 0


def _extra_service(services) -> ExtraService:
    return ExtraService(services.settings.section("extra").extra_greeting, services["ca"].public_url)


_extra_bp = Blueprint("extra", __name__, url_prefix="/extra")


@_extra_bp.get("/hello")
def _hello():
    service = component.service("extra")  # through the app, as every view does
    return {"greeting": service.greeting, "ca": service.ca_public_url}


@click.group(name="extra")
def _extra_group():
    """The extra component's commands."""


@_extra_group.command(name="hello")
def _extra_hello():
    click.echo(f"hello from {click.get_current_context().find_root().obj.__class__.__name__}")


REVISION = '''
"""The extra component's first table."""

import sqlalchemy as sa
from alembic import op

revision = "extra_0001"
down_revision = None
branch_labels = ("extra",)
depends_on = "core_0001"


def upgrade() -> None:
    op.create_table("extra_notes", sa.Column("id", sa.Integer(), primary_key=True), sa.Column("text", sa.String(100), nullable=False))


def downgrade() -> None:
    op.drop_table("extra_notes")
'''


@pytest.fixture
def extra(tmp_path) -> Component:
    versions = tmp_path / "extra_versions"
    versions.mkdir()
    (versions / "extra_0001_notes.py").write_text(REVISION)
    return Component(
        name="extra",
        depends_on=("core", "ca"),
        settings=ExtraSettings,
        migrations=versions,
        services=_extra_service,
        blueprints=lambda: (_extra_bp,),
        commands=lambda: (_extra_group,),
        health=(HealthCheck("extra", lambda service: {"status": "ok", "greeting": service.greeting}),),
        periodic=(
            PeriodicJob("extra-job", interval=lambda settings: 3600, run=lambda service: True),
            PeriodicJob("extra-off", interval=lambda settings: 0, run=lambda service: True),
        ),
    )


def test_an_extra_component_is_served_migrated_and_commanded(tmp_path, database_url, extra):
    from core import db
    from hallmark.app import create_app
    from hallmark.cli import command_for

    every = (*components.COMPONENTS, extra)
    engine = db.make_engine(database_url)
    try:
        components.upgrade_database(engine, components=every)
        assert "extra_notes" in inspect(engine).get_table_names()
        assert "extra_0001" in db.current_revisions(engine)
        assert not components.pending_revisions(engine, components=every)
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO extra_notes (text) VALUES ('kept')"))
        components.upgrade_database(engine, components=every)  # running it again changes nothing
        with engine.connect() as connection:
            assert connection.execute(text("SELECT text FROM extra_notes")).scalar_one() == "kept"
    finally:
        engine.dispose()

    settings = app_settings(tmp_path, database_url)
    with pytest.raises(ConfigError):
        settings.section("extra")  # loaded without the extra component's section
    settings = components.load_settings(
        tmp_path, environ={**_env(tmp_path, database_url), "HALLMARK_EXTRA_GREETING": "早上好"}, components=every
    )
    app = create_app(settings, components=every)
    jobs = {thread.name: thread for thread in threading.enumerate() if thread.name.startswith("hallmark-extra-")}
    try:
        assert set(jobs) == {"hallmark-extra-job"}  # a job whose interval is 0 is off
        client = app.test_client()
        assert client.get("/extra/hello").get_json() == {"greeting": "早上好", "ca": "https://id.test"}
        health = client.get("/healthz").get_json()
        assert health["extra"] == {"status": "ok", "greeting": "早上好"}
        assert client.get("/.well-known/openid-configuration").get_json()["issuer"] == "https://id.test"  # the others as before
    finally:
        app.extensions[component.EXTENSION].close()
    assert not jobs["hallmark-extra-job"].is_alive()  # stopped with the services

    runner = CliRunner()
    shown = runner.invoke(command_for(every), ["--help"])
    assert shown.exit_code == 0, shown.output
    assert re.search(r"^\s+extra\s+The extra component's commands\.", shown.output, re.M)
    assert re.search(r"^\s+ca\s", shown.output, re.M) and re.search(r"^\s+db\s", shown.output, re.M)
    ran = runner.invoke(command_for(every), ["extra", "hello"])
    assert ran.exit_code == 0 and ran.output == "hello from LazyServices\n"
    default = runner.invoke(command_for(components.COMPONENTS), ["--help"])
    assert default.exit_code == 0 and not re.search(r"^\s+extra\s", default.output, re.M)


def _env(tmp_path: Path, database_url: str) -> dict:
    from tests.conftest import TOKEN_LABEL

    return {
        "HALLMARK_DATABASE_URL": database_url,
        "HALLMARK_TOKEN_LABEL": TOKEN_LABEL,
        "HALLMARK_PIN_SOURCE": f"file:{tmp_path / 'pins.json'}",  # written by app_settings
        "HALLMARK_PUBLIC_URL": "https://id.test",
        "HALLMARK_LOOKUP_KEY": "test-lookup-key-0123456789",
        "HALLMARK_SECRET_KEY": "test-secret-key-0123456789",
        "HALLMARK_CA_UPKEEP_SECONDS": "0",
        "HALLMARK_OUTBOX_SECONDS": "0",
    }


def test_the_list_is_checked():
    with pytest.raises(ValueError, match="depends on ca, which must come before it"):
        component.ordered([component.CORE, Component(name="late", depends_on=("ca",)), components.CA])
    with pytest.raises(ValueError, match="listed twice"):
        component.ordered([component.CORE, component.CORE])
    assert [c.name for c in components.COMPONENTS][:2] == ["core", "ca"]


def test_settings_sections_read_the_instance_file(tmp_path):
    (tmp_path / "hallmark.toml").write_text(
        'ca_upkeep_seconds = 0\ncert_agent_port = 17500\nevent_endpoint_hosts = ["a.test", "b.test:8080"]\n'
    )
    s = components.load_settings(tmp_path, environ={"HALLMARK_CA_UPKEEP_SECONDS": "30"})
    assert s.section("ca").ca_upkeep_seconds == 30  # the environment wins, as for the shared settings
    assert s.section("idp").cert_agent_port == 17500
    assert s.section("licenses").event_endpoint_hosts == "a.test b.test:8080"
    (tmp_path / "hallmark.toml").write_text("colour = 'blue'\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        components.load_settings(tmp_path, environ={})


def test_settings_sections_keep_the_flat_names():
    s = components.load_settings(
        Path("/nonexistent-instance"), environ={"HALLMARK_CA_UPKEEP_SECONDS": "5", "HALLMARK_CERT_AGENT_PORT": "17500"}
    )
    assert s.section("ca").ca_upkeep_seconds == 5
    assert s.section("idp").cert_agent_port == 17500 and s.cert_agent_port == 17500
    with pytest.raises(ConfigError, match="ca_upkeep_seconds must be a whole number"):
        components.load_settings(Path("/nonexistent-instance"), environ={"HALLMARK_CA_UPKEEP_SECONDS": "often"})
    with pytest.raises(ConfigError, match="cert_agent_port must be a port number"):
        components.load_settings(Path("/nonexistent-instance"), environ={"HALLMARK_CERT_AGENT_PORT": "70000"})
    clash = {"ca": components.CA.settings, "again": components.CA.settings}
    with pytest.raises(ConfigError, match="already a setting of ca"):
        from core import settings as settings_module

        settings_module.load(Path("/nonexistent-instance"), environ={}, sections=clash)


# -- events -------------------------------------------------------------------------------------


def test_hooks_run_in_order_and_required_events_need_a_subscriber():
    hooks = events.Hooks()
    heard = []
    hooks.subscribe("x.happened", lambda **kw: heard.append(("first", kw)) or {"a": 1})
    hooks.subscribe("x.happened", lambda **kw: heard.append(("second", kw)))
    assert hooks.emit("x.happened", value=3) == [{"a": 1}, None]
    assert [who for who, _ in heard] == ["first", "second"] and heard[0][1] == {"value": 3}
    assert hooks.emit("nobody.listens") == []
    with pytest.raises(events.NoSubscriber):
        hooks.emit("nobody.listens", required=True)


def test_sessions_of_one_factory_share_its_hooks(migrated):
    from core import db

    engine, sessions = migrated
    with sessions() as one, sessions() as two:
        assert events.of(one) is events.of(two) is events.of(sessions)
    assert events.of(db.make_session_factory(engine)) is not events.of(sessions)


def test_issuance_without_the_cas_subscribers_refuses(migrated, key_manager):
    """A CA context whose sessions nobody subscribed to cannot issue: the OCSP answer would be missing."""
    from ca import hierarchy
    from ca.context import CAContext

    _, sessions = migrated
    ctx = CAContext(sessions=sessions, keys=key_manager, public_url="http://127.0.0.1:8000", lookup_key=b"k" * 16)
    with pytest.raises(events.NoSubscriber, match=r"ca\.authority\.created|ca\.certificate\.issued"):
        hierarchy.init_hierarchy(ctx, actor="test")


# -- the layering: no look-up of the composition root, no import circles ------------------------

BELOW_HALLMARK = ("hsm", "core", "ca", "idp", "signing", "licenses", "admin")


def _python_files(package: str):
    return sorted(p for p in (ROOT / package).rglob("*.py") if "migrations" not in p.parts)


def test_nothing_below_hallmark_reaches_up():
    offenders = []
    for package in BELOW_HALLMARK:
        for path in _python_files(package):
            source = path.read_text()
            if re.search(r"hallmark\.services|[\"']hallmark\.ca[\"']", source):
                offenders.append(f"{path.relative_to(ROOT)}: looks up the composition root's names")
            for node in ast.walk(ast.parse(source)):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else []
                )
                if any(n == "hallmark" or n.startswith("hallmark.") for n in names):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports hallmark")
    assert offenders == []


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: str) -> dict[str, set[str]]:
    """Edges between modules of ``package``, imports inside functions included."""
    modules = {_module_name(p): p for p in _python_files(package)}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = name.split(".")[: None if is_package else -1]
                    parts = parts[: len(parts) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in graph:
        if node not in index:
            visit(node)
    return found


@pytest.mark.parametrize("package", ["hsm", "core", "ca", "idp", "signing", "licenses", "admin", "hallmark", "keyagent"])
def test_no_import_circle_inside_a_package(package):
    assert circles(import_graph(package)) == []


def test_ending_a_session_does_not_import_logout():
    """idp.people.sessions announces the end; idp.oidc.logout subscribes."""
    graph = import_graph("idp")
    assert "idp.oidc.logout" not in graph["idp.people.sessions"]
    assert not any({"idp.people.sessions", "idp.oidc.logout"} <= set(group) for group in circles(graph))


def test_the_circle_finder_finds_one():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
