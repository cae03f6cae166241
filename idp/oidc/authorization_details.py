"""Rich authorization requests (RFC 9396): the ``authorization_details`` parameter, as the identity provider handles it.

The types are not ours: each component declares the detail types its API honours
(``core.authorization_details.DetailType``), and ``IdPContext.detail_types`` holds
them all. Here:

* the parameter of an authorization request is parsed and each detail checked
  (normalised) by its type; anything else is ``invalid_authorization_details``
  (RFC 9396 §5), sent to the client's redirect URI like other errors;
* a request with details always asks the person (``idp.oidc.authorization``), and
  the consent page shows each detail with its type's ``describe`` lines;
* the granted details travel with the code and the refresh token (JSON text),
  into the access token's ``authorization_details`` claim (§9.1), the token
  response (§7) and introspection (§9.2); a token request may name a subset of
  what was granted (§6, :func:`narrowed`), never more;
* each type's ``location`` joins the access token's audience, and its ``scope``
  the granted scope.
"""

from __future__ import annotations

import json

from authlib.oauth2.rfc6749.errors import OAuth2Error

from core.authorization_details import MAX_DETAILS, MAX_JSON_BYTES, DetailType, InvalidDetail
from core.bearer import resource_uri
from core.identifiers import mask_resident_ids
from idp.context import IdPContext

PARAMETER = "authorization_details"
ERROR = "invalid_authorization_details"
MAX_PARAMETER_CHARS = 4 * MAX_JSON_BYTES  # longer is certainly over MAX_JSON_BYTES: refused before any parsing
MAX_MATTER = 100  # characters of a matter kept in the audit trail (a type may allow a matter's name, not only its code)


class InvalidDetails(OAuth2Error):
    """RFC 9396 §5: the parameter is malformed, names an unknown type, or a type refuses a detail."""

    error = ERROR
    status_code = 400


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def parse(ctx: IdPContext, text: str | None) -> tuple[dict, ...]:
    """The details of a request's parameter, each checked by its type (``()`` without the parameter)."""
    if text is None:
        return ()
    return tuple(_checked(ctx, index, detail) for index, detail in enumerate(_array(text)))


def _array(text: str) -> list:
    """The parameter as a JSON array of at most MAX_DETAILS entries, within MAX_JSON_BYTES."""
    if len(text) > MAX_PARAMETER_CHARS or len(text.encode("utf-8", "surrogatepass")) > MAX_JSON_BYTES:
        raise InvalidDetails(description=f"The authorization_details parameter is longer than {MAX_JSON_BYTES} bytes.")
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise InvalidDetails(description="The authorization_details parameter is not valid JSON.") from None
    if not isinstance(value, list) or not value:
        raise InvalidDetails(description="The authorization_details parameter must be a non-empty JSON array of objects.")
    if len(value) > MAX_DETAILS:
        raise InvalidDetails(description=f"At most {MAX_DETAILS} authorization details may be asked for.")
    return value


def _checked(ctx: IdPContext, index: int, detail) -> dict:
    if not isinstance(detail, dict):
        raise InvalidDetails(description=f"Authorization detail {index + 1} is not a JSON object.")
    name = detail.get("type")
    if not isinstance(name, str) or not name:
        raise InvalidDetails(description=f"Authorization detail {index + 1} has no 'type'.")
    detail_type: DetailType | None = ctx.detail_types.get(name)
    if detail_type is None:
        raise InvalidDetails(description=f"Authorization detail {index + 1} has an unknown type '{name[:60]}'.")
    try:
        checked = detail_type.check(dict(detail))
    except InvalidDetail as exc:
        raise InvalidDetails(description=f"Authorization detail {index + 1} ({name[:60]}): {exc}") from None
    if not isinstance(checked, dict):
        raise TypeError(f"the check of detail type {name!r} returned {type(checked).__name__}, not a dict")
    return {**checked, "type": name}


def stored(details: tuple[dict, ...] | list[dict]) -> str | None:
    """How granted details are kept with a code or a refresh token: JSON text, None when there are none."""
    return json.dumps(list(details), ensure_ascii=False, separators=(",", ":"), sort_keys=True) if details else None


def loaded(text: str | None) -> tuple[dict, ...]:
    return tuple(json.loads(text)) if text else ()


def narrowed(ctx: IdPContext, text: str | None, granted: tuple[dict, ...]) -> tuple[dict, ...]:
    """The details a token request asks for (RFC 9396 §6): all that was granted without the parameter, else a subset of it.

    Each detail named selects the granted details that have every member it has, with the same
    value (a detail copied from an earlier token response selects itself). The details are not
    checked by their types again: a check may depend on the time (an expiry it adds), and what the
    person granted is handed on as granted, never changed.
    """
    if text is None:
        return granted
    asked = _array(text)
    chosen: list[dict] = []
    for index, detail in enumerate(asked):
        if not isinstance(detail, dict) or not isinstance(detail.get("type"), str):
            raise InvalidDetails(description=f"Authorization detail {index + 1} is not a JSON object with a 'type'.")
        matches = [g for g in granted if all(name in g and g[name] == value for name, value in detail.items())]
        if not matches:
            raise InvalidDetails(description=f"Authorization detail {index + 1} was not granted.")
        chosen += [g for g in matches if g not in chosen]
    return tuple(g for g in granted if g in chosen)  # in the order granted


def _types(ctx: IdPContext, details) -> list[DetailType]:
    # A type that left the registry since the grant (a component removed) adds nothing; its detail stays as granted.
    return [ctx.detail_types[d["type"]] for d in details if d.get("type") in ctx.detail_types]


def audience(ctx: IdPContext, details) -> tuple[str, ...]:
    """The resource URIs of the details' types: they join the access token's ``aud`` (``idp.oidc.resources``)."""
    return tuple(dict.fromkeys(resource_uri(ctx.issuer, t.location) for t in _types(ctx, details)))


def with_scopes(ctx: IdPContext, scope: str, details) -> str:
    """``scope`` and the scopes the details' types need beside them."""
    scopes = scope.split()
    return " ".join(dict.fromkeys([*scopes, *(t.scope for t in _types(ctx, details) if t.scope)]))


def described(ctx: IdPContext, details) -> list[tuple[str, list[str]]]:
    """(type, lines) of each detail for the consent page, in the request's language (the types translate)."""
    return [(detail["type"], list(ctx.detail_types[detail["type"]].describe(detail))) for detail in details]


def _is_matter(value) -> bool:
    return isinstance(value, str) and bool(value.strip())


def summary(details) -> dict:
    """What the audit trail keeps of granted details: their types and matters, nothing about the person.

    A matter is the client's text: a resident ID someone put in it is masked all the same.
    """
    matters = []
    for detail in details:
        listed = detail.get("matters")
        matters += [
            mask_resident_ids(m[:MAX_MATTER])
            for m in [detail.get("matter"), *(listed if isinstance(listed, list) else [])]
            if _is_matter(m)
        ]
    return {"types": list(dict.fromkeys(d["type"] for d in details)), "matters": list(dict.fromkeys(matters))}
