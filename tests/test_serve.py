"""``hallmark serve`` over real HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from tests.conftest import ROOT, free_port, hallmark_env, wait_for_http


def start(instance, **overrides):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "hallmark.cli", "serve", "--bind", f"127.0.0.1:{port}", "--workers", "2"],
        env=hallmark_env(instance, **overrides),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(base + "/healthz", process=process)
    except Exception:
        stop(process)
        raise
    return process, base


def stop(process):
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


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
