"""Per-client limits on signing's costly work, shared by every worker and node (core.ratelimit).

A validation reads a whole PDF, hashes every signed range and checks every
certificate path: tens of milliseconds to seconds of a worker. ``POST /api/validate``,
``POST /validate`` and ``POST /verify/<id>`` share one limit per client address (the
address as the app sees it: behind a trusted proxy, the proxy's client), the signing
section's ``validate_burst`` at once, then ``validate_per_minute``. Past it: 429 with
``Retry-After``, before the upload is read.
"""

from __future__ import annotations

from core import ratelimit
from core.problems import Problem
from signing.context import SigningContext

NAME = "signing.validate"


def allow_validation(sctx: SigningContext, client: str) -> None:
    """Count one validation for ``client``; a 429 problem (code ``rate_limited``, Retry-After) past the limit."""
    bucket = ratelimit.shared(sctx.cache, sctx.sessions, NAME, sctx.settings.limit("validate"))
    wait = bucket.attempt(client)
    if wait > 0:
        seconds = ratelimit.retry_after(wait)
        raise Problem(
            429,
            "Too Many Requests",
            f"too many validations from this address; try again in {seconds} seconds",
            headers={"Retry-After": str(seconds)},
            code="rate_limited",
            retry_after=seconds,
        )
