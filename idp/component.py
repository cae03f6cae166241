"""What the identity provider adds to the whole (see ``core.component``)."""

from __future__ import annotations

from pathlib import Path

from core import people
from core.component import Component, PeriodicJob, Services
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
        settings=own,
        detail_types=services.detail_types,  # the same dict: every component's RFC 9396 types, filled before any build
    )
    services.add(people.NAME, Directory(ctx))
    from idp import levels

    levels.configure(second_factor=own.second_factor_at)  # which levels need a text code after the password
    return ctx


def subscribe(hooks, ctx: IdPContext) -> None:
    from idp.oidc import logout, tokens

    logout.install(ctx)  # an ended SSO session queues logout notices in core's outbox, sent as soon as its end commits
    tokens.subscribe(hooks)  # a removed client's access tokens are revoked with it


def blueprints():
    from idp import device_pages, enterprise_pages, pages, phone_pages, privacy_pages, recovery_pages, resident_pages, scan_pages
    from idp.certlogin import api as enrolment_api
    from idp.oidc import api as oidc_api
    from idp.oidc import device_api, logout_api
    from idp.people import api as people_api
    from idp.people import enterprises_api

    return (
        oidc_api.bp,
        pages.bp,
        people_api.bp,
        enterprises_api.bp,
        enrolment_api.bp,
        logout_api.bp,
        device_api.bp,  # RFC 8628's device authorization endpoint
        device_pages.bp,  # /device (RFC 8628)
        scan_pages.bp,  # scan-to-login
        phone_pages.bp,  # text codes: registration, SMS login, second factor, a new number; the login guard's challenges
        recovery_pages.bp,  # 忘记密码
        privacy_pages.bp,  # the privacy notice, halls used, export, closure, login history
        resident_pages.bp,  # branding, the elder-friendly mode, step-up's way back to the hall
        enterprise_pages.bp,  # org_matters: which agents may act for which matters
    )


def commands():
    from idp import cli

    cli.register_subcommands()
    return (cli.idp,)


def api_resources():
    from idp.oidc import resources

    return (resources.IDP_API,)


def token_issuer(ctx: IdPContext, catalogue: dict):
    """The IdP issues the access tokens every JSON API accepts, for the resources in ``catalogue`` (RFC 8707),
    and says on every call whether it still honours one (revocation list, session, client: one select; a refusal
    is audited)."""
    from idp.oidc import keys
    from idp.people.directory import Directory

    ctx.resources.update(catalogue)
    return (lambda: keys.jwks_dict(ctx)), ctx.issuer, Directory(ctx).api_token_inactive


def openapi() -> dict:
    from idp import openapi as description

    return description.openapi()


def carry_out_closures(ctx: IdPContext) -> bool:
    """The closures whose cooling-off period has passed are carried out (idp.people.privacy)."""
    from idp.people import privacy

    privacy.carry_out_due(ctx)
    return True


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
    openapi=openapi,
    token_issuer=token_issuer,
    periodic=(PeriodicJob("idp-closures", interval=lambda settings: settings.section(NAME).closure_job_seconds, run=carry_out_closures),),
    translations=Path(__file__).parent / "translations",
)
