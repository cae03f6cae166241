"""The one HTTP client for calls the server makes out (back-channel logout, the registry gateway).

``session()`` gives a ``requests.Session`` with what every such call needs and is easy to
forget one call at a time:

* a timeout on every request, (connect, read) seconds, unless the call passes its own;
* a few quick retries, with backoff, of what is worth retrying at once: a connection
  that could not be opened, and (unless the caller has its own schedule for them)
  502/503/504 from a gateway. A POST is retried too: the calls made through this client
  are safe to repeat (a logout token is the same token; a registry check decides
  nothing). Slower retries are the caller's business (the logout outbox reschedules a
  hall's 5xx with its own backoff);
* no redirects unless a call asks for them (``allow_redirects=True``): a logout token
  or a resident's identity must reach the URL registered, not wherever it points;
* no proxy or credentials from the environment (``trust_env`` off).

A session pools connections and is not meant to be shared between threads: keep one
per thread, or make one per task.
"""

from __future__ import annotations

import requests
from requests.adapters import HTTPAdapter
from urllib3.util import Retry

DEFAULT_TIMEOUT = (3.05, 10.0)  # seconds to connect, seconds between bytes of the answer
RETRY_STATUS = (502, 503, 504)


class _Adapter(HTTPAdapter):
    def __init__(self, timeout, **kwargs):
        self._timeout = timeout
        super().__init__(**kwargs)

    def send(self, request, timeout=None, **kwargs):
        return super().send(request, timeout=self._timeout if timeout is None else timeout, **kwargs)


class OutboundSession(requests.Session):
    """A ``requests.Session`` that follows no redirect unless asked."""

    def request(self, method, url, *args, **kwargs):
        kwargs.setdefault("allow_redirects", False)
        return super().request(method, url, *args, **kwargs)


def session(
    *,
    timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
    retries: int = 2,
    backoff: float = 0.2,
    retry_statuses: tuple[int, ...] = RETRY_STATUS,
) -> OutboundSession:
    """A new session for outgoing calls; see the module's text for what it does.

    ``retry_statuses=()``: answers are never retried here, only connections that failed.
    """
    retry = Retry(
        total=retries,
        connect=retries,
        read=False,  # the request may have arrived: no second try, and the error stays a read timeout
        status=retries if retry_statuses else 0,
        status_forcelist=retry_statuses,
        allowed_methods=None,  # every method: the calls made through here are safe to repeat
        backoff_factor=backoff,
        respect_retry_after_header=False,  # a peer must not hold a delivery loop for as long as it likes
        raise_on_status=False,  # after the last try the caller sees the answer itself
    )
    http = OutboundSession()
    http.trust_env = False
    adapter = _Adapter(timeout, max_retries=retry)
    http.mount("https://", adapter)
    http.mount("http://", adapter)
    return http
