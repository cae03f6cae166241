"""``hallmark serve`` over real HTTP."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import start_server as start
from tests.conftest import stop_server as stop


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, json.loads(exc.read())


@pytest.mark.slow
def test_healthz_over_http(initialised_instance):
    process, base = start(initialised_instance)
    try:
        # Several requests, so both workers (each with its own HSM login) answer.
        for _ in range(10):
            status, headers, body = get(base + "/healthz")
            assert status == 200, body
            assert headers["Content-Type"] == "application/json"
            assert body["database"]["status"] == "ok" and body["hsm"]["status"] == "ok"
        status, headers, body = get(base + "/nothing-here")
        assert status == 404 and headers["Content-Type"] == "application/problem+json"
    finally:
        stop(process)


@pytest.mark.slow
def test_healthz_503_over_http_when_token_cannot_be_opened(initialised_instance):
    process, base = start(initialised_instance, HALLMARK_PIN_SOURCE="env:WRONG_PIN", WRONG_PIN="1111")
    try:
        status, _, body = get(base + "/healthz")
        assert status == 503
        assert body["hsm"]["status"] == "error" and "wrong PIN" in body["hsm"]["detail"]
        assert "1111" not in json.dumps(body)
    finally:
        stop(process)


def _sealed_pdf(instance) -> bytes:
    """A sample PDF sealed in ``instance`` (validating it keeps a worker busy for a good part of a second)."""
    from tests.conftest import run_hallmark
    from tests.signing_fixtures import DEPARTMENT, DEPARTMENT_CODE

    added = run_hallmark(instance, "sign", "seal", "add", "--department", DEPARTMENT, "--credit-code", DEPARTMENT_CODE)
    assert added.returncode == 0, added.stderr
    assert run_hallmark(instance, "sign", "sample-pdf", instance / "sample.pdf").returncode == 0
    sealed = run_hallmark(
        instance, "sign", "pdf", instance / "sample.pdf", instance / "sealed.pdf", "--seal", DEPARTMENT, "--level", "B-LT"
    )
    assert sealed.returncode == 0, sealed.stderr
    return (instance / "sealed.pdf").read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("to", ["main process", "process group"])
def test_sigterm_finishes_requests_in_flight_and_exits_despite_a_stalled_upload(tmp_path, to):
    """SIGTERM with requests in flight: those requests are answered, and the server is gone within 10 s.

    A client that stalls half-way through its upload holds its request open for ever; it
    kept ``hallmark serve`` from exiting (the workers waited for it, the main process for
    the workers). "Within 10 s" is how long the test waits before calling it a hang.
    """
    import http.client
    import os
    import signal
    import socket
    import subprocess
    import threading

    from tests.conftest import initialised_copy

    instance = initialised_copy(tmp_path / "instance")
    pdf = _sealed_pdf(instance)
    process, base = start(instance, workers=2, log=tmp_path / "server.log")
    port = int(base.rsplit(":", 1)[1])
    answers, sent, signalled = [], threading.Barrier(9), threading.Event()

    def validate() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        body = (
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="s.pdf"\r\nContent-Type: application/pdf\r\n\r\n'
            + pdf
            + b"\r\n--b--\r\n"
        )
        try:
            connection.request("POST", "/validate?lang=en", body=body, headers={"Content-Type": "multipart/form-data; boundary=b"})
            sent.wait(60)
            response = connection.getresponse()
            answers.append((response.status, signalled.is_set(), b'data-indication="TOTAL_PASSED"' in response.read()))
        except OSError as exc:
            answers.append((repr(exc), signalled.is_set(), False))
        finally:
            connection.close()

    stalled = socket.create_connection(("127.0.0.1", port))
    try:
        # Headers and the start of a 100 kB body, then nothing more.
        stalled.sendall(
            b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n--b\r\n"
        )
        threads = [threading.Thread(target=validate) for _ in range(8)]
        for thread in threads:
            thread.start()
        sent.wait(60)  # every request is on the wire
        time.sleep(0.3)  # and taken by a worker
        signalled.set()
        if to == "main process":
            process.send_signal(signal.SIGTERM)  # as docker stop and systemd's KillMode=mixed do
        else:
            os.killpg(process.pid, signal.SIGTERM)  # as Ctrl-C in a terminal and systemd's default do
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            pytest.fail("hallmark serve was still running 10 s after SIGTERM")
        finally:
            stop(process)
        for thread in threads:
            thread.join(60)
    finally:
        stalled.close()
    assert len(answers) == 8 and all(status == 200 and passed for status, _, passed in answers), answers
    assert any(after for _, after, _ in answers), answers  # some were still in flight when the signal came


@pytest.mark.slow
def test_idle_keep_alive_connections_do_not_lock_new_clients_out(initialised_instance):
    """100 clients that keep their connections open after one request each, then a new client: answered at once.

    granian's backpressure counts open connections, idle keep-alive ones included. It was 32 per
    worker: with 64 connections held open, a two-worker server took no new connection until
    hyper's 30 s header-read timeout closed some (seen as the fault test's 503s "taking 20-30 s").
    """
    import http.client

    process, base = start(initialised_instance)
    port = int(base.rsplit(":", 1)[1])
    held = []
    try:
        for _ in range(100):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", "/nothing-here")
            response = connection.getresponse()
            response.read()
            assert response.status == 404 and response.getheader("Connection", "").lower() != "close"
            held.append(connection)  # kept open and idle, as a browser keeps its connections
        status, _, body = get(base + "/healthz")  # 10 s at most; 30 s when the connections locked it out
        assert status == 200, body
    finally:
        for connection in held:
            connection.close()
        stop(process)
