"""Signing requests that wait for the holder's yes: the agent signs nothing a page asks for
until the holder has confirmed it on the agent's own page.

A page of an allowed hall origin asks (``POST /v1/sign``) and gets back a request id
and the address of the confirmation page, ``http://127.0.0.1:<port>/confirm/<id>``,
which the page opens in a popup. That page (served by the agent, on the agent's own
origin) shows which site asks, for what (log in, or sign a document: its name, page
count and the digest the signature covers) and with which certificate, and carries a
CSRF token bound to that one request. Only a form post from that page, carrying the
token, with the agent's own ``Origin`` (and ``Sec-Fetch-Site: same-origin`` where the
browser sends it) approves or denies it. The asking page collects the outcome
(``GET /v1/sign/<id>``) once.

A request is single use: it is decided once and its signature is handed out once; it
expires :data:`LIFETIME` seconds after it was made if nobody decided it, and an
outcome nobody collected is dropped :data:`KEEP_OUTCOME` seconds after the decision.
"""

from __future__ import annotations

import dataclasses
import hmac
import secrets
import threading
import time
from collections.abc import Callable

LIFETIME = 120  # seconds a request waits for the holder
KEEP_OUTCOME = 60  # seconds a decided request's outcome waits to be collected
MAX_PENDING = 16  # undecided requests at a time; more are refused (a page cannot fill the agent's memory)
MAX_WAIT = 25  # seconds one GET /v1/sign/<id>?wait= may hold the connection


class Unavailable(Exception):
    """The request is unknown, expired, already decided or already collected: ``error`` says which."""

    def __init__(self, status: int, error: str, detail: str):
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


@dataclasses.dataclass
class SigningRequest:
    id: str
    csrf: str = dataclasses.field(repr=False)
    origin: str
    purpose: str  # "login" | "document"
    data: bytes = dataclasses.field(repr=False)
    certificate_id: str
    certificate_subject: str
    document_name: str  # stated by the site ("" when it said nothing)
    document_pages: int | None  # stated by the site
    digest: str  # documents: the message digest (hex) inside the signed attributes, what the signature covers
    created: float
    expires: float
    state: str = "pending"  # pending | signed | denied | failed | collected
    decided: float | None = None
    answer: dict | None = dataclasses.field(default=None, repr=False)
    error: tuple[int, str, str] | None = None  # (status, error, detail) when signing failed after approval

    def seconds_left(self, now: float) -> int:
        return max(0, int(self.expires - now))


class Approvals:
    """Signing requests in memory (the agent is one process on the holder's PC), safe across threads."""

    def __init__(self, lifetime: float = LIFETIME, clock: Callable[[], float] = time.time):
        self.lifetime = lifetime
        self.clock = clock
        self._requests: dict[str, SigningRequest] = {}
        self._changed = threading.Condition()

    def _purge(self, now: float) -> None:
        for key, req in list(self._requests.items()):
            if req.state == "pending":
                if now >= req.expires + KEEP_OUTCOME:
                    del self._requests[key]
            elif req.decided is not None and now >= req.decided + KEEP_OUTCOME:
                del self._requests[key]

    def create(self, **details) -> SigningRequest:
        with self._changed:
            now = self.clock()
            self._purge(now)
            waiting = sum(1 for r in self._requests.values() if r.state == "pending" and now < r.expires)
            if waiting >= MAX_PENDING:
                raise Unavailable(429, "too_many_requests", "too many signing requests are waiting for the holder; try again later")
            request = SigningRequest(
                id=secrets.token_urlsafe(18), csrf=secrets.token_urlsafe(32), created=now, expires=now + self.lifetime, **details
            )
            self._requests[request.id] = request
            return request

    def _find(self, request_id: str, now: float) -> SigningRequest:
        self._purge(now)
        found = self._requests.get(request_id)
        if found is None:
            raise Unavailable(404, "no_such_request", "no such signing request (it may have expired)")
        return found

    def view(self, request_id: str) -> SigningRequest:
        """The request for its confirmation page (whatever its state)."""
        with self._changed:
            return self._find(request_id, self.clock())

    def decide(self, request_id: str, csrf: str, approve: bool, sign: Callable[[SigningRequest], dict]) -> SigningRequest:
        """Approve (and sign, through ``sign``) or deny a pending request; once, with its own token, before it expires.

        ``sign`` returns the answer for the page or raises an exception carrying
        ``status``, ``error`` and ``detail`` (the agent's Refused).
        """
        with self._changed:
            now = self.clock()
            request = self._find(request_id, now)
            if not isinstance(csrf, str) or not hmac.compare_digest(csrf.encode(), request.csrf.encode()):
                raise Unavailable(403, "bad_csrf_token", "the confirmation did not come from this request's page")
            if request.state != "pending":
                raise Unavailable(409, "already_decided", "this signing request was decided already")
            if now >= request.expires:
                raise Unavailable(410, "expired", "this signing request has expired; ask again from the site")
            request.decided = now
            if not approve:
                request.state = "denied"
                self._changed.notify_all()
                return request
            request.state = "signing"
        # Sign outside the lock: the token may take a while, and other requests go on meanwhile.
        try:
            answer, error = sign(request), None
        except Exception as exc:  # the agent's Refused (or a token failure), kept for the asking page
            answer, error = None, (getattr(exc, "status", 503), getattr(exc, "error", "failed"), getattr(exc, "detail", str(exc)))
        with self._changed:
            request.answer, request.error = answer, error
            request.state = "signed" if answer is not None else "failed"
            request.data = b""  # nothing left to sign
            self._changed.notify_all()
            return request

    def collect(self, request_id: str, origin: str, wait: float = 0) -> SigningRequest:
        """The outcome for the page that asked (and no other origin), handed out once; waits up to ``wait`` s while pending."""
        deadline = self.clock() + min(max(wait, 0), MAX_WAIT)
        with self._changed:
            while True:
                now = self.clock()
                request = self._find(request_id, now)
                if request.origin != origin:
                    raise Unavailable(404, "no_such_request", "no such signing request (it may have expired)")
                if request.state == "pending" and now >= request.expires:
                    raise Unavailable(410, "expired", "the holder did not confirm in time; the request has expired")
                if request.state == "collected":
                    raise Unavailable(410, "already_used", "the outcome of this request was collected already")
                if request.state not in ("pending", "signing") or now >= deadline:
                    break
                self._changed.wait(timeout=max(0.05, min(deadline, request.expires) - now))
            if request.state in ("signed", "failed"):
                collected = dataclasses.replace(request)
                request.state, request.answer = "collected", None
                return collected
            return request
