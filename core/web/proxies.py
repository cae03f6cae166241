"""The client's address behind reverse proxies: ``X-Forwarded-For`` and ``X-Forwarded-Proto``, from trusted proxies only.

Behind nginx every request comes from nginx's address, so per-client limits,
lockout audit entries and logs would all name the proxy. A proxy says who its
client was in ``X-Forwarded-For``; but anyone can send that header, so it is
believed only when the peer (``REMOTE_ADDR``, the address the TCP connection
came from) is one of ``trusted_proxies`` (addresses or CIDR networks, comma or
space separated; empty, the default: no header is believed, ever).

From a trusted peer, :class:`TrustedProxies` walks ``X-Forwarded-For`` from the
right (the entry the nearest proxy appended), skipping entries that are trusted
proxies themselves, and takes the first one that is not: the right-most
untrusted entry. Entries to its left were written by the client, or by proxies
we do not know, and are never used. An entry that is not an IP address ends the
walk: the last trusted hop is then the client. ``X-Forwarded-Proto`` (``http`` or
``https``, the right-most value) becomes ``wsgi.url_scheme``.

What the peer really was stays in ``environ`` (:data:`PEER`, and
``werkzeug.proxy_fix.orig`` as werkzeug's ProxyFix keeps it): a check that is
about the proxy itself (is this request from a proxy whose forwarded client
certificate counts?) asks :func:`peer_address`, not ``request.remote_addr``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from flask import Flask, request

PEER = "hallmark.proxy.peer"  # environ: the address the connection came from, when a trusted proxy rewrote REMOTE_ADDR

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse(value: str | Iterable[str]) -> tuple[Network, ...]:
    """Addresses and CIDR networks, comma or space separated (or a list of them); ValueError names a bad one."""
    items = value.replace(",", " ").split() if isinstance(value, str) else [str(v) for v in value]
    networks = []
    for item in items:
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"trusted_proxies: {item!r} is not an IP address or network") from None
    return tuple(networks)


def _address(text: str):
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443" as some proxies write it
        text = text[1 : text.index("]")]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class TrustedProxies:
    """WSGI middleware: from a trusted peer, the right-most untrusted ``X-Forwarded-For`` entry becomes ``REMOTE_ADDR``."""

    def __init__(self, wsgi_app, networks: Iterable[Network]):
        self.wsgi_app = wsgi_app
        self.networks = tuple(networks)

    def trusted(self, address) -> bool:
        return address is not None and any(address in network for network in self.networks)

    def client(self, peer: str, forwarded_for: str) -> str:
        """The client's address given the peer and its ``X-Forwarded-For`` (the peer must be trusted)."""
        client = peer
        for entry in reversed(forwarded_for.split(",")):
            address = _address(entry)
            if address is None:
                break  # garbage: believe nothing further left
            client = str(address)
            if not self.trusted(address):
                break
        return client

    def __call__(self, environ, start_response):
        peer = environ.get("REMOTE_ADDR", "")
        if self.networks and self.trusted(_address(peer)):
            forwarded_for = environ.get("HTTP_X_FORWARDED_FOR", "")
            proto = environ.get("HTTP_X_FORWARDED_PROTO", "").rpartition(",")[2].strip().lower()
            environ["werkzeug.proxy_fix.orig"] = {
                "REMOTE_ADDR": peer,
                "wsgi.url_scheme": environ.get("wsgi.url_scheme"),
                "HTTP_HOST": environ.get("HTTP_HOST"),
            }
            environ[PEER] = peer
            if forwarded_for:
                environ["REMOTE_ADDR"] = self.client(peer, forwarded_for)
            if proto in ("http", "https"):
                environ["wsgi.url_scheme"] = proto
        return self.wsgi_app(environ, start_response)


def install(app: Flask, trusted_proxies: str | Iterable[str]) -> None:
    """Put :class:`TrustedProxies` in front of everything else ``app`` serves (call it last: it must be outermost)."""
    app.wsgi_app = TrustedProxies(app.wsgi_app, parse(trusted_proxies))


def peer_address() -> str | None:
    """The address this request's connection came from (the proxy's, behind a trusted proxy)."""
    return request.environ.get(PEER) or request.remote_addr
