"""The console's catalogue: every msgid its modules and templates use is translated into Chinese and listed in English."""

from __future__ import annotations

from pathlib import Path

import admin
from tests.catalogue_checks import bare_percents, gaps, msgids

PACKAGE = Path(admin.__file__).parent


def test_every_console_string_is_translated():
    templates = sorted((PACKAGE / "templates").rglob("*.html"))
    wanted = msgids(sorted(PACKAGE.glob("*.py")), templates)
    assert len(wanted) > 100
    assert gaps(PACKAGE / "translations", wanted) == [], (
        "pybabel extract -F admin/translations/babel.cfg -k N_ ..., then update both catalogues"
    )
    assert bare_percents(templates) == []
