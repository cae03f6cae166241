"""Errors as RFC 9457 problem details (``application/problem+json``).

Raise :class:`Problem` anywhere below a view; :func:`core.web.errors.install`
(part of ``core.web.init_app``) turns it, and every HTTP error Flask raises
itself, into a problem document for API clients or an error page for browsers.
An unexpected exception still becomes a 500 without leaking its text. (This
module does not import ``core.web``, which imports it: no import circle.)
"""

from __future__ import annotations

from flask import Response, json, request

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
    """The request's JSON body, which must be an object; a 400 problem otherwise."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise Problem(400, "Bad Request", "the request body must be a JSON object")
    return body
