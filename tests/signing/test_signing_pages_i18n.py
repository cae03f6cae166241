"""Signing's catalogue: every string of its pages in Chinese, placeholders intact."""

from __future__ import annotations

from signing import pages
from tests.catalogue_checks import bare_percents, gaps, msgids

SIGNING = pages.TRANSLATIONS.parent
TEMPLATES = sorted((SIGNING / "templates" / "signing").glob("*.html"))


def test_every_string_of_the_pages_has_a_chinese_translation():
    wanted = msgids([SIGNING / "pages.py"], TEMPLATES)
    assert len(wanted) > 40
    assert gaps(pages.TRANSLATIONS, wanted) == [], "run pybabel extract/update, see core/web/i18n.py"
    assert bare_percents(TEMPLATES) == []
