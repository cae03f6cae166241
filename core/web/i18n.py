"""Languages of every page: Simplified Chinese first, English second.

Strings are English msgids in the code and templates, translated by gettext
catalogues (Flask-Babel). Each web package keeps its own catalogue in
``<package>/translations/<locale>/LC_MESSAGES/messages.po`` and adds it with
:func:`add_translations`; this package's own catalogue (the layout, the error
pages, the landing page) is in ``core/web/translations``. The locale of a
request comes from ``?lang=`` (which also sets a cookie), then that cookie, then
``Accept-Language``; anything else gets Chinese.

Service modules do not translate: they raise :class:`Refusal` with an English
msgid marked by :func:`N_` and named parameters, and whoever shows it (a page,
the CLI, a JSON API) renders it in the language it speaks.

Updating a catalogue after changing strings (from the repository root)::

    pybabel extract -F core/web/translations/babel.cfg -o /tmp/web.pot .
    pybabel update -i /tmp/web.pot -d core/web/translations

The ``.mo`` files are compiled from the ``.po`` files when the app starts
(:func:`compile_catalogues`), so only the ``.po`` files are kept in git.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from flask import Flask, request

SUPPORTED = ("zh", "en")
DEFAULT = "zh"
COOKIE = "hallmark_lang"
COOKIE_MAX_AGE = 365 * 24 * 3600
TIMEZONE = "Asia/Shanghai"  # China Standard Time, for times shown on pages
TRANSLATIONS = Path(__file__).parent / "translations"
HTML_LANG = {"zh": "zh-CN", "en": "en"}

log = logging.getLogger("hallmark.web.i18n")


def N_(message: str) -> str:
    """Mark a msgid for extraction; it is translated where it is shown."""
    return message


class Refusal(Exception):
    """A request refused for a reason the person can act on.

    ``message`` is an English msgid with ``%(name)s`` placeholders filled from
    ``params``; ``str()`` gives the English text (CLI, logs, JSON APIs), pages
    translate the msgid. ``status`` is the HTTP status that fits, ``code`` a
    stable machine-readable name. ``retry_after`` (seconds), on a refusal that
    passes with time (a rate limit, 429), becomes the answer's ``Retry-After``.
    """

    status = 400
    retry_after: int | None = None

    def __init__(self, message: str, *, code: str = "refused", status: int | None = None, retry_after: int | None = None, **params):
        self.message = message
        self.code = code
        self.params = params
        if status is not None:
            self.status = status
        if retry_after is not None:
            self.retry_after = retry_after
        super().__init__(self.english())

    def headers(self) -> dict[str, str]:
        """What the answer carries besides its body: ``Retry-After`` when the refusal passes with time."""
        return {"Retry-After": str(self.retry_after)} if self.retry_after else {}

    def english(self) -> str:
        return self.message % self.params if self.params else self.message

    def translated(self) -> str:
        from flask_babel import gettext

        return gettext(self.message, **self.params)


# --------------------------------------------------------------------------- locale


def select_locale() -> str:
    lang = request.args.get("lang")
    if lang in SUPPORTED:
        return lang
    cookie = request.cookies.get(COOKIE)
    if cookie in SUPPORTED:
        return cookie
    return request.accept_languages.best_match(SUPPORTED, default=DEFAULT)


def current() -> str:
    """The language of this request's page (``zh`` outside a request or before Babel is installed)."""
    from flask import current_app, has_request_context

    if not has_request_context():
        return DEFAULT
    if "babel" not in current_app.extensions:
        return select_locale()
    from flask_babel import get_locale

    locale = get_locale()
    return locale.language if locale is not None and locale.language in SUPPORTED else DEFAULT


def language_links(path: str | None = None, keep: dict | None = None) -> dict[str, str]:
    """Links to ``path`` (this page) in each language; ``keep`` are the query parameters to carry (default: this GET's)."""
    if path is None:
        path = request.path
    if keep is None:
        keep = {k: v for k, v in request.args.items() if k not in ("lang", "notice")} if request.method == "GET" else {}
    from urllib.parse import urlencode

    return {lang: path + "?" + urlencode({**keep, "lang": lang}) for lang in SUPPORTED}


def _remember_choice(response):
    lang = request.args.get("lang")
    if lang in SUPPORTED and request.cookies.get(COOKIE) != lang:
        response.set_cookie(COOKIE, lang, max_age=COOKIE_MAX_AGE, samesite="Lax", httponly=True, path="/", secure=request.is_secure)
    return response


# --------------------------------------------------------------------------- catalogues


def compile_catalogues(source: Path = TRANSLATIONS) -> Path:
    """Compile every ``.po`` under ``source`` whose ``.mo`` is missing or older; return the folder to load.

    Written atomically (temporary file, then rename), so several workers starting
    at once never read half a file. When ``source`` is read-only (a package
    installed by root), the catalogues are compiled into a private temporary
    folder named after ``source`` instead, and that folder is returned.
    """
    try:
        _compile_into(source, source)
        return source
    except PermissionError:
        package = source.parent.name if source.name == "translations" else source.name
        fallback = Path(tempfile.gettempdir()) / f"hallmark-translations-{os.getuid()}" / package
        log.info("translations folder %s is read-only; compiling into %s", source, fallback)
        _compile_into(source, fallback)
        return fallback


def _compile_into(source: Path, target: Path) -> None:
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    for po in sorted(source.glob("*/LC_MESSAGES/*.po")):
        mo = target / po.relative_to(source).with_suffix(".mo")
        if mo.exists() and mo.stat().st_mtime >= po.stat().st_mtime:
            continue
        mo.parent.mkdir(parents=True, exist_ok=True)
        with po.open("rb") as handle:
            catalog = read_po(handle, locale=po.parent.parent.name)
        fd, tmp = tempfile.mkstemp(dir=mo.parent, prefix=".messages-", suffix=".mo")
        try:
            with os.fdopen(fd, "wb") as handle:
                write_mo(handle, catalog)
            os.replace(tmp, mo)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def add_translations(app: Flask, source: Path) -> None:
    """Compile the catalogues in ``source`` and add them to the app's (before or after Babel is installed)."""
    directory = str(compile_catalogues(source))
    babel = app.extensions.get("babel")
    if babel is None:
        existing = app.config.get("BABEL_TRANSLATION_DIRECTORIES")
        folders = existing.split(";") if existing else []
        if directory not in folders:
            app.config["BABEL_TRANSLATION_DIRECTORIES"] = ";".join([*folders, directory])
    elif directory not in babel.translation_directories:
        babel.translation_directories.append(directory)


def init_app(app: Flask) -> None:
    """Install Flask-Babel with this package's catalogue; safe to call more than once."""
    if "babel" in app.extensions:
        return
    from flask_babel import Babel

    # The shared catalogue first: a package's own catalogue, merged after it, has the last word.
    folders = [str(compile_catalogues(TRANSLATIONS))]
    for folder in (app.config.get("BABEL_TRANSLATION_DIRECTORIES") or "").split(";"):
        if folder and folder not in folders:
            folders.append(folder)
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = ";".join(folders)
    Babel(app, default_locale=DEFAULT, default_timezone=TIMEZONE, locale_selector=select_locale)
    app.after_request(_remember_choice)

    @app.context_processor
    def _language():
        lang = current()
        return {"lang": lang, "html_lang": HTML_LANG[lang], "lang_links": language_links()}
