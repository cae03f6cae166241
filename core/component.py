"""The component contract: what a package adds to the whole, declared as plain data.

Each domain package (``ca``, ``idp``, ``signing``, ...) has a ``component.py``
with one :class:`Component`. The composition root (``hallmark``) keeps one
ordered list of them and loops over it to build the services, the Flask app, the
``hallmark`` command and the database schema; no package below it knows the list
or that ``hallmark`` exists.

Services reach views through the app, never through an import of the
composition root: the root puts the :class:`Services` registry on the app
(:func:`install`), and a view asks for what it needs with :func:`service`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from core import events
from core.outbox import OutboxSettings
from core.sms import SmsSettings

EXTENSION = "components.services"  # app.extensions key of the Services registry


@dataclass(frozen=True)
class PeriodicJob:
    """Upkeep run every ``interval(settings)`` seconds on each worker (0 or less: off); ``run(service)`` returns False when a run failed."""

    name: str
    interval: Callable[[Any], float]
    run: Callable[[Any], bool]


@dataclass(frozen=True)
class HealthCheck:
    """One entry of ``/healthz``: ``check(service)`` returns a dict with ``"status": "ok"`` or ``"error"``."""

    name: str
    check: Callable[[Any], dict]


@dataclass(frozen=True)
class Component:
    """What one package adds. Every callable is called by the composition root, in list order.

    - ``name``: the package's name; also the key of its service, its settings
      section and the branch label of its migration history.
    - ``depends_on``: names of the components it builds on (they come before it in the list).
    - ``settings``: a frozen dataclass, the package's settings section (see
      :func:`core.settings.load`); its fields are read from ``hallmark.toml`` and
      ``HALLMARK_<FIELD>`` variables like the shared settings.
    - ``models``: modules declaring its tables (importing them fills ``core.db.Base.metadata``).
    - ``migrations``: its Alembic versions folder (branch label ``name``).
    - ``services(registry)``: builds what it offers to the packages above and to its
      own views, from ``registry.settings`` and the services of the components below.
    - ``subscribe(hooks, service)``: subscribes its handlers to events other packages emit.
    - ``blueprints()``: its Flask blueprints; ``init_app(app, service)``: anything else the app needs.
    - ``commands()``: its click groups and commands for the ``hallmark`` command.
    - ``api_resources()``: its JSON APIs as OAuth resources (``core.bearer.ApiResource``, RFC 8707).
    - ``token_issuer(service, catalogue)``: only for the component that issues access
      tokens: takes the resource catalogue of every JSON API and returns
      ``(verifying keys, issuer, inactive)`` for the bearer-token check of every API;
      ``inactive(claims)`` says why a well-signed token no longer counts (revoked,
      client removed, session ended), asked of the database on every call.
    - ``authorization_details()``: the RFC 9396 detail types its APIs honour
      (``core.authorization_details.DetailType``); the token issuer accepts only these.
    - ``openapi()``: its part of the OpenAPI document of every JSON API (``core.openapi.part``:
      paths, schemas, scopes), merged by the composition root and served at ``/api/openapi.json``.
    - ``periodic``, ``health``: upkeep jobs and ``/healthz`` entries.
    - ``translations``: its gettext catalogues folder (``<locale>/LC_MESSAGES/messages.po``).
    """

    name: str
    depends_on: tuple[str, ...] = ()
    settings: type | None = None
    models: tuple[str, ...] = ()
    migrations: Path | None = None
    services: Callable[[Services], Any] | None = None
    subscribe: Callable[[events.Hooks, Any], None] | None = None
    blueprints: Callable[[], Iterable[Any]] | None = None
    init_app: Callable[[Any, Any], None] | None = None
    commands: Callable[[], Iterable[Any]] | None = None
    api_resources: Callable[[], Iterable[Any]] | None = None
    token_issuer: Callable[[Any, Mapping[str, frozenset[str]]], tuple[Any, str, Callable[[dict], str | None]]] | None = None
    authorization_details: Callable[[], Iterable[Any]] | None = None
    openapi: Callable[[], Mapping[str, Any]] | None = None
    periodic: tuple[PeriodicJob, ...] = ()
    health: tuple[HealthCheck, ...] = ()
    translations: Path | None = None

    @property
    def metadata(self):
        """The SQLAlchemy metadata holding its tables (one shared metadata, filled by importing ``models``)."""
        import importlib

        from core.db import Base

        for module in self.models:
            importlib.import_module(module)
        return Base.metadata


def ordered(components: Iterable[Component]) -> tuple[Component, ...]:
    """Check the list: unique names, and every dependency listed before whoever depends on it."""
    seen: set[str] = set()
    for component in components:
        if component.name in seen:
            raise ValueError(f"component {component.name!r} is listed twice")
        missing = [name for name in component.depends_on if name not in seen]
        if missing:
            raise ValueError(f"component {component.name!r} depends on {', '.join(missing)}, which must come before it in the list")
        seen.add(component.name)
    return tuple(components)


@dataclass
class Services:
    """The long-lived parts of one process: shared ones, and each component's service by name.

    ``keys`` is the HSM key manager (``hsm.KeyManager``), built by the composition
    root since ``core`` does not import ``hsm``. ``registry["ca"]`` (or
    ``registry.ca``) is the service the ``ca`` component built.
    """

    settings: Any
    engine: Any
    sessions: Any
    keys: Any
    by_name: dict[str, Any] = field(default_factory=dict)
    # RFC 9396 detail types of every component by type name, filled before any service is built
    detail_types: dict[str, Any] = field(default_factory=dict)
    _closers: list = field(default_factory=list, repr=False)

    @property
    def hooks(self) -> events.Hooks:
        """The event hook list shared by every database session of these services."""
        return events.of(self.sessions)

    def add(self, name: str, service: Any) -> None:
        if name in self.by_name:
            raise ValueError(f"a service named {name!r} is already registered")
        self.by_name[name] = service

    def __getitem__(self, name: str) -> Any:
        try:
            return self.by_name[name]
        except KeyError:
            raise LookupError(f"no component offers a service named {name!r}") from None

    def __contains__(self, name: str) -> bool:
        return name in self.by_name

    def __getattr__(self, name: str) -> Any:
        # services.ca, services.idp: the same as services["ca"]
        by_name = self.__dict__.get("by_name")
        if by_name is not None and name in by_name:
            return by_name[name]
        raise AttributeError(name)

    def on_close(self, stop: Callable[[], Any]) -> None:
        """Run ``stop()`` when the services close (background threads that use them)."""
        self._closers.append(stop)

    def close(self) -> None:
        while self._closers:
            self._closers.pop()()
        if self.keys is not None:
            self.keys.close()
        self.engine.dispose()


def install(app, services: Services) -> None:
    """Put the registry on the app, where :func:`service` finds it."""
    app.extensions[EXTENSION] = services


def services(app=None) -> Services:
    """The registry of ``app`` (default: the current app)."""
    if app is None:
        from flask import current_app

        app = current_app
    try:
        return app.extensions[EXTENSION]
    except KeyError:
        raise LookupError("the app has no services; it was not built by the composition root") from None


def service(name: str, app=None) -> Any:
    """The service the component ``name`` offers, on ``app`` (default: the current app)."""
    return services(app)[name]


@dataclass(frozen=True)
class CoreSettings(OutboxSettings, SmsSettings):
    """``core``'s settings section: the outbox's and the text messages'."""

    def __post_init__(self):
        OutboxSettings.__post_init__(self)
        SmsSettings.__post_init__(self)


