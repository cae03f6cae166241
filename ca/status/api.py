"""Public PKI endpoints: CA certificates, CRLs and the OCSP responder (no authentication).

    GET  /pki/ca/<name>.crt          DER certificate of one of our CAs (application/pkix-cert)
    GET  /pki/crl/<name>.crl         its current CRL (application/pkix-crl)
    POST /pki/ocsp                   OCSP, body application/ocsp-request
    GET  /pki/ocsp/<base64 request>  OCSP, RFC 6960 appendix A / RFC 5019, cacheable by HTTP caches

OCSP's common cases (a POST with a Content-Length, a GET) are answered by
:class:`OCSPFastPath`, a few lines of WSGI put in front of Flask when this
blueprint is registered: a request answered before is served from the
responder's prepared replies in a few µs (a dictionary probe by its bytes), and
Flask's per-request work (request context, session, URL matching, hooks) costs
tens of times that. It answers exactly as the views below do (they share
:func:`ocsp_reply`); whatever it does not take (chunked bodies, HEAD, other
methods) goes through Flask to the same views.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from cryptography.hazmat.primitives import hashes
from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.http import http_date

from ca import context as ca_context
from ca.context import CAContext
from ca.status import crl, ocsp
from core.problems import Problem

bp = Blueprint("pki", __name__)
RESPONDER = "ca.ocsp.responder"  # app.extensions: the process's OCSP responder
OCSP_PATH = "/pki/ocsp"
CA_MAX_AGE = 24 * 3600
# Shared caches revalidate a CRL at least hourly, so a CRL published on revocation
# spreads within the hour even though the old one is valid until its nextUpdate.
CRL_MAX_AGE = 3600


def _ctx() -> CAContext:
    return ca_context.current()


def responder_of(app) -> ocsp.Responder:
    """The app's OCSP responder (one per process, made on first use)."""
    responder = app.extensions.get(RESPONDER)
    if responder is None:
        responder = app.extensions.setdefault(RESPONDER, ocsp.Responder(ca_context.current(app)))
    return responder


# -- CA certificates and CRLs --------------------------------------------------------------------


@bp.get("/pki/ca/<name>.crt")
def ca_certificate(name: str):
    authority = _ctx().authority(name)
    response = Response(authority.der, mimetype="application/pkix-cert")
    response.headers["Content-Disposition"] = f'attachment; filename="{authority.name}.crt"'
    response.cache_control.public = True
    response.cache_control.max_age = CA_MAX_AGE
    response.set_etag(authority.certificate.fingerprint(hashes.SHA256()).hex())
    response.last_modified = authority.certificate.not_valid_before_utc
    return response.make_conditional(request)


@bp.get("/pki/crl/<name>.crl")
def certificate_revocation_list(name: str):
    current = crl.current(_ctx(), name)
    response = Response(current.der, mimetype="application/pkix-crl")
    response.headers["Content-Disposition"] = f'attachment; filename="{name}.crl"'
    remaining = int((current.next_update - datetime.now(UTC)).total_seconds())
    response.cache_control.public = True
    response.cache_control.max_age = max(0, min(CRL_MAX_AGE, remaining))
    response.expires = current.next_update
    response.last_modified = current.this_update
    response.set_etag(f"{name}-{current.number}")
    return response.make_conditional(request)


# -- OCSP ----------------------------------------------------------------------------------------


def ocsp_reply(answer: ocsp.Answer, *, get: bool, if_none_match: str | None = None) -> tuple[int, list[tuple[str, str]], bytes]:
    """(HTTP status, headers, body) for an OCSP answer; RFC 5019 section 6.2 caching headers on GET.

    A client past its limit gets the protocol's answer (tryLater) with HTTP 429 and Retry-After.
    """
    headers = [("Content-Type", ocsp.CONTENT_TYPE)]
    if answer.retry_after:
        headers += [("Cache-Control", "no-store"), ("Retry-After", str(answer.retry_after)), ("Content-Length", str(len(answer.der)))]
        return 429, headers, answer.der
    if get and not answer.cacheable:
        headers.append(("Cache-Control", "no-store"))  # errors, nonces, unknown serials
    elif get:
        etag = f'"{answer.etag}"'
        headers += [
            ("Cache-Control", f"max-age={max(0, int(answer.next_update - time.time()))}, public, no-transform, must-revalidate"),
            ("Last-Modified", http_date(answer.produced_at)),
            ("Expires", http_date(answer.next_update)),
            ("ETag", etag),
        ]
        if if_none_match and etag in (tag.strip() for tag in if_none_match.split(",")):
            return 304, headers[1:], b""
    headers.append(("Content-Length", str(len(answer.der))))
    return 200, headers, answer.der


