"""What trusted electronic files (signing) add to the whole (see ``core.component``)."""

from __future__ import annotations

from pathlib import Path

from ca.context import NAME as CA
from core.component import Component, Services
from signing.context import NAME, SigningContext
from signing.pdf import reading as pdfinput
from signing.settings import SigningSettings


def build(services: Services) -> SigningContext:
    """The signing service, on the CA's: the PDF limit stays under the request limit."""
    ca = services[CA]
    # A PDF in a JSON body (remote signing) grows by a third in base64: keep the limit under the request limit.
    limit = min(pdfinput.MAX_PDF_BYTES, services.settings.max_request_bytes * 3 // 4 - 64 * 1024)
    return SigningContext(ca=ca, public_url=ca.public_url, max_pdf_bytes=max(limit, 64 * 1024), settings=services.settings.section(NAME))


def blueprints():
    from signing import api, pages

    return (api.bp, pages.bp)


def commands():
    from signing import cli

    return (cli.sign, cli.validate)


def api_resources():
    from signing import api

    return (api.RESOURCE,)


def openapi() -> dict:
    from signing import openapi as description

    return description.openapi()


COMPONENT = Component(
    name=NAME,
    depends_on=("core", "ca"),
    settings=SigningSettings,
    models=("signing.models",),
    migrations=Path(__file__).parent / "migrations" / "versions",
    services=build,
    blueprints=blueprints,
    commands=commands,
    api_resources=api_resources,
    openapi=openapi,
    translations=Path(__file__).parent / "translations",
)
