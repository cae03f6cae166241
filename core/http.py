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

import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

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


# -- where the server may call: no server-side request forgery through a registered URL -------------


class UnsafeDestination(ValueError):
    """A URL the server must not call: not https, or a host that is (or resolves to) a non-public address."""


def allowed_hosts(text: str) -> frozenset[str]:
    """The allow-list setting (space-separated ``host`` or ``host:port``) as a set, lower case."""
    return frozenset(part.lower() for part in text.split())


def check_destination(url: str, allowed: Iterable[str] = (), *, resolve: bool = True) -> None:
    """Refuse (``UnsafeDestination``) a URL that someone outside could use to make the server call inside.

    A URL a client registers (an event endpoint) is called by the server, from inside the
    network: without a rule, ``http://127.0.0.1:5432/`` or ``http://169.254.169.254/``
    turns it into a probe of what only the server can reach. So a destination must be
    ``https`` and its host must resolve only to public (global) addresses, unless the
    host (or ``host:port``) is in ``allowed``, the operator's list of intranet or
    development peers. Checked when the URL is registered and again before each call
    (the name may resolve elsewhere by then); requests resolves once more when it
    connects, a window an attacker controlling the DNS answers could still use.
    """
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if not host:
        raise UnsafeDestination("the URL has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UnsafeDestination("the URL's port is not a number from 0 to 65535") from None
    allowed = {name.lower() for name in allowed}
    if host in allowed or f"{host}:{port}" in allowed:
        return
    if parts.scheme != "https":
        raise UnsafeDestination(f"the URL must use https ({host} is not in the allow-list of hosts that may use http)")
    if not resolve:
        return
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeDestination(f"{host} does not resolve ({exc})") from None
    for *_, sockaddr in answers:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if not address.is_global or address.is_multicast:
            raise UnsafeDestination(f"{host} resolves to {address}, which is not a public address (allow-list the host to call it)")


LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def require_https(url: str, setting: str) -> None:
    """An operator-configured peer (a gateway) is called over https; plain http only to this machine (development).

    What such peers get (resident IDs, phone numbers, codes) must not cross a network in the clear.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{setting} must be an https URL, not {url!r}")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        raise ValueError(
            f"{setting} must use https: plain http is allowed only to this machine "
            f"({', '.join(LOOPBACK_HOSTS)}) for development, not to {parts.hostname}"
        )