def answer_get(responder: ocsp.Responder, encoded: str, client: str = "") -> ocsp.Answer:
    try:
        return responder.answer(ocsp.decode_get_path(encoded), client)
    except ValueError:
        return ocsp.Answer(ocsp.MALFORMED_REQUEST)


def _flask_reply(status_headers_body) -> Response:
    status, headers, body = status_headers_body
    return Response(body, status=status, headers=headers)


@bp.post(OCSP_PATH)
@bp.post(OCSP_PATH + "/")
def ocsp_post():
    # Read one byte past the limit: enough to know the body is too large, no more.
    body = request.stream.read(ocsp.MAX_REQUEST_BYTES + 1)
    return _flask_reply(ocsp_reply(responder_of(current_app).answer(body, request.remote_addr or ""), get=False))


def ocsp_get(encoded: str):
    answer = answer_get(responder_of(current_app), encoded, request.remote_addr or "")
    return _flask_reply(ocsp_reply(answer, get=True, if_none_match=request.headers.get("If-None-Match")))


# Base64 may contain "//"; with merge_slashes werkzeug would redirect such a URL.
bp.add_url_rule(OCSP_PATH + "/<path:encoded>", view_func=ocsp_get, methods=["GET"], merge_slashes=False)


@bp.errorhandler(RequestEntityTooLarge)
def _oversized(exc):
    # The application refuses large bodies before any view runs; an OCSP client
    # still gets an OCSP answer (malformedRequest) rather than problem+json.
    if request.endpoint in ("pki.ocsp_post", "pki.ocsp_get"):
        return _flask_reply(ocsp_reply(ocsp.Answer(ocsp.MALFORMED_REQUEST), get=False))
    return Problem(413, exc.name, exc.description).response()


_STATUS_LINES = {200: "200 OK", 304: "304 Not Modified", 429: "429 Too Many Requests"}


class OCSPFastPath:
    """WSGI middleware answering OCSP POSTs with a Content-Length, and GETs, without Flask.

    A POST whose bytes were answered before is answered from :meth:`ocsp.Responder.prepared`: the status line,
    headers and body were built when the answer was cached, so the request costs a dictionary probe and a write.
    """

    def __init__(self, app, wsgi_app):
        self.app = app  # the Flask app, for its responder
        self.wsgi_app = wsgi_app  # the next WSGI callable (Flask's)
        self._prefix = OCSP_PATH + "/"
        self._responder: ocsp.Responder | None = None

    def responder(self) -> ocsp.Responder:
        responder = self._responder
        if responder is None:
            responder = self._responder = responder_of(self.app)
        return responder

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD")
        if method == "POST" and (path == OCSP_PATH or path == self._prefix):
            length = environ.get("CONTENT_LENGTH")
            if not length or not length.isdigit():
                return self.wsgi_app(environ, start_response)  # chunked: Flask's stream handling
            if int(length) > ocsp.MAX_REQUEST_BYTES:
                answer = ocsp.Answer(ocsp.MALFORMED_REQUEST)  # not even read
            else:
                body = environ["wsgi.input"].read(int(length))
                responder = self.responder()
                prepared = responder.prepared(body)
                if prepared is not None:
                    start_response("200 OK", prepared.headers)
                    return prepared.body
                answer = responder.answer(body, environ.get("REMOTE_ADDR", ""))
            status, headers, body = ocsp_reply(answer, get=False)
        elif method == "GET" and path.startswith(self._prefix) and len(path) > len(self._prefix):
            answer = answer_get(self.responder(), path[len(self._prefix) :], environ.get("REMOTE_ADDR", ""))
            status, headers, body = ocsp_reply(answer, get=True, if_none_match=environ.get("HTTP_IF_NONE_MATCH"))
        else:
            return self.wsgi_app(environ, start_response)
        start_response(_STATUS_LINES[status], headers)
        return [body]


@bp.record_once
def _install_fast_path(state) -> None:
    state.app.wsgi_app = OCSPFastPath(state.app, state.app.wsgi_app)
