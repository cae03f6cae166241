"""What the identity provider adds to the whole (see ``core.component``)."""

from __future__ import annotations

from pathlib import Path

from core import people
from core.component import Component, Services
from idp.context import NAME, IdPContext
from idp.settings import IdPSettings


def build(services: Services) -> IdPContext:
    """The identity provider's service: what its views, commands and the packages above use.

    Also offers the people directory (``core.people``) to the packages above.
    """
    from idp.people.directory import Directory

    settings = services.settings
    own: IdPSettings = settings.section(NAME)
    ctx = IdPContext(
        sessions=services.sessions,
        keys=services.keys,
        issuer=settings.public_url.rstrip("/"),
        lookup_key=settings.lookup_key_bytes(),
        secret_key=settings.secret_key_bytes(),
        registry_url=own.registry_url,
        detail_types=services.detail_types,  # the same dict: every component's RFC 9396 types, filled before any build
    )
    services.add(people.NAME, Directory(ctx))
    return ctx


def subscribe(hooks, ctx: IdPContext) -> None:
    from idp.oidc import logout, tokens

    logout.install(ctx)  # an ended SSO session queues logout notices in core's outbox, sent as soon as its end commits
    tokens.subscribe(hooks)  # a removed client's access tokens are revoked with it


def blueprints():
    from idp import pages
    from idp.certlogin import api as enrolment_api
    from idp.oidc import api as oidc_api
    from idp.oidc import logout_api
    from idp.people import api as people_api
    from idp.people import enterprises_api

    return (oidc_api.bp, pages.bp, people_api.bp, enterprises_api.bp, enrolment_api.bp, logout_api.bp)


def commands():
    from idp import cli

    cli.register_subcommands()
    return (cli.idp,)


def api_resources():
    from idp.oidc import resources

    return (resources.IDP_API,)


def token_issuer(ctx: IdPContext, catalogue: dict):
    """The IdP issues the access tokens every JSON API accepts, for the resources in ``catalogue`` (RFC 8707)."""
    from idp.oidc import keys

    ctx.resources.update(catalogue)
    return (lambda: keys.jwks_dict(ctx)), ctx.issuer


COMPONENT = Component(
    name=NAME,
    depends_on=("core", "ca"),
    settings=IdPSettings,
    models=("idp.models",),
    migrations=Path(__file__).parent / "migrations" / "versions",
    services=build,
    subscribe=subscribe,
    blueprints=blueprints,
    commands=commands,
    api_resources=api_resources,
    token_issuer=token_issuer,
    translations=Path(__file__).parent / "translations",
)
