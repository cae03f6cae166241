"""The IdP's catalogue: complete for Chinese, placeholders intact (compiling and choosing the language: tests/platform/test_web.py)."""

from __future__ import annotations

from idp import i18n
from tests.catalogue_checks import bare_percents, gaps, msgids

IDP = i18n.TRANSLATIONS.parent
OURS = [
    "people/accounts.py",
    "people/passwords.py",
    "people/realname.py",
    "levels.py",
    "pages.py",
    "oidc/authorization.py",
    "oidc/consent.py",
    "oidc/api.py",
]
TEMPLATES = sorted((IDP / "templates" / "idp").glob("*.html"))


def test_every_string_of_the_pages_has_a_chinese_translation():
    wanted = msgids([IDP / name for name in OURS], TEMPLATES)
    assert len(wanted) > 100
    assert gaps(i18n.TRANSLATIONS, wanted) == [], "run pybabel extract/update, see idp/i18n.py"


def test_templates_use_no_bare_percent():
    assert bare_percents(TEMPLATES) == []
