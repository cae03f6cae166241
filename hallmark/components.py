"""The one ordered list of components; everything in ``hallmark`` loops over it.

A package joins the whole by adding its ``component.py``'s ``COMPONENT`` here,
after the components it depends on. The app factory, the ``hallmark`` command,
the wiring, ``/healthz`` and the database schema all follow this list; none of
them names a package.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from admin.component import COMPONENT as ADMIN
from ca.component import COMPONENT as CA
from core import db
from core import settings as settings_module
from core.component import CORE, Component, ordered
from idp.component import COMPONENT as IDP
from licenses.component import COMPONENT as LICENSES
from signing.component import COMPONENT as SIGNING

COMPONENTS: tuple[Component, ...] = ordered((CORE, CA, IDP, SIGNING, LICENSES, ADMIN))


def by_name(components: Iterable[Component] = COMPONENTS) -> Mapping[str, Component]:
    return {c.name: c for c in components}


def sections(components: Iterable[Component] = COMPONENTS) -> Mapping[str, type]:
    """Each component's settings section by name."""
    return {c.name: c.settings for c in components if c.settings is not None}


def load_settings(instance: Path | None = None, environ: dict[str, str] | None = None, *, components=COMPONENTS):
    """The shared settings with every component's section."""
    return settings_module.load(instance, environ, sections=sections(components))


def migration_locations(components: Iterable[Component] = COMPONENTS) -> list[Path]:
    return [c.migrations for c in components if c.migrations is not None]


def upgrade_database(engine, *, components: Iterable[Component] = COMPONENTS) -> None:
    """Bring every component's migration history to its head, in list (dependency) order."""
    components = tuple(components)
    db.upgrade(engine, locations=migration_locations(components), branches=[c.name for c in components if c.migrations is not None])


def head_revisions(*, components: Iterable[Component] = COMPONENTS) -> frozenset[str]:
    return db.head_revisions(migration_locations(components))


def pending_revisions(engine, *, components: Iterable[Component] = COMPONENTS) -> frozenset[str]:
    """Revisions of the components' histories the database has not applied yet."""
    return db.pending_revisions(engine, migration_locations(components))
