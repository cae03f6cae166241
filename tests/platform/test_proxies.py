"""``trusted_proxies``: X-Forwarded-For and X-Forwarded-Proto believed from configured proxies only.

The middleware (core.web.proxies) on a small WSGI app that echoes what it was given, then the real app
(SQLite, the test token): the address a failed login is audited under, and the forwarded-certificate path,
which must keep asking whether the *peer* is a trusted proxy.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from core.models import AuditEvent
from core.settings import ConfigError
from core.web import proxies


def _echo(environ, start_response):
    body = json.dumps({"addr": environ.get("REMOTE_ADDR"), "scheme": environ.get("wsgi.url_scheme"), "peer": environ.get(proxies.PEER)})
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body.encode()]


def seen(trusted: str, peer: str, forwarded_for: str | None = None, proto: str | None = None) -> dict:
    environ = {"REMOTE_ADDR": peer, "wsgi.url_scheme": "http", "REQUEST_METHOD": "GET", "PATH_INFO": "/"}
    if forwarded_for is not None:
        environ["HTTP_X_FORWARDED_FOR"] = forwarded_for
    if proto is not None:
        environ["HTTP_X_FORWARDED_PROTO"] = proto
    app = proxies.TrustedProxies(_echo, proxies.parse(trusted))
    return json.loads(b"".join(app(environ, lambda status, headers: None)))


def test_an_untrusted_peer_keeps_its_own_address_whatever_it_forwards():
    assert seen("10.0.0.1", "203.0.113.9", "198.51.100.7", "https") == {"addr": "203.0.113.9", "scheme": "http", "peer": None}
    # It may even name a trusted proxy, or the proxy's own client list.
    assert seen("10.0.0.1", "203.0.113.9", "10.0.0.1, 198.51.100.7")["addr"] == "203.0.113.9"


def test_with_no_trusted_proxies_nothing_forwarded_is_believed():
    assert seen("", "127.0.0.1", "198.51.100.7", "https") == {"addr": "127.0.0.1", "scheme": "http", "peer": None}


def test_a_trusted_peer_gives_the_right_most_untrusted_entry():
    # One proxy: the client it saw.
    assert seen("10.0.0.1", "10.0.0.1", "198.51.100.7", "https") == {"addr": "198.51.100.7", "scheme": "https", "peer": "10.0.0.1"}
    # The client forged an entry on the left: the proxy appended the real one on the right.
    assert seen("10.0.0.1", "10.0.0.1", "1.2.3.4, 198.51.100.7")["addr"] == "198.51.100.7"
    # Two proxies of ours (a network): both skipped; the first address that is not ours is the client.
    assert seen("10.0.0.0/8", "10.0.0.1", "1.2.3.4, 198.51.100.7, 10.2.3.4")["addr"] == "198.51.100.7"
    # Everything on the list is ours: the left-most (the proxy nearest the client) is the client.
    assert seen("10.0.0.0/8", "10.0.0.1", "10.9.9.9, 10.2.3.4")["addr"] == "10.9.9.9"
    # IPv6, in brackets with a port as some proxies write it.
    assert seen("::1", "::1", "[2001:db8::7]:4431")["addr"] == "2001:db8::7"
    # A trusted peer without the header: its own address.
    assert seen("10.0.0.1", "10.0.0.1") == {"addr": "10.0.0.1", "scheme": "http", "peer": "10.0.0.1"}


def test_garbage_in_the_list_ends_the_walk():
    assert seen("10.0.0.1", "10.0.0.1", "198.51.100.7, unknown")["addr"] == "10.0.0.1"
    assert seen("10.0.0.0/8", "10.0.0.1", "198.51.100.7, not-an-ip, 10.2.3.4")["addr"] == "10.2.3.4"


def test_forwarded_proto_only_http_or_https():
    assert seen("10.0.0.1", "10.0.0.1", "198.51.100.7", "javascript")["scheme"] == "http"
    assert seen("10.0.0.1", "10.0.0.1", "198.51.100.7", "http, https")["scheme"] == "https"


def test_the_setting_is_shared_and_checked(tmp_path):
    from hallmark import components

    assert components.load_settings(tmp_path, environ={}).trusted_proxies == ""
    (tmp_path / "hallmark.toml").write_text('trusted_proxies = ["10.0.0.1", "192.168.0.0/16"]\n')
    loaded = components.load_settings(tmp_path, environ={})
    assert loaded.trusted_proxies == "10.0.0.1 192.168.0.0/16"
    assert proxies.parse(loaded.trusted_proxies)[1].prefixlen == 16
    with pytest.raises(ConfigError, match=r"trusted_proxies: 'proxy\.example' is not an IP address"):
        components.load_settings(tmp_path, environ={"HALLMARK_TRUSTED_PROXIES": "10.0.0.1, proxy.example"})


@pytest.fixture
def app(tmp_path, migrated, key_manager):
    from hallmark.app import create_app
    from tests.conftest import app_settings

    engine, _ = migrated
    application = create_app(app_settings(tmp_path, engine.url.render_as_string(hide_password=False), HALLMARK_TRUSTED_PROXIES="10.9.8.7"))
    yield application
    application.extensions["hallmark.services"].close()


def _login_failure_actors(app) -> list[str]:
    sessions = app.extensions["hallmark.services"].idp.sessions
    with sessions() as db:
        return [e.actor for e in db.scalars(select(AuditEvent).where(AuditEvent.action == "idp.login.failed").order_by(AuditEvent.seq))]


def _wrong_password(app, peer: str, forwarded_for: str) -> int:
    import re

    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = peer
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    answer = client.post(
        "/login",
        data={"csrf_token": token, "identifier": "nobody-here", "password": "wrong password 1"},
        headers={"X-Forwarded-For": forwarded_for},
    )
    return answer.status_code


def test_the_app_audits_the_client_behind_a_trusted_proxy_and_the_peer_otherwise(app):
    assert _wrong_password(app, "203.0.113.9", "198.51.100.1") < 500  # forged: not from a trusted proxy
    assert _wrong_password(app, "10.9.8.7", "1.2.3.4, 198.51.100.2") < 500  # through the proxy, with a forged entry on the left
    assert _login_failure_actors(app) == ["ip:203.0.113.9", "ip:198.51.100.2"]


def test_a_forwarded_certificate_still_needs_the_peer_to_be_the_proxy(app):
    """The proxy path checks the connection's peer, not the forwarded client address (which is never a proxy)."""

    def refusal(peer: str, forwarded_for: str) -> str:
        import re

        client = app.test_client()
        client.environ_base["REMOTE_ADDR"] = peer
        page = client.get("/login").get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        answer = client.post(
            "/login/cert/tls", data={"csrf_token": token}, headers={"Accept": "application/json", "X-Forwarded-For": forwarded_for}
        )
        return answer.get_json()["code"]

    assert refusal("10.9.8.7", "198.51.100.3") == "no_client_certificate"  # from the proxy: the path is open
    assert refusal("203.0.113.9", "10.9.8.7") == "untrusted_proxy"  # naming the proxy in a header does not make one
