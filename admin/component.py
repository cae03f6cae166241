"""What the staff console adds to the whole (see ``core.component``)."""

from __future__ import annotations

from pathlib import Path

from admin.context import NAME, AdminContext
from admin.settings import AdminSettings
from core.component import Component, PeriodicJob, Services


def build(services: Services) -> AdminContext:
    """The console's service, on the identity provider's and the CA's."""
    settings = services.settings
    return AdminContext(
        sessions=services.sessions,
        idp=services["idp"],
        ca=services["ca"],
        public_url=settings.public_url.rstrip("/"),
        settings=settings.section(NAME),
        licences=services.by_name.get("licenses"),
    )


def blueprints():
    from admin import api, client_pages, counter_pages, licence_pages, pages, pki_pages, seal_pages

    return (pages.bp, licence_pages.bp, client_pages.bp, seal_pages.bp, counter_pages.bp, pki_pages.bp, api.bp)


def init_app(app, ctx: AdminContext) -> None:
    from admin import login

    login.follow_public_url(ctx)  # the console's registration names this instance's public URL


def commands():
    from admin import cli

    return (cli.admin_group,)


def purge_sessions(ctx: AdminContext) -> bool:
    from admin import login

    login.purge(ctx)
    return True


COMPONENT = Component(
    name=NAME,
    depends_on=("core", "ca", "idp", "signing", "licenses"),
    settings=AdminSettings,
    models=("admin.models",),
    migrations=Path(__file__).parent / "migrations" / "versions",
    services=build,
    blueprints=blueprints,
    init_app=init_app,
    commands=commands,
    translations=Path(__file__).parent / "translations",
    periodic=(PeriodicJob("admin-sessions", interval=lambda settings: 3600, run=purge_sessions),),
)
