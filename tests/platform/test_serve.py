"""``hallmark serve`` over real HTTP."""

from __future__ import annotations

import json
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
