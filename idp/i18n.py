"""The identity provider's catalogue, and the language helpers idp's modules use.

:func:`N_`, :class:`Refusal` and the pages' time zone belong to the web layer
(:mod:`core.web.i18n`); they are named here so that idp's modules keep one
import. The IdP's own strings are translated by
``idp/translations/<locale>/LC_MESSAGES/messages.po``. Updating it after
changing strings (from the repository root)::

    pybabel extract -F idp/translations/babel.cfg -o /tmp/idp.pot .
    pybabel update -i /tmp/idp.pot -d idp/translations
"""

from __future__ import annotations

from pathlib import Path

from flask import Flask

from core import web
from core.web.i18n import N_, TIMEZONE, Refusal

__all__ = ["N_", "TIMEZONE", "TRANSLATIONS", "Refusal", "init_app"]

TRANSLATIONS = Path(__file__).parent / "translations"


def init_app(app: Flask) -> None:
    """Install the web layer and add the IdP's catalogue; safe to call more than once."""
    web.init_app(app)
    web.add_translations(app, TRANSLATIONS)
