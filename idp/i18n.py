"""The identity provider's catalogue, and the language helpers idp's modules use.

Languages, :func:`N_` and :class:`Refusal` belong to the web layer
(:mod:`core.web.i18n`); they are named here so that idp's service modules
keep one import. The IdP's own strings are translated by
``idp/translations/<locale>/LC_MESSAGES/messages.po``. Updating it after
changing strings (from the repository root)::

    pybabel extract -F idp/translations/babel.cfg -o /tmp/idp.pot .
    pybabel update -i /tmp/idp.pot -d idp/translations
"""

from __future__ import annotations

from pathlib import Path

from flask import Flask

from core import web
from core.web.i18n import HTML_LANG, N_, SUPPORTED, TIMEZONE, Refusal, compile_catalogues, current, select_locale

__all__ = [
    "HTML_LANG",
    "N_",
    "SUPPORTED",
    "TIMEZONE",
    "TRANSLATIONS",
    "Refusal",
    "compile_catalogues",
    "current",
    "init_app",
    "select_locale",
]

TRANSLATIONS = Path(__file__).parent / "translations"


def init_app(app: Flask) -> None:
    """Install the web layer and add the IdP's catalogue; safe to call more than once."""
    web.init_app(app)
    web.add_translations(app, TRANSLATIONS)
