"""The ``hallmark`` command: one group per package, thin commands over service modules."""

# ruff: noqa: E402 - warnings are routed to logging before any other import, see below

from __future__ import annotations

import logging
import sys

# First, before the imports below load any library: a library's warning (pyHanko's
# CryptographyDeprecationWarning at import, for one) goes to the log, never to the user's
# terminal. Logged as "py.warnings"; where logging is set up (`hallmark serve`) it shows
# there, and a plain command prints nothing (the NullHandler keeps logging's last-resort
# handler, which writes to stderr, out of it).
logging.captureWarnings(True)
logging.getLogger("py.warnings").addHandler(logging.NullHandler())

import click
from sqlalchemy.exc import SQLAlchemyError

from core import audit, db
from core.db import DatabaseUnavailable
from core.identifiers import InvalidIdentifier
from core.problems import Problem
from core.settings import ConfigError
from hallmark import components as components_module
from hallmark import instance as instance_module
from hallmark import wiring
from hsm import HSMError, KeyAlgorithm

USER_ERRORS = (HSMError, ConfigError, DatabaseUnavailable, InvalidIdentifier, Problem)


class HallmarkGroup(click.Group):
    """Turns expected failures into one clear line on stderr and exit status 1, no traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except USER_ERRORS as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(1)
        except SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            click.secho(f"error: database: {reason}", fg="red", err=True)
            sys.exit(1)


def _settings():
    return components_module.load_settings()


class LazyServices:
    """Database, HSM and the components' services, built on first use: most commands need few of them.

    A package's commands reach its service with ``find_root().obj.service("ca")``
    (or ``.ca()``, ``.idp()``: any component's name).
    """

    def __init__(self):
        self._services = None

    def services(self) -> wiring.Services:
        if self._services is None:
            settings = _settings()
            instance_module.ensure_initialised(settings)
            self._services = wiring.build(settings)
        return self._services

    def service(self, name: str):
        return self.services()[name]

    def __getattr__(self, name: str):
        if name.startswith("_") or name not in components_module.by_name():
            raise AttributeError(name)
        return lambda: self.service(name)

    def close(self):
        if self._services is not None:
            self._services.close()


@click.group(cls=HallmarkGroup)
@click.pass_context
def main(ctx):
    """Hallmark: identity and trust for online government service halls."""
    ctx.obj = LazyServices()
    ctx.call_on_close(ctx.obj.close)


@main.command()
def init():
    """Create the instance (settings, database, HSM token) where it is missing."""
    report = instance_module.init_instance()
    for what, changed in report.steps:
        click.echo(f"  {'created ' if changed else 'exists  '} {what}")
    if report.changed:
        click.echo(f"instance ready at {report.instance}")
    else:
        click.echo(f"instance at {report.instance} is already initialised; nothing changed")


@main.command()
@click.option("--bind", help="HOST:PORT to listen on (default from settings: 127.0.0.1:8000)")
@click.option("--workers", type=int, help="worker processes (default from settings: 2)")
@click.option("--threads", type=int, default=None, help="threads per worker for blocking work")
@click.option(
    "--grace",
    type=click.IntRange(1, 1800),
    default=None,
    help="seconds workers may go on finishing requests after SIGTERM before they are killed (default: 5)",
)
def serve(bind, workers, threads, grace):
    """Serve the web app and APIs."""
    from hallmark import serving

    settings = _settings()
    instance_module.ensure_initialised(settings)
    engine = db.make_engine(settings.database_url)
    try:
        db.check(engine)
        if components_module.pending_revisions(engine):
            raise ConfigError("the database schema is not at the latest revision; run 'hallmark db upgrade'")
    finally:
        engine.dispose()
    bind = bind or settings.bind
    click.echo(f"serving Hallmark on http://{bind} ({workers or settings.workers} workers)")
    serving.serve(bind, workers or settings.workers, threads, "info", grace or serving.GRACE_SECONDS)


# -- db -------------------------------------------------------------------------------------


@main.group(name="db")
def db_group():
    """Database schema."""


@db_group.command(name="upgrade")
def db_upgrade():
    """Migrate the database to the latest schema revision of every component."""
    settings = _settings()
    engine = db.make_engine(settings.database_url)
    try:
        components_module.upgrade_database(engine)
        click.echo(f"database {settings.database_url_for_display()} at revision {', '.join(sorted(db.current_revisions(engine)))}")
    finally:
        engine.dispose()


# -- hsm ------------------------------------------------------------------------------------


@main.group()
def hsm():
    """Keys in the PKCS#11 token."""


@hsm.command()
def status():
    """Say whether the module loads, the token is there and the PIN works."""
    settings = _settings()
    with wiring.key_manager(settings) as keys:
        result = keys.status()
    click.echo(f"module  {result.module}")
    click.echo(f"token   {result.token}")
    if not result.ok:
        raise HSMError(result.detail)
    click.echo(f"device  {result.manufacturer} {result.model} (serial {result.serial})")
    click.echo("status  ok")


@hsm.command(name="keys")
def list_keys():
    """List the private keys in the token with their pkcs11: URIs."""
    with wiring.key_manager(_settings()) as keys:
        found = keys.keys()
    if not found:
        click.echo("no keys in the token yet")
    for key in found:
        click.echo(f"{key.label:<24} {key.algorithm:<9} {key.uri}")


@hsm.command(name="create-key")
@click.argument("label")
@click.option(
    "--algorithm",
    type=click.Choice([a.value for a in KeyAlgorithm]),
    default=KeyAlgorithm.EC_P256.value,
    show_default=True,
)
def create_key(label, algorithm):
    """Generate a key pair inside the token; print its pkcs11: URI."""
    settings = _settings()
    with wiring.key_manager(settings) as keys:
        info = keys.create_key(label, KeyAlgorithm.parse(algorithm))
    engine = db.make_engine(settings.database_url)
    try:
        with db.transaction(db.make_session_factory(engine)) as session:
            audit.record(session, actor="cli", action="hsm.key.created", target=info.uri, details={"algorithm": info.algorithm})
    finally:
        engine.dispose()
    click.echo(info.uri)


# -- audit ----------------------------------------------------------------------------------


@main.group(name="audit")
def audit_group():
    """The hash-chained audit trail."""


@audit_group.command()
def verify():
    """Check every link of the audit chain; name the first broken one."""
    settings = _settings()
    engine = db.make_engine(settings.database_url)
    try:
        db.check(engine)
        with db.make_session_factory(engine)() as session:
            result = audit.verify(session)
    finally:
        engine.dispose()
    if result.ok:
        click.echo(f"audit trail intact: {result.checked} events verified")
        return
    click.secho(f"audit trail BROKEN at event #{result.broken_at}: {result.reason}", fg="red", err=True)
    click.echo(f"({result.checked} events before it verified)", err=True)
    sys.exit(2)


# -- demo -----------------------------------------------------------------------------------


@main.group(name="demo")
def demo_group():
    """The newcomer's demo that `make run` starts (two halls, demo accounts)."""


@demo_group.command(name="prepare")
@click.option("--json", "as_json", is_flag=True, help="print what the demo needs as JSON (for examples/run.py)")
@click.option("--hall-ports", envvar="HALLMARK_DEMO_HALL_PORTS", default="", help="ports of the two halls, e.g. 8001,8002 (the default)")
@click.option(
    "--approval-ports",
    envvar="HALLMARK_DEMO_APPROVAL_PORTS",
    default="",
    help="ports of the approval system, its second instance and the payment service, e.g. 8003,8004,8005 (the default)",
)
@click.pass_context
def demo_prepare(ctx, as_json, hall_ports, approval_ports):
    """Register the demo halls, matters and accounts (safe to repeat) and print how to use them."""
    import json as json_module

    from hallmark import demo

    services = ctx.find_root().obj.services()
    try:
        ports = tuple(int(p) for p in hall_ports.split(",")) if hall_ports else None
        if ports is not None and (len(ports) != len(demo.HALLS) or not all(0 < p < 65536 for p in ports)):
            raise ValueError
    except ValueError:
        raise click.BadParameter(f"give {len(demo.HALLS)} port numbers separated by a comma", param_hint="--hall-ports") from None
    try:
        approval = tuple(int(p) for p in approval_ports.split(",")) if approval_ports else None
        if approval is not None and (len(approval) != len(demo.APPROVAL_PORTS) or not all(0 < p < 65536 for p in approval)):
            raise ValueError
    except ValueError:
        raise click.BadParameter(
            f"give {len(demo.APPROVAL_PORTS)} port numbers separated by a comma", param_hint="--approval-ports"
        ) from None
    info = demo.prepare(
        services.idp,
        services.settings.instance,
        ports=ports,
        ca=services.ca,
        licences=services.by_name.get("licenses"),
        approval_ports=approval,
    )
    if as_json:
        click.echo(
            json_module.dumps(
                {
                    "halls": info.halls,
                    "accounts": info.accounts,
                    "usb_key": info.usb_key,
                    "licences": info.licences,
                    "approval": info.approval,
                    "idp": services.settings.public_url,
                    "bind": services.settings.bind,  # where `hallmark serve` will listen (run.py checks it is free)
                    "agent_port": services.settings.section("idp").cert_agent_port,
                    "banner": demo.banner(info, services.settings.public_url),
                },
                ensure_ascii=False,
            )
        )
    else:
        click.echo(demo.banner(info, services.settings.public_url))


# -- the components' commands ---------------------------------------------------------------

OWN_COMMANDS = tuple(main.commands)  # hallmark's own: init, serve, db, hsm, audit, demo


def add_component_commands(group: click.Group, components=components_module.COMPONENTS) -> None:
    """Each component's click groups and commands, in list order."""
    for component in components:
        for command in component.commands() if component.commands is not None else ():
            group.add_command(command)


def command_for(components) -> click.Group:
    """A ``hallmark`` command with hallmark's own commands and those of ``components``
    (``main`` is this for the default list)."""
    group = HallmarkGroup(name=main.name, callback=main.callback, params=list(main.params), help=main.help)
    for name in OWN_COMMANDS:
        group.add_command(main.commands[name])
    add_component_commands(group, components)
    return group


add_component_commands(main)


if __name__ == "__main__":
    main()
