"""Errors as RFC 9457 problem details (``application/problem+json``).

Raise :class:`Problem` anywhere below a view; :func:`core.web.errors.install`
(part of ``core.web.init_app``) turns it, and every HTTP error Flask raises
itself, into a problem document for API clients or an error page for browsers.
An unexpected exception still becomes a 500 without leaking its text. (This
module does not import ``core.web``, which imports it: no import circle.)
"""

from __future__ import annotations

from flask import Response, json, request

from core import jsonlimits

MEDIA_TYPE = "application/problem+json"


class Problem(Exception):
    def __init__(
        self, status: int, title: str, detail: str | None = None, type: str = "about:blank", headers: dict | None = None, **extensions
    ):
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type
        self.headers = headers or {}
        self.extensions = extensions

    def as_dict(self) -> dict:
        body = {"type": self.type, "title": self.title, "status": self.status}
        if self.detail:
            body["detail"] = self.detail
        body.update(self.extensions)
        return body

    def response(self) -> Response:
        response = Response(json.dumps(self.as_dict(), ensure_ascii=False), status=self.status, mimetype=MEDIA_TYPE)
        response.headers.update(self.headers)
        return response


def bad_request(detail: str, **extensions) -> Problem:
    return Problem(400, "Bad Request", detail, **extensions)


def json_object_body() -> dict:
    """The request's JSON body, which must be an object nested at most ``jsonlimits.MAX_DEPTH`` deep; a 400 problem otherwise.

    Every JSON API reads its body here. The body's size is limited before (``MAX_CONTENT_LENGTH``, 413).
    """
    body = None
    if request.is_json:
        try:
            body = jsonlimits.loads(request.get_data(cache=True))
        except jsonlimits.TooDeep as exc:
            raise Problem(400, "Bad Request", f"the request body is not acceptable: {exc}", code="json_too_deep") from None
        except ValueError:  # not JSON, or not UTF-8/16/32
            body = None
    if not isinstance(body, dict):
        raise Problem(400, "Bad Request", "the request body must be a JSON object")
    return body


# A query's offset goes into SQL: at most what every database takes as an integer.
MAX_OFFSET = 2**31 - 1


def whole_number_arg(name: str, default: int, *, low: int, high: int) -> int:
    """Query parameter ``name``: ASCII digits, ``low`` to ``high`` (``default`` when absent); a 400 problem otherwise."""
    raw = request.args.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > len(str(high)) or not low <= int(raw) <= high:
        raise Problem(400, "Bad Request", f"'{name}' must be a whole number from {low} to {high}", code="bad_parameter")
    return int(raw)


def page_args(*, default_limit: int, max_limit: int = 500) -> tuple[int, int]:
    """``(limit, offset)`` of a list API's query: limit 1..max_limit, offset 0..MAX_OFFSET; a 400 problem otherwise."""
    limit = whole_number_arg("limit", default_limit, low=1, high=max_limit)
    return limit, whole_number_arg("offset", 0, low=0, high=MAX_OFFSET)
