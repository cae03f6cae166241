"""What the web layer remembers per app (``app.extensions["hallmark.web"]``): filled while packages register."""

from __future__ import annotations

from dataclasses import dataclass, field

from flask import Flask

EXTENSION = "hallmark.web"


@dataclass(frozen=True)
class PagePolicy:
    """What a page blueprint's responses may do beyond the strict default."""

    csrf: bool = False  # check the CSRF token of every POST
    form_action: str | None = None  # e.g. "'self'"; None leaves form-action out (forms that redirect on to other sites)


@dataclass(frozen=True)
class LandingLink:
    """One entry of the landing page: ``title`` and ``text`` are msgids of the registering package's catalogue."""

    section: str  # "people", "documents" or "developers"
    href: str
    title: str
    text: str
    order: int = 100


@dataclass
class WebState:
    pages: dict[str, PagePolicy] = field(default_factory=dict)  # page blueprints by name
    json_prefixes: set[str] = field(default_factory=lambda: {"/api/"})  # paths answered in problem+json whatever the Accept
    links: list[LandingLink] = field(default_factory=list)
    csrf_serializers: tuple | None = None
    installed: bool = False
    errors_installed: bool = False


def state(app: Flask) -> WebState:
    found = app.extensions.get(EXTENSION)
    if found is None:
        found = app.extensions[EXTENSION] = WebState()
    return found
