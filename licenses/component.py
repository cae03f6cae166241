"""What the electronic licence library adds to the whole (see ``core.component``)."""

from __future__ import annotations

from pathlib import Path

from core import people
from core.component import Component, PeriodicJob, Services
from licenses.context import NAME, LicencesContext
from licenses.settings import LicencesSettings
from signing.context import NAME as SIGNING


def build(services: Services) -> LicencesContext:
    """The licence library's service, on the signing service; the identity provider's people directory when present."""
    settings = services.settings
    return LicencesContext(
        signing=services[SIGNING],
        keys=services.keys,
        public_url=settings.public_url.rstrip("/"),
        lookup_key=settings.lookup_key_bytes(),
        settings=settings.section(NAME),
        people=services.by_name.get(people.NAME),
    )


def blueprints():
    from licenses import api, events_api, pages, request_pages, requests_api, statuslist_api

    return (statuslist_api.bp, api.bp, pages.bp, requests_api.bp, request_pages.bp, events_api.bp)


def api_resources():
    from licenses import api

    return (api.RESOURCE,)


def commands():
    from licenses import cli, events_cli  # noqa: F401 - importing events_cli adds its commands to the licences group

    return (cli.licences,)


def authorization_details():
    from licenses import consent

    return (consent.DETAIL_TYPE,)


def seal_pending(service: LicencesContext) -> bool:
    """The periodic job: seal the files of imported licences waiting for one (False when some failed)."""
    from licenses import imports

    return imports.seal_pending(service).failed == 0


def subscribe(hooks, service: LicencesContext) -> None:
    from licenses import events, statuslist

    statuslist.subscribe(hooks)  # a licence's status-list bits change in the transaction of its state change
    events.install(service, hooks)  # status events (SETs) for subscribers, queued in core's outbox with the change


def expire_licences(service: LicencesContext) -> bool:
    """The periodic job: licences past their validity become expired (with their events)."""
    from licenses import expiry

    return expiry.run(service)


EXPIRY_JOB = PeriodicJob("licences-expiry", interval=lambda settings: settings.section(NAME).expiry_seconds, run=expire_licences)


def openapi() -> dict:
    from licenses import openapi as description

    return description.openapi()


COMPONENT = Component(
    name=NAME,
    depends_on=("core", "signing"),
    settings=LicencesSettings,
    models=("licenses.models",),
    migrations=Path(__file__).parent / "migrations" / "versions",
    services=build,
    subscribe=subscribe,
    commands=commands,
    blueprints=blueprints,
    api_resources=api_resources,
    openapi=openapi,
    authorization_details=authorization_details,
    translations=Path(__file__).parent / "translations",
    periodic=(
        EXPIRY_JOB,
        PeriodicJob("licences-seal-pending", interval=lambda settings: settings.section(NAME).seal_pending_seconds, run=seal_pending),
    ),
)
