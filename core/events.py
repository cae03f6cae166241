"""Events between packages: a hook list instead of a module that imports everyone.

A package announces what happened (a certificate was issued, an SSO session
ended) by emitting an event on the hook list of the database session the change
is made in; the packages that care subscribe a handler when the composition root
builds their services. The emitting module imports none of the handlers, so no
import circle forms between, say, issuance and the OCSP responder.

Each session factory made by :func:`core.db.make_session_factory` carries one
hook list, shared by every session it makes (``Session.info``), so code that has
a database session, and nothing else, can still emit. Handlers run in
subscription order inside the emitting transaction: a handler that raises rolls
the whole change back, so what was announced and what was stored never disagree.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

INFO_KEY = "hallmark.events"  # where a session (and its factory) keeps its hook list

# The events the packages emit today. A name says who emits it: ``<package>.<thing>.<what happened>``.
CERTIFICATE_ISSUED = "ca.certificate.issued"  # ctx, session, certificate (a ca.models.Certificate)
CERTIFICATE_REVOKED = "ca.certificate.revoked"  # ctx, session, certificate
AUTHORITY_CREATED = "ca.authority.created"  # ctx, session, authority (its name)
SESSION_ENDED = "idp.session.ended"  # session (the database session), sid, account_id
CLIENT_REMOVED = "idp.client.removed"  # session, client_id, families (its refresh-token families), now

Handler = Callable[..., Any]


class NoSubscriber(RuntimeError):
    """A required event was emitted with nobody listening: the services were put together wrongly."""


class Hooks:
    """An ordered list of handlers per event name."""

    def __init__(self) -> None:
        self._handlers: dict[str, tuple[Handler, ...]] = {}
        self._lock = threading.Lock()

    def subscribe(self, event: str, handler: Handler) -> None:
        """Call ``handler(**payload)`` whenever ``event`` is emitted (once, however often subscribed)."""
        with self._lock:
            current = self._handlers.get(event, ())
            if handler not in current:
                self._handlers[event] = (*current, handler)

    def handlers(self, event: str) -> tuple[Handler, ...]:
        return self._handlers.get(event, ())

    def emit(self, event: str, *, required: bool = False, **payload) -> list[Any]:
        """Run the handlers of ``event`` in order; return what each returned.

        ``required`` events are part of a package's own consistency (a new
        certificate must get its OCSP response): emitting one that nobody
        subscribed to raises :class:`NoSubscriber` instead of silently doing less.
        """
        handlers = self.handlers(event)
        if required and not handlers:
            raise NoSubscriber(f"nothing subscribed to the event {event!r}; build the services through their component")
        return [handler(**payload) for handler in handlers]


def of(holder) -> Hooks:
    """The hook list of a session factory or a session (an empty one if it carries none).

    A session made outside a factory from :func:`core.db.make_session_factory`
    has no hook list; emitting a required event in it raises.
    """
    info = holder.kw.get("info") if hasattr(holder, "kw") else getattr(holder, "info", None)
    hooks = (info or {}).get(INFO_KEY)
    return hooks if hooks is not None else Hooks()
