"""The Flask application factory (``hallmark.app:create_app``).

No package is named here: the app follows the component list (``hallmark.components``).
"""

from __future__ import annotations

import logging

from flask import Flask

from core import bearer, component, periodic, web
from core.settings import Settings
from hallmark import health, wiring
from hallmark import openapi as api_description
from hallmark.components import COMPONENTS
from hsm import TokenUnavailable


def create_app(settings: Settings | None = None, *, bearer_jwks: dict | None = None, components=COMPONENTS) -> Flask:
    """Build the app. ``bearer_jwks`` are the keys JSON APIs accept access tokens from (default: the token issuer's)."""
    from hallmark.components import load_settings

    components = tuple(components)
    settings = settings or load_settings(components=components)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # fontTools narrates every font subset at INFO (some 30 lines for each licence PDF drawn); keep its warnings only.
    logging.getLogger("fontTools").setLevel(max(logging.WARNING, logging.getLogger().getEffectiveLevel()))
    services = wiring.build(settings, components)

    app = Flask("hallmark")
    app.config.update(
        SECRET_KEY=settings.secret_key or None,
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        JSON_SORT_KEYS=False,
    )
    app.json.ensure_ascii = False
    component.install(app, services)
    app.extensions["hallmark.services"] = services  # the same registry, for callers of the composition root
    # The shared web layer: errors as pages or problem+json, languages, security headers, the landing page.
    web.init_app(app, public_url=settings.public_url)
    web.unavailable_when(app, TokenUnavailable, detail="the key store (HSM) is not available at the moment; try again shortly")
    _install_bearer(app, services, components, settings, bearer_jwks)
    health.install(app, components)
    api_description.install(app, components, settings.public_url)  # /api/openapi.json and its page

    for part in components:
        service = services.by_name.get(part.name)
        if part.translations is not None:
            web.add_translations(app, part.translations)
        if part.init_app is not None:
            part.init_app(app, service)
        for blueprint in part.blueprints() if part.blueprints is not None else ():
            app.register_blueprint(blueprint)
        for job in part.periodic:
            seconds = job.interval(settings)
            if seconds > 0:
                running = periodic.start(job.name, lambda job=job, service=service: job.run(service), seconds)
                services.on_close(running.stop)

    # An oversize body (over MAX_CONTENT_LENGTH) is refused with 413 by core.web before anything reads it.
    # Outermost, after every component's own WSGI middleware (the OCSP fast path): the client's address behind
    # a trusted proxy, for everything the app serves.
    web.trust_proxies(app, settings.trusted_proxies)
    return app


def _install_bearer(app: Flask, services, components, settings: Settings, bearer_jwks: dict | None) -> None:
    """Every JSON API checks access tokens of the one token issuer, for its own audience (RFC 8707)."""
    resources = [resource for part in components if part.api_resources is not None for resource in part.api_resources()]
    catalogue = bearer.catalogue(settings.public_url, resources)
    issuers = [part for part in components if part.token_issuer is not None]
    if len(issuers) > 1:
        raise ValueError(f"more than one component issues access tokens: {', '.join(p.name for p in issuers)}")
    keys, issuer, inactive = {"keys": []}, settings.public_url.rstrip("/"), None
    if issuers:
        keys, issuer, inactive = issuers[0].token_issuer(services[issuers[0].name], catalogue)
    # JSON APIs accept the issuer's own access tokens, each only while the issuer still honours it (asked on every
    # call), unless a test hands in other keys: the issuer knows nothing of tokens it did not sign.
    if bearer_jwks is not None:
        keys, inactive = bearer_jwks, None
    bearer.install(app, bearer.BearerVerifier(keys, issuer=issuer, public_url=settings.public_url, inactive=inactive))
