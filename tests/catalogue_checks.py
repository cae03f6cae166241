"""Checks of a package's gettext catalogue, for the tests of every package with pages.

A catalogue is ``<folder>/<lang>/LC_MESSAGES/messages.po`` with English msgids;
Chinese must translate every msgid the package uses, English must list them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_file
from babel.messages.pofile import read_po

PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]")


def msgids(python: Iterable[Path] = (), templates: Iterable[Path] = ()) -> set[str]:
    """The msgids marked in these Python files (``_``, ``gettext``, ``N_``...) and Jinja templates."""
    found = set()
    for kind, files in (("python", python), ("jinja2", templates)):
        for path in files:
            for message in extract_from_file(kind, path, keywords=DEFAULT_KEYWORDS):
                found.add(message[1] if isinstance(message[1], str) else message[1][0])  # a plural is found by its singular
    return found


def catalogue(folder: Path, lang: str) -> Catalog:
    with (folder / lang / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        return read_po(handle, locale=lang)


def gaps(folder: Path, wanted: set[str]) -> list[str]:
    """What is wrong with the catalogues in ``folder`` for ``wanted``: untranslated, missing or with other placeholders."""
    zh, en = catalogue(folder, "zh"), catalogue(folder, "en")
    found = [f"untranslated in zh: {m}" for m in sorted(wanted) if not (zh.get(m) and zh.get(m).string and not zh.get(m).fuzzy)]
    found += [f"missing in en: {m}" for m in sorted(wanted) if en.get(m) is None]
    found += [
        f"placeholders differ: {message.id}"
        for message in zh
        if message.id and message.string and set(PLACEHOLDER.findall(str(message.id))) != set(PLACEHOLDER.findall(str(message.string)))
    ]
    return found


def bare_percents(templates: Iterable[Path]) -> list[str]:
    """Template strings with a lone ``%``: newstyle gettext formats every one with ``%``, so it would break the page."""
    texts = [text for t in templates for m in extract_from_file("jinja2", t, keywords=DEFAULT_KEYWORDS) for text in _forms(m[1])]
    return [text for text in texts if text and "%" in PLACEHOLDER.sub("", text)]


def _forms(msgid) -> tuple:
    return (msgid,) if isinstance(msgid, str) else tuple(msgid)
