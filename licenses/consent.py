"""The holder's consent as an RFC 9396 authorization detail of type ``hallmark_licence``.

An approval system asks for it in its OpenID Connect request; the identity
provider checks it here, shows :func:`describe`'s lines on its consent page and
puts the checked detail in the access token's ``authorization_details`` claim. The
sharing API (``licenses.sharing``) then honours the token for the holder it was
granted by, for exactly what the detail names:

==============  ==========================================================================
member          meaning
==============  ==========================================================================
``datatypes``   licence-type codes (required, 1 to 10)
``actions``     ``compare``, ``read``, ``copy`` (default ``["compare"]``; they nest as grants do)
``matter``      the matter (事项) served, 1 to 100 characters (required)
``purpose``     why, 1 to 200 characters (required); calls must state the same purpose
``identifier``  one licence only (optional; a GB/T 36904 identifier)
``duration``    seconds the consent is asked for (optional; default one day, at most
                ``consent_max_days``)
``expires_at``  added here: Unix seconds when the consent ends (a requested one may only be earlier)
==============  ==========================================================================
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from core.authorization_details import DetailType, InvalidDetail
from core.db import read_only
from core.identifiers import InvalidIdentifier
from licenses import grants, identifiers
from licenses.settings import LicencesSettings

TYPE = "hallmark_licence"
LOCATION = "/api/licences"
DEFAULT_SECONDS = 24 * 3600
MAX_TYPES = 10
MEMBERS = {"type", "datatypes", "actions", "matter", "purpose", "identifier", "duration", "expires_at", "locations"}


def _settings() -> LicencesSettings:
    """The licence library's settings when called in the app (the identity provider's request), else the defaults."""
    from flask import has_app_context

    if has_app_context():
        from licenses import context

        try:
            return context.current().settings
        except LookupError:
            pass
    return LicencesSettings()


def _text(detail: dict, name: str, limit: int) -> str:
    value = detail.get(name)
    if not isinstance(value, str) or not " ".join(value.split()):
        raise InvalidDetail(f"'{name}' is required: text of 1 to {limit} characters")
    value = " ".join(value.split())
    if len(value) > limit:
        raise InvalidDetail(f"'{name}' is at most {limit} characters")
    return value


def check(detail: dict, *, now: float | None = None, settings: LicencesSettings | None = None) -> dict:
    """The detail as granted (normalised, defaults filled, ``expires_at`` set), or :class:`InvalidDetail` saying why not."""
    settings = settings or _settings()
    unknown = sorted(set(detail) - MEMBERS)
    if unknown:
        raise InvalidDetail(f"unknown member(s) {', '.join(unknown)[:100]}")
    datatypes = detail.get("datatypes")
    if not isinstance(datatypes, list) or not datatypes or len(datatypes) > MAX_TYPES:
        raise InvalidDetail(f"'datatypes' is required: a list of 1 to {MAX_TYPES} licence-type codes")
    codes = []
    for code in datatypes:
        try:
            codes.append(identifiers.check_type_code(code if isinstance(code, str) else ""))
        except InvalidIdentifier as exc:
            raise InvalidDetail(f"'datatypes': {str(code)[:30]!r}: {exc}") from None
    _known_types(codes)
    actions = detail.get("actions", [grants.COMPARE])
    if not isinstance(actions, list) or not actions or any(a not in grants.SHARING_MODES for a in actions):
        raise InvalidDetail(f"'actions' must be a list of {', '.join(grants.SHARING_MODES)}")
    matter = _text(detail, "matter", grants.MAX_MATTER)
    purpose = _text(detail, "purpose", grants.MAX_PURPOSE)
    checked = {
        "type": TYPE,
        "datatypes": list(dict.fromkeys(codes)),
        "actions": [a for a in grants.SHARING_MODES if a in actions],
        "matter": matter,
        "purpose": purpose,
    }
    if detail.get("identifier") is not None:
        try:
            parsed = identifiers.parse(detail["identifier"] if isinstance(detail["identifier"], str) else "")
        except InvalidIdentifier as exc:
            raise InvalidDetail(f"'identifier': {exc}") from None
        if parsed.type_code not in checked["datatypes"]:
            raise InvalidDetail("'identifier' names a licence of a type not in 'datatypes'")
        checked["identifier"] = str(parsed)
    longest = settings.consent_max_days * 24 * 3600
    duration = detail.get("duration", DEFAULT_SECONDS)
    if not isinstance(duration, int) or isinstance(duration, bool) or duration <= 0:
        raise InvalidDetail("'duration' must be a whole number of seconds above 0")
    duration = min(duration, longest)
    current = int(now if now is not None else time.time())
    expires_at = current + duration
    asked = detail.get("expires_at")
    if asked is not None:
        if not isinstance(asked, int) or isinstance(asked, bool) or asked <= current:
            raise InvalidDetail("'expires_at' must be a time in the future (Unix seconds)")
        expires_at = min(expires_at, asked)  # a client may ask for less, never for more
    checked["duration"] = duration
    checked["expires_at"] = expires_at
    return checked


def _known_types(codes: list[str]) -> None:
    """Inside the app, every type must be in the catalogue (a consent for a type nobody issues is a mistake)."""
    from flask import has_app_context

    if not has_app_context():
        return
    from licenses import context
    from licenses.models import LicenceType

    try:
        ctx = context.current()
    except LookupError:
        return
    # Read-only: the identity provider calls this inside its own write transaction (on SQLite, the write lock).
    with read_only(ctx.sessions) as db:
        for code in codes:
            if db.get(LicenceType, code) is None:
                raise InvalidDetail(f"'datatypes': there is no licence type {code} in the catalogue")


def _type_names(codes: list[str]) -> list[str]:
    from flask import has_app_context

    names = list(codes)
    if has_app_context():
        from licenses import context
        from licenses.models import LicenceType

        try:
            with read_only(context.current().sessions) as db:
                names = [row.name if (row := db.get(LicenceType, code)) is not None else code for code in codes]
        except LookupError:
            pass
    return names


def describe(detail: dict) -> list[str]:
    """Plain lines for the consent page, in the request's language."""
    from flask_babel import format_datetime, gettext

    lines = [gettext("Licences: %(names)s", names="、".join(_type_names(list(detail.get("datatypes", [])))))]
    actions = detail.get("actions", [grants.COMPARE])
    if grants.COPY in actions:
        lines.append(gettext("What it may do: download a copy of the licence stamped with this use, and see what is on it."))
    elif grants.READ in actions:
        lines.append(gettext("What it may do: see what is on the licence, sensitive items included."))
    else:
        lines.append(
            gettext("What it may do: only check whether what you told it matches your licence. It does not see the licence itself.")
        )
    lines.append(gettext("For the matter: %(matter)s", matter=detail.get("matter", "")))
    lines.append(gettext("Why: %(purpose)s", purpose=detail.get("purpose", "")))
    if detail.get("identifier"):
        lines.append(gettext("Only this licence: %(identifier)s", identifier=detail["identifier"]))
    if isinstance(detail.get("expires_at"), int):
        until = format_datetime(datetime.fromtimestamp(detail["expires_at"], UTC), "yyyy-MM-dd HH:mm")
        lines.append(gettext("Until: %(until)s. Every look is recorded, and you can see it under My licences.", until=until))
    return lines


# A consent token may call the sharing API: the scope its views ask for comes with the detail.
DETAIL_TYPE = DetailType(
    type=TYPE,
    location=LOCATION,
    check=check,
    describe=describe,
    scope="licences:read",
    example={
        "type": TYPE,
        "datatypes": ["11100000000013952E001"],
        "actions": ["compare"],
        "matter": "食品经营许可",
        "purpose": "核验申请人的营业执照",
        "duration": 3600,
    },
)
