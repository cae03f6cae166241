"""Licence status events: Security Event Tokens (RFC 8417) pushed (RFC 8935) to subscribed approval systems.

An approval system subscribes (``hallmark licences subscribe`` or ``POST
/api/licences/subscriptions``) to licence types, or to the licences it has
accessed (its entries in the access log), with an endpoint. On every state or
version change (``lifecycle.LICENCE_CHANGED``: issue, suspend, resume, revoke,
withdraw, cancel, expire, renew, change, and the superseding of the old version)
each matching subscription gets one SET, signed with the licence library's key
(ES256, ``typ: secevent+jwt``, verifiable with the JWKS at ``/api/licences/jwks``),
queued in core's outbox **in the transaction of the change**: a change that rolls
back announces nothing, and a subscriber that is down or slow costs the change one
INSERT and one signature, never a wait. The outbox POSTs it (``Content-Type:
application/secevent+jwt``); ``202`` means delivered, ``400`` with an RFC 8935
error object means the subscriber refused this SET (dead at once, not retried),
anything else is retried with backoff until the attempts are used up (then dead,
listed by ``hallmark outbox list --dead``, resent by ``hallmark outbox retry ID``).

A SET is delivered at least once: a subscriber may see one twice and must dedupe
by ``jti``, which is the same in every resend (the bytes are the same).

The claims::

    {"iss": "<public URL>", "iat": 1764990000, "jti": "<random>", "aud": "<client id>",
     "txn": "<one id for every SET of one change transaction>",
     "events": {"<public URL>/secevent/licence/<event>": {
         "identifier": "...", "type": "<type code>", "issuer": "<issuing department's credit code>",
         "state": "revoked", "previous_state": "valid", "successor": "...", "predecessor": "..."}}}

``<event>`` is one of :data:`EVENTS`' values; a renewal or change sends ``superseded``
for the old version and ``renewed`` / ``changed`` for the new one, under one ``txn``.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Iterable
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import audit, outbox
from core import http as core_http
from core.db import utc_now
from core.problems import Problem
from licenses import catalogue, signer
from licenses.context import LicencesContext
from licenses.models import AccessEntry, Licence, Subscription

log = logging.getLogger("hallmark.licences.events")

KIND = "licences.set"  # core outbox kind
TYP = "secevent+jwt"
CONTENT_TYPE = "application/secevent+jwt"
EVENT_PATH = "/secevent/licence/"  # an event's URI is the public URL + this + its name
# lifecycle action -> event name (actions not listed, e.g. an import, announce nothing)
EVENTS = {
    "issue": "issued",
    "suspend": "suspended",
    "resume": "resumed",
    "revoke": "revoked",
    "withdraw": "withdrawn",
    "cancel": "cancelled",
    "expire": "expired",
    "renew": "renewed",
    "change": "changed",
    "superseded.renew": "superseded",
    "superseded.change": "superseded",
}
RETRY = outbox.Retry()  # 10 s doubling to an hour, ten attempts (about 4.5 hours) before a SET is dead
SEND_TIMEOUT = (3.05, 10.0)
MAX_TYPES = 50
_TXN = "licences.events.txn"  # db.info: (the transaction, its txn claim)


def event_uri(ctx: LicencesContext, name: str) -> str:
    return ctx.url(EVENT_PATH + name)


# -- subscriptions --------------------------------------------------------------------------------


def _bad(detail: str, code: str) -> Problem:
    return Problem(422, "Unprocessable Content", detail, code=code)


def endpoint_hosts(ctx: LicencesContext) -> frozenset[str]:
    """The ``event_endpoint_hosts`` setting: hosts that may receive SETs over http or at private addresses."""
    return core_http.allowed_hosts(ctx.settings.event_endpoint_hosts)


def check_endpoint(endpoint: object, allowed: Iterable[str]) -> str:
    """An https URL without credentials or fragment, on a public address unless its host is allow-listed.

    ``allowed``: the ``event_endpoint_hosts`` setting, hosts (or host:port) of intranet
    or development subscribers that may be reached over http or at private addresses.
    """
    if not isinstance(endpoint, str) or not endpoint.strip():
        raise _bad("endpoint is required: the URL SETs are POSTed to", "bad_endpoint")
    endpoint = endpoint.strip()
    parts = urlsplit(endpoint)
    if len(endpoint) > 400 or parts.scheme not in ("https", "http") or not parts.hostname or parts.username or parts.fragment:
        raise _bad("endpoint must be an http(s) URL of at most 400 characters, without user name or fragment", "bad_endpoint")
    try:
        core_http.check_destination(endpoint, allowed)
    except core_http.UnsafeDestination as exc:
        raise _bad(f"endpoint refused: {exc}", "bad_endpoint") from None
    return endpoint


def subscribe(
    db: Session,
    *,
    client_id: str,
    endpoint: str,
    type_codes: list[str],
    accessed: bool,
    actor: str,
    allowed_hosts: Iterable[str],
    need_grant: bool = False,
) -> Subscription:
    """Add a subscription (audited). ``need_grant``: each type needs a standing grant of the client (the API's rule).

    ``allowed_hosts``: the ``event_endpoint_hosts`` setting (see :func:`check_endpoint`).
    """
    from licenses import grants

    endpoint = check_endpoint(endpoint, allowed_hosts)
    if not isinstance(type_codes, list) or not all(isinstance(code, str) for code in type_codes) or len(type_codes) > MAX_TYPES:
        raise _bad(f"types must be a list of at most {MAX_TYPES} licence type codes", "bad_types")
    codes = sorted({catalogue.get(db, code).code for code in type_codes})
    if not codes and not accessed:
        raise _bad("subscribe to at least one licence type, or to the licences you have accessed", "nothing_subscribed")
    if need_grant:
        # every licence of a type is pushed: only a client that may read that type may follow it (not compare or issue)
        granted = {grant.type_code for grant in grants.for_client(db, client_id) if grants.covers(grant.mode, grants.READ)}
        missing = [code for code in codes if code not in granted]
        if missing:
            raise Problem(
                403, "Forbidden", f"you have no read grant for licence type(s) {', '.join(missing)}; ask for one first", code="no_grant"
            )
    row = Subscription(
        client_id=client_id,
        endpoint=endpoint,
        type_codes=json.dumps(codes),
        accessed=bool(accessed),
        active=True,
        created_at=utc_now(),
        created_by=actor,
    )
    db.add(row)
    db.flush()
    audit.record(
        db,
        actor=actor,
        action="licences.subscribe",
        target=client_id,
        details={"subscription": row.id, "endpoint": endpoint, "types": codes, "accessed": bool(accessed)},
    )
    return row


def unsubscribe(db: Session, subscription_id: int, *, actor: str, client_id: str | None = None) -> Subscription:
    """End a subscription (``client_id``: only one of that client's); a 404 problem when there is none."""
    row = db.get(Subscription, subscription_id)
    if row is None or not row.active or (client_id is not None and row.client_id != client_id):
        raise Problem(404, "Not Found", f"there is no active subscription {subscription_id}", code="unknown_subscription")
    row.active = False
    audit.record(db, actor=actor, action="licences.unsubscribe", target=row.client_id, details={"subscription": row.id})
    return row


def subscriptions(db: Session, *, client_id: str | None = None) -> list[Subscription]:
    query = select(Subscription).where(Subscription.active.is_(True))
    if client_id is not None:
        query = query.where(Subscription.client_id == client_id)
    return list(db.scalars(query.order_by(Subscription.id)))


def as_json(row: Subscription) -> dict:
    return {
        "id": row.id,
        "client_id": row.client_id,
        "endpoint": row.endpoint,
        "types": json.loads(row.type_codes or "[]"),
        "accessed": row.accessed,
        "created_at": row.created_at.isoformat(),
    }


# -- the hook: one SET per matching subscription, in the change's transaction ----------------------


def _recipients(db: Session, licence: Licence) -> list[Subscription]:
    active = subscriptions(db)
    if not active:
        return []
    chosen = [row for row in active if licence.type_code in json.loads(row.type_codes or "[]")]
    watching = {row.client_id for row in active if row.accessed and row not in chosen}
    if watching:
        # The licences a client reached: this version or, for a new version, the one it replaces.
        identifiers = [i for i in (licence.identifier, licence.predecessor) if i]
        # only accesses that were answered: a refused call (route "none") must not buy a feed of a licence's changes
        query = select(AccessEntry.client_id).where(
            AccessEntry.identifier.in_(identifiers), AccessEntry.client_id.in_(watching), AccessEntry.route.in_(("consent", "grant"))
        )
        accessed = set(db.scalars(query.distinct()))
        chosen += [row for row in active if row.accessed and row not in chosen and row.client_id in accessed]
    return chosen


def _txn(db: Session) -> str:
    """One id for every SET of one transaction (a renewal's ``superseded`` and ``renewed``), as RFC 8417's ``txn``."""
    transaction = db.get_transaction()
    found = db.info.get(_TXN)
    if found is None or found[0] is not transaction:
        found = db.info[_TXN] = (transaction, secrets.token_urlsafe(12))
    return found[1]


def claims_for(ctx: LicencesContext, db: Session, licence: Licence, previous: str, event: str, client_id: str) -> dict:
    payload = {
        "identifier": licence.identifier,
        "type": licence.type_code,
        "issuer": licence.issuer_code,
        "state": licence.state,
        "previous_state": previous or None,
    }
    if licence.successor:
        payload["successor"] = licence.successor
    if licence.predecessor:
        payload["predecessor"] = licence.predecessor
    return {
        "iss": ctx.public_url,
        "iat": int(time.time()),
        "jti": secrets.token_urlsafe(16),
        "aud": client_id,
        "txn": _txn(db),
        "events": {event_uri(ctx, event): payload},
    }


def licence_changed(ctx: LicencesContext):
    """The handler of ``lifecycle.LICENCE_CHANGED``: queue a signed SET per matching subscription."""

    def handler(*, session: Session, licence: Licence, previous: str, action: str, **_) -> int:
        event = EVENTS.get(action)
        if event is None:
            return 0
        recipients = _recipients(session, licence)
        for row in recipients:
            claims = claims_for(ctx, session, licence, previous, event, row.client_id)
            token = signer.sign(ctx, claims, typ=TYP)
            outbox.enqueue(
                session,
                kind=KIND,
                target=row.endpoint,
                body=token.encode(),
                content_type=CONTENT_TYPE,
                headers={"Accept": "application/json"},
                dedupe_key=f"set:{claims['jti']}",
            )
        return len(recipients)

    return handler


# -- delivery (the outbox's sender of KIND): RFC 8935 push ---------------------------------------


_local = threading.local()


def _http():
    """One connection-pooling session per delivering thread (core.http: timeouts, no redirects, no proxy)."""
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = core_http.session(timeout=SEND_TIMEOUT, retry_statuses=())
    return session


def sender(allowed: Iterable[str]):
    """The outbox's sender of KIND: POSTs one SET to an endpoint that passes the destination check now.

    Returns on 202; raises outbox.Permanent on 400 (the subscriber's error object kept)
    and when the endpoint is no longer an allowed destination (its name now resolves to
    a private address, or the allow-list changed), else outbox.Failed (retried).
    """
    allowed = frozenset(allowed)

    def send(message: outbox.Message) -> None:
        import requests

        try:
            core_http.check_destination(message.target, allowed)
        except core_http.UnsafeDestination as exc:
            if "does not resolve" in str(exc):
                raise outbox.Failed(str(exc)) from None  # perhaps a passing DNS failure
            raise outbox.Permanent(f"not sent: {exc}") from None
        try:
            response = _http().post(message.target, data=message.body, headers={**message.headers, "Content-Type": message.content_type})
        except requests.RequestException as exc:
            raise outbox.Failed(f"{type(exc).__name__}: {exc}") from None
        if response.status_code == 202:
            return
        if response.status_code == 400:
            try:
                error = response.json()
                reason = f"{error.get('err')}: {error.get('description', '')}"
            except (ValueError, AttributeError):
                reason = response.text[:200]
            raise outbox.Permanent(f"HTTP 400 (the subscriber refused the SET) {reason}")
        raise outbox.Failed(f"HTTP {response.status_code}: {response.text[:200]}")

    return send


def install(ctx: LicencesContext, hooks) -> None:
    """Subscribe the hook and register the sender (licenses.component's ``subscribe``)."""
    from licenses import lifecycle

    hooks.subscribe(lifecycle.LICENCE_CHANGED, licence_changed(ctx))
    outbox.register(ctx.sessions, KIND, sender(endpoint_hosts(ctx)), retry=RETRY, soon=True)
