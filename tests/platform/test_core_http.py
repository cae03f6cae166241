"""core.http, the one client for the server's outgoing calls, against a real local HTTP server."""

from __future__ import annotations

import http.server
import socket
import threading

import pytest
import requests

from core import http as core_http


class _Peer(http.server.BaseHTTPRequestHandler):
    answers: list[int] = []  # status codes to give, in order; 200 once they run out
    seen: list[tuple[str, bytes]] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).seen.append((self.path, body))
        status = type(self).answers.pop(0) if type(self).answers else 200
        self.send_response(status)
        if status in (301, 302, 307, 308):
            self.send_header("Location", "/elsewhere")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def peer():
    _Peer.answers, _Peer.seen = [], []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Peer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_a_gateway_error_is_tried_again_and_the_second_answer_counts(peer):
    _Peer.answers = [503]
    with core_http.session(backoff=0) as http:
        response = http.post(peer + "/backchannel", data={"logout_token": "t"})
    assert response.status_code == 200
    assert [path for path, _ in _Peer.seen] == ["/backchannel", "/backchannel"]


def test_after_the_last_try_the_caller_sees_the_answer(peer):
    _Peer.answers = [503, 503, 503, 503]
    with core_http.session(retries=2, backoff=0) as http:
        response = http.post(peer + "/backchannel", data={"logout_token": "t"})
    assert response.status_code == 503 and len(_Peer.seen) == 3


def test_a_caller_with_its_own_schedule_gets_the_first_gateway_error(peer):
    _Peer.answers = [503]
    with core_http.session(retry_statuses=(), backoff=0) as http:
        assert http.post(peer + "/backchannel", data=b"t").status_code == 503
    assert len(_Peer.seen) == 1


def test_a_client_error_is_not_tried_again(peer):
    _Peer.answers = [400]
    with core_http.session(backoff=0) as http:
        assert http.post(peer + "/x", data=b"{}").status_code == 400
    assert len(_Peer.seen) == 1


def test_redirects_are_not_followed_unless_asked(peer):
    _Peer.answers = [307]
    with core_http.session() as http:
        response = http.post(peer + "/registry", data=b"{}")
        assert response.status_code == 307 and len(_Peer.seen) == 1
        _Peer.answers = [307]
        followed = http.post(peer + "/registry", data=b"{}", allow_redirects=True)
    assert followed.status_code == 200 and _Peer.seen[-1][0] == "/elsewhere"


def test_a_refused_connection_is_a_requests_error_and_no_proxy_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    with core_http.session(retries=1, backoff=0) as http:
        assert http.trust_env is False
        with pytest.raises(requests.ConnectionError):
            http.post("http://127.0.0.1:1/nothing-listens-here", data=b"")


def test_a_peer_that_never_answers_times_out_without_a_second_try():
    """The socket listens but nobody answers: the default read timeout ends the call, and it is not repeated."""
    silent = socket.create_server(("127.0.0.1", 0))
    try:
        with core_http.session(timeout=(1.0, 0.3)) as http, pytest.raises(requests.ReadTimeout):
            http.post(f"http://127.0.0.1:{silent.getsockname()[1]}/", data=b"x")
    finally:
        silent.close()
