"""RFC 3161 over HTTP (RFC 3161 section 3.4): POST a timestamp-query, get a timestamp-reply.

Each client address may have ``tsa_burst`` time-stamps at once, then ``tsa_per_minute``
(the ca section; counted in the database for every worker and node). Past that, the
answer is still a timestamp-reply (a rejection, systemFailure, saying when to try
again), sent with HTTP 429 and ``Retry-After``.
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from ca import context as ca_context
from ca.tsa import responder as tsa
from core import ratelimit
from core.problems import Problem

bp = Blueprint("ca_tsa", __name__)
QUERY_TYPE = "application/timestamp-query"
REPLY_TYPE = "application/timestamp-reply"


@bp.post("/pki/tsa")
def timestamp():
    if request.mimetype != QUERY_TYPE:
        raise Problem(415, "Unsupported Media Type", f"send the TimeStampReq as {QUERY_TYPE} (RFC 3161 section 3.4)")
    if request.content_length is not None and request.content_length > tsa.MAX_REQUEST_BYTES:
        # Answer in the protocol (a badDataFormat rejection) without reading a body we would refuse anyway.
        body = tsa.rejection("bad_data_format", f"the request is larger than {tsa.MAX_REQUEST_BYTES} bytes")
    else:
        ctx = ca_context.current()
        wait = tsa.limit_wait(ctx, request.remote_addr or "")
        if wait > 0:
            seconds = ratelimit.retry_after(wait)
            body = tsa.rejection("system_failure", f"too many time-stamp requests from this address; try again in {seconds} seconds")
            return Response(body, 429, mimetype=REPLY_TYPE, headers={"Cache-Control": "no-store", "Retry-After": str(seconds)})
        # One byte over the limit is enough for tsa.respond to see it is too large.
        body = tsa.respond(ctx, request.stream.read(tsa.MAX_REQUEST_BYTES + 1))
    return Response(body, mimetype=REPLY_TYPE, headers={"Cache-Control": "no-store"})
