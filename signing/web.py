"""Plugging trusted electronic files into the Flask app (called by the composition root)."""

from __future__ import annotations

from flask import Flask

from ca.context import CAContext
from signing import api, pages, pdfinput
from signing.context import EXTENSION, SigningContext


def install(app: Flask, ca: CAContext, *, compile_catalogues, max_request_bytes: int) -> SigningContext:
    """Register the API and the pages; ``compile_catalogues`` compiles our gettext catalogues (idp.i18n's)."""
    # A PDF in a JSON body (remote signing) grows by a third in base64: keep the limit under the request limit.
    limit = min(pdfinput.MAX_PDF_BYTES, max_request_bytes * 3 // 4 - 64 * 1024)
    context = SigningContext(ca=ca, public_url=ca.public_url, max_pdf_bytes=max(limit, 64 * 1024))
    app.extensions[EXTENSION] = context
    pages.install_translations(app, compile_catalogues)
    app.register_blueprint(api.bp)
    app.register_blueprint(pages.bp)
    return context
