"""The IdP's catalogue: complete for Chinese, placeholders intact (compiling and choosing the language: tests/test_web.py)."""

from __future__ import annotations

import re
from pathlib import Path

from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_file
from babel.messages.pofile import read_po

from idp import i18n

IDP = Path(i18n.__file__).parent
OURS = ["accounts.py", "passwords.py", "realname.py", "matters.py", "pages.py"]
TEMPLATES = sorted(p for p in (IDP / "templates" / "idp").glob("*.html") if p.name != "consent.html")
PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def msgids() -> set[str]:
    found = set()
    for name in OURS:
        found |= {m[1] for m in extract_from_file("python", IDP / name, keywords=DEFAULT_KEYWORDS) if isinstance(m[1], str)}
    for template in TEMPLATES:
        found |= {m[1] for m in extract_from_file("jinja2", template, keywords=DEFAULT_KEYWORDS) if isinstance(m[1], str)}
    return found


def catalogue(lang):
    with (IDP / "translations" / lang / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        return read_po(handle, locale=lang)


def test_every_string_of_the_pages_has_a_chinese_translation():
    zh, en = catalogue("zh"), catalogue("en")
    wanted = msgids()
    assert len(wanted) > 100
    missing = sorted(m for m in wanted if not (zh.get(m) and zh.get(m).string and not zh.get(m).fuzzy))
    assert not missing, f"untranslated in zh (run pybabel extract/update, see idp/i18n.py): {missing}"
    assert not sorted(m for m in wanted if en.get(m) is None), "the en catalogue lags behind"
    for message in zh:
        if message.id and message.string:
            assert set(PLACEHOLDER.findall(message.id)) == set(PLACEHOLDER.findall(message.string)), message.id


def test_templates_use_no_bare_percent():
    # newstyle gettext formats every template string with %, so a lone % would break the page
    for message in (m for t in TEMPLATES for m in extract_from_file("jinja2", t, keywords=DEFAULT_KEYWORDS)):
        assert "%" not in PLACEHOLDER.sub("", message[1]), message[1]
