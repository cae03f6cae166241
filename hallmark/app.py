"""The Flask application factory (``hallmark.app:create_app``)."""

from __future__ import annotations

import logging

from flask import Flask, request
from werkzeug.exceptions import RequestEntityTooLarge

from ca import api as ca_api
from ca import pki_api, tsa_api
from core import bearer, problems
from core import settings as settings_module
from core.settings import Settings
from hallmark import health, wiring
from idp import context as idp_context
from idp import enrolment_api, enterprises_api, logout_api, oidc_api, pages, people_api
from idp import i18n as idp_i18n
from idp import keys as idp_keys
from idp import logout as idp_logout
from idp import resources as idp_resources
from signing import api as signing_api
from signing import web as signing_web


def create_app(settings: Settings | None = None, *, bearer_jwks: dict | None = None) -> Flask:
    """Build the app. ``bearer_jwks`` are the keys JSON APIs accept access tokens from."""
    settings = settings or settings_module.load()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    services = wiring.build(settings)

    app = Flask("hallmark")
    app.config.update(
        SECRET_KEY=settings.secret_key or None,
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        JSON_SORT_KEYS=False,
    )
    app.json.ensure_ascii = False
    app.extensions["hallmark.services"] = services
    problems.install(app)
    # JSON APIs accept the identity provider's own access tokens unless a test hands in other keys.
    accepted_keys = bearer_jwks if bearer_jwks is not None else (lambda: idp_keys.jwks_dict(services.idp))
    bearer.install(app, bearer.BearerVerifier(accepted_keys, issuer=services.idp.issuer, public_url=settings.public_url))
    # Audience-bound tokens (RFC 8707): the IdP issues tokens for these APIs, and each API accepts only its own.
    services.idp.resources.update(bearer.catalogue(settings.public_url, [ca_api.RESOURCE, signing_api.RESOURCE, idp_resources.IDP_API]))
    app.extensions[ca_api.EXTENSION] = services.ca
    app.register_blueprint(health.bp)
    app.register_blueprint(ca_api.bp)
    app.register_blueprint(pki_api.bp)
    if settings.ca_upkeep_seconds > 0:
        from ca import schedule

        upkeep = schedule.start(services.ca, settings.ca_upkeep_seconds)
        app.extensions["hallmark.ca.schedule"] = upkeep
        services.on_close(upkeep.stop)
    app.register_blueprint(tsa_api.bp)
    app.extensions[idp_context.EXTENSION] = services.idp
    idp_i18n.init_app(app)
    app.register_blueprint(oidc_api.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(people_api.bp)
    app.register_blueprint(enterprises_api.bp)
    app.register_blueprint(enrolment_api.bp)
    app.register_blueprint(logout_api.bp)
    signing_web.install(app, services.ca, compile_catalogues=idp_i18n.compile_catalogues, max_request_bytes=settings.max_request_bytes)
    if settings.logout_retry_seconds > 0:
        retries = idp_logout.start_retries(services.idp, settings.logout_retry_seconds)
        services.on_close(retries.stop)

    @app.before_request
    def refuse_oversized_bodies():
        # Flask checks MAX_CONTENT_LENGTH only when a view reads the body; refuse
        # early so authentication and parsing never see an oversized request.
        if request.content_length is not None and request.content_length > settings.max_request_bytes:
            raise RequestEntityTooLarge(f"request bodies are limited to {settings.max_request_bytes} bytes")

    return app
