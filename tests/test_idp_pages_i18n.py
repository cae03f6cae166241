"""The catalogues behind the pages: complete for Chinese, placeholders intact, compiled at start-up."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_file
from babel.messages.pofile import read_po
from flask import Flask

from idp import i18n

IDP = Path(i18n.__file__).parent
OURS = ["accounts.py", "passwords.py", "realname.py", "matters.py", "pages.py", "i18n.py"]
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


def test_catalogues_compile_once_and_again_when_changed(tmp_path):
    source = tmp_path / "translations"
    shutil.copytree(IDP / "translations", source, ignore=shutil.ignore_patterns("*.mo"))
    assert i18n.compile_catalogues(source) == source
    mo = source / "zh" / "LC_MESSAGES" / "messages.mo"
    first = mo.stat().st_mtime_ns
    i18n.compile_catalogues(source)
    assert mo.stat().st_mtime_ns == first
    po = mo.with_suffix(".po")
    os.utime(po, ns=(first + 10**9, first + 10**9))
    i18n.compile_catalogues(source)
    assert mo.stat().st_mtime_ns != first
    assert not list(source.rglob(".messages-*")), "no temporary files are left behind"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_read_only_catalogues_compile_elsewhere(tmp_path):
    source = tmp_path / "translations"
    shutil.copytree(IDP / "translations", source, ignore=shutil.ignore_patterns("*.mo"))
    for folder in source.rglob("LC_MESSAGES"):
        folder.chmod(0o555)
    try:
        target = i18n.compile_catalogues(source)
        assert target != source and (target / "zh" / "LC_MESSAGES" / "messages.mo").exists()
    finally:
        for folder in source.rglob("LC_MESSAGES"):
            folder.chmod(0o755)


def test_read_only_catalogues_compile_elsewhere_as_root(tmp_path, monkeypatch):
    source = tmp_path / "translations"
    shutil.copytree(IDP / "translations", source, ignore=shutil.ignore_patterns("*.mo"))
    real = i18n._compile_into

    def refuse_source(src, target):
        if target == source:
            raise PermissionError("read-only")
        real(src, target)

    monkeypatch.setattr(i18n, "_compile_into", refuse_source)
    target = i18n.compile_catalogues(source)
    assert target != source and (target / "zh" / "LC_MESSAGES" / "messages.mo").exists()


@pytest.mark.parametrize(
    "query, cookie, accept, expected",
    [
        ("", None, None, "zh"),
        ("lang=en", None, None, "en"),
        ("lang=fr", None, "en", "en"),
        ("", "en", "zh-CN", "en"),
        ("lang=zh", "en", None, "zh"),
        ("", None, "en-GB,en;q=0.8", "en"),
        ("", None, "de-DE", "zh"),
        ("", "xx", "zh-TW", "zh"),
    ],
)
def test_locale_selection(query, cookie, accept, expected):
    app = Flask("t")
    i18n.init_app(app)
    headers = {}
    if cookie:
        headers["Cookie"] = f"{i18n.COOKIE}={cookie}"
    if accept:
        headers["Accept-Language"] = accept
    with app.test_request_context("/?" + query, headers=headers):
        assert i18n.select_locale() == expected
        assert i18n.current() == expected
