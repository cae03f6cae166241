"""Rich authorization requests (RFC 9396): the ``authorization_details`` types this instance understands.

A package that serves an API declares the detail types its API honours (its
component's ``authorization_details``); the identity provider accepts only those
types in authorization requests, checks each detail with the type's ``check``,
shows it on the consent page with ``describe`` and puts the checked details in
the access token, whose audience then includes the type's ``location``. The
identity provider does not know what a licence is, and the licence library does
not know how consent is asked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

MAX_DETAILS = 5  # details per request
MAX_JSON_BYTES = 4096  # the parameter's size


class InvalidDetail(ValueError):
    """A detail the type refuses; the message says why, in English, for an ``invalid_authorization_details`` error."""


@dataclass(frozen=True)
class DetailType:
    type: str  # the value of the detail's "type" member
    location: str  # the API root it is for, e.g. "/api/licences" (its resource URI joins the token's audience)
    check: Callable[[dict], dict]  # the detail as granted (normalised, with defaults) or raise InvalidDetail
    describe: Callable[[dict], list[str]]  # lines for the consent page, in the request's language (called in a request)
    scope: str = ""  # a scope the token needs beside the detail (added to the granted scope), if any
    example: dict | None = None  # a detail of this type as a client would ask for it, for the developers' guide


def registry(types: Iterable[DetailType]) -> dict[str, DetailType]:
    out: dict[str, DetailType] = {}
    for detail_type in types:
        if detail_type.type in out:
            raise ValueError(f"two components declare the authorization_details type {detail_type.type!r}")
        out[detail_type.type] = detail_type
    return out