def _outbox(services: Services):
    from core import outbox, sms

    own = services.settings.section("core")
    box = outbox.Outbox(services.sessions, keep=timedelta(days=own.outbox_keep_days))
    sms.install(services.sessions, own)  # texts go through the outbox too: to the gateway, or the development inbox
    return box


def _blueprints():
    from core import sms_pages

    return (sms_pages.bp,)


def _init_app(app, outbox) -> None:
    from core import sms_pages

    sms_pages.install(app, outbox.sessions)


def _outbox_commands():
    from core import outbox_cli

    return (outbox_cli.outbox_group,)


def _outbox_interval(settings) -> float:
    from core import outbox

    return outbox.interval(settings)


def _rate_limits_interval(settings) -> float:
    from core import ratelimit

    return ratelimit.PURGE_SECONDS


def _purge_rate_limits(outbox) -> bool:
    from core import ratelimit

    ratelimit.purge(outbox.sessions)
    return True


# core's own part: the audit trail's and the outbox's tables and migrations; its service is the outbox
# (core.outbox.Outbox), where the components register their senders, delivered by a periodic job on every worker.
CORE = Component(
    name="core",
    settings=CoreSettings,
    models=("core.models",),
    migrations=Path(__file__).parent / "migrations" / "versions",
    services=_outbox,
    blueprints=_blueprints,
    init_app=_init_app,
    commands=_outbox_commands,
    periodic=(
        PeriodicJob("outbox", interval=_outbox_interval, run=lambda outbox: outbox.run_periodic()),
        # The rate limits' full buckets are deleted on the outbox's session factory (core's one service).
        PeriodicJob("rate-limits", interval=_rate_limits_interval, run=_purge_rate_limits),
    ),
)
