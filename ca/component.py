"""What the certificate authority adds to the whole (see ``core.component``)."""

from __future__ import annotations

from pathlib import Path

from ca.context import NAME, CAContext
from ca.settings import CASettings
from core.component import Component, HealthCheck, PeriodicJob, Services


def build(services: Services) -> CAContext:
    """The CA's service: everything its views, its commands and the packages above use."""
    settings = services.settings
    return CAContext(
        sessions=services.sessions,
        keys=services.keys,
        public_url=settings.public_url,
        lookup_key=settings.lookup_key_bytes(),
        pki_url=settings.section(NAME).pki_url,
        settings=settings.section(NAME),
    )


def subscribe(hooks, ctx: CAContext) -> None:
    from ca.status import publication

    publication.subscribe(hooks)  # a new certificate, a revocation, a new authority: publish OCSP and CRLs


def blueprints():
    from ca import api
    from ca.status import api as pki_api
    from ca.tsa import api as tsa_api

    return (api.bp, pki_api.bp, tsa_api.bp)


def api_resources():
    from ca import api

    return (api.RESOURCE,)


def commands():
    from ca import cli

    return (cli.ca,)


def upkeep(ctx: CAContext) -> bool:
    from ca.status import schedule

    published, refreshed = schedule.run_once(ctx)
    return published >= 0 and refreshed >= 0


def health(ctx: CAContext) -> dict:
    """Whether every authority's newest CRL is still current: a relying party refuses our certificates otherwise."""
    from sqlalchemy import func, select

    from ca.models import CRL, Authority
    from core import db

    with db.read_only(ctx.sessions) as session:
        newest = dict(
            session.execute(
                select(Authority.name, func.max(CRL.next_update)).outerjoin(CRL, CRL.authority == Authority.name).group_by(Authority.name)
            ).all()
        )
    now = db.utc_now()
    stale = sorted(name for name, next_update in newest.items() if next_update is None or next_update <= now)
    body = {"status": "error" if stale else "ok", "authorities": len(newest)}
    if stale:
        body["detail"] = f"no current CRL for {', '.join(stale)}; run 'hallmark ca refresh'"
    return body


def openapi() -> dict:
    from ca import openapi as description

    return description.openapi()


COMPONENT = Component(
    name=NAME,
    depends_on=("core",),
    settings=CASettings,
    models=("ca.models",),
    migrations=Path(__file__).parent / "migrations" / "versions",
    services=build,
    subscribe=subscribe,
    blueprints=blueprints,
    commands=commands,
    api_resources=api_resources,
    openapi=openapi,
    periodic=(PeriodicJob("ca-schedule", interval=lambda settings: settings.section(NAME).ca_upkeep_seconds, run=upkeep),),
    health=(HealthCheck("ca", health),),
)
